//! The `ci-builder` binary: parse, load the config, run one command, map
//! the outcome to an exit status (0 ok, 1 differs, 2 error).

use ci_builder::audit;
use ci_builder::cli::{Cli, Command, Net};
use ci_builder::error::BuilderError;
use ci_builder::net::{self, persist};
use clap::Parser;
use pulp_auth_config::Config;
use std::process::ExitCode;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("ci-builder: error: cannot start the async runtime: {e}");
            return ExitCode::from(2);
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("ci-builder: error: {e}");
            ExitCode::from(2)
        }
    }
}

async fn run(cli: Cli) -> Result<u8, BuilderError> {
    let config = Config::load(&cli.config)?;
    for w in &config.warnings {
        eprintln!("ci-builder: warning: {w}");
    }
    match cli.command {
        Command::Audit { json, tag, images } => audit_command(&config, json, tag, images).await,
        Command::Net(cmd) => {
            let network = config.network()?;
            match cmd {
                Net::Up => {
                    let report = net::up(network).await?;
                    for w in &report.warnings {
                        eprintln!("ci-builder: warning: {w}");
                    }
                    if report.changes.is_empty() {
                        println!("{}: nothing to change", network.bridge);
                    }
                    for c in &report.changes {
                        println!("{c}");
                    }
                    Ok(0)
                }
                Net::Down => {
                    let done = net::down(network).await?;
                    if done.is_empty() {
                        println!("{}: nothing to remove", network.bridge);
                    }
                    for d in done {
                        println!("{d}");
                    }
                    Ok(0)
                }
                Net::Status { json } => {
                    let status = net::status(network).await?;
                    if json {
                        let text = serde_json::to_string_pretty(&status)
                            .map_err(|e| BuilderError::Io(e.to_string()))?;
                        println!("{text}");
                    } else {
                        print!("{}", status.table());
                    }
                    Ok(if status.matches { 0 } else { 1 })
                }
                Net::Persist { dir, force } => {
                    for outcome in persist::write(network, &dir, force)? {
                        match outcome {
                            persist::Outcome::Written(p) => println!("wrote {}", p.display()),
                            persist::Outcome::Unchanged(p) => println!("unchanged {}", p.display()),
                            persist::Outcome::Replaced(p) => println!("replaced {}", p.display()),
                        }
                    }
                    Ok(0)
                }
            }
        }
    }
}

async fn audit_command(
    config: &Config,
    json: bool,
    tag: Option<String>,
    mut images: Vec<String>,
) -> Result<u8, BuilderError> {
    let upstream = config.upstream()?;
    let (password, _) =
        pulp_auth_config::credentials::load_password(upstream.password_file.as_deref(), |k| {
            std::env::var_os(k)
        })?;
    let matcher = {
        use secrecy::ExposeSecret;
        std::sync::Arc::new(audit::patterns::Matcher::new(
            &upstream.username,
            password.expose_secret(),
        ))
    };
    drop(password);
    let docker = audit::docker().await?;
    if let Some(tag) = &tag {
        images.extend(audit::images_with_tag(&docker, tag).await?);
    }
    if images.is_empty() {
        return Err(BuilderError::NothingToAudit);
    }
    let mut reports = Vec::new();
    for image in &images {
        reports.push(audit::audit_image(&docker, image, matcher.clone()).await?);
    }
    if json {
        let text =
            serde_json::to_string_pretty(&reports).map_err(|e| BuilderError::Io(e.to_string()))?;
        println!("{text}");
    } else {
        print!("{}", audit::table(&reports));
    }
    Ok(if reports.iter().any(|r| !r.findings.is_empty()) {
        1
    } else {
        0
    })
}

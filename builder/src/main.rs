//! The `ci-builder` binary: parse, load the config, run one command, map
//! the outcome to an exit status (`error::exit`).

use ci_builder::audit;
use ci_builder::build;
use ci_builder::cli::{self, Cli, Command, Net};
use ci_builder::error::{exit, BuilderError};
use ci_builder::fetches;
use ci_builder::net::{self, persist};
use clap::Parser;
use pulp_auth_config::Config;
use secrecy::ExposeSecret;
use std::process::ExitCode;
use std::sync::Arc;

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
            ExitCode::from(e.exit_code())
        }
    }
}

async fn run(cli: Cli) -> Result<u8, BuilderError> {
    let config = Config::load(&cli.config, std::env::vars_os())?;
    for w in &config.warnings {
        eprintln!("ci-builder: warning: {w}");
    }
    match cli.command {
        Command::Audit {
            format,
            json,
            allow_incomplete,
            tag,
            ca_file,
            authfile,
            images,
        } => {
            let format = if json { cli::Format::Json } else { format };
            let access = audit::registry::Access {
                ca_file,
                auth_file: authfile,
            };
            audit_command(&config, format, allow_incomplete, tag, images, &access).await
        }
        Command::Build {
            push,
            distro,
            tag,
            audit,
            allow_incomplete,
            dry_run,
            fetches_dir,
            words,
        } => {
            let req = build::Request {
                words,
                push,
                distro,
                tag,
            };
            let audit = audit.then_some(allow_incomplete);
            build_command(&config, &req, audit, dry_run, &fetches_dir).await
        }
        Command::Fetches(cli::Fetches::Diff { a, b }) => {
            let diff = fetches::diff(&fetches::read(&a)?, &fetches::read(&b)?);
            print!("{}", diff.text(&a, &b));
            Ok(if diff.republished.is_empty() {
                exit::OK
            } else {
                exit::FOUND
            })
        }
        Command::Tags(args) => tags_command(&config, args),
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
                        let text = serde_json::to_string_pretty(&status).map_err(|source| {
                            BuilderError::Json {
                                what: "the network status".into(),
                                source,
                            }
                        })?;
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

/// The matcher for the configured credentials; the password itself is
/// dropped (wiped) as soon as the needles are built.
fn matcher(config: &Config) -> Result<Arc<audit::patterns::Matcher>, BuilderError> {
    let upstream = config.upstream()?;
    let (password, _) =
        pulp_auth_config::credentials::load_password(upstream.password_file.as_deref(), |k| {
            std::env::var_os(k)
        })?;
    Ok(Arc::new(
        audit::patterns::Matcher::new(&upstream.username, password.expose_secret())
            .with_storage_signatures(),
    ))
}

/// Where the proxy answers `/metrics` and `/fetches`.
fn local_endpoints(config: &Config) -> Result<std::net::SocketAddr, BuilderError> {
    let proxy = config.proxy()?;
    Ok(proxy.metrics_listen.unwrap_or(proxy.listen).socket_addr())
}

/// `20261204T190000Z` for a file name.
fn compact_time(t: std::time::SystemTime) -> String {
    humantime::format_rfc3339_seconds(t)
        .to_string()
        .replace(['-', ':'], "")
}

/// Writes the build's fetches after `cursor` to `path`.
async fn write_manifest(
    record: &fetches::Proxy,
    cursor: fetches::Cursor,
    path: &std::path::Path,
) -> Result<fetches::Manifest, String> {
    let manifest = record.since(cursor).await.map_err(|e| e.to_string())?;
    fetches::write(path, &manifest).map_err(|e| e.to_string())?;
    Ok(manifest)
}

/// The summary's lines on the manifest written to `path`.
fn report_manifest(manifest: &fetches::Manifest, path: &std::path::Path) {
    eprintln!(
        "ci-builder: {} fetches through the proxy recorded in {}",
        manifest.fetches.len(),
        path.display()
    );
    if manifest.restarted {
        eprintln!(
            "ci-builder: warning: the proxy restarted during the build; the manifest holds only the fetches since it restarted"
        );
    }
    if manifest.lost > 0 {
        eprintln!(
            "ci-builder: warning: the proxy no longer held {} of this build's fetches; raise proxy.fetch_records",
            manifest.lost
        );
    }
}

/// How the audit searches: the proxy's URL (from `[proxy]`, when the file
/// has it) is looked for in the images' repository files.
fn audit_options(config: &Config) -> audit::archive::Options {
    audit::archive::Options {
        bounds: audit::unpack::BOUNDS,
        proxy: config
            .proxy
            .as_ref()
            .map(|p| pulp_auth_config::http_url(p.listen.socket_addr())),
    }
}

async fn build_command(
    config: &Config,
    req: &build::Request,
    // With --audit: whether an incomplete audit passes.
    audit: Option<bool>,
    dry_run: bool,
    fetches_dir: &std::path::Path,
) -> Result<u8, BuilderError> {
    // The password is only read to recognise it in the caller's
    // environment (and to audit); without it the build still runs.
    let matcher = match matcher(config) {
        Ok(m) => Some(m),
        Err(e) if audit.is_some() => return Err(e),
        Err(_) => None,
    };
    let plan = build::plan(
        config,
        req,
        std::env::vars_os().collect(),
        matcher.as_deref(),
    )?;
    if dry_run {
        println!("{}", plan.command_line());
        for (k, v) in plan
            .env
            .iter()
            .filter(|(k, _)| k == "KAYOBE_CONFIG_PATH" || k == "KAYOBE_ENVIRONMENT")
        {
            println!(
                "sets {}={}",
                k.to_string_lossy(),
                build::shell_quote(&v.to_string_lossy())
            );
        }
        if plan.removed.is_empty() {
            println!("removes no environment variables");
        } else {
            println!("removes from the environment: {}", plan.removed.join(" "));
        }
        if let Some((dir, files)) = &plan.kolla {
            for (name, text) in [
                ("kolla-build.conf", &files.conf),
                ("ci-builder-override.j2", &files.template),
            ] {
                println!("--- {}", dir.path().join(name).display());
                print!("{text}");
            }
        }
        return Ok(0);
    }
    build::preflight(config, &plan).await?;
    if !fetches_dir.is_dir() {
        return Err(BuilderError::NotADirectory(fetches_dir.to_path_buf()));
    }
    // The record is the build's evidence, not a condition of it: a proxy
    // that keeps none gets a warning, never a failed build.
    let record = fetches::Proxy::new(&pulp_auth_config::http_url(local_endpoints(config)?));
    let cursor = match record.cursor().await {
        Ok(c) => Some(c),
        Err(e) => {
            eprintln!("ci-builder: warning: no fetch manifest for this build: {e}");
            None
        }
    };
    eprintln!("ci-builder: running {}", plan.command_line());
    let (started, wall) = (std::time::SystemTime::now(), std::time::Instant::now());
    let finished = build::run(&plan).await?;
    let took = std::time::Duration::from_secs(wall.elapsed().as_secs());
    eprintln!(
        "ci-builder: {} finished in {}, {finished}",
        plan.program,
        humantime::format_duration(took)
    );
    let docker = audit::docker().await?;
    // The build's name: its tag, else when it started.
    let (images, name) = match plan.made(started) {
        build::Made::Tagged(tag) => {
            let images = audit::images_with_tag(&docker, &tag).await?;
            eprintln!("ci-builder: {} images tagged {tag}:", images.len());
            (images, tag)
        }
        build::Made::CreatedSince(since, why) => {
            let images = audit::images_created_since(&docker, since).await?;
            eprintln!(
                "ci-builder: the tag the build used is unknown ({why}); {} images created since the build started:",
                images.len()
            );
            (images, format!("build-{}", compact_time(started)))
        }
    };
    for (image, size) in audit::image_sizes(&docker, &images).await? {
        eprintln!("  {image:<60} {:>8.1} MiB", size as f64 / (1024.0 * 1024.0));
    }
    if let Some(cursor) = cursor {
        let path = fetches_dir.join(fetches::file_name(&name));
        match write_manifest(&record, cursor, &path).await {
            Ok(manifest) => report_manifest(&manifest, &path),
            Err(e) => eprintln!("ci-builder: warning: no fetch manifest for this build: {e}"),
        }
    }
    if let Some(signal) = finished.forwarded {
        // Interrupted: the conventional 128+N of the signal received.
        return Ok(128 + signal as u8);
    }
    if !finished.success() {
        eprintln!(
            "ci-builder: the build failed: {} ended with {finished}",
            plan.program
        );
        return Ok(exit::TOOL_FAILED);
    }
    if let (Some(allow_incomplete), Some(matcher)) = (audit, matcher) {
        let images = audit::local(images);
        let reports = audit::audit_images(
            Some(&docker),
            images,
            &matcher,
            &audit_options(config),
            &audit::registry::Access::default(),
        )
        .await?;
        print!("{}", audit::table(&reports));
        let code = audit::exit_code(&reports, allow_incomplete);
        match code {
            exit::FOUND => eprintln!(
                "ci-builder: the audit found the credentials in an image; the build fails"
            ),
            exit::INCOMPLETE => eprintln!(
                "ci-builder: the audit could not search every file (listed above); the build fails; --allow-incomplete passes it"
            ),
            _ => {}
        }
        return Ok(code);
    }
    Ok(0)
}

async fn audit_command(
    config: &Config,
    format: cli::Format,
    allow_incomplete: bool,
    tag: Option<String>,
    images: Vec<String>,
    access: &audit::registry::Access,
) -> Result<u8, BuilderError> {
    let matcher = matcher(config)?;
    let mut sources = audit::sources(&images)?;
    // Archives and layout directories are read without the daemon.
    let from_daemon =
        |(_, s): &(String, audit::source::Source)| matches!(s, audit::source::Source::Daemon(_));
    let docker = if tag.is_some() || sources.iter().any(from_daemon) {
        Some(audit::docker().await?)
    } else {
        None
    };
    if let (Some(tag), Some(docker)) = (&tag, &docker) {
        let tagged = audit::images_with_tag(docker, tag).await?;
        sources.extend(audit::local(tagged));
    }
    if sources.is_empty() {
        return Err(BuilderError::NothingToAudit);
    }
    let reports = audit::audit_images(
        docker.as_ref(),
        sources,
        &matcher,
        &audit_options(config),
        access,
    )
    .await?;
    let json = match format {
        cli::Format::Table => None,
        cli::Format::Json => Some(serde_json::to_value(&reports)),
        cli::Format::Sarif => Some(Ok(audit::sarif::log(&reports))),
    };
    match json {
        None => print!("{}", audit::table(&reports)),
        Some(value) => {
            let text = value
                .and_then(|v| serde_json::to_string_pretty(&v))
                .map_err(|source| BuilderError::Json {
                    what: "the audit report".into(),
                    source,
                })?;
            println!("{text}");
        }
    }
    Ok(audit::exit_code(&reports, allow_incomplete))
}

fn tags_command(config: &Config, args: cli::Tags) -> Result<u8, BuilderError> {
    let tag = match args.tag {
        Some(tag) => tag,
        None => {
            let conf = ci_builder::kayobe::build_conf_path(
                Some(&args.kayobe_config),
                config.build.environment.as_deref(),
            );
            ci_builder::kayobe::read_tag(&conf, std::time::UNIX_EPOCH)
                .map_err(BuilderError::NoTag)?
        }
    };
    let distro = match args.distro_key {
        Some(d) => d,
        None => ci_builder::tags::distro_key(&tag)?,
    };
    let edit = ci_builder::tags::plan(&args.kayobe_config, &args.key, &distro, &tag)?;
    if edit.before == edit.after {
        println!("{}: already {tag}", edit.path.display());
        return Ok(exit::OK);
    }
    if args.dry_run {
        print!("{}", edit.diff());
        return Ok(exit::OK);
    }
    edit.write()?;
    println!(
        "{}: kolla_image_tags.{}.{distro} = {tag}",
        edit.path.display(),
        args.key
    );
    Ok(exit::OK)
}

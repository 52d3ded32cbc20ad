//! The `ci-builder` binary: sets up the trusted bridge, drives Kolla image
//! builds through pulp-auth-proxy, and audits the images. This version
//! validates the shared configuration; the `net`, `build` and `audit`
//! commands come next.

use clap::Parser;
use pulp_auth_config::Config;
use std::path::PathBuf;
use std::process::ExitCode;

/// Drives Kolla image builds through pulp-auth-proxy, so Pulp credentials
/// never enter an image.
#[derive(Parser)]
#[command(version, about, long_about = None)]
struct Cli {
    /// The configuration file shared with pulp-auth-proxy.
    #[arg(long, value_name = "FILE", default_value = pulp_auth_config::DEFAULT_PATH)]
    config: PathBuf,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match Config::load(&cli.config) {
        Ok(config) => {
            for w in &config.warnings {
                eprintln!("ci-builder: warning: {w}");
            }
            println!("{}: configuration is valid", cli.config.display());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("ci-builder: error: {e}");
            ExitCode::from(78)
        }
    }
}

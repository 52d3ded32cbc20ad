//! The command line: one enum per level; doc comments are the help text.

use clap::{Parser, Subcommand};
use std::path::PathBuf;

/// Drives Kolla image builds through pulp-auth-proxy, so Pulp credentials
/// never enter an image. Exit status: 0 success; 1 credentials found
/// (audit, build --audit) or "differs" (net status); 2 error; 3 a build's
/// preflight check failed; 4 the build tool failed (its status is in the
/// summary); 5 an audit found nothing but could not search everything;
/// 128+N when interrupted by signal N.
#[derive(Parser, Debug)]
#[command(version, about, long_about = None)]
pub struct Cli {
    /// The configuration file shared with pulp-auth-proxy.
    #[arg(long, value_name = "FILE", default_value = pulp_auth_config::DEFAULT_PATH, global = true)]
    pub config: PathBuf,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Top-level commands.
#[derive(Subcommand, Debug)]
pub enum Command {
    /// The trusted bridge of [network] (breth1 with its address and ports).
    #[command(subcommand)]
    Net(Net),
    /// Build Kolla images through pulp-auth-proxy: check the proxy, Docker
    /// and the build tool, run `kayobe <seed|overcloud> container image
    /// build` pointed at the proxy ([build] tool = "kayobe", the default) or
    /// kolla-build with a configuration and template override ci-builder
    /// writes ([build] tool = "kolla-build"), and report the images. Exit
    /// status: 0 built (and clean with --audit), 1 --audit found the
    /// credentials, 2 error, 3 a check failed before the build, 4 the build
    /// tool failed, 5 --audit could not search everything.
    Build {
        /// Push the images after building.
        #[arg(long)]
        push: bool,
        /// Base distribution (rocky, ubuntu or debian): kolla_base_distro
        /// for Kayobe, whose configuration decides without it; kolla-build's
        /// `base`, defaulting to [build] distro, then build.kolla_config's
        /// `base`, then rocky.
        #[arg(long, value_name = "D", value_parser = pulp_auth_config::Distro::parse)]
        distro: Option<pulp_auth_config::Distro>,
        /// Image tag: kolla_tag for Kayobe, whose configuration decides
        /// without it (the builder then reads the tag from the
        /// kolla-build.conf Kayobe wrote); kolla-build's `tag`, defaulting to
        /// build.kolla_config's `tag`, then <base>-<UTC time>.
        #[arg(long, value_name = "TAG")]
        tag: Option<String>,
        /// Audit the built images for the credentials afterwards.
        #[arg(long)]
        audit: bool,
        /// With --audit: pass images the audit could not search through
        /// completely (exit 0, not 5).
        #[arg(long)]
        allow_incomplete: bool,
        /// Print the command, the variables it would remove and (kolla-build)
        /// the files it would give it; run nothing.
        #[arg(long)]
        dry_run: bool,
        /// Where to write the build's fetch manifest, <tag>.fetches.json:
        /// every file the build fetched through the proxy, with its sha256.
        #[arg(long, value_name = "DIR", default_value = ".")]
        fetches_dir: PathBuf,
        /// Kayobe: seed or overcloud, then image name patterns; kolla-build:
        /// image name patterns only.
        #[arg(value_name = "[seed|overcloud] REGEX")]
        words: Vec<String>,
    },
    /// Fetch manifests (<tag>.fetches.json, written by `build`).
    #[command(subcommand)]
    Fetches(Fetches),
    /// Use the new images: set the built tag in the Kayobe configuration's
    /// kolla-image-tags.yml (kolla_image_tags.<KEY>.<distribution>),
    /// changing only that value.
    Tags(Tags),
    /// Search images for the Pulp credentials in every form: config,
    /// history, and every file of every layer, inside compressed files
    /// and archives too. Exit 0 when no image holds them, 1 when one does
    /// (and where), 5 when none was found but a bound (depth, size,
    /// compression ratio) kept a file from being searched through, 2 on
    /// error.
    Audit {
        /// How to print the report: a table, JSON (the schema is in
        /// docs/builder.md), or a SARIF 2.1.0 log for CI.
        #[arg(long, value_enum, default_value = "table")]
        format: Format,
        /// The same as --format json.
        #[arg(long, conflicts_with = "format")]
        json: bool,
        /// Exit 0, not 5, when nothing was found but something could not
        /// be searched through (the report still lists it).
        #[arg(long)]
        allow_incomplete: bool,
        /// Also audit every local image with this tag.
        #[arg(long, value_name = "TAG")]
        tag: Option<String>,
        /// docker:// images: trust this CA (PEM) too, for a private
        /// registry.
        #[arg(long, value_name = "FILE")]
        ca_file: Option<PathBuf>,
        /// docker:// images: the registry credentials from this Docker
        /// config file instead of $DOCKER_CONFIG/config.json or
        /// ~/.docker/config.json (credential helpers included).
        #[arg(long, value_name = "FILE")]
        authfile: Option<PathBuf>,
        /// Images to audit: NAME[:TAG] or ID (the Docker daemon),
        /// docker-archive:PATH, oci-archive:PATH, oci:DIR,
        /// docker://REGISTRY/REPO:TAG or docker://REGISTRY/REPO@DIGEST.
        #[arg(value_name = "IMAGE")]
        images: Vec<String>,
    },
}

/// The `ci-builder tags` arguments.
#[derive(clap::Args, Debug)]
pub struct Tags {
    /// The Kayobe configuration directory (`etc/kayobe`) that holds
    /// kolla-image-tags.yml.
    #[arg(long, value_name = "DIR")]
    pub kayobe_config: PathBuf,
    /// The tag to set; default: the tag of the last build, from the
    /// kolla-build.conf Kayobe wrote.
    #[arg(long, value_name = "TAG")]
    pub tag: Option<String>,
    /// The service key under kolla_image_tags.
    #[arg(long, value_name = "KEY", default_value = "openstack")]
    pub key: String,
    /// The distribution key (e.g. rocky-9); default: read from the tag.
    #[arg(long, value_name = "KEY")]
    pub distro_key: Option<String>,
    /// Print the change as a diff; write nothing.
    #[arg(long)]
    pub dry_run: bool,
}

/// `ci-builder fetches ...`.
#[derive(Subcommand, Debug)]
pub enum Fetches {
    /// Show the files added, removed and changed between two builds'
    /// manifests; a package file (its name holds its version) whose
    /// content changed is flagged: a repository replaced a published
    /// file. Exit 0, 1 when a package file was republished, 2 on error.
    Diff {
        /// The earlier build's <tag>.fetches.json.
        #[arg(value_name = "A")]
        a: PathBuf,
        /// The later build's.
        #[arg(value_name = "B")]
        b: PathBuf,
    },
}

/// `ci-builder net ...`.
#[derive(Subcommand, Debug)]
pub enum Net {
    /// Create the bridge, its dummy ports and its address if missing, and
    /// bring them up. Safe to run again.
    Up,
    /// Remove the ports and the bridge that `up` makes.
    Down,
    /// Show the bridge, ports and addresses; exit 1 if they differ from the
    /// configuration.
    Status {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Write systemd-networkd files that recreate the bridge at boot.
    Persist {
        /// Where to write (e.g. /etc/systemd/network).
        #[arg(long, value_name = "DIR")]
        dir: PathBuf,
        /// Replace files that exist with other content.
        #[arg(long)]
        force: bool,
    },
}

/// How `ci-builder audit` prints its report.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// One row per finding, for people.
    Table,
    /// Every report as JSON.
    Json,
    /// A SARIF 2.1.0 log.
    Sarif,
}

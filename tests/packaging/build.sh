#!/usr/bin/env bash
# Builds the release binaries and the packages from them:
#   target/debian/pulp-auth-proxy_<version>-1_amd64.deb     (cargo-deb)
#   target/generate-rpm/pulp-auth-proxy-<version>-1.x86_64.rpm (cargo-generate-rpm)
# The packaging tools are installed (pinned) into the tests' cache outside
# the checkout the first time, so a fresh clone on the same machine
# reuses them. Run by tests/run before the tests, which inspect the
# packages (tests/tests/packages.rs).
set -euo pipefail
cd "$(dirname "$0")/../.."
cache=/var/tmp/pulp-auth-proxy-tests-cache
tool() { # crate version -> path of its binary, installed once
    local dir=$cache/$1-$2
    mkdir -p "$cache"
    (
        flock 9
        if [[ ! -f $dir/.complete ]]; then
            rm -rf "$dir"
            echo "packaging: installing $1 $2 into $dir" >&2
            cargo install --locked --quiet --root "$dir" "$1" --version "$2" >&2
            touch "$dir/.complete"
        fi
    ) 9>"$dir.lock"
    echo "$dir/bin/$1"
}
deb=$(tool cargo-deb 3.7.0)
rpm=$(tool cargo-generate-rpm 0.19.0)
cargo build --release --workspace --bins --locked
rm -rf target/debian target/generate-rpm
"$deb" -p pulp-auth-proxy --no-build --quiet
"$rpm" -p proxy
ls target/debian/*.deb target/generate-rpm/*.rpm

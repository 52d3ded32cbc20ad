#!/usr/bin/env bash
# Benchmark: the package-manager workload of one image build (APT in a
# docker build, dnf into a fresh root), repeated N times against the real
# Pulp fixture on S3, through nginx as deployed today, pulp-auth-proxy
# without cache, and pulp-auth-proxy with cache. Wall time, bytes from
# Pulp and from the object store, and front-end CPU, with ratios against
# nginx-deployed from the same run (tests/examples/pulp_build.rs).
#
#   tests/bench/build-through-pulp.sh [N, default 10]
set -euo pipefail
cd "$(dirname "$0")/../.."
reps=${1:-10}
[[ $reps =~ ^[1-9][0-9]*$ ]] || { echo "$0: the argument is the number of repetitions (a positive integer), not '$reps'" >&2; exit 2; }
[[ $(id -u) -eq 0 ]] || { echo "$0: needs root (network namespaces, Docker, Pulp's PostgreSQL cluster)" >&2; exit 2; }
# The Pulp tier's packages and a Docker daemon, as the tests get them.
source tests/host-setup.sh
command -v nginx >/dev/null || {
    echo "$0: installing nginx-light"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx-light >/dev/null
}
cargo build --release --workspace --bins --locked
cargo build --release -p e2e --example pulp_build --locked
target/release/examples/pulp_build "$reps"

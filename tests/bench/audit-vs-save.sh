#!/usr/bin/env bash
# Benchmark: `ci-builder audit IMAGE` against `docker save IMAGE > /dev/null`
# on the same machine, same run, for a 1 GiB image (random content, so
# nothing compresses or matches). Target: audit <= 1.5x save.
#
#   cargo build --release --workspace --bins
#   tests/bench/audit-vs-save.sh [MiB, default 1024] [runs, default 3]
set -euo pipefail
cd "$(dirname "$0")/../.."
mib=${1:-1024}
runs=${2:-3}
bin=target/release/ci-builder
[[ -x $bin ]] || { echo "build first: cargo build --release --workspace --bins" >&2; exit 2; }
docker info >/dev/null 2>&1 || { echo "no Docker daemon answers" >&2; exit 2; }

work=$(mktemp -d)
image="pap-bench-audit:$$"
cleanup() { docker rmi -f "$image" >/dev/null 2>&1 || true; rm -rf "$work"; }
trap cleanup EXIT

head -c "$((mib * 1024 * 1024))" /dev/urandom > "$work/blob"
printf 'FROM scratch\nCOPY blob /data/blob\n' > "$work/Dockerfile"
docker build -q --network host -t "$image" "$work" >/dev/null
rm -f "$work/blob"
printf 'fake bench pass:@/%%+ word\n' > "$work/pw"
chmod 600 "$work/pw"
cat > "$work/config.toml" <<TOML
[upstream]
url = "https://pulp.example.test"
username = "ci-user"
password_file = "$work/pw"
TOML

seconds() { local s e; s=$(date +%s.%N); "$@" >/dev/null; e=$(date +%s.%N); echo "$e - $s" | bc; }
median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

save=(); audit=()
for _ in $(seq "$runs"); do
    # Interleaved, so both see the same page-cache and machine state.
    save+=("$(seconds sh -c "docker save '$image' > /dev/null")")
    audit+=("$(seconds "$bin" --config "$work/config.toml" audit "$image")")
done
s=$(printf '%s\n' "${save[@]}" | median)
a=$(printf '%s\n' "${audit[@]}" | median)
printf 'image: %s MiB, runs: %s\n' "$mib" "$runs"
printf 'docker save > /dev/null  median %6.2f s  (%s)\n' "$s" "${save[*]}"
printf 'ci-builder audit         median %6.2f s  (%s)\n' "$a" "${audit[*]}"
printf 'ratio audit/save: %.2f (target <= 1.5)\n' "$(echo "$a / $s" | bc -l)"

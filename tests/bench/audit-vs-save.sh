#!/usr/bin/env bash
# Benchmark: `ci-builder audit` against the tools that read the same bytes,
# on the same machine, in the same run, for an image of one file of random
# content (nothing compresses or matches):
#   daemon    `ci-builder audit IMAGE` against `docker save IMAGE > /dev/null`
#             (target: audit <= 1.1x save)
#   registry  `ci-builder audit docker://...` against
#             `skopeo copy docker://... dir:` (target: audit <= 1.2x copy),
#             from Debian's docker-registry on 127.0.0.1 with TLS
# Runs are interleaved; medians are printed with the peak RSS of each
# audit (memory must stay flat whatever the image's size).
#
#   cargo build --release --workspace --bins
#   tests/bench/audit-vs-save.sh [MiB, default 1024] [runs, default 3]
set -euo pipefail
cd "$(dirname "$0")/../.."
source tests/bench/certs.sh
mib=${1:-1024}
runs=${2:-3}
bin=$PWD/target/release/ci-builder
[[ -x $bin ]] || { echo "build first: cargo build --release --workspace --bins" >&2; exit 2; }
docker info >/dev/null 2>&1 || { echo "no Docker daemon answers" >&2; exit 2; }
for tool in skopeo docker-registry openssl bc /usr/bin/time; do
    command -v "$tool" >/dev/null || { echo "$0: needs $tool (tests/host-setup.sh installs skopeo and docker-registry; time and bc are Debian's)" >&2; exit 2; }
done

work=$(mktemp -d)
image="pap-bench-audit:$$"
registry_pid=
cleanup() {
    [[ -n $registry_pid ]] && kill "$registry_pid" 2>/dev/null || true
    docker rmi -f "$image" >/dev/null 2>&1 || true
    rm -rf "$work"
}
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

# The registry: a leaf for 127.0.0.1 from a throwaway CA, no auth.
cd "$work"
bench_certs
mkdir certs.d && cp ca.pem certs.d/ca.crt
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
cat > registry.yml <<YML
version: 0.1
log:
  level: error
storage:
  filesystem:
    rootdirectory: $work/registry
http:
  addr: 127.0.0.1:$port
  tls:
    certificate: $work/leaf.pem
    key: $work/leaf.key
YML
docker-registry serve registry.yml >registry.log 2>&1 &
registry_pid=$!
for _ in $(seq 100); do
    curl -fsS --cacert ca.pem "https://127.0.0.1:$port/v2/" >/dev/null 2>&1 && break
    sleep 0.1
done
ref="127.0.0.1:$port/bench/audit:1"
skopeo copy -q --dest-cert-dir certs.d "docker-daemon:$image" "docker://$ref"
cd - >/dev/null

# Wall seconds and peak RSS (KiB) of a command; its output is dropped.
measure() { /usr/bin/time -f '%e %M' -o "$work/time" "$@" >/dev/null; cat "$work/time"; }
median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

declare -A t
for _ in $(seq "$runs"); do
    read -r s _ <<<"$(measure sh -c "docker save '$image' > /dev/null")"; t[save]+="$s "
    read -r s m <<<"$(measure "$bin" --config "$work/config.toml" audit "$image")"; t[audit]+="$s "; t[audit_rss]+="$m "
    rm -rf "$work/copy"
    read -r s _ <<<"$(measure skopeo copy -q --src-cert-dir "$work/certs.d" "docker://$ref" "dir:$work/copy")"; t[copy]+="$s "
    rm -rf "$work/copy"
    read -r s m <<<"$(measure "$bin" --config "$work/config.toml" audit --ca-file "$work/ca.pem" "docker://$ref")"
    t[raudit]+="$s "; t[raudit_rss]+="$m "
done
med() { tr ' ' '\n' | grep -v '^$' | median; }
s=$(med <<<"${t[save]}"); a=$(med <<<"${t[audit]}"); c=$(med <<<"${t[copy]}"); r=$(med <<<"${t[raudit]}")
printf 'image: %s MiB, runs: %s (medians; all runs in brackets)\n' "$mib" "$runs"
printf 'docker save > /dev/null            %7.2f s  (%s)\n' "$s" "${t[save]}"
printf 'ci-builder audit IMAGE             %7.2f s  (%s)  peak RSS %s MiB\n' "$a" "${t[audit]}" "$(( $(med <<<"${t[audit_rss]}") / 1024 ))"
printf 'skopeo copy docker://... dir:      %7.2f s  (%s)\n' "$c" "${t[copy]}"
printf 'ci-builder audit docker://...      %7.2f s  (%s)  peak RSS %s MiB\n' "$r" "${t[raudit]}" "$(( $(med <<<"${t[raudit_rss]}") / 1024 ))"
printf 'ratio audit/save:  %.2f (target <= 1.1)\n' "$(echo "$a / $s" | bc -l)"
printf 'ratio audit/skopeo: %.2f (target <= 1.2)\n' "$(echo "$r / $c" | bc -l)"

#!/usr/bin/env bash
# Benchmark: pulp-auth-proxy against what users would run instead, all on
# loopback, interleaved in one run with repetitions and medians.
#
# Upstream: Debian's nginx over HTTPS with auth_basic, serving files of
# 1 KiB, 64 KiB, 4 MiB and 256 MiB. In front of it, in turn:
#   direct          the client talks to the upstream itself (with the header)
#   nginx-deployed  nginx as the existing Ansible role configures it:
#                   proxy_pass + proxy_set_header Authorization, no upstream keepalive
#   nginx-tuned     the same with upstream keepalive and HTTP/1.1
#   pulp-auth-proxy this project (release build)
#   pulp-auth-proxy-before  with BEFORE_BIN=/path/to/pulp-auth-proxy: an
#                   older build of this project, same config, same run, so
#                   a change's cost is measured against the same machine
#                   state
#   pulp-auth-proxy-unrecorded  with RECORD_COST=1: this build with
#                   proxy.fetch_records = 0 (no fetch record, no sha256 of
#                   bodies), so the record's cost is the difference
# Measures: small-file requests/s and p50/p99 latency at 64 connections
# (wrk), 4 MiB files at 8 concurrent clients (MB/s), one 256 MiB stream
# (MB/s), the front end's peak RSS and CPU seconds per GiB streamed.
#
#   cargo build --release --workspace --bins
#   tests/bench/proxy-vs-nginx.sh            # REPS=3 DUR=8 by default
#   BEFORE_BIN=/path/to/old/pulp-auth-proxy tests/bench/proxy-vs-nginx.sh
#   RECORD_COST=1 tests/bench/proxy-vs-nginx.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
source tests/bench/certs.sh
REPS=${REPS:-3}
DUR=${DUR:-8}
# PROXY_BIN= for a build elsewhere (a CARGO_TARGET_DIR of its own).
proxy_bin=$(realpath -m "${PROXY_BIN:-$PWD/target/release/pulp-auth-proxy}")
[[ -x $proxy_bin ]] || { echo "build first: cargo build --release --workspace --bins (or set PROXY_BIN=)" >&2; exit 2; }
before_bin=${BEFORE_BIN:-}
if [[ -n $before_bin ]]; then
    [[ -x $before_bin ]] || { echo "BEFORE_BIN=$before_bin is not an executable; point it at an older pulp-auth-proxy build" >&2; exit 2; }
    before_bin=$(realpath "$before_bin")
fi
for tool in nginx wrk curl openssl bc; do
    command -v "$tool" >/dev/null || {
        [[ $(id -u) -eq 0 ]] || { echo "$0: needs nginx-light wrk curl openssl bc" >&2; exit 2; }
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx-light wrk curl openssl bc >/dev/null
    }
done

work=$(mktemp -d)
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    for f in "$work"/*.pid; do [[ -f $f ]] && kill "$(cat "$f")" 2>/dev/null || true; done
    sleep 0.5
    rm -rf "$work"
}
trap cleanup EXIT
cd "$work"

# Certificates: a CA and a leaf for 127.0.0.1.
bench_certs

mkdir -p www/pulp/content/bench
for f in 1k:1024 64k:65536 4m:4194304 256m:268435456; do
    head -c "${f#*:}" /dev/urandom > "www/pulp/content/bench/${f%%:*}"
done
user=ci-user
pw='fake bench pass:@/%+ word'
printf '%s:%s\n' "$user" "$(openssl passwd -apr1 "$pw")" > htpasswd
printf '%s\n' "$pw" > pw
chmod 600 pw
# nginx workers run unprivileged: they must read the files and htpasswd.
chmod 755 "$work"
chmod -R a+rX www htpasswd
auth="Basic $(printf '%s' "$user:$pw" | base64 -w0)"

nginx_conf() { # name port server-block
    cat > "$1.conf" <<EOF
worker_processes 2;
pid $work/$1.pid;
error_log $work/$1.err warn;
events { worker_connections 4096; }
http {
    access_log off;
    sendfile on;
    keepalive_requests 1000000;
    client_body_temp_path $work/tmp-$1;
    proxy_temp_path $work/ptmp-$1;
    $3
}
EOF
    mkdir -p "tmp-$1" "ptmp-$1"
    nginx -c "$work/$1.conf" -p "$work"
}

nginx_conf upstream 18443 "
    server {
        listen 127.0.0.1:18443 ssl;
        ssl_certificate $work/leaf.pem;
        ssl_certificate_key $work/leaf.key;
        ssl_protocols TLSv1.2 TLSv1.3;
        root $work/www;
        location /pulp/content/ { auth_basic pulp; auth_basic_user_file $work/htpasswd; }
    }"
nginx_conf deployed 18081 "
    server {
        listen 127.0.0.1:18081;
        location / {
            proxy_pass https://127.0.0.1:18443;
            proxy_set_header Host 127.0.0.1:18443;
            proxy_set_header Authorization \"$auth\";
            proxy_ssl_server_name on;
            proxy_ssl_protocols TLSv1.2;
        }
    }"
nginx_conf tuned 18082 "
    upstream pulp { server 127.0.0.1:18443; keepalive 64; }
    server {
        listen 127.0.0.1:18082;
        location / {
            proxy_pass https://pulp;
            proxy_http_version 1.1;
            proxy_set_header Connection \"\";
            proxy_set_header Host 127.0.0.1:18443;
            proxy_set_header Authorization \"$auth\";
            proxy_ssl_server_name on;
            proxy_ssl_name 127.0.0.1;
        }
    }"
cat > proxy.toml <<EOF
[proxy]
listen = "127.0.0.1:18083"
log_level = "${PROXY_LOG_LEVEL:-info}"
[upstream]
url = "https://127.0.0.1:18443"
username = "$user"
password_file = "$work/pw"
ca_file = "$work/ca.pem"
EOF
# As the shipped systemd unit runs it (Environment=MALLOC_ARENA_MAX=2);
# MALLOC_ARENA_MAX= (empty) in the caller's environment measures glibc's
# default of one arena per thread instead.
MALLOC_ARENA_MAX=${MALLOC_ARENA_MAX-2} "$proxy_bin" --config proxy.toml 2>proxy.log &
proxy_pid=$!
pids+=("$proxy_pid")
unrecorded_pid=
if [[ -n ${RECORD_COST:-} ]]; then
    sed -e 's/^listen = "127.0.0.1:18083"$/listen = "127.0.0.1:18085"/' -e 's/^\[upstream\]$/fetch_records = 0\n[upstream]/' \
        proxy.toml >proxy-unrecorded.toml
    MALLOC_ARENA_MAX=${MALLOC_ARENA_MAX-2} "$proxy_bin" --config proxy-unrecorded.toml 2>proxy-unrecorded.log &
    unrecorded_pid=$!
    pids+=("$unrecorded_pid")
fi
before_pid=
if [[ -n $before_bin ]]; then
    sed 's/^listen = "127.0.0.1:18083"$/listen = "127.0.0.1:18084"/' proxy.toml >proxy-before.toml
    MALLOC_ARENA_MAX=${MALLOC_ARENA_MAX-2} "$before_bin" --config proxy-before.toml 2>proxy-before.log &
    before_pid=$!
    pids+=("$before_pid")
fi
sleep 1

declare -A base=([direct]=https://127.0.0.1:18443 [nginx-deployed]=http://127.0.0.1:18081
    [nginx-tuned]=http://127.0.0.1:18082 [pulp-auth-proxy]=http://127.0.0.1:18083
    [pulp-auth-proxy-before]=http://127.0.0.1:18084 [pulp-auth-proxy-unrecorded]=http://127.0.0.1:18085)
targets=(direct nginx-deployed nginx-tuned pulp-auth-proxy)
[[ -n $before_bin ]] && targets+=(pulp-auth-proxy-before)
[[ -n $unrecorded_pid ]] && targets+=(pulp-auth-proxy-unrecorded)
path=/pulp/content/bench
curl -fsS --cacert ca.pem -H "Authorization: $auth" -o /dev/null https://127.0.0.1:18443$path/1k
for t in "${targets[@]:1}"; do
    curl -fsS -o /dev/null "${base[$t]}$path/1k" || { echo "$t does not serve $path/1k; its log:" >&2; cat ./*.err proxy*.log >&2; exit 1; }
done

# PIDs whose CPU and memory count for a front end.
front_pids() {
    case $1 in
        nginx-deployed) echo "$(cat deployed.pid) $(pgrep -P "$(cat deployed.pid)" | tr '\n' ' ')" ;;
        nginx-tuned) echo "$(cat tuned.pid) $(pgrep -P "$(cat tuned.pid)" | tr '\n' ' ')" ;;
        pulp-auth-proxy) echo "$proxy_pid" ;;
        pulp-auth-proxy-before) echo "$before_pid" ;;
        pulp-auth-proxy-unrecorded) echo "$unrecorded_pid" ;;
        *) echo "" ;;
    esac
}
cpu_ticks() { local s=0; for p in $(front_pids "$1"); do s=$((s + $(awk '{print $14 + $15}' "/proc/$p/stat"))); done; echo $s; }
rss_kib() { local s=0; for p in $(front_pids "$1"); do s=$((s + $(awk '/VmHWM/ {print $2}' "/proc/$p/status"))); done; echo $s; }
hz=$(getconf CLK_TCK)

to_ms() { # 1.23ms / 456.00us / 1.20s
    local v=$1
    case $v in
        *us) echo "${v%us} / 1000" | bc -l ;;
        *ms) echo "${v%ms}" ;;
        *s) echo "${v%s} * 1000" | bc -l ;;
    esac
}
to_mb() { # 123.45MB / 1.2GB / 512.00KB
    local v=$1
    case $v in
        *GB) echo "${v%GB} * 1024" | bc -l ;;
        *MB) echo "${v%MB}" ;;
        *KB) echo "${v%KB} / 1024" | bc -l ;;
        *B) echo "${v%B} / 1048576" | bc -l ;;
    esac
}
wrk_run() { # target conns file -> "rps p50ms p99ms MBps"
    local t=$1 c=$2 f=$3 out hdr=()
    [[ $t == direct ]] && hdr=(-H "Authorization: $auth")
    out=$(wrk -t2 -c"$c" -d"${DUR}s" --latency "${hdr[@]}" "${base[$t]}$path/$f" 2>&1)
    local rps p50 p99 tps
    rps=$(awk '/Requests\/sec/ {print $2}' <<<"$out")
    p50=$(awk '$1 == "50%" {print $2}' <<<"$out")
    p99=$(awk '$1 == "99%" {print $2}' <<<"$out")
    tps=$(awk '/Transfer\/sec/ {print $2}' <<<"$out")
    if grep -q "Non-2xx" <<<"$out"; then echo "warning: $t $f had non-2xx answers" >&2; fi
    echo "$rps $(to_ms "$p50") $(to_ms "$p99") $(to_mb "$tps")"
}
stream_run() { # target -> "MBps cpu_s_per_GiB"
    local t=$1 before after speed extra=()
    [[ $t == direct ]] && extra=(--cacert ca.pem -H "Authorization: $auth")
    before=$(cpu_ticks "$t")
    speed=$(curl -fsS "${extra[@]}" -o /dev/null -w '%{speed_download}' "${base[$t]}$path/256m")
    after=$(cpu_ticks "$t")
    echo "$(echo "$speed / 1048576" | bc -l) $(echo "($after - $before) / $hz * 4" | bc -l)"
}

declare -A samples
for rep in $(seq "$REPS"); do
    for t in "${targets[@]}"; do
        echo "rep $rep/$REPS: $t" >&2
        read -r rps p50 p99 _ <<<"$(wrk_run "$t" 64 1k)"
        samples[$t,rps1k]+="$rps "; samples[$t,p50_1k]+="$p50 "; samples[$t,p99_1k]+="$p99 "
        read -r rps p50 p99 _ <<<"$(wrk_run "$t" 64 64k)"
        samples[$t,rps64k]+="$rps "; samples[$t,p50_64k]+="$p50 "; samples[$t,p99_64k]+="$p99 "
        read -r _ _ _ mbps <<<"$(wrk_run "$t" 8 4m)"
        samples[$t,mb4m]+="$mbps "
        read -r mbps cpu <<<"$(stream_run "$t")"
        samples[$t,mb256]+="$mbps "; samples[$t,cpu]+="$cpu "
    done
done
for t in "${targets[@]:1}"; do samples[$t,rss]=$(echo "$(rss_kib "$t") / 1024" | bc -l); done
samples[direct,rss]=0

median() { tr ' ' '\n' | grep -v '^$' | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
val() { if [[ $2 == rss ]]; then echo "${samples[$1,rss]}"; else echo "${samples[$1,$2]}" | median; fi; }

# With BEFORE_BIN, two more columns: the older build, and this build
# relative to it.
if [[ -n $before_bin ]]; then
    printf '\n%-28s %12s %15s %12s %16s %23s %9s %9s %9s\n' metric direct nginx-deployed nginx-tuned pulp-auth-proxy pulp-auth-proxy-before "vs tuned" "vs direct" "vs before"
else
    printf '\n%-28s %12s %15s %12s %16s %9s %9s\n' metric direct nginx-deployed nginx-tuned pulp-auth-proxy "vs tuned" "vs direct"
fi
ratio() { if [[ $(echo "$2 > 0" | bc) == 1 ]]; then printf '%.2fx' "$(echo "$1 / $2" | bc -l)"; else echo -; fi; }
row() { # key label
    local d n t p b
    d=$(val direct "$1"); n=$(val nginx-deployed "$1"); t=$(val nginx-tuned "$1"); p=$(val pulp-auth-proxy "$1")
    if [[ -n $before_bin ]]; then
        b=$(val pulp-auth-proxy-before "$1")
        printf '%-28s %12.2f %15.2f %12.2f %16.2f %23.2f %9s %9s %9s\n' "$2" "$d" "$n" "$t" "$p" "$b" \
            "$(ratio "$p" "$t")" "$(ratio "$p" "$d")" "$(ratio "$p" "$b")"
    else
        printf '%-28s %12.2f %15.2f %12.2f %16.2f %9s %9s\n' "$2" "$d" "$n" "$t" "$p" \
            "$(ratio "$p" "$t")" "$(ratio "$p" "$d")"
    fi
}
row rps1k "1 KiB req/s (64 conns)"
row p50_1k "1 KiB p50 ms"
row p99_1k "1 KiB p99 ms"
row rps64k "64 KiB req/s (64 conns)"
row p50_64k "64 KiB p50 ms"
row p99_64k "64 KiB p99 ms"
row mb4m "4 MiB MB/s (8 clients)"
row mb256 "256 MiB stream MB/s"
row cpu "CPU s per GiB (front end)"
row rss "peak RSS MiB (front end)"
if [[ -n $unrecorded_pid ]]; then
    printf '\nThe fetch record (sha256 of every body): with it / without it (proxy.fetch_records = 0)\n'
    for k in "rps1k:1 KiB req/s" "p99_1k:1 KiB p99 ms" "mb256:256 MiB stream MB/s" "cpu:CPU s per GiB" "rss:peak RSS MiB"; do
        w=$(val pulp-auth-proxy "${k%%:*}"); o=$(val pulp-auth-proxy-unrecorded "${k%%:*}")
        printf '%-28s %12.3f %12.3f %9s\n' "${k#*:}" "$w" "$o" "$(ratio "$w" "$o")"
    done
fi
printf '\nreps=%s, wrk duration %ss, medians; CPU per GiB from the 256 MiB stream.\n' "$REPS" "$DUR"
printf 'Targets: req/s >= 1.0x tuned (1 KiB, 64 KiB); p99 <= tuned; 4 MiB >= 1.0x tuned; stream >= 0.9x direct; RSS <= 32 MiB; CPU/GiB <= tuned.\n'

#!/usr/bin/env bash
# Benchmark: pulp-auth-proxy against what users would run instead, all on
# loopback, interleaved rounds in one run, medians, ratios against tuned
# nginx measured in the same run, and the goals each ratio is held to.
#
# The host is laid out as a build host is: the upstream (Debian's nginx
# over HTTPS with auth_basic, one worker) on CPU 0; the front end under
# test and its client (wrk -t1, curl) together on CPU 1. In front of the
# upstream, in turn:
#   direct          the client talks to the upstream itself (with the header)
#   nginx-deployed  nginx as the existing Ansible role configures it:
#                   proxy_pass + proxy_set_header Authorization, no upstream
#                   keepalive, TLS 1.2, no verification
#   nginx-tuned     the same with upstream keepalive, HTTP/1.1, verified TLS
#   pulp-auth-proxy this project (release build), started as a user would,
#                   with no extra environment (MALLOC_ARENA_MAX unset)
# Optional targets, same config on their own ports:
#   BEFORE_BIN=/path/to/pulp-auth-proxy   an older build (pulp-auth-proxy-before)
#   FEATURES=1   the per-feature costs: this build with proxy.fetch_records
#                = 0 (no fetch record, no sha256 of bodies), and requests
#                for files the upstream redirects to a storage server
#                (a second nginx block on CPU 0) that the proxy follows
#
#   cargo build --release --workspace --bins
#   tests/bench/proxy-vs-nginx.sh            # REPS=4 DUR=6 by default
set -euo pipefail
cd "$(dirname "$0")/../.."
source tests/bench/certs.sh
REPS=${REPS:-4}
DUR=${DUR:-6}
proxy_bin=$(realpath -m "${PROXY_BIN:-$PWD/target/release/pulp-auth-proxy}")
[[ -x $proxy_bin ]] || { echo "build first: cargo build --release --workspace --bins (or set PROXY_BIN=)" >&2; exit 2; }
before_bin=${BEFORE_BIN:-}
if [[ -n $before_bin ]]; then
    [[ -x $before_bin ]] || { echo "BEFORE_BIN=$before_bin is not an executable; point it at an older pulp-auth-proxy build" >&2; exit 2; }
    before_bin=$(realpath "$before_bin")
fi
[[ $(nproc --all) -ge 2 ]] || { echo "$0: needs 2 CPUs (upstream on CPU 0, front end and client on CPU 1)" >&2; exit 2; }
for tool in nginx wrk curl openssl bc taskset; do
    command -v "$tool" >/dev/null || {
        [[ $(id -u) -eq 0 ]] || { echo "$0: needs nginx-light wrk curl openssl bc util-linux" >&2; exit 2; }
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx-light wrk curl openssl bc >/dev/null
    }
done

work=$(mktemp -d)
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    for f in "$work"/*.pid; do [[ -f $f ]] && kill "$(cat "$f")" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT
cd "$work"
bench_certs

mkdir -p www/pulp/content/bench www/bucket
for f in 1k:1024 64k:65536 4m:4194304 256m:268435456; do
    head -c "${f#*:}" /dev/urandom > "www/pulp/content/bench/${f%%:*}"
done
ln www/pulp/content/bench/1k www/bucket/1k
for f in 64k 4m 256m; do ln www/pulp/content/bench/$f www/bucket/$f; done
user=ci-user
pw='fake bench pass:@/%+ word'
# {SHA}, not apr1: apr1 runs 1000 MD5 rounds per request, which saturated
# CPU 0 and held every front end to the same ~4700 req/s while CPU 1 idled.
printf '%s:{SHA}%s\n' "$user" "$(printf '%s' "$pw" | openssl dgst -sha1 -binary | base64)" > htpasswd
printf '%s\n' "$pw" > pw
chmod 600 pw
# nginx workers run unprivileged: they must read the files and htpasswd.
chmod 755 "$work"
chmod -R a+rX www htpasswd
auth="Basic $(printf '%s' "$user:$pw" | base64 -w0)"

nginx_conf() { # name cpu server-block
    cat > "$1.conf" <<EOF
worker_processes 1;
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
    taskset -c "$2" nginx -c "$work/$1.conf" -p "$work"
}

# The upstream, and the storage server its redirects point at (a
# presigned-looking URL: the proxy must follow it without the header).
nginx_conf upstream 0 "
    server {
        listen 127.0.0.1:18443 ssl;
        ssl_certificate $work/leaf.pem;
        ssl_certificate_key $work/leaf.key;
        ssl_protocols TLSv1.2 TLSv1.3;
        root $work/www;
        location /pulp/content/ { auth_basic pulp; auth_basic_user_file $work/htpasswd; }
        # As Pulp does: the credentials are checked, then the answer is
        # a redirect (try_files runs after the access phase; return and
        # rewrite would run before it).
        location ~ ^/pulp/content/redirect/(?<file>.+)\$ {
            auth_basic pulp; auth_basic_user_file $work/htpasswd;
            try_files /.none @storage;
        }
        location @storage { return 302 https://127.0.0.1:18444/bucket/\$file?X-Amz-Signature=fake-bench-signature; }
    }
    server {
        listen 127.0.0.1:18444 ssl;
        ssl_certificate $work/leaf.pem;
        ssl_certificate_key $work/leaf.key;
        root $work/www;
    }"
nginx_conf deployed 1 "
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
nginx_conf tuned 1 "
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
            proxy_ssl_verify on;
            proxy_ssl_trusted_certificate $work/ca.pem;
        }
    }"
proxy_conf() { # port extra-proxy-lines
    cat <<EOF
[proxy]
listen = "127.0.0.1:$1"
$2
[upstream]
url = "https://127.0.0.1:18443"
username = "$user"
password_file = "$work/pw"
ca_file = "$work/ca.pem"
redirect_hosts = ["127.0.0.1"]
EOF
}
start_proxy() { # name bin port extra -> pid in $started
    proxy_conf "$3" "$4" > "$1.toml"
    env -u MALLOC_ARENA_MAX taskset -c 1 "$2" --config "$1.toml" 2>"$1.log" &
    started=$!
    pids+=("$started")
}
declare -A base=([direct]=https://127.0.0.1:18443 [nginx-deployed]=http://127.0.0.1:18081
    [nginx-tuned]=http://127.0.0.1:18082)
declare -A pid_of
targets=(direct nginx-deployed nginx-tuned pulp-auth-proxy)
start_proxy pulp-auth-proxy "$proxy_bin" 18083 ""
pid_of[pulp-auth-proxy]=$started base[pulp-auth-proxy]=http://127.0.0.1:18083
if [[ -n $before_bin ]]; then
    start_proxy pulp-auth-proxy-before "$before_bin" 18084 ""
    pid_of[pulp-auth-proxy-before]=$started base[pulp-auth-proxy-before]=http://127.0.0.1:18084
    targets+=(pulp-auth-proxy-before)
fi
if [[ -n ${FEATURES:-} ]]; then
    start_proxy unrecorded "$proxy_bin" 18085 "fetch_records = 0"
    pid_of[unrecorded]=$started base[unrecorded]=http://127.0.0.1:18085
    # The same proxy, asked for the redirected paths.
    base[redirected]=http://127.0.0.1:18083
    targets+=(unrecorded redirected)
fi
path_of() { if [[ $1 == redirected ]]; then echo /pulp/content/redirect; else echo /pulp/content/bench; fi; }

for _ in $(seq 50); do
    curl -fsS -o /dev/null "${base[pulp-auth-proxy]}/pulp/content/bench/1k" 2>/dev/null && break
    sleep 0.1
done
curl -fsS --cacert ca.pem -H "Authorization: $auth" -o /dev/null https://127.0.0.1:18443/pulp/content/bench/1k
for t in "${targets[@]:1}"; do
    curl -fsS -o /dev/null "${base[$t]}$(path_of "$t")/1k" || { echo "$t does not serve $(path_of "$t")/1k; the logs:" >&2; cat ./*.err ./*.log >&2; exit 1; }
done

if [[ -n ${FEATURES:-} ]]; then
    grep -q 'path=/pulp/content/redirect/1k status=200 .*storage=127.0.0.1' pulp-auth-proxy.log ||
        { echo "the proxy did not follow the upstream's redirect; its log:" >&2; cat pulp-auth-proxy.log >&2; exit 1; }
fi

# PIDs whose CPU and memory count for a front end.
front_pids() {
    case $1 in
        nginx-deployed | nginx-tuned) local f=${1#nginx-}.pid; echo "$(cat "$f") $(pgrep -P "$(cat "$f")" | tr '\n' ' ')" ;;
        redirected) echo "${pid_of[pulp-auth-proxy]}" ;;
        direct) echo "" ;;
        *) echo "${pid_of[$1]}" ;;
    esac
}
ticks_of() { local s=0; for p in "$@"; do s=$((s + $(awk '{print $14 + $15}' "/proc/$p/stat"))); done; echo $s; }
cpu_ticks() { ticks_of $(front_pids "$1"); }
status_kib() { local s=0; for p in $(front_pids "$1"); do s=$((s + $(awk -v k="$2:" '$1 == k {print $2}' "/proc/$p/${3:-status}"))); done; echo $s; }
hz=$(getconf CLK_TCK)
# Everything this run starts, for the foreign-CPU check.
all_pids() { for t in nginx-deployed nginx-tuned "${!pid_of[@]}"; do front_pids "$t"; done; cat upstream.pid; pgrep -P "$(cat upstream.pid)"; }
# user + nice + system: interrupt time is not charged to any process.
busy_ticks() { awk '/^cpu / {print $2 + $3 + $4}' /proc/stat; }
total_ticks() { awk '/^cpu / {print $2 + $3 + $4 + $5 + $6 + $7 + $8}' /proc/stat; }
child_ticks() { # user+sys of this shell's reaped children (wrk, curl), in ticks
    local t; t=$(times | tail -1)
    echo "$t" | awk -v hz="$hz" '{ s = 0; for (i = 1; i <= 2; i++) { split($i, a, "m"); sub("s", "", a[2]); s += a[1] * 60 + a[2] } print int(s * hz + 0.5) }'
}

to_ms() { # 1.23ms / 456.00us / 1.20s
    case $1 in
        *us) echo "${1%us} / 1000" | bc -l ;;
        *ms) echo "${1%ms}" ;;
        *s) echo "${1%s} * 1000" | bc -l ;;
    esac
}
wrk_run() { # target conns file -> "rps p99ms MBps cpu_s"
    local t=$1 c=$2 f=$3 out hdr=() before after
    [[ $t == direct ]] && hdr=(-H "Authorization: $auth")
    before=$(cpu_ticks "$t")
    out=$(taskset -c 1 wrk -t1 -c"$c" -d"${DUR}s" --latency "${hdr[@]}" "${base[$t]}$(path_of "$t")/$f" 2>&1)
    after=$(cpu_ticks "$t")
    if grep -q "Non-2xx\|Socket errors" <<<"$out"; then echo "warning: $t $f: $(grep "Non-2xx\|Socket errors" <<<"$out")" >&2; fi
    local n rps p99
    n=$(awk '/requests in/ {print $1}' <<<"$out")
    rps=$(awk '/Requests\/sec/ {print $2}' <<<"$out")
    p99=$(awk '$1 == "99%" {print $2}' <<<"$out")
    # MB/s of bodies; CPU seconds of the front end over the run.
    echo "$rps $(to_ms "$p99") $(echo "$n * $4 / 1048576 / $DUR" | bc -l) $(echo "($after - $before) / $hz" | bc -l) $n"
}
stream_run() { # target -> MBps
    local t=$1 extra=()
    [[ $t == direct ]] && extra=(--cacert ca.pem -H "Authorization: $auth")
    echo "$(taskset -c 1 curl -fsS "${extra[@]}" -o /dev/null -w '%{speed_download}' "${base[$t]}$(path_of "$t")/256m") / 1048576" | bc -l
}

declare -A samples
add() { samples[$1,$2]+="$3 "; }
foreign_start_busy=$(busy_ticks) foreign_start_total=$(total_ticks)
foreign_start_ours=$(( $(ticks_of $(all_pids)) + $(child_ticks) ))
for rep in $(seq "$REPS"); do
    for t in "${targets[@]}"; do
        echo "round $rep/$REPS: $t" >&2
        read -r rps p99 _ cpu n <<<"$(wrk_run "$t" 64 1k 1024)"
        add "$t" rps1k "$rps"; add "$t" p99_1k "$p99"; add "$t" cpu10k "$(echo "$cpu * 10000 / $n" | bc -l)"
        read -r rps p99 _ _ _ <<<"$(wrk_run "$t" 64 64k 65536)"
        add "$t" rps64k "$rps"; add "$t" p99_64k "$p99"
        read -r _ _ mbps cpu n <<<"$(wrk_run "$t" 8 4m 4194304)"
        add "$t" mb4m "$mbps"; add "$t" cpugib "$(echo "$cpu * 256 / $n" | bc -l)"
        [[ $t == redirected ]] || add "$t" mb256 "$(stream_run "$t")"
    done
done
foreign_busy=$(( $(busy_ticks) - foreign_start_busy ))
foreign_total=$(( $(total_ticks) - foreign_start_total ))
foreign_ours=$(( $(ticks_of $(all_pids)) + $(child_ticks) - foreign_start_ours ))
# Memory: the peak over the whole run, and what is still resident once the
# load has stopped (PSS, so nginx's shared pages count once).
sleep 2
for t in "${targets[@]:1}"; do
    [[ $t == redirected ]] && continue
    samples[$t,rss]=$(echo "$(status_kib "$t" VmHWM) / 1024" | bc -l)
    samples[$t,pss]=$(echo "$(status_kib "$t" Pss smaps_rollup) / 1024" | bc -l)
done

median() { tr ' ' '\n' | grep -v '^$' | sort -g | awk '{a[NR]=$1} END {if (NR) print a[int((NR+1)/2)]; else print 0}'; }
val() { echo "${samples[$1,$2]:-}" | median; }
ratio() { if [[ $(echo "$2 > 0" | bc) == 1 ]]; then echo "$1 / $2" | bc -l; else echo 0; fi; }

# metric, label, reference for the ratio, comparison, goal.
metrics=(
    "rps1k|1 KiB req/s, 64 connections|nginx-tuned|>=|1.2"
    "p99_1k|1 KiB p99 latency ms|nginx-tuned|<=|1.0"
    "rps64k|64 KiB req/s, 64 connections|nginx-tuned|>=|1.1"
    "p99_64k|64 KiB p99 latency ms|nginx-tuned|<=|1.0"
    "mb4m|4 MiB x8 MB/s|nginx-tuned|>=|1.1"
    "mb256|256 MiB single stream MB/s|direct|>=|0.95"
    "cpu10k|CPU s per 10k 1 KiB requests|nginx-tuned|<=|0.8"
    "cpugib|CPU s per GiB (4 MiB)|nginx-tuned|<=|0.8"
    "rss|peak RSS MiB|-|<=|16"
    "pss|PSS MiB at the end|nginx-tuned|<=|1.0"
)
printf '\n%-30s %10s %14s %11s %15s' metric direct nginx-deployed nginx-tuned pulp-auth-proxy
[[ -n $before_bin ]] && printf ' %10s' before
printf ' %8s %8s %4s\n' ratio goal met
failed=0
for m in "${metrics[@]}"; do
    IFS='|' read -r key label ref cmp goal <<<"$m"
    p=$(val pulp-auth-proxy "$key")
    printf '%-30s %10.2f %14.2f %11.2f %15.2f' "$label" "$(val direct "$key")" "$(val nginx-deployed "$key")" "$(val nginx-tuned "$key")" "$p"
    [[ -n $before_bin ]] && printf ' %10.2f' "$(val pulp-auth-proxy-before "$key")"
    if [[ $ref == - ]]; then r=$p; else r=$(ratio "$p" "$(val "$ref" "$key")"); fi
    if [[ $(echo "$r $cmp $goal" | bc) == 1 ]]; then ok=yes; else ok=no failed=$((failed + 1)); fi
    [[ $ref == - ]] && shown=$(printf '%.1f' "$r") || shown=$(printf '%.2fx' "$r")
    printf ' %8s %8s %4s\n' "$shown" "$cmp$goal" "$ok"
done
printf '\nratio: pulp-auth-proxy / the reference (nginx-tuned; direct for the stream; peak RSS in MiB).\n'
if [[ -n $before_bin ]]; then
    printf '\nthis build / before:'
    for k in rps1k p99_1k rps64k p99_64k mb4m mb256 cpu10k cpugib rss pss; do
        printf ' %s %.2fx' "$k" "$(ratio "$(val pulp-auth-proxy "$k")" "$(val pulp-auth-proxy-before "$k")")"
    done
    printf '\n'
fi
if [[ -n ${FEATURES:-} ]]; then
    printf '\nPer-feature costs: this build as it runs (record on, no redirect) against\n'
    printf '%-30s %12s %12s %12s %10s %10s\n' metric as-runs no-record redirected record redirect
    for k in "rps1k:1 KiB req/s" "p99_1k:1 KiB p99 ms" "cpu10k:CPU s per 10k 1 KiB" "mb4m:4 MiB x8 MB/s" "cpugib:CPU s per GiB (4 MiB)"; do
        w=$(val pulp-auth-proxy "${k%%:*}"); o=$(val unrecorded "${k%%:*}"); r=$(val redirected "${k%%:*}")
        printf '%-30s %12.3f %12.3f %12.3f %9.2fx %9.2fx\n' "${k#*:}" "$w" "$o" "$r" "$(ratio "$w" "$o")" "$(ratio "$r" "$w")"
    done
    printf 'record: as-runs / no-record; redirect: redirected / as-runs (a redirected request costs two upstream exchanges).\n'
fi
printf '\n%s rounds, wrk -t1 for %ss per load, medians. CPU 0: upstream; CPU 1: front end and client.\n' "$REPS" "$DUR"
foreign=$(echo "($foreign_busy - $foreign_ours) * 100 / $foreign_total" | bc -l)
printf 'foreign CPU over the run: %.1f%% of both CPUs (goal < 2%%)\n' "$foreign"
[[ $(echo "$foreign < 2" | bc) == 1 ]] || echo "warning: other work ran during the benchmark; its numbers are suspect" >&2
printf '%s of %s goals missed\n' "$failed" "${#metrics[@]}"

#!/usr/bin/env bash
# Sourced by tests/run and tests/demo: installs the Debian packages the
# tests and the demo use, and makes sure a Docker daemon answers.
#
# Packages: the system trust store the proxy loads, `kill` for signalling
# the proxy under test, systemd-analyze and systemd-socket-activate for the
# service tests, ip (network namespaces) and setpriv (dropping privileges)
# for the net tests, the Docker daemon and a static busybox for the image
# audit tests, mmdebstrap, dpkg-scanpackages (dpkg-dev) and apt-ftparchive
# (apt-utils) for the APT end-to-end test, curl as a client inside namespaces,
# skopeo to turn exports into OCI layouts with zstd layers for the audit,
# and docker-registry with htpasswd (apache2-utils) as the registry it reads;
# readelf (binutils) for the packages' glibc check.
# The Pulp tier: Debian's python3 with venv (tests/pulp/venv.sh), the
# PostgreSQL server for its private cluster, rpm (rpmbuild) and
# createrepo-c for its RPM repository, dnf and python3-dnf (librepo, the
# HTTP client dnf has on Rocky Linux) as the RPM client.
packages=(ca-certificates binutils procps systemd iproute2 util-linux docker.io busybox-static gzip
    mmdebstrap dpkg-dev apt-utils curl skopeo docker-registry apache2-utils python3 python3-venv postgresql rpm createrepo-c dnf python3-dnf)
missing=()
for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
    if [[ $(id -u) -ne 0 ]]; then
        echo "$0: needs Debian packages ${missing[*]}; run as root or install them" >&2
        exit 2
    fi
    echo "$0: installing ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi

# A Docker daemon: use one that answers, else start one without a bridge
# or iptables rules (builds use --network host), and stop only what was
# started here.
started_dockerd=
pidfile=/run/pulp-auth-proxy-tests-dockerd.pid
if ! docker info >/dev/null 2>&1; then
    # A daemon of an earlier run may still be shutting down; one that was
    # killed leaves its pid file behind, which would stop a new one.
    if [[ -f $pidfile ]]; then
        old=$(cat "$pidfile")
        for _ in $(seq 40); do
            kill -0 "$old" 2>/dev/null || break
            sleep 0.5
        done
        if kill -0 "$old" 2>/dev/null; then
            echo "$0: dockerd $old (from $pidfile) neither answers nor exits; stop it" >&2
            exit 2
        fi
        rm -f "$pidfile"
    fi
    echo "$0: starting dockerd --bridge=none --iptables=false"
    dockerd --bridge=none --iptables=false --ip6tables=false \
        --pidfile "$pidfile" >/tmp/pulp-auth-proxy-tests-dockerd.log 2>&1 &
    started_dockerd=$!
    trap 'kill "$started_dockerd" 2>/dev/null; wait "$started_dockerd" 2>/dev/null || true' EXIT
    for _ in $(seq 60); do
        docker info >/dev/null 2>&1 && break
        sleep 0.5
    done
    docker info >/dev/null 2>&1 || {
        echo "$0: dockerd did not start; its log:" >&2
        tail -20 /tmp/pulp-auth-proxy-tests-dockerd.log >&2
        exit 2
    }
fi

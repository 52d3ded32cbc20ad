#!/usr/bin/env bash
# Prints the path of Microsoft's SARIF Multitool (the npm package
# @microsoft/sarif-multitool-linux, pinned below), installing it first if
# needed. Its `validate` checks a log against the SARIF 2.1.0 JSON schema it
# ships (sarif-2.1.0.json) and against the spec's rules. It lives in the
# tests' cache outside the checkout, named for the pin, and is marked
# complete last, so an interrupted install is done again.
set -euo pipefail
version=5.7.0
cache=/var/tmp/pulp-auth-proxy-tests-cache
dir=$cache/sarif-multitool-$version
tool=$dir/node_modules/@microsoft/sarif-multitool-linux/Sarif.Multitool
mkdir -p "$cache"
exec 9>"$dir.lock"
flock 9
if [[ ! -f $dir/.complete ]]; then
    if ! command -v npm >/dev/null; then
        if [[ $(id -u) -ne 0 ]]; then
            echo "validator.sh: needs npm to install the SARIF Multitool; install npm or run as root" >&2
            exit 2
        fi
        echo "validator.sh: installing npm" >&2
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq npm >/dev/null
    fi
    rm -rf "$dir"
    mkdir -p "$dir"
    echo "validator.sh: installing @microsoft/sarif-multitool-linux@$version in $dir" >&2
    npm install --prefix "$dir" --save-exact --no-audit --no-fund --loglevel=error \
        "@microsoft/sarif-multitool-linux@$version" >&2
    [[ -x $tool ]] || { echo "validator.sh: $tool is missing after the install" >&2; exit 2; }
    touch "$dir/.complete"
fi
echo "$tool"

#!/usr/bin/env bash
# Usage: venv.sh [REQUIREMENTS NAME]; default: this directory's
# requirements.txt, named pulp.
#
# Prints the path of a venv holding the requirements, building it first if
# needed. The venv lives in a cache outside the checkout, named for the
# file's hash, so a fresh clone on the same machine (CI) reuses it while
# the pins are unchanged. A venv cannot be moved once built (its scripts
# name their interpreter by absolute path), so it is built in place under
# a lock and marked complete last: one without the mark is a half-built
# one from an interrupted run and is built again.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
cache=/var/tmp/pulp-auth-proxy-tests-cache
# Debian's interpreter, not whatever a PATH finds: the tests run children
# with a fixed PATH, and the host set-up installs python3-venv for it.
python=/usr/bin/python3
requirements=${1:-$here/requirements.txt}
name=${2:-pulp}
hash=$(sha256sum "$requirements" | cut -c1-16)
venv=$cache/$name-venv-$hash
mkdir -p "$cache"
exec 9>"$venv.lock"
flock 9
if [[ ! -f $venv/.complete ]]; then
    rm -rf "$venv"
    echo "venv.sh: building $venv" >&2
    "$python" -m venv "$venv"
    "$venv/bin/pip" install -q --no-input -r "$requirements" >&2
    touch "$venv/.complete"
fi
echo "$venv"

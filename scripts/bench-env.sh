#!/usr/bin/env bash
# What `make bench` needs from the machine: the wrk load generator.
#
#   bash scripts/bench-env.sh install
#
# installs Debian's wrk with apt-get when it is missing, and does nothing otherwise.
set -euo pipefail

APT_NAME=bench-env
# shellcheck source=scripts/apt-lib.sh
source "$(dirname "$0")/apt-lib.sh"

install() {
    if command -v wrk >/dev/null 2>&1; then
        apt_say "wrk is installed"
        return 0
    fi
    apt_say "missing: wrk"
    apt_install --no-install-recommends wrk
    command -v wrk >/dev/null 2>&1 || apt_die "still missing after apt-get install: wrk"
    apt_say "installed: wrk"
}

case "${1:-}" in
    install) install ;;
    *)
        echo "usage: $0 install" >&2
        exit 2
        ;;
esac

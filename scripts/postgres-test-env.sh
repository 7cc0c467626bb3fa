#!/usr/bin/env bash
# What the PostgreSQL store tests need from the machine (tests/postgres_env.py).
#
#   bash scripts/postgres-test-env.sh install
#
# installs Debian's postgresql (the server binaries: initdb, pg_ctl, postgres) with apt-get when
# initdb is missing, and does nothing otherwise. The tests never use the machine's own clusters:
# the `postgres` pytest fixture makes a private one with initdb in a temporary directory, starts
# it on a free loopback port (as the `postgres` system user when run as root) and removes it at
# the end of the session.
set -euo pipefail

APT_NAME=postgres-test-env
# shellcheck source=scripts/apt-lib.sh
source "$(dirname "$0")/apt-lib.sh"

PACKAGES=(postgresql)

say() { apt_say "$*"; }
die() { apt_die "$*"; }

initdb_path() {
    # Debian keeps the server binaries out of PATH, under /usr/lib/postgresql/<version>/bin.
    if command -v initdb >/dev/null 2>&1; then
        command -v initdb
        return 0
    fi
    local found
    found="$(find /usr/lib/postgresql -mindepth 3 -maxdepth 3 -path '*/bin/initdb' 2>/dev/null \
        | sort -V | tail -n1)"
    [ -n "$found" ] && echo "$found"
}

install() {
    local initdb
    if initdb="$(initdb_path)"; then
        say "the PostgreSQL server is installed ($("$initdb" --version))"
        return 0
    fi
    say "missing: postgresql (no initdb)"
    apt_install --no-install-recommends "${PACKAGES[@]}"
    initdb="$(initdb_path)" || die "still no initdb after apt-get install ${PACKAGES[*]}"
    say "installed: $("$initdb" --version)"
}

case "${1:-}" in
    install) install ;;
    *)
        echo "usage: $0 install" >&2
        exit 2
        ;;
esac

# shellcheck shell=bash
# Shared by the *-test-env.sh scripts: install Debian packages with apt-get, as root or via sudo.
#
#   APT_NAME=my-test-env; source scripts/apt-lib.sh
#   apt_install [--no-install-recommends] PACKAGE...
#
# APT_NAME prefixes the messages. Exits with a message naming the packages when apt-get cannot run.

apt_say() { echo "$APT_NAME: $*"; }
apt_die() {
    echo "$APT_NAME: error: $*" >&2
    exit 1
}

apt_install() {
    local options=()
    [ "${1:-}" = "--no-install-recommends" ] && options+=("$1") && shift
    command -v apt-get >/dev/null 2>&1 \
        || apt_die "apt-get not found; install $* (or the equivalents) by hand"
    local sudo=()
    if [ "$(id -u)" -ne 0 ]; then
        command -v sudo >/dev/null 2>&1 \
            || apt_die "not root and sudo not found; as root run: apt-get install -y $*"
        sudo=(sudo)
    fi
    local log
    log="$(mktemp)"
    apt_say "apt-get update ..."
    "${sudo[@]}" apt-get update -qq >"$log" 2>&1 || { cat "$log" >&2; apt_die "apt-get update failed"; }
    apt_say "apt-get install $* ..."
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${options[@]}" "$@" \
        >"$log" 2>&1 || { cat "$log" >&2; apt_die "apt-get install failed"; }
    rm -f "$log"
}

#!/usr/bin/env bash
# What the real-container tests need from the machine (see DESIGN.md, "Real parts in tests").
#
#   bash scripts/podman-test-env.sh install
#
# installs podman, runc and busybox-static with apt-get when any of them is missing, and does
# nothing otherwise. Podman's configuration, storage, test image and API service are not set up
# here: the `podman` pytest fixture (tests/podman_env.py) makes them in a temporary directory per
# test session, so the machine's own podman configuration is never touched.
set -euo pipefail

APT_NAME=podman-test-env
# shellcheck source=scripts/apt-lib.sh
source "$(dirname "$0")/apt-lib.sh"

PACKAGES=(podman runc busybox-static)

say() { apt_say "$*"; }
die() { apt_die "$*"; }

have_runc() {
    # podman finds runc in /usr/sbin even when that is not on a non-root user's PATH.
    command -v runc >/dev/null 2>&1 || [ -x /usr/sbin/runc ] || [ -x /usr/bin/runc ]
}

static_busybox() {
    # The test image is /bin/busybox alone, so it must not need a dynamic loader: the Debian
    # `busybox` package also installs /bin/busybox, but dynamically linked.
    [ -x /bin/busybox ] || return 1
    if command -v dpkg-query >/dev/null 2>&1; then
        [ "$(dpkg-query -W -f='${Status}' busybox-static 2>/dev/null)" = "install ok installed" ] \
            && return 0
    fi
    LC_ALL=C ldd /bin/busybox 2>&1 | grep -q "not a dynamic executable"
}

missing() {
    command -v podman >/dev/null 2>&1 || echo podman
    have_runc || echo runc
    static_busybox || echo busybox-static
}

install() {
    local todo
    todo="$(missing | tr '\n' ' ')"
    todo="${todo% }"
    if [ -z "$todo" ]; then
        say "podman, runc and busybox-static are installed ($(podman --version))"
        return 0
    fi
    say "missing: $todo"
    # With recommends: what a plain `apt-get install podman` gives, as verified on Debian 12.
    apt_install "${PACKAGES[@]}"
    todo="$(missing | tr '\n' ' ')"
    todo="${todo% }"
    [ -z "$todo" ] || die "still missing after apt-get install: $todo"
    say "installed: $(podman --version)"
}

case "${1:-}" in
    install) install ;;
    *)
        echo "usage: $0 install" >&2
        exit 2
        ;;
esac

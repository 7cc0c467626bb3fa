#!/usr/bin/env bash
# What the browser test of the docs page needs from the machine (tests/api/test_docs_browser.py).
#
#   bash scripts/browser-test-env.sh install
#
# installs Debian's chromium and chromium-driver with apt-get when either is missing, and does
# nothing otherwise. The test starts its own headless Chromium with a fresh profile directory, so
# the machine's own browser profiles are never touched.
set -euo pipefail

PACKAGES=(chromium chromium-driver)

say() { echo "browser-test-env: $*"; }
die() {
    echo "browser-test-env: error: $*" >&2
    exit 1
}

missing() {
    command -v chromium >/dev/null 2>&1 || echo chromium
    command -v chromedriver >/dev/null 2>&1 || echo chromium-driver
}

install() {
    local todo
    todo="$(missing | tr '\n' ' ')"
    todo="${todo% }"
    if [ -z "$todo" ]; then
        say "chromium and chromium-driver are installed ($(chromium --version 2>/dev/null))"
        return 0
    fi
    say "missing: $todo"
    command -v apt-get >/dev/null 2>&1 \
        || die "apt-get not found; install ${PACKAGES[*]} (or the equivalents) by hand"
    local sudo=()
    if [ "$(id -u)" -ne 0 ]; then
        command -v sudo >/dev/null 2>&1 \
            || die "not root and sudo not found; as root run: apt-get install -y ${PACKAGES[*]}"
        sudo=(sudo)
    fi
    local log
    log="$(mktemp)"
    say "apt-get update ..."
    "${sudo[@]}" apt-get update -qq >"$log" 2>&1 || { cat "$log" >&2; die "apt-get update failed"; }
    say "apt-get install ${PACKAGES[*]} ..."
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
        --no-install-recommends "${PACKAGES[@]}" >"$log" 2>&1 \
        || { cat "$log" >&2; die "apt-get install failed"; }
    rm -f "$log"
    todo="$(missing | tr '\n' ' ')"
    todo="${todo% }"
    [ -z "$todo" ] || die "still missing after apt-get install: $todo"
    say "installed: $(chromium --version 2>/dev/null)"
}

case "${1:-}" in
    install) install ;;
    *)
        echo "usage: $0 install" >&2
        exit 2
        ;;
esac

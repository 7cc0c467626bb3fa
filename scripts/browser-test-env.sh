#!/usr/bin/env bash
# What the browser test of the docs page needs from the machine (tests/api/test_docs_browser.py).
#
#   bash scripts/browser-test-env.sh install
#
# installs Debian's chromium and chromium-driver with apt-get when either is missing, and does
# nothing otherwise. The test starts its own headless Chromium with a fresh profile directory, so
# the machine's own browser profiles are never touched.
set -euo pipefail

APT_NAME=browser-test-env
# shellcheck source=scripts/apt-lib.sh
source "$(dirname "$0")/apt-lib.sh"

PACKAGES=(chromium chromium-driver)

say() { apt_say "$*"; }
die() { apt_die "$*"; }

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
    apt_install --no-install-recommends "${PACKAGES[@]}"
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

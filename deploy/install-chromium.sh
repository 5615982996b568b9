#!/usr/bin/env bash
# Installs Debian's Chromium for the web console's browser test
# (tests/e2e/console.rs drives `chromium --headless`; npm's puppeteer and
# playwright download their own browser, which does not work here: see
# ../shared/FACTS.md). Needs root (apt-get) the first time; idempotent.
# Prints the binary's path on its last line.
#
#   bash deploy/install-chromium.sh
set -euo pipefail

for bin in "${LAMINA_CHROMIUM:-}" /usr/bin/chromium /usr/bin/chromium-browser; do
    if [ -n "$bin" ] && [ -x "$bin" ] && "$bin" --version >/dev/null 2>&1; then
        echo "$bin"
        exit 0
    fi
done

if [ "$(id -u)" != 0 ]; then
    echo "install-chromium: Chromium is not installed and this is not root; run: sudo apt-get install chromium" >&2
    exit 1
fi
export DEBIAN_FRONTEND=noninteractive
apt-get install -y --no-install-recommends chromium >&2 || {
    apt-get update >&2
    apt-get install -y --no-install-recommends chromium >&2
}
/usr/bin/chromium --version >/dev/null
echo /usr/bin/chromium

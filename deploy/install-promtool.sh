#!/usr/bin/env bash
# Installs promtool (Prometheus 2.42, Debian 12's package), which the metrics
# test uses to check `GET /metrics` against Prometheus's own rules
# (`promtool check metrics`). Only the promtool binary is taken out of the
# package (apt-get download + dpkg-deb -x): nothing is installed system-wide
# and no Prometheus service is started. Idempotent: a cached copy is reused.
# Prints the binary's path on its last line.
#
#   bash deploy/install-promtool.sh       # into $LAMINA_TOOLS_DIR (default ~/.cache/lamina/tools)
set -euo pipefail

ROOT="${LAMINA_TOOLS_DIR:-$HOME/.cache/lamina/tools}/promtool-2.42"
BIN="$ROOT/promtool"

if [ -x "$BIN" ] && "$BIN" --version >/dev/null 2>&1; then
    echo "$BIN"
    exit 0
fi

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
(
    cd "$work"
    # The download runs as root when _apt cannot write here: harmless.
    apt-get download prometheus >&2 2>/dev/null || {
        apt-get update >&2
        apt-get download prometheus >&2
    }
    dpkg-deb -x prometheus_*.deb extracted
)
mkdir -p "$ROOT"
cp "$work/extracted/usr/bin/promtool" "$BIN.tmp"
mv "$BIN.tmp" "$BIN"
"$BIN" --version >/dev/null
echo "$BIN"

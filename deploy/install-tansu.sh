#!/usr/bin/env bash
# Installs the Kafka-wire broker the Kafka tests and benchmarks run against:
# tansu 0.6.0 from crates.io (see ../shared/FACTS.md: the only real
# Kafka-protocol broker installable on these machines). Idempotent: a cached
# install is reused. Prints the binary's path on its last line.
#
#   bash deploy/install-tansu.sh            # into $LAMINA_TOOLS_DIR (default ~/.cache/lamina/tools)
#
# A cold install compiles ~410 crates (~25 min on 2 cores); keep the tools
# directory outside the clone so that it is paid once per machine.
set -euo pipefail

VERSION=0.6.0
ROOT="${LAMINA_TOOLS_DIR:-$HOME/.cache/lamina/tools}/tansu-$VERSION"
BIN="$ROOT/bin/tansu"

if [ -x "$BIN" ] && "$BIN" --version 2>/dev/null | grep -q "$VERSION"; then
    echo "$BIN"
    exit 0
fi

mkdir -p "$ROOT"
# Its own target directory, so that the project's build cache is not
# polluted; removed once installed.
export CARGO_TARGET_DIR="$ROOT/build"
cargo install tansu --version "$VERSION" --locked --features dynostore,libsql --root "$ROOT" >&2
rm -rf "$CARGO_TARGET_DIR"
"$BIN" --version >&2
echo "$BIN"

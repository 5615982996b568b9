#!/usr/bin/env bash
# Installs the S3-compatible server the S3 tests and benchmarks will run
# against: s3s-fs 0.14.1 from crates.io (see ../shared/FACTS.md: it checks
# request signatures and keeps its data on disk; newer versions need a newer
# rustc). Idempotent: a cached install is reused. Prints the binary's path on
# its last line.
#
#   bash deploy/install-s3s.sh            # into $LAMINA_TOOLS_DIR (default ~/.cache/lamina/tools)
#
# Start: s3s-fs --host 127.0.0.1 --port P --access-key K --secret-key S ROOTDIR
# (a bucket is a directory under ROOTDIR); stop it by its PID.
set -euo pipefail

VERSION=0.14.1
ROOT="${LAMINA_TOOLS_DIR:-$HOME/.cache/lamina/tools}/s3s-fs-$VERSION"
BIN="$ROOT/bin/s3s-fs"

if [ -x "$BIN" ] && "$BIN" --help >/dev/null 2>&1; then
    echo "$BIN"
    exit 0
fi

mkdir -p "$ROOT"
# Its own target directory, removed once installed.
export CARGO_TARGET_DIR="$ROOT/build"
cargo install s3s-fs --version "$VERSION" --features binary --locked --root "$ROOT" >&2
rm -rf "$CARGO_TARGET_DIR"
"$BIN" --help >/dev/null
echo "$BIN"

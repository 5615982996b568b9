#!/usr/bin/env bash
# Installs what `lamina bench batch` compares against: DuckDB's Python
# package and its httpfs extension (for reading the benchmark's files from
# the S3-compatible server; PyPI ships it, so no download from DuckDB's
# extension site is needed). A virtualenv cached under $LAMINA_TOOLS_DIR
# (default ~/.cache/lamina/tools); idempotent. Prints the interpreter's path
# on its last line. Not needed by the tests.
set -euo pipefail

VERSION=1.5.5
ROOT="${LAMINA_TOOLS_DIR:-$HOME/.cache/lamina/tools}/bench-py"
PY="$ROOT/bin/python"
CHECK="import duckdb, duckdb_extension_httpfs; assert duckdb.__version__ == '$VERSION'"

if [ -x "$PY" ] && "$PY" -c "$CHECK" 2>/dev/null; then
    echo "$PY"
    exit 0
fi
python3 -m venv "$ROOT" >&2
"$PY" -m pip install --quiet --disable-pip-version-check "duckdb==$VERSION" "duckdb-extension-httpfs==$VERSION" >&2
"$PY" -c "$CHECK" >&2
echo "$PY"

#!/usr/bin/env bash
# Installs the Python tools the tests use as independent peers: the Apache
# Avro package (its own IPC Requestor drives the Flume Avro RPC test),
# pyarrow (writes the Parquet files the files receiver reads) and
# schemathesis (fuzzes the live server from docs/openapi.yaml). A
# virtualenv cached under $LAMINA_TOOLS_DIR (default ~/.cache/lamina/tools);
# idempotent. Prints the interpreter's path on its last line.
set -euo pipefail

ROOT="${LAMINA_TOOLS_DIR:-$HOME/.cache/lamina/tools}/py-1"
PY="$ROOT/bin/python"

if [ -x "$PY" ] && "$PY" -c "import avro.ipc, pyarrow.parquet, schemathesis" 2>/dev/null; then
    echo "$PY"
    exit 0
fi
python3 -m venv "$ROOT" >&2
"$PY" -m pip install --quiet --disable-pip-version-check "avro==1.12.2" "pyarrow==22.0.0" "schemathesis==4.32.5" >&2
"$PY" -c "import avro.ipc, pyarrow.parquet, schemathesis" >&2
echo "$PY"

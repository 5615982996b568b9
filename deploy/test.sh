#!/usr/bin/env bash
# The project's test command (README, and what CI runs): installs what the
# tests talk to, then runs every test of the workspace.
#
#   bash deploy/test.sh [cargo test arguments...]
#
# - The Kafka-wire broker (tansu, deploy/install-tansu.sh): cached under
#   ~/.cache/lamina/tools, so only the first run on a machine builds it
#   (~10-25 min on 2 cores). Each Kafka test starts its own broker on a free
#   loopback port and stops it by its PID.
# - The S3-compatible server (s3s-fs, deploy/install-s3s.sh): cached the
#   same way (~2-5 min to build the first time). Each S3 test starts its own
#   server on a free loopback port and stops it by its PID.
# - promtool (deploy/install-promtool.sh): taken out of Debian's prometheus
#   package, nothing installed system-wide. Seconds.
# - Chromium (deploy/install-chromium.sh): Debian's package, for the web
#   console's browser test; apt-get, so root the first time.
# - A Python virtualenv with Apache Avro (deploy/install-pytools.sh): the
#   independent Flume Avro RPC client. Seconds.
#
# Real HDFS is not installable here; the HDFS tests of the master dataset
# run when HDFS_URL is set (e.g. HDFS_URL=hdfs://namenode:9000/tmp/lamina).
#
# LAMINA_REQUIRE_PEERS=1 makes a test whose peer is missing fail instead of
# skipping itself, so a broken install cannot pass as green.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n== %s (%s)\n' "$1" "$(date -u +%H:%M:%S)"; }

step "Kafka-wire broker"
tansu="$(bash deploy/install-tansu.sh | tail -n 1)"
echo "tansu: $tansu"
export LAMINA_TANSU="$tansu"

step "S3-compatible server"
s3s="$(bash deploy/install-s3s.sh | tail -n 1)"
echo "s3s-fs: $s3s"
export LAMINA_S3S="$s3s"

step "promtool"
promtool="$(bash deploy/install-promtool.sh | tail -n 1)"
echo "promtool: $promtool"
export LAMINA_PROMTOOL="$promtool"

step "Chromium"
chromium="$(bash deploy/install-chromium.sh | tail -n 1)"
echo "chromium: $chromium"
export LAMINA_CHROMIUM="$chromium"

step "Python test peers"
python="$(bash deploy/install-pytools.sh | tail -n 1)"
echo "python: $python"
export LAMINA_PYTHON="$python"
export LAMINA_REQUIRE_PEERS=1

step "cargo test --workspace $*"
exec cargo test --workspace "$@"

#!/usr/bin/env bash
# Point-query load with wrk while `lamina bench stream` ingests.
#
#   benches/query_load.sh [RATE] [INTERVAL_MS] [CONNECTIONS]   (defaults 300000 200 64)
#
# Starts `lamina bench stream --rate RATE --interval-ms INTERVAL_MS` (release
# build), waits until it has ingested for 12 s, takes the 10,000 most frequent
# keys of `word_counts` plus 2,500 absent ones, and runs
# `wrk -t2 -c CONNECTIONS -d20s --latency` against random keys of that list.
# Needs wrk (Debian: apt-get install wrk). Prints wrk's figures and the bench's
# sustained-rate line.
set -euo pipefail
cd "$(dirname "$0")/.."
RATE=${1:-300000}
INTERVAL=${2:-200}
CONNS=${3:-64}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
./target/release/lamina bench stream --rate "$RATE" --interval-ms "$INTERVAL" --duration-secs 45 \
    >"$work/bench.out" 2>&1 &
bench=$!
sleep 12
conf=$(ls -t /tmp/lamina-bench-"$bench"-*/lamina.toml | head -1)
port=$(grep -m1 '^listen' "$conf" | sed 's/.*:\([0-9]*\)".*/\1/')
curl -s "127.0.0.1:$port/v1/views/word_counts/top?k=10000" | python3 -c '
import json, random, sys
keys = [i["key"] for i in json.load(sys.stdin)["items"]]
keys += ["zzabsent%d" % random.randrange(10**9) for _ in range(len(keys) // 4)]
print("\n".join(keys))' >"$work/keys.txt"
cat >"$work/keys.lua" <<LUA
local keys = {}
for line in io.lines("$work/keys.txt") do keys[#keys + 1] = line end
math.randomseed(os.time())
request = function()
  return wrk.format("GET", "/v1/views/word_counts/keys/" .. keys[math.random(#keys)])
end
LUA
wrk -t2 -c"$CONNS" -d20s --latency -s "$work/keys.lua" "http://127.0.0.1:$port" >"$work/wrk.out" 2>&1
wait "$bench"
grep -E "Requests/sec|Latency|50%|99%" "$work/wrk.out"
grep -E "sustained  target|RESULT" "$work/bench.out"

#!/usr/bin/env bash
# A costly view at full input speed: a JSON stream whose view key is the
# tuple words(a) x words(b) (100 keys a record), fed by a Python producer
# over TCP as fast as it can for 30 s. Prints the server's RSS, keys,
# backlog and last micro-batch time every 5 s, then the SIGTERM time.
#
#   benches/heavy_view.sh            (release build first)
set -euo pipefail
cd "$(dirname "$0")/.."
exe=$PWD/target/release/lamina
work=$(mktemp -d)
http=18480
tcp=18499
cat >"$work/lamina.toml" <<TOML
[server]
listen = "127.0.0.1:$http"

[[stream]]
name = "pairs"
format = "json"
schema = [ { name = "a", type = "string" }, { name = "b", type = "string" } ]
  [[stream.receiver]]
  type = "tcp_listen"
  listen = "127.0.0.1:$tcp"

[[view]]
name = "pair_counts"
stream = "pairs"
key = { tuple = [ { words = "a" }, { words = "b" } ] }
aggregate = "count"

[batch]
schedule = "off"
TOML
cat >"$work/gen.py" <<PY
import random, socket, time
random.seed(1)
vocab = ["w%d" % i for i in range(100000)]
s = socket.create_connection(("127.0.0.1", $tcp))
end = time.time() + 30
sent = 0
while time.time() < end:
    lines = []
    for _ in range(2000):
        a = " ".join(random.choice(vocab) for _ in range(10))
        b = " ".join(random.choice(vocab) for _ in range(10))
        lines.append('{"a":"%s","b":"%s"}\n' % (a, b))
    s.sendall("".join(lines).encode())
    sent += 2000
print("records sent:", sent)
PY
cd "$work"
"$exe" serve --config lamina.toml >serve.log 2>&1 &
server=$!
trap 'kill -9 $server 2>/dev/null || true; rm -rf "$work"' EXIT
for _ in $(seq 1 100); do curl -sf "127.0.0.1:$http/healthz" >/dev/null && break; sleep 0.1; done
python3 gen.py &
producer=$!
for i in $(seq 1 8); do
    sleep 5
    rss=$(awk '/VmRSS/ {printf "%.0f MiB", $2 / 1024}' "/proc/$server/status")
    keys=$(curl -s -m 5 "127.0.0.1:$http/v1/views" | python3 -c 'import json,sys; print(json.load(sys.stdin)["views"][0]["keys"])')
    metrics=$(curl -s -m 5 "127.0.0.1:$http/metrics")
    backlog=$(echo "$metrics" | awk '/^lamina_backlog_records / {print $2}')
    last=$(echo "$metrics" | awk '/^lamina_stream_last_batch_processing_ms/ {print $2}')
    echo "t=$((i * 5))s rss=$rss keys=$keys backlog_records=$backlog last_batch_ms=$last"
done
wait "$producer"
start=$(date +%s%N)
kill -TERM "$server"
while kill -0 "$server" 2>/dev/null; do sleep 0.1; done
echo "SIGTERM to exit: $(( ($(date +%s%N) - start) / 1000000 )) ms"

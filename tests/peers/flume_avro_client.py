"""An independent Flume Avro RPC client for Lamina's tests: Apache Avro's own
Python IPC Requestor (handshake, call encoding, response decoding), over
Avro's Netty framing (what Flume's NettyAvroRpcClient speaks), which the
Python package lacks and this file adds.

    python flume_avro_client.py HOST PORT BATCHES EVENTS_PER_BATCH PREFIX

Sends BATCHES appendBatch calls of EVENTS_PER_BATCH events each (bodies
"PREFIX-<batch>-<i> w<i % 10>", header batch=<batch>) on one connection,
retrying a batch answered FAILED (after 50 ms, at most 600 times). Prints
one JSON line per acknowledged batch: {"batch": N, "events": M}. Exits 0.
"""

import io
import json
import socket
import struct
import sys
import time

import avro.io
import avro.ipc
import avro.protocol

PROTOCOL = avro.protocol.parse(json.dumps({
    "protocol": "AvroSourceProtocol",
    "namespace": "org.apache.flume.source.avro",
    "types": [
        {"type": "enum", "name": "Status", "symbols": ["OK", "FAILED", "UNKNOWN"]},
        {"type": "record", "name": "AvroFlumeEvent", "fields": [
            {"name": "headers", "type": {"type": "map", "values": "string"}},
            {"name": "body", "type": "bytes"},
        ]},
    ],
    "messages": {
        "append": {"request": [{"name": "event", "type": "AvroFlumeEvent"}], "response": "Status"},
        "appendBatch": {
            "request": [{"name": "events", "type": {"type": "array", "items": "AvroFlumeEvent"}}],
            "response": "Status",
        },
    },
}))


class NettyTransceiver:
    """Avro's Netty framing: serial, buffer count, then length-prefixed
    buffers, big-endian; the reply echoes the serial."""

    def __init__(self, host, port):
        self.sock = socket.create_connection((host, port), timeout=30)
        self.remote_name = self.sock.getpeername()
        self.serial = 0

    def _read(self, n):
        out = b""
        while len(out) < n:
            chunk = self.sock.recv(n - len(out))
            if not chunk:
                raise EOFError("connection closed")
            out += chunk
        return out

    def transceive(self, request):
        self.serial += 1
        # Split like Java does: buffers of at most 8 KiB.
        buffers = [request[i:i + 8192] for i in range(0, len(request), 8192)] or [b""]
        frame = struct.pack(">ii", self.serial, len(buffers))
        for b in buffers:
            frame += struct.pack(">i", len(b)) + b
        self.sock.sendall(frame)
        serial, count = struct.unpack(">ii", self._read(8))
        assert serial == self.serial, (serial, self.serial)
        reply = b""
        for _ in range(count):
            (n,) = struct.unpack(">i", self._read(4))
            reply += self._read(n)
        return reply


def main():
    host, port, batches, per_batch, prefix = sys.argv[1:6]
    requestor = avro.ipc.Requestor(PROTOCOL, NettyTransceiver(host, int(port)))
    for batch in range(int(batches)):
        events = [
            {"headers": {"batch": str(batch)},
             "body": f"{prefix}-{batch}-{i} w{i % 10}".encode()}
            for i in range(int(per_batch))
        ]
        for _ in range(600):
            status = requestor.request("appendBatch", {"events": events})
            if status == "OK":
                break
            time.sleep(0.05)
        else:
            raise SystemExit(f"batch {batch} never acknowledged")
        print(json.dumps({"batch": batch, "events": len(events)}), flush=True)


if __name__ == "__main__":
    main()

"""Writes the Parquet fixtures of tests/master_parquet.rs with other tools.

Run from the repository root (needs `pip install pyarrow duckdb`):

    python3 tests/data/make_parquet_fixtures.py

The files are small and committed; this script documents exactly how they
were made and regenerates them. Every fixture holds the same 1000 events, so
the test checks each against one expected answer:

    user   string  (dictionary-encoded by pyarrow; "u0".."u6", every 13th null)
    line   string  (words from a fixed list)
    amount int64   (i % 97 - 40, every 11th null)
    ts     timestamp[ms, UTC]  (1_700_000_000_000 + i * 60_000)
"""

import json
import os

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq

HERE = os.path.dirname(os.path.abspath(__file__))
WORDS = ["to", "be", "or", "not", "that", "is", "the", "question"]


def events(n=1000):
    users, lines, amounts, ts = [], [], [], []
    for i in range(n):
        users.append(None if i % 13 == 0 else f"u{i % 7}")
        lines.append(" ".join(WORDS[(i * 7 + j) % len(WORDS)] for j in range(i % 5 + 1)))
        amounts.append(None if i % 11 == 0 else i % 97 - 40)
        ts.append(1_700_000_000_000 + i * 60_000)
    return pa.table(
        {
            "user": pa.array(users, pa.string()),
            "line": pa.array(lines, pa.string()),
            "amount": pa.array(amounts, pa.int64()),
            "ts": pa.array(ts, pa.timestamp("ms", tz="UTC")),
        }
    )


def expected(table):
    """The answers the Rust test asserts, computed here independently."""
    words, sums, counts = {}, {}, {}
    rows = table.to_pylist()
    for r in rows:
        for w in r["line"].split():
            words[w] = words.get(w, 0) + 1
        if r["user"] is not None:
            counts[r["user"]] = counts.get(r["user"], 0) + 1
            if r["amount"] is not None:
                sums[r["user"]] = sums.get(r["user"], 0) + r["amount"]
            else:
                sums.setdefault(r["user"], 0)
    return {"rows": len(rows), "word_counts": words, "amount_by_user": sums, "events_by_user": counts}


def main():
    t = events()
    pq.write_table(t, os.path.join(HERE, "pyarrow_snappy.parquet"), compression="snappy", row_group_size=300)
    pq.write_table(t, os.path.join(HERE, "pyarrow_zstd_dict.parquet"), compression="zstd",
                   use_dictionary=True, row_group_size=250)
    pq.write_table(t, os.path.join(HERE, "pyarrow_plain.parquet"), compression="none",
                   use_dictionary=False, row_group_size=1000)
    con = duckdb.connect()
    con.register("events", t)
    out = os.path.join(HERE, "duckdb.parquet")
    con.execute(f"COPY (SELECT * FROM events) TO '{out}' (FORMAT PARQUET, ROW_GROUP_SIZE 400)")
    with open(os.path.join(HERE, "expected.json"), "w") as f:
        json.dump(expected(t), f, indent=1, sort_keys=True)
    # Not Parquet at all, and a real file cut short.
    with open(os.path.join(HERE, "garbage.parquet"), "wb") as f:
        f.write(b"this is not a parquet file\n" * 10)
    whole = open(os.path.join(HERE, "pyarrow_snappy.parquet"), "rb").read()
    with open(os.path.join(HERE, "truncated.parquet"), "wb") as f:
        f.write(whole[: len(whole) // 2])


if __name__ == "__main__":
    main()

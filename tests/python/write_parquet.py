"""Write labeled reviews as parquet the way the Hugging Face Hub serves datasets (pyarrow).

usage: write_parquet.py IN_JSONL OUT_PARQUET [COMPRESSION]
IN_JSONL holds {"text": ..., "label": 0|1} per line; the file gets the schema of
stanfordnlp/imdb (text: string, label: int64), row groups of 64 rows, and COMPRESSION
(default snappy, pyarrow's and the Hub's; zstd is polars' default).
"""
import json
import sys

import pyarrow as pa
import pyarrow.parquet as pq


def main() -> None:
    source, target, *rest = sys.argv[1:]
    compression = rest[0] if rest else "snappy"
    with open(source, encoding="utf-8") as f:
        rows = [json.loads(line) for line in f if line.strip()]
    table = pa.table(
        {
            "text": pa.array([row["text"] for row in rows], pa.string()),
            "label": pa.array([row["label"] for row in rows], pa.int64()),
        }
    )
    pq.write_table(table, target, compression=compression, row_group_size=64)


if __name__ == "__main__":
    main()

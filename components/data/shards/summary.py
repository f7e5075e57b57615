"""Reading a shards folder back: its files per split, and a summary of what it holds
(counts, attribute coverage, sizes, checksums) for ``earshot data inspect``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from components.data.shards.write import INDEX
from components.errors import EarshotError
from components.io import sha256_file


def shard_files(shards_dir: str | Path, split: str) -> list[Path]:
    """The shard files of one split, in index order (falls back to a glob without an index)."""
    shards_dir = Path(shards_dir)
    try:
        index = json.loads((shards_dir / INDEX).read_text())
        return [shards_dir / e["path"] for e in index["splits"][split]["shards"]]
    except FileNotFoundError:
        return sorted((shards_dir / split).glob("shard-*.parquet"))


def summarize(shards_dir: str | Path, verify: bool = True) -> dict[str, Any]:
    """Counts per split, attribute coverage and shard sizes of a shards folder.

    With ``verify``, every shard's sha256 is recomputed and compared with the index;
    ``problems`` lists missing or altered files and ``ok`` is False if there are any.
    """
    shards_dir = Path(shards_dir)
    index_path = shards_dir / INDEX
    try:
        index = json.loads(index_path.read_text())
    except FileNotFoundError:
        raise EarshotError(f"{index_path}: not found (is {shards_dir} a shards folder?)") from None
    attrs = index["attributes"]
    problems: list[str] = []
    splits: dict[str, Any] = {}
    coverage: dict[str, dict[str, float]] = {a: {} for a in attrs}
    for split, info in index["splits"].items():
        sizes = [e["bytes"] for e in info["shards"]]
        known = dict.fromkeys(attrs, 0)
        for entry in info["shards"]:
            path = shards_dir / entry["path"]
            if not path.is_file():
                problems.append(f"{entry['path']}: missing")
                continue
            if verify and sha256_file(path) != entry["sha256"]:
                problems.append(f"{entry['path']}: sha256 differs from the index")
                continue
            if attrs:
                table = pq.read_table(path, columns=attrs)
                for a in attrs:
                    known[a] += len(table) - table[a].null_count
        for a in attrs:
            coverage[a][split] = known[a] / info["clips"] if info["clips"] else 0.0
        splits[split] = {"clips": info["clips"], "speakers": info["speakers"], "frames": info["frames"],
                         "hours": info["seconds"] / 3600, "shards": len(sizes), "bytes": sum(sizes),
                         "shard_mb_min": min(sizes, default=0) / 1e6, "shard_mb_max": max(sizes, default=0) / 1e6}
    return {"path": str(shards_dir), "schema_version": index["schema_version"], "splits": splits,
            "attributes": coverage, "verified": verify, "problems": problems, "ok": not problems}


def print_summary(summary: dict[str, Any], console: Any = None) -> None:
    """Render :func:`summarize`'s dict as rich tables (``earshot data inspect SHARDS``)."""
    from rich.console import Console
    from rich.table import Table

    console = console or Console()
    table = Table(title=f"{summary['path']} (schema v{summary['schema_version']})")
    for col in ("split", "clips", "speakers", "hours", "shards", "MB", "shard MB min-max"):
        table.add_column(col, justify="left" if col == "split" else "right")
    for split, s in summary["splits"].items():
        table.add_row(split, str(s["clips"]), str(s["speakers"]), f"{s['hours']:.3f}", str(s["shards"]),
                      f"{s['bytes'] / 1e6:.1f}", f"{s['shard_mb_min']:.1f}-{s['shard_mb_max']:.1f}")
    console.print(table)
    if summary["attributes"]:
        cov = Table(title="attribute coverage (fraction of clips with a value)")
        cov.add_column("attribute")
        splits = list(summary["splits"])
        for split in splits:
            cov.add_column(split, justify="right")
        for attr, by_split in summary["attributes"].items():
            cov.add_row(attr, *(f"{by_split.get(s, 0.0):.0%}" for s in splits))
        console.print(cov)
    if summary["problems"]:
        for problem in summary["problems"]:
            console.print(f"[red]{problem}")
    elif summary["verified"]:
        console.print("[green]every shard matches its sha256 in index.json")

"""``metrics.tsv`` of a training stage: one row per logging step, the file DVC draws with
``dvc plots show`` (``x: step``). A resumed run first drops the rows logged after the
checkpoint it resumes from (they belong to the steps it redoes).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path

from components.io import atomic_path


class MetricsTable:
    """``metrics.tsv``: a ``step`` column and one column per loss, appended as training goes."""

    def __init__(self, path: str | Path, columns: Sequence[str]) -> None:
        self.path, self.columns = Path(path), ["step", *columns]

    def reset(self, keep_until: int = 0) -> None:
        """Keep the header and the rows of steps <= ``keep_until`` (0: an empty table).

        Rows from a killed run beyond its last checkpoint, and a torn last line, go.
        """
        rows = []
        if keep_until > 0 and self.path.exists():
            lines = self.path.read_text().splitlines()
            if lines and lines[0].split("\t") == self.columns:
                for line in lines[1:]:
                    fields = line.split("\t")
                    if len(fields) == len(self.columns) and fields[0].isdigit() and int(fields[0]) <= keep_until:
                        rows.append(line)
        with atomic_path(self.path) as tmp:
            tmp.write_text("\n".join(["\t".join(self.columns), *rows]) + "\n")

    def append(self, step: int, values: Mapping[str, float]) -> None:
        cells = [str(step)] + [_fmt(values.get(c, math.nan)) for c in self.columns[1:]]
        with self.path.open("a") as f:
            f.write("\t".join(cells) + "\n")


def _fmt(value: float) -> str:
    return "nan" if math.isnan(value) else f"{value:.6g}"

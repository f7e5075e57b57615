"""The per-item runner: quarantine, resume after a kill, pruning, process pool."""

import functools
import json
from pathlib import Path

import pandas as pd
import pytest

from components.errors import Rejected
from components.runner import Item, Outcome, run_items, write_outcome


def work(item: Item, out_dir: Path, calls: Path | None = None) -> dict:
    """Writes <key>.txt; 'bad*' items are rejected, 'boom*' items crash."""
    if calls is not None:
        with open(calls, "a") as f:
            f.write(item.key + "\n")
    if item.key.startswith("bad"):
        raise Rejected("corrupt", f"{item.key} is broken", item=item.key)
    if item.key.startswith("boom"):
        raise ZeroDivisionError("unexpected")
    path = out_dir / f"{item.key}.txt"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(item.payload["text"])
    return {"chars": len(item.payload["text"]), "outputs": [f"{item.key}.txt"]}


def items(*keys: str) -> list[Item]:
    return [Item(k, {"text": k * 2}, identity={"k": k}, source=f"src/{k}") for k in keys]


def calls_of(path: Path) -> list[str]:
    return path.read_text().split() if path.exists() else []


def test_bad_items_are_quarantined_and_the_rest_goes_on(tmp_path: Path):
    out = run_items("t", items("a/x/1", "bad1", "boom1", "b/y/2"), functools.partial(work, out_dir=tmp_path),
                    tmp_path, progress=False)
    assert sorted(r["key"] for r in out.records) == ["a/x/1", "b/y/2"]
    q = out.quarantine_frame().set_index("key")
    assert q.loc["bad1", "reason"] == "corrupt" and "bad1 is broken" in q.loc["bad1", "detail"]
    assert q.loc["boom1", "reason"] == "error" and "ZeroDivisionError" in q.loc["boom1", "detail"]
    assert q.loc["bad1", "source"] == "src/bad1" and q.loc["bad1", "stage"] == "t"
    assert out.counts["rejected.corrupt"] == 1
    index, quarantine = write_outcome(out, tmp_path)
    assert len(pd.read_parquet(index)) == 2 and len(pd.read_parquet(quarantine)) == 2


def test_resume_skips_done_and_rejected_but_retries_errors(tmp_path: Path):
    calls = tmp_path / "calls.log"
    fn = functools.partial(work, out_dir=tmp_path, calls=calls)
    run_items("t", items("a", "bad1", "boom1"), fn, tmp_path, progress=False)
    calls.unlink()
    out = run_items("t", items("a", "bad1", "boom1", "c"), fn, tmp_path, progress=False)
    assert calls_of(calls) == ["boom1", "c"]  # done and rejected items reused, the crash retried
    assert out.skipped == 2 and {r["key"] for r in out.records} == {"a", "c"}
    assert {q["key"] for q in out.quarantine} == {"bad1", "boom1"}


def test_changed_config_reprocesses(tmp_path: Path):
    calls = tmp_path / "calls.log"
    fn = functools.partial(work, out_dir=tmp_path, calls=calls)
    run_items("t", items("a"), fn, tmp_path, config={"x": 1}, progress=False)
    run_items("t", items("a"), fn, tmp_path, config={"x": 2}, progress=False)
    assert calls_of(calls) == ["a", "a"]


def test_kill_midway_leaves_no_done_marker(tmp_path: Path):
    """An item killed before finishing has no sidecar, so the rerun processes it."""
    calls = tmp_path / "calls.log"
    fn = functools.partial(work, out_dir=tmp_path, calls=calls)
    run_items("t", items("a", "b"), fn, tmp_path, progress=False)
    (tmp_path / ".items" / "b.json").unlink()  # as if killed after writing b.txt, before its sidecar
    (tmp_path / ".tmp-b-partial.txt").write_text("partial")
    calls.unlink()
    run_items("t", items("a", "b"), fn, tmp_path, progress=False)
    assert calls_of(calls) == ["b"]
    assert not list(tmp_path.glob(".tmp-*"))


def test_items_removed_from_inputs_are_pruned(tmp_path: Path):
    fn = functools.partial(work, out_dir=tmp_path)
    run_items("t", items("a/x/1", "b/y/2"), fn, tmp_path, progress=False)
    assert (tmp_path / "b/y/2.txt").exists()
    run_items("t", items("a/x/1"), fn, tmp_path, progress=False)
    assert not (tmp_path / "b/y/2.txt").exists() and not (tmp_path / ".items/b/y/2.json").exists()
    assert (tmp_path / "a/x/1.txt").exists()


def test_process_pool_gives_the_same_outcome(tmp_path: Path):
    keys = [f"k{i}" for i in range(6)] + ["bad1", "boom1"]
    a = run_items("t", items(*keys), functools.partial(work, out_dir=tmp_path / "a"), tmp_path / "a",
                  progress=False)
    b = run_items("t", items(*keys), functools.partial(work, out_dir=tmp_path / "b"), tmp_path / "b",
                  workers=2, progress=False)
    strip = lambda o: (o.records_frame().to_dict("records"),  # noqa: E731
                       o.quarantine_frame().drop(columns="time").to_dict("records"))
    assert strip(a) == strip(b)


def test_duplicate_keys_and_unknown_reason():
    with pytest.raises(ValueError, match="duplicate item keys"):
        run_items("t", items("a", "a"), lambda it: {}, "/tmp/unused", progress=False)
    with pytest.raises(ValueError, match="unknown rejection reason"):
        Rejected("not-a-reason")


def test_outcome_reject_for_pre_item_checks():
    out = Outcome("download")
    out.reject("row 3", "bad_manifest_row", "speaker_id '../x' escapes the data folder")
    assert json.loads(out.quarantine_frame().to_json(orient="records"))[0]["reason"] == "bad_manifest_row"


def test_atomic_files_get_the_usual_mode(tmp_path: Path):
    import os
    import stat

    from components.io import write_bytes_atomic

    write_bytes_atomic(tmp_path / "f.bin", b"x")
    mask = os.umask(0)
    os.umask(mask)
    assert stat.S_IMODE((tmp_path / "f.bin").stat().st_mode) == 0o666 & ~mask

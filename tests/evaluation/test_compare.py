"""The ablation comparison (components/evaluation/compare.py on components/tracking/reads.py,
`earshot compare`, the notebook).

One small tracking database is made per module, laid out as the ablation flow records a
sweep (the MLflow conventions of docs/orchestration.md): parent runs tagged ``kind=sweep``
and ``kind=variant`` child runs holding each variant's evaluate metrics. The numbers are
made up here on purpose: what is under test is the comparison, not the models.
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from components.evaluation import compare as C
from components.tracking import TrackingError, artifact_location, load_sweep, numeric_values, variant_images

ROOT = Path(__file__).resolve().parents[2]
T0 = 1_790_000_000_000  # ms; explicit start times make "latest" deterministic
SHA = "0123456789abcdef0123456789abcdef01234567"

# audio_length sweep, baseline 4s. seen/unseen: fused metrics, follows_audio, image_only reference.
BASE = {"fused.psnr": 21.0, "fused.ssim": 0.70, "fused.stlpips": 0.20, "fused.attr_acc": 0.90, "fused.age_err": 6.0,
        "fused.id_acc": 0.60, "fused.id_cos": 0.50, "mismatched.follows_audio": 0.70, "image_only.id_cos": 0.45,
        "image_only.attr_acc": 0.80}
SHIFT = {"4s": 0.0, "2s": -0.5, "1s": -1.0}  # shorter audio: worse everywhere (fewer cues)


def variant_metrics(variant: str) -> dict[str, float]:
    s = SHIFT[variant]
    out = {}
    for split, offset in (("seen", 0.0), ("unseen", -0.1)):
        for key, value in BASE.items():
            lower_better = not C.higher_is_better(key)
            step = 0.05 if key != "fused.psnr" else 1.0
            out[f"{split}.{key}"] = value + offset + (-s if lower_better else s) * step
    out["seen.bicubic.psnr"] = 19.0  # logged but not in the default selection
    return out


@pytest.fixture(scope="module")
def tracking(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """sqlite DB with: sweep fusion (oldest parent, no variants yet), audio_length run twice
    (the older parent has only 4s), the newer with 4s/2s/1s (2s logged twice: a rerun) and
    an evaluate stage run of 1s with a sample grid."""
    from mlflow import MlflowClient
    from mlflow.entities import Metric, Param, RunTag

    folder = tmp_path_factory.mktemp("tracking")
    uri = f"sqlite:///{folder / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri)
    exp = client.create_experiment("earshot", artifact_location=artifact_location(uri))
    clock = iter(range(T0, T0 + 10_000_000, 1000))

    def run(name: str, tags: dict[str, str], metrics: dict[str, float] = {}, params: dict[str, str] = {},
            parent: str | None = None) -> str:
        if parent:
            tags = {**tags, "mlflow.parentRunId": parent}
        r = client.create_run(exp, start_time=next(clock), tags=tags, run_name=name)
        now = next(clock)
        client.log_batch(r.info.run_id, metrics=[Metric(k, v, now, 0) for k, v in metrics.items()],
                         params=[Param(k, str(v)) for k, v in params.items()],
                         tags=[RunTag(k, v) for k, v in tags.items()])
        client.set_terminated(r.info.run_id, end_time=now)
        return r.info.run_id

    def parent(sweep: str, baseline: str, definition: dict[str, str]) -> str:
        return run(f"sweep {sweep} 2026-09-21T10:00:00Z", {"kind": "sweep", "sweep": sweep, "baseline": baseline,
                                                          "git_sha": SHA}, params=definition)

    def variant(parent_id: str, sweep: str, name: str, metrics: dict[str, float], overrides: dict[str, str]) -> str:
        return run(name, {"kind": "variant", "sweep": sweep, "variant": name, "dvc_exp_name": f"exp-{name}"},
                   metrics, overrides, parent=parent_id)

    fusion = parent("fusion", "fusion_on", {"description": "F or El alone", "baseline": "fusion_on",
                                            "variants.fusion_off.face_sr.fusion": "False"})
    old = parent("audio_length", "4s", {"description": "seconds of speech fed to Ea", "baseline": "4s"})
    variant(old, "audio_length", "4s", {k: 0.0 for k in variant_metrics("4s")}, {})
    definition = {"description": "seconds of speech fed to Ea", "baseline": "4s",
                  "variants.1s.face_sr.audio_seconds": "1.0", "variants.2s.face_sr.audio_seconds": "2.0"}
    new = parent("audio_length", "4s", definition)
    ids = {"4s": variant(new, "audio_length", "4s", variant_metrics("4s"), {})}
    variant(new, "audio_length", "2s", {k: -99.0 for k in variant_metrics("2s")}, {"face_sr.audio_seconds": "2.0"})
    ids["2s"] = variant(new, "audio_length", "2s", variant_metrics("2s"), {"face_sr.audio_seconds": "2.0"})
    ids["1s"] = variant(new, "audio_length", "1s", variant_metrics("1s"), {"face_sr.audio_seconds": "1.0"})
    evaluate = run("evaluate", {"stage": "evaluate", "sweep": "audio_length", "variant": "1s"}, parent=new)
    grid = folder / "grid_seen.png"
    from matplotlib.figure import Figure

    fig = Figure(figsize=(1, 1))
    fig.add_subplot().imshow(np.zeros((4, 4, 3)))
    fig.savefig(grid)
    client.log_artifact(evaluate, str(grid), "face_sr_eval")
    return {"uri": uri, "folder": str(folder), "fusion": fusion, "old": old, "parent": new, **ids}


@pytest.fixture(autouse=True)
def _keep_mlflow_uri():
    """load_sweep points MLflow at the test DB (mlflow.set_tracking_uri also sets the env
    var): put both back so the other test modules see what they saw before."""
    import mlflow.tracking._tracking_service.utils as state

    env, uri = os.environ.get("MLFLOW_TRACKING_URI"), state._tracking_uri
    yield
    state._tracking_uri = uri
    if env is None:
        os.environ.pop("MLFLOW_TRACKING_URI", None)
    else:
        os.environ["MLFLOW_TRACKING_URI"] = env


def test_table_rows_columns_and_deltas(tracking):
    sweep = load_sweep(tracking["uri"], "audio_length")
    assert sweep.parent_id == tracking["parent"], "the latest parent run of the sweep"
    assert list(sweep.runs.index) == ["4s", "1s", "2s"], "baseline first, then numeric order"
    assert sweep.runs.loc["2s", "run_id"] == tracking["2s"], "a rerun variant: its latest run counts"
    assert sweep.overrides == {"4s": {}, "1s": {"face_sr.audio_seconds": "1.0"}, "2s": {"face_sr.audio_seconds": "2.0"}}
    assert sweep.description == "seconds of speech fed to Ea" and sweep.git_sha == SHA

    table = C.comparison_table(sweep.runs, sweep.baseline)
    assert C.metric_keys(table) == list(C.FACE_SR_METRICS)  # the video paper's defaults were not logged
    assert "seen.bicubic.psnr" not in table
    assert table.at["1s", "seen.fused.psnr"] == pytest.approx(20.0)
    assert table.at["1s", C.delta_column("seen.fused.psnr")] == pytest.approx(-1.0)
    assert table.at["2s", C.delta_column("unseen.fused.age_err")] == pytest.approx(0.025)
    assert (table.loc["4s", [C.delta_column(k) for k in C.metric_keys(table)]] == 0).all()
    expected = {k: v - variant_metrics("4s")[k] for k, v in variant_metrics("1s").items()}
    for key in C.metric_keys(table):
        assert table.at["1s", C.delta_column(key)] == pytest.approx(expected[key]), key
        assert C.verdict(key, table.at["1s", C.delta_column(key)]) == "worse", key  # 1s is worse on every metric


def test_metric_selection():
    available = ["seen.fused.psnr", "unseen.fused.psnr", "seen.fused.ssim", "unseen.mismatched.follows_audio"]
    assert C.select_metrics(available, ["fused.psnr"]) == ["seen.fused.psnr", "unseen.fused.psnr"]
    assert C.select_metrics(available, ["unseen.*", "seen.fused.ssim", "no.such.metric"]) == [
        "unseen.fused.psnr", "unseen.mismatched.follows_audio", "seen.fused.ssim"]
    assert numeric_values(["1s", "2s", "4s"]) == {"1s": 1.0, "2s": 2.0, "4s": 4.0}
    assert numeric_values(["8x8", "16x16"]) == {"8x8": 8.0, "16x16": 16.0}
    assert numeric_values(["audio_on", "audio_off"]) is None
    assert numeric_values(["1s", "8x8"]) is None, "mixed units are not one axis"
    assert C.verdict("seen.fused.stlpips", -0.1) == "better" and C.verdict("seen.fused.psnr", -0.1) == "worse"
    assert C.verdict("seen.fused.psnr", 0.0) == "same" and C.verdict("seen.x.unknown", 1.0) is None


def test_the_default_selection_serves_a_sweep_of_either_paper():
    face = ["seen.fused.psnr", "unseen.fused.attr_acc", "seen.bicubic.psnr"]
    video = ["seen.full.fid", "unseen.full.lse_c", "unseen.fid_ratio.bicubic_over_full", "seen.bicubic.fid",
             "unseen.other_audio_follows.lse_c", "unseen.other_audio_follows.lse_c_lo"]
    assert C.select_metrics(face) == ["seen.fused.psnr", "unseen.fused.attr_acc"]
    assert C.select_metrics(video) == ["seen.full.fid", "unseen.full.lse_c", "unseen.fid_ratio.bicubic_over_full",
                                       "unseen.other_audio_follows.lse_c"]
    assert C.verdict("unseen.full.fid", -5.0) == "better" and C.verdict("unseen.full.lse_c", -0.1) == "worse"


def test_report_plot_and_parent_artifacts(tracking, tmp_path):
    import mlflow
    from PIL import Image

    result = C.compare(tracking["uri"], "audio_length", out_dir=tmp_path, metrics=["fused.psnr", "*.fused.age_err"])
    md = result.report.read_text()
    assert result.report == tmp_path / "comparison.md"
    assert "# Ablation `audio_length`" in md and "seconds of speech fed to Ea" in md and SHA in md
    assert tracking["parent"] in md and all(tracking[v] in md for v in ("4s", "1s", "2s"))
    assert "`face_sr.audio_seconds=1.0`" in md and "(params.yaml as is)" in md and "exp-2s" in md
    seen = md[md.index("## seen"):md.index("## unseen")]
    assert "| metric | 4s (baseline) | 1s | 2s |" in seen
    assert "| fused.psnr ↑ | 21.00 | 20.00 (-1.00) | 20.50 (-0.50) |" in seen
    assert "| fused.age_err ↓ | 6.000 | 6.050 (+0.050) | 6.025 (+0.025) |" in seen
    assert "fused.ssim" not in md, "only the selected metrics"
    assert "![audio_length](comparison.png)" in md
    with Image.open(result.plot) as img:
        assert img.format == "PNG" and img.width > 300
    logged = {a.path for a in mlflow.MlflowClient(tracking["uri"]).list_artifacts(tracking["parent"], "comparison")}
    assert logged == set(result.logged) == {"comparison/comparison.md", "comparison/comparison.png"}
    got = Path(mlflow.artifacts.download_artifacts(run_id=tracking["parent"], artifact_path="comparison/comparison.md",
                                                   dst_path=str(tmp_path / "dl"), tracking_uri=tracking["uri"]))
    assert got.read_text() == md


def test_import_is_cheap():
    code = "import sys, components.evaluation.compare; print(sorted({'mlflow', 'matplotlib', 'torch'} & set(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def errorbars(ax) -> list[tuple[list[float], list[float], list[tuple[float, float]]]]:
    """Each error-bar series of a panel: x, the values, and the (lo, hi) of every drawn interval."""
    out = []
    for container in ax.containers:
        line, _, bars = container.lines
        spans = [tuple(seg[:, 1]) for col in bars for seg in col.get_segments() if len(seg)]
        out.append((list(line.get_xdata()), list(line.get_ydata()), spans))
    return out


def test_plot_shows_values_with_their_intervals_seen_and_unseen_side_by_side():
    import pandas as pd

    runs = pd.DataFrame({"metrics.seen.fused.attr_acc": [0.86, 0.84], "metrics.seen.fused.attr_acc_lo": [0.80, 0.77],
                         "metrics.seen.fused.attr_acc_hi": [0.91, 0.90], "metrics.unseen.fused.attr_acc": [0.82, 0.83]},
                        index=["audio_on", "audio_off"])
    table = C.comparison_table(runs, "audio_on")
    assert C.metric_keys(table) == ["seen.fused.attr_acc", "unseen.fused.attr_acc"]  # intervals are not metrics
    fig = C.plot_comparison(table, "audio_on")
    ax = fig.axes[0]
    assert not ax.patches, "points, not bars from an arbitrary baseline"
    (seen_x, seen_y, seen_spans), (unseen_x, unseen_y, unseen_spans) = errorbars(ax)
    assert seen_y == [0.86, 0.84] and unseen_y == [0.82, 0.83]
    assert seen_spans == [(0.80, 0.91), (0.77, 0.90)]
    assert unseen_spans == []  # no interval logged: plain points
    assert all(s < u for s, u in zip(seen_x, unseen_x))  # side by side at each variant
    assert [t.get_text() for t in ax.get_xticklabels()] == ["audio_on", "audio_off"]
    lo, hi = ax.get_ylim()
    assert lo <= 0.77 and hi >= 0.91
    runs.index = ["16x16", "8x8"]
    ax = C.plot_comparison(C.comparison_table(runs, "8x8"), "8x8").axes[0]
    (x, y, spans), _ = errorbars(ax)
    assert x[0] < 8.0 < x[1] < 16.0 and y == [0.84, 0.86] and spans == [(0.77, 0.90), (0.80, 0.91)]
    assert C.figure_png(ax.figure).startswith(b"\x89PNG")


def test_the_evaluations_ablation_plot_draws_each_methods_interval(tmp_path, monkeypatch):
    from components.figures import plots

    metrics = {"seen.fused.psnr": 21.0, "seen.fused.psnr_lo": 20.2, "seen.fused.psnr_hi": 21.9,
               "seen.bicubic.psnr": 19.0, "unseen.fused.psnr": 20.0}
    drawn = {}
    save = plots._save

    def keep_the_panel(plt, fig, path):
        drawn["patches"], drawn["series"] = fig.axes[0].patches, errorbars(fig.axes[0])
        return save(plt, fig, path)

    monkeypatch.setattr(plots, "_save", keep_the_panel)
    path = plots.ablation_plot(metrics, tmp_path / "ablation.png", splits=["seen", "unseen"],
                               methods=["bicubic", "fused"], names=["psnr", "ssim"])
    assert path.read_bytes().startswith(b"\x89PNG")
    (seen_x, seen_y, seen_spans), (unseen_x, unseen_y, unseen_spans) = drawn["series"]
    assert seen_y == [19.0, 21.0] and seen_spans == [(20.2, 21.9)]  # bicubic logged no interval: a plain point
    assert np.isnan(unseen_y[0]) and unseen_y[1] == 20.0 and unseen_spans == []
    assert seen_x[1] < unseen_x[1] and not drawn["patches"]


def test_sweep_selection_and_errors(tracking, tmp_path):
    assert load_sweep(tracking["uri"]).name == "audio_length", "no name: the most recent sweep"
    old = load_sweep(tracking["uri"], parent_id=tracking["old"])
    assert list(old.runs.index) == ["4s"] and old.runs.loc["4s", "metrics.seen.fused.psnr"] == 0.0
    with pytest.raises(TrackingError, match=r"no parent run of a sweep 'nope' in sqlite:.*sweeps recorded: "
                                            r"audio_length, fusion"):
        load_sweep(tracking["uri"], "nope")
    with pytest.raises(TrackingError, match=f"sweep 'fusion': its parent run {tracking['fusion']} .* no variant runs"):
        load_sweep(tracking["uri"], "fusion")
    with pytest.raises(TrackingError, match=f"run {tracking['1s']} is not a sweep's parent run"):
        load_sweep(tracking["uri"], parent_id=tracking["1s"])
    with pytest.raises(TrackingError, match="is the parent of sweep 'audio_length', not 'fusion'"):
        load_sweep(tracking["uri"], "fusion", parent_id=tracking["parent"])
    with pytest.raises(TrackingError, match="no MLflow experiment 'other'"):
        load_sweep(tracking["uri"], experiment="other")
    missing = tmp_path / "none" / "mlflow.db"
    with pytest.raises(TrackingError, match=re.escape(f"no MLflow tracking database at {missing} "
                                                      f"(tracking URI sqlite:///{missing})")):
        load_sweep(f"sqlite:///{missing}")
    assert not missing.parent.exists(), "a missing DB is reported, not created"
    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(TrackingError, match=f"the MLflow tracking server http://127.0.0.1:{port} does not answer"):
        load_sweep(f"http://127.0.0.1:{port}")
    sweep = load_sweep(tracking["uri"], "audio_length")
    with pytest.raises(C.CompareError, match="none of the metrics .*no.such"):
        C.comparison_table(sweep.runs, sweep.baseline, ["no.such.metric"])


def test_variant_images(tracking, tmp_path):
    images = variant_images(load_sweep(tracking["uri"], "audio_length"), tmp_path)
    assert list(images) == ["1s"], "only 1s has a sample grid (on its evaluate stage run)"
    assert images["1s"][0].name == "grid_seen.png" and images["1s"][0].is_file()


def test_cli(tracking, tmp_path, monkeypatch):
    from pipelines.cli import app

    monkeypatch.setenv("MLFLOW_TRACKING_URI", tracking["uri"])
    monkeypatch.setenv("COLUMNS", "200")
    out = tmp_path / "cmp"
    res = CliRunner().invoke(app, ["compare", "audio_length", "--out", str(out), "--metrics", "fused.psnr,fused.stlpips",
                                   "--params", str(ROOT / "params.yaml")])
    assert res.exit_code == 0, res.output
    assert "sweep audio_length" in res.output and "baseline 4s" in res.output
    assert re.search(r"fused\.psnr ↑\s+│\s+21\.00\s+│\s+20\.00 \(-1\.00\)\s+│\s+20\.50 \(-0\.50\)", res.output), res.output
    assert re.search(r"fused\.stlpips ↓\s+│\s+0\.200\s+│\s+0\.250 \(\+0\.050\)", res.output), res.output
    assert "logged comparison/comparison.md, comparison/comparison.png" in res.output
    assert (out / "comparison.md").is_file() and (out / "comparison.png").is_file()

    res = CliRunner().invoke(app, ["compare", "nope", "--no-log", "--params", str(ROOT / "params.yaml")])
    assert res.exit_code == 2 and "error: no parent run of a sweep 'nope'" in res.output


def test_cli_colors_deltas_by_direction(tracking):
    from rich.console import Console

    from pipelines.cli_compare import split_table

    sweep = load_sweep(tracking["uri"], "audio_length")
    table = C.comparison_table(sweep.runs, sweep.baseline, ["seen.fused.psnr", "seen.fused.age_err"])
    console = Console(record=True, width=150, color_system="truecolor", force_terminal=True)
    console.print(split_table(sweep, table, "seen"))
    html = console.export_text(styles=True)
    red = re.compile(r"\x1b\[31m\((.*?)\)")
    assert red.findall(html) == ["-1.00", "-0.50", "+0.050", "+0.025"], "all worse: psnr down and age error up"


def test_notebook_runs_headless(tracking, monkeypatch):
    import nbformat
    from nbclient import NotebookClient

    monkeypatch.setenv("MLFLOW_TRACKING_URI", tracking["uri"])
    monkeypatch.setenv("EARSHOT_SWEEP", "audio_length")
    path = ROOT / "notebooks" / "ablation_comparison.ipynb"
    nb = nbformat.read(path, as_version=4)
    assert all(not c.get("outputs") and c.get("execution_count") is None for c in nb.cells if c.cell_type == "code"), \
        "commit the notebook with its outputs cleared"
    NotebookClient(nb, timeout=120, kernel_name="python3", resources={"metadata": {"path": str(ROOT / "notebooks")}}).execute()
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    assert not [o for o in outputs if o.get("output_type") == "error"]
    text = "".join(o.get("text", "") for o in outputs)
    assert f"tracking {tracking['uri']}; sweeps in params.yaml: audio, audio_length" in text
    html = "".join(o.get("data", {}).get("text/html", "") for o in outputs)
    assert "seen.fused.psnr" in html and "Δ seen.fused.psnr" in html, "the table with deltas"
    assert sum("image/png" in o.get("data", {}) for o in outputs) >= 2, "the comparison plot and the 1s sample grid"

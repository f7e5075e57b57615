"""Faults a user hands the command line: huge or rotated images for ``earshot face-sr``,
a ``--params`` file that is not there, servers asked to listen beyond this machine, and
CI run without its real data. Each is a one-line error naming the input (or, for a batch,
the failed pair named in the summary with the good pairs still done)."""

from __future__ import annotations

import logging
import os
import struct
import subprocess
import zlib
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from PIL import Image
from typer.testing import CliRunner

from components.config import load_params
from components.config.orchestration import is_loopback
from components.errors import ConfigError, EarshotError
from components.inference.inputs import read_image
from components.orchestration.servers import remote_bind_warning, server_specs
from pipelines._common import parse_stage_args
from pipelines.cli import app
from tests._fixtures import speech_like
from tests.inference.test_face_sr_cli import save_tiny_model

ROOT = Path(__file__).resolve().parents[2]
SR = 16000


def earshot(*args: str | Path) -> tuple[int, str]:
    result = CliRunner().invoke(app, [str(a) for a in args])
    return result.exit_code, result.output


# ------------------------------------------------------------------ images for face-sr


def bomb_png(path: Path, side: int = 30000) -> Path:
    """A 100-byte PNG whose header claims ``side`` x ``side`` RGB pixels (2.7 GB decoded)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", side, side, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 64))
                     + chunk(b"IEND", b""))
    return path


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tiny_model(tmp_path_factory.mktemp("models"))


def test_decompression_bomb_is_a_one_line_error_naming_the_file(tmp_path, checkpoint):
    voice = tmp_path / "v.wav"
    sf.write(voice, speech_like(4 * SR, SR, 0, np.random.default_rng(0)), SR)
    bomb = bomb_png(tmp_path / "bomb.png")
    with pytest.raises(EarshotError, match=r"bomb.png: image too large"):
        read_image(bomb)
    code, out = earshot("face-sr", "--image", bomb, "--audio", voice, "--out", tmp_path / "o.png",
                        "--checkpoint", checkpoint)
    assert code == 2 and len(out.strip().splitlines()) == 1, out
    assert f"{bomb}: image too large" in out and not (tmp_path / "o.png").exists()


def test_batch_goes_on_after_a_bomb_and_the_summary_names_it(tmp_path, checkpoint):
    rng = np.random.default_rng(1)
    folder = tmp_path / "in"
    folder.mkdir()
    for stem in ("a_bomb", "good", "zz_last"):
        sf.write(folder / f"{stem}.wav", speech_like(4 * SR, SR, 1, rng), SR)
        if stem != "a_bomb":
            Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).save(folder / f"{stem}.png")
    bomb_png(folder / "a_bomb.png")
    out_dir = tmp_path / "out"
    code, out = earshot("face-sr", "--image", folder, "--audio", folder, "--out", out_dir, "--checkpoint", checkpoint)
    assert code == 2
    assert (out_dir / "good.png").is_file() and (out_dir / "zz_last.png").is_file()
    assert not (out_dir / "a_bomb.png").exists()
    summary = out.strip().splitlines()[-1]
    assert "1 of 3 pairs failed: a_bomb (" in summary and "a_bomb.png: image too large" in summary, out


def test_stills_are_read_upright_from_their_exif_orientation(tmp_path):
    pixels = np.random.default_rng(2).integers(0, 256, (2, 4, 3), dtype=np.uint8)  # 4 wide, 2 high as stored
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation: the camera was turned 90 degrees clockwise
    path = tmp_path / "phone.png"
    Image.fromarray(pixels).save(path, exif=exif)
    upright = read_image(path)
    assert upright.shape == (4, 2, 3)
    assert np.array_equal(upright, np.rot90(pixels, k=-1))


# ------------------------------------------------------------------ --params


def test_missing_params_file_is_an_error_naming_it(tmp_path, capsys):
    missing = tmp_path / "nowhere" / "params.yml"
    with pytest.raises(ConfigError, match=f"{missing}: no such params file"):
        load_params(missing)
    with pytest.raises(ConfigError, match="is a directory, not a params file"):
        load_params(tmp_path)
    assert load_params(ROOT / "params.yaml").orchestration.host == "127.0.0.1"  # the project's own still loads

    with pytest.raises(SystemExit) as exc:
        parse_stage_args("faces", ["--params", str(missing)])
    assert exc.value.code == 2 and f"{missing}: no such params file" in capsys.readouterr().err

    for command in (["stage", "faces"], ["data", "prepare", "--input", str(tmp_path), "--out", str(tmp_path / "d")],
                    ["data", "synth", "--out", str(tmp_path / "s")], ["server", "status"]):
        code, out = earshot(*command, "--params", missing)
        assert code == 2 and f"{missing}: no such params file" in out, (command, out)
    assert not (tmp_path / "d").exists() and not (tmp_path / "s").exists()


# ------------------------------------------------------------------ orchestration.host


@pytest.mark.parametrize("host, local", [
    ("127.0.0.1", True), ("127.8.9.10", True), ("::1", True), ("[::1]", True), ("localhost", True),
    ("LOCALHOST", True), ("0.0.0.0", False), ("::", False), ("192.168.1.5", False), ("myhost.example", False),
])
def test_loopback_hosts(host, local):
    assert is_loopback(host) is local


def test_non_loopback_host_is_refused_unless_allowed_then_warned(tmp_path, caplog):
    """Validation and the server specs only: nothing is bound or started."""
    with pytest.raises(ConfigError) as exc:
        load_params(ROOT / "params.yaml", {"orchestration.host": "0.0.0.0"})
    message = str(exc.value)
    assert "orchestration" in message and "'0.0.0.0' is not a loopback address" in message
    assert "allow_remote" in message and "\n" not in message

    params = load_params(ROOT / "params.yaml", {"orchestration.host": "0.0.0.0", "orchestration.allow_remote": True})
    assert "no login" in remote_bind_warning(params.orchestration)
    with caplog.at_level(logging.WARNING, logger="components.orchestration.servers"):
        specs = server_specs(params, tmp_path, environ={})
    assert all(spec.host == "0.0.0.0" for spec in specs)
    assert any("'0.0.0.0' is not a loopback address" in r.getMessage() for r in caplog.records)
    assert remote_bind_warning(load_params(ROOT / "params.yaml").orchestration) is None

    code, out = earshot("server", "status", "--params", ROOT / "params.yaml", "-S", "orchestration.host=0.0.0.0")
    assert code == 2 and "is not a loopback address" in out


# ------------------------------------------------------------------ .ci/run


def _ci_check(tmp_path: Path, ci: str | None) -> subprocess.CompletedProcess:
    """``.ci/run --check-data`` in a fake layout (a clone with no ../shared beside it)."""
    clone = tmp_path / "clone"
    (clone / ".ci").mkdir(parents=True, exist_ok=True)
    (clone / ".ci" / "run").write_bytes((ROOT / ".ci" / "run").read_bytes())
    env = {k: v for k, v in os.environ.items() if k not in ("CI", "EARSHOT_REAL_DATA")}
    if ci is not None:
        env["CI"] = ci
    return subprocess.run(["bash", str(clone / ".ci" / "run"), "--check-data"], env=env, capture_output=True,
                          text=True, timeout=30)


def test_ci_without_real_data_fails(tmp_path):
    result = _ci_check(tmp_path, "true")
    assert result.returncode != 0
    assert f"no real data at {tmp_path}/shared/realdata" in result.stderr and "CI=true" in result.stderr


def test_outside_ci_missing_real_data_is_a_warning(tmp_path):
    result = _ci_check(tmp_path, None)
    assert result.returncode == 0 and "warning: no real data" in result.stderr
    (tmp_path / "shared" / "realdata").mkdir(parents=True)
    assert _ci_check(tmp_path, "true").returncode == 0

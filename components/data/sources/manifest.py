"""Download manifests: what to fetch, validated row by row.

A manifest is a CSV or Parquet table with the columns

==========  ========  ==========================================================
speaker_id  required  safe id (see :mod:`.ids`)
video_id    required  safe id
clip_id     optional  safe id; default: the segment in milliseconds, zero-padded
                      so names sort by time (``00012400-00016800`` for 12.4-16.8 s;
                      no dot, so ``Path(key).with_suffix()`` stays safe), or
                      ``00000`` for a whole video
url         required  ``http(s)://``, ``file:///abs/path``, a YouTube URL or a bare
                      11-character YouTube video id
start, end  optional  segment to keep, in seconds (``start < end``)
sha256      optional  expected checksum of the fetched file (before trimming)
==========  ========  ==========================================================

or a folder of VoxCeleb2's per-utterance metadata files
(``txt/<speaker>/<youtube_id>/<utt>.txt``, see :func:`parse_voxceleb_txt`).

Every row is validated on its own with pydantic; a bad row becomes a
:class:`RowError` naming the row and the field (quarantined as ``bad_manifest_row``)
and the other rows go on. Nothing from a row ever reaches a shell: ids are restricted
to a path-safe alphabet and URLs to the schemes above.
"""

from __future__ import annotations

import csv
import math
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal
from urllib.parse import parse_qs, urlsplit

import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from components.data.sources.ids import clip_key, id_problem
from components.errors import ConfigError

COLUMNS = ["speaker_id", "video_id", "clip_id", "url", "start", "end", "sha256"]
REQUIRED = ["speaker_id", "video_id", "url"]
YOUTUBE_ID = re.compile(r"^[A-Za-z0-9_-]{11}$")
YOUTUBE_HOSTS = {"youtube.com", "www.youtube.com", "m.youtube.com", "music.youtube.com", "youtu.be",
                 "www.youtube-nocookie.com", "youtube-nocookie.com"}
VOXCELEB_FPS = 25  # the FRAME column of VoxCeleb2 metadata counts frames at 25 fps
UNSEGMENTED_CLIP_ID = "00000"

UrlKind = Literal["http", "file", "youtube"]


def youtube_url(video_id: str) -> str:
    return f"https://www.youtube.com/watch?v={video_id}"


def normalize_url(value: str) -> str:
    """Check a manifest URL and return it in canonical form (YouTube ids become URLs).

    Raises ``ValueError`` saying why the URL is refused.
    """
    value = value.strip()
    if YOUTUBE_ID.match(value):
        return youtube_url(value)
    parts = urlsplit(value)
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https", "file"):
        raise ValueError(f"scheme {scheme + ':' if scheme else '(none)'} not allowed: use http(s)://, "
                         "file:///abs/path, a YouTube URL or an 11-character YouTube id")
    if scheme == "file":
        if parts.netloc not in ("", "localhost") or not parts.path.startswith("/"):
            raise ValueError("file URLs must be file:///absolute/path")
        return value
    host = (parts.hostname or "").lower()
    if not host:
        raise ValueError("http(s) URL without a host")
    if host in YOUTUBE_HOSTS:
        video = _youtube_video_id(host, parts.path, parts.query)
        if video is None:
            raise ValueError("YouTube URL without a valid video id")
        return youtube_url(video)
    return value


def _youtube_video_id(host: str, path: str, query: str) -> str | None:
    if host == "youtu.be":
        candidate = path.strip("/").split("/")[0]
    elif path.rstrip("/") == "/watch":
        candidate = (parse_qs(query).get("v") or [""])[0]
    else:  # /shorts/<id>, /embed/<id>, /live/<id>, /v/<id>
        segments = [s for s in path.split("/") if s]
        candidate = segments[1] if len(segments) == 2 and segments[0] in ("shorts", "embed", "live", "v") else ""
    return candidate if YOUTUBE_ID.match(candidate) else None


def url_kind(url: str) -> UrlKind:
    """Which fetcher handles a *normalized* URL."""
    parts = urlsplit(url)
    if parts.scheme == "file":
        return "file"
    if (parts.hostname or "").lower() in YOUTUBE_HOSTS:
        return "youtube"
    return "http"


class ManifestRow(BaseModel):
    """One validated manifest row. ``clip_id`` is filled in when the manifest leaves it out."""

    model_config = ConfigDict(extra="ignore", str_strip_whitespace=True)

    speaker_id: str
    video_id: str
    clip_id: str | None = None
    url: str
    start: float | None = Field(None, ge=0, allow_inf_nan=False)
    end: float | None = Field(None, gt=0, allow_inf_nan=False)
    sha256: str | None = None

    @field_validator("speaker_id", "video_id", "clip_id")
    @classmethod
    def _safe_id(cls, value: str | None) -> str | None:
        if value is not None and (problem := id_problem(value)):
            raise ValueError(problem)
        return value

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        return normalize_url(value)

    @field_validator("sha256")
    @classmethod
    def _sha256(cls, value: str | None) -> str | None:
        if value is not None and not re.fullmatch(r"[0-9a-fA-F]{64}", value):
            raise ValueError("must be 64 hexadecimal characters")
        return value.lower() if value else None

    @model_validator(mode="after")
    def _segment(self) -> "ManifestRow":
        if self.start is not None and self.end is not None and self.start >= self.end:
            raise ValueError(f"start ({self.start:g}) must be before end ({self.end:g})")
        if self.clip_id is None:
            self.clip_id = default_clip_id(self.start, self.end)
        return self

    @property
    def key(self) -> str:
        return clip_key(self.speaker_id, self.video_id, self.clip_id or UNSEGMENTED_CLIP_ID)

    @property
    def kind(self) -> UrlKind:
        return url_kind(self.url)

    @property
    def segment(self) -> tuple[float | None, float | None] | None:
        return None if self.start is None and self.end is None else (self.start, self.end)


def default_clip_id(start: float | None, end: float | None) -> str:
    """``<start ms>-<end ms>`` (8 digits each, ``end`` when open), ``00000`` for a whole video."""
    if start is None and end is None:
        return UNSEGMENTED_CLIP_ID
    end_part = "end" if end is None else f"{round(end * 1000):08d}"
    return f"{round((start or 0) * 1000):08d}-{end_part}"


@dataclass(frozen=True)
class RowError:
    """A manifest row that failed validation; ``detail`` names the row and the field."""

    key: str  # "row-<n>" or the metadata file's relative path: a label, never a path used
    source: str
    detail: str


@dataclass(frozen=True)
class Entry:
    where: str  # "manifest.csv row 3 (line 4)" or a txt file's relative path
    row: ManifestRow


def validate_rows(records: list[dict[str, Any]], wheres: list[str], labels: list[str],
                  source: str) -> tuple[list[Entry], list[RowError]]:
    """Validate raw row dicts; duplicate keys after the first are errors too."""
    entries: list[Entry] = []
    errors: list[RowError] = []
    first: dict[str, str] = {}
    for raw, where, label in zip(records, wheres, labels):
        try:
            row = ManifestRow.model_validate({k: v for k, v in raw.items() if v is not None})
        except ValidationError as exc:
            errors.append(RowError(label, source, f"{where}: {_describe(exc, raw)}"))
            continue
        if row.key in first:
            errors.append(RowError(label, source, f"{where}: key {row.key} already used by {first[row.key]}"))
            continue
        first[row.key] = where
        entries.append(Entry(where, row))
    return entries, errors


def _describe(exc: ValidationError, raw: dict[str, Any]) -> str:
    parts = []
    for err in exc.errors():
        field = ".".join(str(p) for p in err["loc"])
        msg = err["msg"].removeprefix("Value error, ")
        if field:
            value = raw.get(field)
            parts.append(f"{field}={value!r}: {msg}")
        else:
            parts.append(msg)
    return "; ".join(parts)


def read_table(path: str | Path) -> tuple[list[Entry], list[RowError]]:
    """Validate every row of a CSV or Parquet manifest."""
    path = Path(path)
    if path.suffix.lower() == ".parquet":
        header, rows = _parquet_rows(path)
    elif path.suffix.lower() == ".csv":
        header, rows = _csv_rows(path)
    else:
        raise ConfigError(f"download.input {path}: a manifest must be .csv or .parquet (or a VoxCeleb2 txt folder)")
    missing = [c for c in REQUIRED if c not in header]
    if missing:
        raise ConfigError(f"download.input {path}: missing column(s) {missing}; expected {COLUMNS}")
    records, wheres, labels, errors = [], [], [], []
    for number, (where, fields) in enumerate(rows, 1):
        where, label = f"{path.name} row {number}{where}", f"row-{number}"
        if isinstance(fields, str):  # the row could not be read: its problem
            errors.append(RowError(label, str(path), f"{where}: {fields}"))
            continue
        raw = dict(zip(header, fields))
        records.append({c: _clean(raw.get(c)) for c in COLUMNS})
        wheres.append(where)
        labels.append(label)
    entries, bad = validate_rows(records, wheres, labels, str(path))
    return entries, errors + bad


Rows = list[tuple[str, list[Any] | str]]  # (" (line n)" or "", the row's fields or why it is unreadable)


def _parquet_rows(path: Path) -> tuple[list[str], Rows]:
    try:
        frame = pd.read_parquet(path)
    except (OSError, ValueError) as exc:  # pyarrow's ArrowInvalid is a ValueError, ArrowIOError an OSError
        raise ConfigError(f"download.input {path}: not a readable Parquet file ({exc})") from None
    header = [str(c).strip() for c in frame.columns]
    return header, [("", list(values)) for values in frame.itertuples(index=False, name=None)]


def _csv_rows(path: Path) -> tuple[list[str], Rows]:
    """Header and rows of a CSV manifest, everything as text (ids such as "00001" stay text).

    Each line is decoded on its own, so a byte that is not UTF-8 spoils its row only;
    a row with more or fewer fields than the header is refused rather than guessed at.
    """
    undecodable: dict[int, str] = {}
    with open(path, "rb") as file:
        return _parse_csv(path, csv.reader(_decoded_lines(file, undecodable)), undecodable)


def _decoded_lines(file: Any, undecodable: dict[int, str]) -> Iterator[str]:
    """The file's lines as text, read as they are needed; a line that is not UTF-8 is
    noted in ``undecodable`` (by line number) and passed on with replacement characters."""
    for number, raw in enumerate(file, 1):
        try:
            yield raw.decode("utf-8-sig" if number == 1 else "utf-8")
        except UnicodeDecodeError as exc:
            undecodable[number] = f"not UTF-8 text (byte 0x{raw[exc.start]:02x} at column {exc.start + 1})"
            yield raw.decode("utf-8", errors="replace")


def _parse_csv(path: Path, reader: Any, undecodable: dict[int, str]) -> tuple[list[str], Rows]:
    """The header, then each row's fields or its problem (an undecodable line spoils the row spanning it)."""
    header: list[str] | None = None
    rows: Rows = []
    while True:
        first = reader.line_num + 1
        try:
            fields = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:
            fields = f"not valid CSV ({exc})"
        span = range(first, reader.line_num + 1)
        problem = next((undecodable[n] for n in span if n in undecodable), None)
        where = f" (line {first})"
        if header is None:
            if problem or isinstance(fields, str):
                raise ConfigError(f"download.input {path}: header line{where}: {problem or fields}")
            if not fields:
                continue
            header = [f.strip() for f in fields]
            if len(set(header)) < len(header):
                raise ConfigError(f"download.input {path}: header line{where} names a column twice: {header}")
        elif problem or isinstance(fields, str):
            rows.append((where, problem or fields))
        elif fields and len(fields) != len(header):
            rows.append((where, f"{len(fields)} fields, the header has {len(header)}"))
        elif fields:
            rows.append((where, fields))
    if header is None:
        raise ConfigError(f"download.input {path}: the file is empty; a manifest starts with a header line "
                          f"naming its columns {COLUMNS}")
    return header, rows


def _clean(value: Any) -> Any:
    """Empty cells and NaN are missing values; numbers stay numbers, the rest is text."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    if hasattr(value, "item"):  # numpy scalar
        value = value.item()
    if isinstance(value, str):
        return value.strip() or None
    return value


def parse_voxceleb_txt(text: str) -> dict[str, Any]:
    """Fields of one VoxCeleb2 utterance metadata file, as a raw manifest row.

    The file looks like::

        Identity  : 	id00012
        Reference : 	21Uxsk56VDQ
        Offset    : 	1
        FV Conf   : 	16.647	(1)
        ASD Conf  : 	4.931

        FRAME 	X 	Y 	W 	H
        000245 	0.476 	0.156 	0.233 	0.414
        ...

    ``Reference`` is the YouTube video id, ``FRAME`` numbers count frames at 25 fps in
    that video: the utterance spans ``first/25`` to ``last/25`` seconds. Raises
    ``ValueError`` when a field or the frame table is missing.
    """
    header: dict[str, str] = {}
    frames: list[int] = []
    in_table = False
    for number, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line:
            continue
        if in_table:
            first = line.split()[0]
            if not first.isdigit():
                raise ValueError(f"line {number}: frame number expected, got {first!r}")
            frames.append(int(first))
        elif line.upper().startswith("FRAME"):
            in_table = True
        elif ":" in line:
            name, _, value = line.partition(":")
            header[" ".join(name.split()).lower()] = value.strip()
    for field in ("identity", "reference"):
        if not header.get(field):
            raise ValueError(f"no '{field.capitalize()} :' line")
    if not frames:
        raise ValueError("no FRAME table rows")
    return {"speaker_id": header["identity"], "video_id": header["reference"], "url": header["reference"],
            "start": min(frames) / VOXCELEB_FPS, "end": max(frames) / VOXCELEB_FPS}


def read_voxceleb_txt(root: str | Path) -> tuple[list[Entry], list[RowError]]:
    """Validate every ``<speaker>/<youtube_id>/<utt>.txt`` below ``root`` (clip id = ``<utt>``)."""
    root = Path(root)
    files = sorted(p for p in root.rglob("*.txt") if not any(s.startswith(".") for s in p.relative_to(root).parts))
    if not files:
        raise ConfigError(f"download.input {root}: no VoxCeleb2 metadata .txt files below it")
    records, wheres, errors = [], [], []
    for path in files:
        rel = path.relative_to(root).as_posix()
        try:
            record = parse_voxceleb_txt(path.read_text(errors="replace"))
        except (OSError, ValueError) as exc:
            errors.append(RowError(rel, str(root), f"{rel}: {exc}"))
            continue
        records.append({**record, "clip_id": path.stem})
        wheres.append(rel)
    entries, bad = validate_rows(records, wheres, wheres, str(root))
    return entries, errors + bad


def read_manifest(path: str | Path) -> tuple[list[Entry], list[RowError]]:
    """Rows of a CSV/Parquet manifest, or of a folder of VoxCeleb2 metadata files."""
    path = Path(path)
    if path.is_dir():
        return read_voxceleb_txt(path)
    if not path.is_file():
        raise ConfigError(f"download.input {path}: no such manifest file or folder")
    return read_table(path)

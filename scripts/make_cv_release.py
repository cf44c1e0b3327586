"""Build Common-Voice-shaped releases for tests and benchmarks: full or delta, tarball or folder.

The layout and column sets are Common Voice's own (see ../shared/NOTES.md):
``cv-corpus-<ver>[-delta]-<date>/<locale>/`` with ``clips/*.mp3``, the clip lists, ``clip_durations.tsv``
and ``reported.tsv``.  Clips are MP3s made from the bundled sample's real (espeak-ng) speech, so they
transcribe to their sentence.  Planted problems, each on by default:
- one TSV row whose mp3 is not in the release (``--no-missing`` to leave it out);
- one corrupt mp3 (random bytes);
- a sentence holding double and single quotes;
``--old-schema`` writes the pre-v17 columns (``accent``, no ``sentence_id``/``sentence_domain``).
``--cumulative`` writes three releases a team meets over a quarter: full N, delta N+1, and full N+1
holding N's clips again with new votes and splits (two moved to invalidated, one promoted from other,
one sentence reported).

Usage: python scripts/make_cv_release.py OUT_DIR [--clips N] [--version 23.0] [--date 2025-09-05]
       [--locale en] [--delta] [--old-schema] [--folder] [--tsv-first] [--start-id N] [--cumulative]
"""

from __future__ import annotations

import argparse
import hashlib
import io
import tarfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import soundfile as sf

from pipeline.commonvoice.reader import CV_COLUMNS

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "pipeline" / "sample_data" / "common_voice_sample.parquet"

CURRENT_COLUMNS = list(CV_COLUMNS)  # the reader's own list: fixtures and reader cannot drift
OLD_COLUMNS = [
    "client_id",
    "path",
    "sentence",
    "up_votes",
    "down_votes",
    "age",
    "gender",
    "accent",
    "locale",
    "segment",
]
QUOTED_SENTENCE = 'He said "the sun is a star" and it\'s true.'
CORRUPT = "corrupt"
MISSING = "missing"


@dataclass(frozen=True)
class Release:
    path: Path  # the tarball, or the extracted locale folder
    release: str
    locale: str
    rows: list[dict[str, str]]  # the clip list (validated.tsv), as written
    missing: str | None  # path of the row whose clip is absent
    corrupt: str | None  # path of the row whose clip does not decode


def _mp3(audio: np.ndarray, rate: int) -> bytes:
    buf = io.BytesIO()
    sf.write(buf, audio, rate, format="MP3")
    return buf.getvalue()


def sample_clips(n: int) -> list[tuple[bytes, str, float]]:
    """(mp3 bytes, sentence, seconds) for ``n`` clips, cycling through the bundled sample."""
    table = pq.read_table(SAMPLE, columns=["audio_bytes", "sentence"]).to_pylist()
    encoded = []
    for row in table[: min(n, len(table))]:
        audio, rate = sf.read(io.BytesIO(row["audio_bytes"]), dtype="float32")
        encoded.append((_mp3(audio, rate), row["sentence"], len(audio) / rate))
    return [encoded[i % len(encoded)] for i in range(n)]


def _tsv(rows: list[dict[str, str]], columns: list[str]) -> bytes:
    lines = ["\t".join(columns)] + ["\t".join(str(r.get(c, "")) for c in columns) for r in rows]
    return ("\n".join(lines) + "\n").encode()


def clip_rows(audio: list[tuple[bytes, str, float]], locale: str, start_id: int) -> list[dict[str, str]]:
    rows = []
    for i, (_, sentence, _) in enumerate(audio):
        if i == 1:
            sentence = QUOTED_SENTENCE
        rows.append(
            {
                "client_id": hashlib.sha256(f"speaker{i % 3}".encode()).hexdigest(),
                "path": f"common_voice_{locale}_{start_id + i}.mp3",
                "sentence_id": hashlib.sha256(sentence.encode()).hexdigest(),
                "sentence": sentence,
                "sentence_domain": "",
                "up_votes": str(2 + i % 3),
                "down_votes": str(i % 2),
                "age": ["twenties", "thirties", ""][i % 3],
                "gender": ["male_masculine", "female_feminine", ""][i % 3],
                "accents": "United States English" if i % 2 else "",
                "accent": "us" if i % 2 else "",
                "variant": "",
                "locale": locale,
                "segment": "",
            }
        )
    return rows


def write_release(
    out_dir: Path,
    release: str,
    locale: str,
    lists: dict[str, list[dict[str, str]]],
    files: dict[str, tuple[bytes, float]],
    reported: list[dict[str, str]],
    *,
    columns: list[str] = CURRENT_COLUMNS,
    folder: bool = False,
    tsv_first: bool = False,
    order: Sequence[str] = (),
) -> Path:
    """One release on disk, as Common Voice ships it: the clip lists, clip_durations.tsv, reported.tsv and
    ``clips/``, as an extracted locale folder or a tarball.  Returns the folder or the tarball.

    ``order`` puts the tarball's members in that order (TSV stems and ``"clips"``; the rest follow), as
    a repacked release may be: a reader must not stop at ``clips/``."""
    tsvs = {name: _tsv(rows, columns) for name, rows in lists.items()}
    tsvs["clip_durations"] = _tsv(
        [{"clip": n, "duration[ms]": str(round(sec * 1000))} for n, (_, sec) in files.items() if sec],
        ["clip", "duration[ms]"],
    )
    tsvs["reported"] = _tsv(reported, ["sentence_id", "sentence", "locale", "reason"])
    out_dir.mkdir(parents=True, exist_ok=True)
    if folder:
        root = out_dir / release / locale
        (root / "clips").mkdir(parents=True, exist_ok=True)
        for name, (data, _) in files.items():
            (root / "clips" / name).write_bytes(data)
        for stem, body in tsvs.items():
            (root / f"{stem}.tsv").write_bytes(body)
        return root
    path = out_dir / f"{release}-{locale}.tar.gz"
    members = [(f"{release}/{locale}/clips/{n}", d) for n, (d, _) in files.items()]
    tsv_members = [(f"{release}/{locale}/{s}.tsv", b) for s, b in tsvs.items()]
    members = tsv_members + members if tsv_first else members + tsv_members
    if order:
        named = {s: [(f"{release}/{locale}/{s}.tsv", b)] for s, b in tsvs.items()}
        named["clips"] = [(f"{release}/{locale}/clips/{n}", d) for n, (d, _) in files.items()]
        members = [m for name in order for m in named.pop(name)] + [m for rest in named.values() for m in rest]
    with tarfile.open(path, "w:gz", compresslevel=1) as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size, info.mtime = len(data), int(time.time())
            tar.addfile(info, io.BytesIO(data))
    return path


def _reported(row: dict[str, str], locale: str) -> dict[str, str]:
    return {"sentence_id": row["sentence_id"], "sentence": row["sentence"], "locale": locale, "reason": "grammar"}


def build_release(
    out_dir: Path,
    *,
    clips: int = 8,
    version: str = "23.0",
    date: str = "2025-09-05",
    locale: str = "en",
    delta: bool = False,
    old_schema: bool = False,
    folder: bool = False,
    tsv_first: bool = False,
    start_id: int = 41_000_000,
    missing: bool = True,
    corrupt: bool = True,
    splits: bool | None = None,
) -> Release:
    """Write one release into ``out_dir``; see the module docstring."""
    release = f"cv-corpus-{version}-{'delta-' if delta else ''}{date}"
    audio = sample_clips(clips)
    rows = clip_rows(audio, locale, start_id)
    files = {row["path"]: (mp3, seconds) for row, (mp3, _, seconds) in zip(rows, audio, strict=True)}
    missing_path = corrupt_path = None
    if missing and clips >= 3:
        missing_path = rows[-1]["path"]
        del files[missing_path]
    if corrupt and clips >= 4:
        corrupt_path = rows[-2]["path"]
        files[corrupt_path] = (np.random.default_rng(0).bytes(4000), 0.0)
    lists = {"validated": rows}
    if splits if splits is not None else not delta:
        half = max(1, len(rows) // 2)
        lists.update(train=rows[:half], dev=rows[half:], test=[])
    lists.update(invalidated=[], other=[])
    path = write_release(
        out_dir,
        release,
        locale,
        lists,
        files,
        [_reported(rows[0], locale)],
        columns=OLD_COLUMNS if old_schema else CURRENT_COLUMNS,
        folder=folder,
        tsv_first=tsv_first,
    )
    return Release(path, release, locale, rows, missing_path, corrupt_path)


@dataclass(frozen=True)
class Cumulative:
    """Full N, delta N+1 and full N+1, and what N+1 changed."""

    releases: list[Path]
    rows: dict[str, dict[str, str]]  # every clip's TSV row as N first wrote it
    first: list[str]  # full N's validated clips
    current: list[str]  # full N+1's validated clips: the current view's curated set, before the gates
    moved: list[str]  # validated in N, invalidated in N+1
    promoted: str  # other in N, validated in N+1
    reported: str  # validated in both; its sentence reported after N
    new: list[str]  # the delta's clips (in full N+1 too)
    missing_in_first: str  # listed by N without its mp3; N+1 ships it
    corrupt: str  # random bytes in both


def build_cumulative(
    out_dir: Path, *, clips: int = 8, new: int = 4, locale: str = "en", folder: bool = False
) -> Cumulative:
    """Three releases as a team downloads them over a quarter: full N (v22), delta N+1 (v23) and full
    N+1 (v23), which holds N's clips again with new votes and splits: two moved to invalidated, one
    promoted from other to validated, one sentence reported; and the delta's clips."""
    audio = sample_clips(clips + 1 + new)
    rows = clip_rows(audio, locale, 41_000_000)
    files = {row["path"]: (mp3, sec) for row, (mp3, _, sec) in zip(rows, audio, strict=True)}
    old, promoted, fresh = rows[:clips], rows[clips], rows[clips + 1 :]
    moved, reported = old[2:4], old[4]
    # N lacks one clip's mp3 (N+1 has it) and ships one corrupt mp3 (so does N+1).
    missing, corrupt = old[-1]["path"], old[-2]["path"]
    files[corrupt] = (np.random.default_rng(0).bytes(4000), 0.0)
    n = write_release(
        out_dir,
        "cv-corpus-22.0-2025-06-20",
        locale,
        {
            "validated": old,
            "other": [promoted],
            "invalidated": [],
            "train": old[: clips // 2],
            "dev": old[clips // 2 :],
        },
        {r["path"]: files[r["path"]] for r in [*old, promoted] if r["path"] != missing},
        [],
        folder=folder,
    )
    delta = write_release(
        out_dir,
        "cv-corpus-23.0-delta-2025-09-05",
        locale,
        {"validated": fresh, "other": [], "invalidated": []},
        {r["path"]: files[r["path"]] for r in fresh},
        [],
        folder=folder,
    )
    revoted = [{**r, "up_votes": str(int(r["up_votes"]) + 1)} for r in old if r not in moved]
    current = [*revoted, promoted, *fresh]
    full = write_release(
        out_dir,
        "cv-corpus-23.0-2025-09-05",
        locale,
        {
            "validated": current,
            "invalidated": moved,
            "other": [],
            # The splits are drawn again: what was train may now be dev.
            "train": current[len(current) // 2 :],
            "dev": current[: len(current) // 2],
            "test": [],
        },
        {r["path"]: files[r["path"]] for r in rows},
        [_reported(reported, locale)],
        folder=folder,
    )
    return Cumulative(
        releases=[n, delta, full],
        rows={r["path"]: r for r in rows},
        first=[r["path"] for r in old],
        current=[r["path"] for r in current],
        moved=[r["path"] for r in moved],
        promoted=promoted["path"],
        reported=reported["path"],
        new=[r["path"] for r in fresh],
        missing_in_first=missing,
        corrupt=corrupt,
    )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("out", type=Path)
    p.add_argument("--clips", type=int, default=8)
    p.add_argument("--version", default="23.0")
    p.add_argument("--date", default="2025-09-05")
    p.add_argument("--locale", default="en")
    p.add_argument("--delta", action="store_true")
    p.add_argument("--old-schema", action="store_true")
    p.add_argument("--folder", action="store_true", help="write the extracted folder instead of a tarball")
    p.add_argument("--tsv-first", action="store_true", help="put the TSVs before the clips in the tarball")
    p.add_argument("--start-id", type=int, default=41_000_000)
    p.add_argument("--no-missing", action="store_true")
    p.add_argument("--no-corrupt", action="store_true")
    p.add_argument(
        "--cumulative", action="store_true", help="write full N, delta N+1 and full N+1 (moves, a promotion, a report)"
    )
    a = p.parse_args()
    if a.cumulative:
        c = build_cumulative(a.out, clips=a.clips, locale=a.locale, folder=a.folder)
        print("\n".join(str(p) for p in c.releases))
        return
    r = build_release(
        a.out,
        clips=a.clips,
        version=a.version,
        date=a.date,
        locale=a.locale,
        delta=a.delta,
        old_schema=a.old_schema,
        folder=a.folder,
        tsv_first=a.tsv_first,
        start_id=a.start_id,
        missing=not a.no_missing,
        corrupt=not a.no_corrupt,
    )
    print(r.path)


if __name__ == "__main__":
    main()

"""Build Common-Voice-shaped releases for tests and benchmarks: full or delta, tarball or folder.

The layout and column sets are Common Voice's own (see ../shared/NOTES.md):
``cv-corpus-<ver>[-delta]-<date>/<locale>/`` with ``clips/*.mp3``, the clip lists, ``clip_durations.tsv``
and ``reported.tsv``.  Clips are MP3s made from the bundled sample's real (espeak-ng) speech, so they
transcribe to their sentence.  Planted problems, each on by default:
- one TSV row whose mp3 is not in the release (``--no-missing`` to leave it out);
- one corrupt mp3 (random bytes);
- a sentence holding double and single quotes;
``--old-schema`` writes the pre-v17 columns (``accent``, no ``sentence_id``/``sentence_domain``).

Usage: python scripts/make_cv_release.py OUT_DIR [--clips N] [--version 23.0] [--date 2025-09-05]
       [--locale en] [--delta] [--old-schema] [--folder] [--tsv-first] [--start-id N]
"""

from __future__ import annotations

import argparse
import hashlib
import io
import tarfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import soundfile as sf

from pipeline.io.cv_release import CV_COLUMNS

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
    columns = OLD_COLUMNS if old_schema else CURRENT_COLUMNS
    audio = sample_clips(clips)
    rows, files = [], {}
    for i, (mp3, sentence, seconds) in enumerate(audio):
        name = f"common_voice_{locale}_{start_id + i}.mp3"
        if i == 1:
            sentence = QUOTED_SENTENCE
        row = {
            "client_id": hashlib.sha256(f"speaker{i % 3}".encode()).hexdigest(),
            "path": name,
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
        rows.append(row)
        files[name] = (mp3, seconds)
    missing_path = corrupt_path = None
    if missing and clips >= 3:
        missing_path = rows[-1]["path"]
        del files[missing_path]
    if corrupt and clips >= 4:
        corrupt_path = rows[-2]["path"]
        files[corrupt_path] = (np.random.default_rng(0).bytes(4000), 0.0)

    tsvs = {"validated": _tsv(rows, columns)}
    if splits if splits is not None else not delta:
        half = max(1, len(rows) // 2)
        tsvs.update(
            train=_tsv(rows[:half], columns),
            dev=_tsv(rows[half:], columns),
            test=_tsv([], columns),
        )
    tsvs.update(
        invalidated=_tsv([], columns),
        other=_tsv([], columns),
        clip_durations=_tsv(
            [{"clip": n, "duration[ms]": str(round(s * 1000))} for n, (_, s) in files.items() if s],
            ["clip", "duration[ms]"],
        ),
        reported=_tsv(
            [
                {
                    "sentence_id": rows[0]["sentence_id"],
                    "sentence": rows[0]["sentence"],
                    "locale": locale,
                    "reason": "grammar",
                }
            ],
            ["sentence_id", "sentence", "locale", "reason"],
        ),
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    if folder:
        root = out_dir / release / locale
        (root / "clips").mkdir(parents=True, exist_ok=True)
        for name, (data, _) in files.items():
            (root / "clips" / name).write_bytes(data)
        for stem, body in tsvs.items():
            (root / f"{stem}.tsv").write_bytes(body)
        path = root
    else:
        path = out_dir / f"{release}-{locale}.tar.gz"
        members = [(f"{release}/{locale}/clips/{n}", d) for n, (d, _) in files.items()]
        tsv_members = [(f"{release}/{locale}/{s}.tsv", b) for s, b in tsvs.items()]
        members = tsv_members + members if tsv_first else members + tsv_members
        with tarfile.open(path, "w:gz", compresslevel=1) as tar:
            for name, data in members:
                info = tarfile.TarInfo(name)
                info.size, info.mtime = len(data), int(time.time())
                tar.addfile(info, io.BytesIO(data))
    return Release(path, release, locale, rows, missing_path, corrupt_path)


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
    a = p.parse_args()
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

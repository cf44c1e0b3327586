"""Build hostile Common-Voice-shaped releases: the inputs a careless or malicious TSV makes.

    .venv/bin/python tests/hostile/make_hostile.py OUT_DIR

Writes, under OUT_DIR:

- ``outside/secret.mp3``: a real MP3, outside any release, saying "the vault code is seven three nine
  one" (espeak-ng, or the bundled sample's speech when espeak-ng is absent): no output or log may
  ever hold its words;
- ``releases/cv-corpus-23.0-2025-09-05/en/``, an extracted release whose ``validated.tsv`` lists, beside
  genuine clips: a path escaping the release to that MP3 (``../../../outside/secret.mp3``), its
  absolute path, a directory, an empty path, a 3 GiB sparse file, and a symlink to ``/dev/zero``;
- ``releases/cv-corpus-24.0-2025-12-05-en.tar.gz``, a tarball whose ``clips/`` holds a 256 MiB member of
  zeros (written as a stream: never in memory), and names that escape ``clips/``;
- ``non-utf8/cv-corpus-23.0-2025-09-05/en/``: a release whose ``validated.tsv`` header is not UTF-8.

Prints a JSON map of what each hostile row is and the reason it must be quarantined with.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

import soundfile as sf

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from scripts.make_cv_release import clip_rows, sample_clips, write_release  # noqa: E402

SECRET_WORDS = ("vault", "seven three nine one", "7391")
BIG_MEMBER = 256 * 1024 * 1024
SPARSE = 3 * 1024**3


def secret_mp3(path: Path) -> None:
    """Speech of the secret sentence as an MP3."""
    path.parent.mkdir(parents=True, exist_ok=True)
    espeak = shutil.which("espeak-ng")
    if espeak:
        with tempfile.NamedTemporaryFile(suffix=".wav") as wav:
            subprocess.run(
                [espeak, "-s", "130", "-w", wav.name, "the vault code is seven three nine one"],
                check=True,
                capture_output=True,
            )
            audio, rate = sf.read(wav.name, dtype="float32")
    else:  # any real speech: what matters is that it is never read
        (mp3, _, _) = sample_clips(1)[0]
        audio, rate = sf.read(io.BytesIO(mp3), dtype="float32")
    sf.write(path, audio, rate, format="MP3")


class Zeros(io.RawIOBase):
    """``n`` zero bytes, produced as they are read: a huge member without a huge buffer."""

    def __init__(self, n: int):
        self.left = n

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:
        k = min(len(b), self.left)
        b[:k] = bytes(k)
        self.left -= k
        return k


def build(out: Path) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    secret = out / "outside" / "secret.mp3"
    secret_mp3(secret)
    audio = sample_clips(4)
    rows = clip_rows(audio, "en", 41_000_000)
    files = {r["path"]: (mp3, sec) for r, (mp3, _, sec) in zip(rows, audio, strict=True)}
    proto = {k: v for k, v in rows[0].items() if k != "path"}
    hostile = {
        "../../../outside/secret.mp3": "path_outside_release",
        str(secret): "path_outside_release",
        "adir.mp3": "not a regular file",
        "": "path_outside_release",
        "huge.mp3": "too_large",
        "zero.mp3": "path_outside_release",
    }
    listed = rows + [{**proto, "path": p, "sentence": "a hostile row"} for p in hostile]
    folder = write_release(
        out / "releases",
        "cv-corpus-23.0-2025-09-05",
        "en",
        {"validated": listed, "other": [], "invalidated": []},
        files,
        [],
        folder=True,
    )
    (folder / "clips" / "adir.mp3").mkdir()
    with open(folder / "clips" / "huge.mp3", "wb") as f:
        f.truncate(SPARSE)  # sparse: 3 GiB long, nothing on disk
    os.symlink("/dev/zero", folder / "clips" / "zero.mp3")

    # The tarball: genuine clips, a 256 MiB member of zeros, and members whose names escape clips/.
    release = "cv-corpus-24.0-2025-12-05"
    rows2 = clip_rows(sample_clips(3), "en", 42_000_000)
    tar_hostile = {"big.mp3": "too_large", "../escape.mp3": "path_outside_release"}
    listed2 = rows2 + [{**proto, "path": p, "sentence": "a hostile row"} for p in tar_hostile]
    tsv = {
        "validated": listed2,
        "other": [],
        "invalidated": [],
    }
    from scripts.make_cv_release import CURRENT_COLUMNS, _tsv

    tarball = out / "releases" / f"{release}-en.tar.gz"
    with tarfile.open(tarball, "w:gz", compresslevel=1) as tar:
        for stem, body in {**{k: _tsv(v, CURRENT_COLUMNS) for k, v in tsv.items()}}.items():
            info = tarfile.TarInfo(f"{release}/en/{stem}.tsv")
            info.size = len(body)
            tar.addfile(info, io.BytesIO(body))
        for (mp3, _, _), r in zip(sample_clips(3), rows2, strict=True):
            info = tarfile.TarInfo(f"{release}/en/clips/{r['path']}")
            info.size = len(mp3)
            tar.addfile(info, io.BytesIO(mp3))
        info = tarfile.TarInfo(f"{release}/en/clips/big.mp3")
        info.size = BIG_MEMBER
        tar.addfile(info, io.BufferedReader(Zeros(BIG_MEMBER), buffer_size=1 << 20))
        with open(secret, "rb") as f:
            data = f.read()
        info = tarfile.TarInfo(f"{release}/en/escape.mp3")  # beside clips/, where "../escape.mp3" points
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))

    # A release whose clip list's header is not UTF-8: the release as a whole is refused.
    bad = write_release(
        out / "non-utf8", "cv-corpus-23.0-2025-09-05", "en", {"validated": rows[:2]}, files, [], folder=True
    )
    body = (bad / "validated.tsv").read_bytes()
    (bad / "validated.tsv").write_bytes(b"client_id\tpa\xfft\t" + body.split(b"\t", 2)[2])

    return {
        "folder": str(folder),
        "tarball": str(tarball),
        "non_utf8": str(bad),
        "secret": str(secret),
        "secret_words": list(SECRET_WORDS),
        "genuine": [r["path"] for r in rows] + [r["path"] for r in rows2],
        "hostile": {**hostile, **tar_hostile},
    }


if __name__ == "__main__":
    print(json.dumps(build(Path(sys.argv[1])), indent=1))

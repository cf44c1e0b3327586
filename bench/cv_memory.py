"""Peak memory while reading a Common Voice release tarball, at several release sizes.

Each size gets a CV-shaped tarball from ``scripts/make_cv_release.py`` with the TSVs *after* the clips
(the costly order: the TSV pass decompresses the whole archive).  A fresh Python process per size
then does exactly what a shard does before and during its read: the TSV pass on the driver
(``open_inputs``) and the streaming clip read that the Ray read task runs (``read_tarball``), and
reports its peak RSS.  Flat memory means the peak does not grow with the number of clips.

Usage: .venv/bin/python -m bench.cv_memory [--sizes 200 2000]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.common import write_results

PROBE = """
import json, resource, sys, time
from pipeline.config import StorageConfig
from pipeline.commonvoice.datasource import read_tarball
from pipeline.io.inputs import open_inputs, view_table
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
t0 = time.perf_counter()
inputs = open_inputs([sys.argv[1]], StorageConfig())
(locale,) = inputs.locales()
view = view_table(inputs, locale, inputs.units(locale))
t1 = time.perf_counter()
after_tsv = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
rows = audio = 0
for block in read_tarball(inputs.releases[0].uri, view, StorageConfig(), 32):
    rows += block.num_rows
    audio += sum(len(a or b"") for a in block.column("audio_bytes").to_pylist())
t2 = time.perf_counter()
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"rows": rows, "audio_bytes": audio, "rss_after_imports_mib": base / 1024,
                  "rss_peak_after_tsv_pass_mib": after_tsv / 1024, "rss_peak_mib": peak / 1024,
                  "tsv_pass_s": t1 - t0, "clip_stream_s": t2 - t1}))
"""


def measure(size: int, workdir: Path) -> dict:
    from scripts.make_cv_release import build_release

    t0 = time.perf_counter()
    rel = build_release(workdir / str(size), clips=size, tsv_first=False)
    built = time.perf_counter() - t0
    out = subprocess.run([sys.executable, "-c", PROBE, str(rel.path)], capture_output=True, text=True, check=True)
    result = json.loads(out.stdout.strip().splitlines()[-1])
    return {"clips": size, "tarball_mib": rel.path.stat().st_size / 2**20, "build_s": built, **result}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[200, 2000])
    args = p.parse_args()
    with tempfile.TemporaryDirectory(prefix="cv-memory-") as tmp:
        results = [measure(n, Path(tmp)) for n in args.sizes]
    print(f"{'clips':>7} {'tarball MiB':>12} {'rows':>6} {'RSS imports':>12} {'after TSVs':>11} {'peak MiB':>9}")
    for r in results:
        print(
            f"{r['clips']:>7} {r['tarball_mib']:>12.1f} {r['rows']:>6} {r['rss_after_imports_mib']:>12.1f}"
            f" {r['rss_peak_after_tsv_pass_mib']:>11.1f} {r['rss_peak_mib']:>9.1f}"
        )
    path = write_results("cv-memory-", {"results": results})
    print(f"results: {path}")


if __name__ == "__main__":
    main()

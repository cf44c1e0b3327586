"""Where a DNSMOS actor's memory goes: onnxruntime's CPU arena and the windows per model call.

Each arm runs in a fresh process: the product's ``Dnsmos`` runner with the arena on or off and 8 or 32
windows a call, scoring the same 6 batches of 16 clips (3-12 s of noise, as the quality actor gets
them).  Per arm: RSS held after the batches, peak RSS, and seconds per clip.

    .venv/bin/python -m bench.dnsmos_memory

Results: bench/results/dnsmos-memory-<UTC>.json.
"""

from __future__ import annotations

import json
import subprocess
import sys

from bench.common import write_results
from pipeline.runtime.hardware import cpu_flags

ARMS = [(True, 32), (True, 8), (False, 32), (False, 8)]

CHILD = r"""
import json, resource, sys, time
import numpy as np, onnxruntime as ort, psutil
from pipeline.quality import dnsmos

arena, windows = sys.argv[1] == "1", int(sys.argv[2])
Options = ort.SessionOptions

class Opts(Options):  # the runner builds its own options; this arm decides the arena
    def __setattr__(self, name, value):
        super().__setattr__(name, arena if name == "enable_cpu_mem_arena" else value)

ort.SessionOptions = Opts
model = dnsmos.Dnsmos(threads=1)
rng = np.random.default_rng(0)
batches = [[rng.standard_normal(int(rng.uniform(3, 12) * 16000)).astype(np.float32) * 0.1
            for _ in range(16)] for _ in range(6)]
t = time.perf_counter()
for clips in batches:
    model.score(clips, max_windows=windows)
took = time.perf_counter() - t
print(json.dumps({"arena": arena, "windows": windows, "s_per_clip": took / 96,
                  "rss_held_mib": psutil.Process().memory_info().rss / 2**20,
                  "rss_peak_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def main() -> None:
    arms = []
    for arena, windows in ARMS:
        out = subprocess.run(
            [sys.executable, "-c", CHILD, "1" if arena else "0", str(windows)],
            capture_output=True,
            text=True,
            check=True,
        )
        arm = json.loads(out.stdout.strip().splitlines()[-1])
        print(json.dumps(arm), flush=True)
        arms.append(arm)
    print(write_results("dnsmos-memory-", {"cpu_flags": sorted(cpu_flags()), "arms": arms}))


if __name__ == "__main__":
    main()

"""Helpers the benchmark scripts share: running `curate run` and reading what it wrote, the offline
judge's timing, and where results are written."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from pipeline.config import JudgeConfig
from pipeline.stages.judge import CHOICES, build_messages, expected_score, parse_score

RESULTS = Path(__file__).resolve().parent / "results"
REPO = RESULTS.parents[1]


def curate(args: list[str], **kwargs: Any) -> tuple[subprocess.CompletedProcess, Any]:
    """``curate run ARGS`` as a user runs it; returns the process and its RunResult (None if it failed)."""
    from pipeline.cli import RESULT_MARK
    from pipeline.result import RunResult

    kwargs.setdefault("cwd", REPO)
    proc = subprocess.run(
        [sys.executable, "-m", "pipeline.cli", "run", *args, "--emit-result"], capture_output=True, text=True, **kwargs
    )
    line = next((ln for ln in reversed(proc.stdout.splitlines()) if ln.startswith(RESULT_MARK)), None)
    return proc, RunResult.model_validate_json(line[len(RESULT_MARK) + 1 :]) if line else None


def table_rows(output: str | Path, locale: str = "en") -> list[dict[str, Any]]:
    """The current rows of the locale's clips table at ``output`` (every id once)."""
    from pipeline.config import build_config
    from pipeline.table.export import view

    return view(str(output), build_config(), locale)[3].to_pylist()


def time_offline_judge(engine_kwargs: dict[str, Any], texts: list[str], j: JudgeConfig) -> dict[str, Any]:
    """Engine start, then rows/s over ``texts`` after a 4-row warm-up, with vLLM's offline ``LLM``."""
    from vllm import LLM, SamplingParams
    from vllm.sampling_params import StructuredOutputsParams

    t0 = time.perf_counter()
    llm = LLM(**engine_kwargs)
    start = time.perf_counter() - t0
    params = SamplingParams(
        max_tokens=1,
        temperature=0,
        logprobs=j.top_logprobs,
        structured_outputs=StructuredOutputsParams(choice=list(CHOICES)),
    )
    chats = [build_messages(j.system_prompt, t, j.max_transcript_chars) for t in texts]
    llm.chat(chats[:4], params, use_tqdm=False)
    t1 = time.perf_counter()
    outs = llm.chat(chats, params, use_tqdm=False)
    rate = len(chats) / (time.perf_counter() - t1)
    del llm
    return {
        "engine_start_s": start,
        "rows_per_s": rate,
        "scores": [parse_score(o.outputs[0].text) for o in outs],
        # Σ p(k)·k, as the pipeline's score_expected: the argmax alone is nearly always one value.
        "expected": [
            expected_score([{e.decoded_token: e.logprob for e in o.outputs[0].logprobs[0].values()}]) for o in outs
        ],
    }


def write_results(prefix: str, payload: dict[str, Any], path: Path | None = None) -> Path:
    """Writes ``payload`` to a new timestamped file, or again to ``path`` (a harness updating as it goes)."""
    out = path or RESULTS / f"{prefix}{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(payload, indent=2, default=float))
    return out

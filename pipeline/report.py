"""Run reports from shard results: the output file table, the histograms, a summary.

Pure text: Prefect only publishes what this builds.  Histograms are markdown tables with a bar of
block characters per row: they render in Prefect's default UI, which shows Mermaid charts as raw
code (only the experimental V2 UI draws them; checked in a browser against Prefect 3.7.7), and in
any markdown viewer.  No images: the UI cannot show a local or ``s3://`` file.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pipeline.manifest import LocaleResult, ModelInfo, RunResult, Tally, combine
from pipeline.metrics import SCORE_CHOICES, WER_BINS

# Human names of the gates' reason codes, in the order the gates run.
REASON_NAMES = {
    "wer_above": "transcript disagrees with the prompted sentence (WER)",
    "cer_above": "transcript disagrees with the prompted sentence (CER)",
    "no_speech": "no speech (Whisper's no-speech rule)",
    "hallucination": "repetition loop (compression ratio)",
    "low_logprob": "Whisper unsure (avg log-prob)",
    "too_short": "shorter than the minimum duration",
    "too_long": "longer than the maximum duration",
    "language_mismatch": "another language than the locale's",
    "judge_below": "judge score below the threshold",
    "cv_invalidated": "Common Voice moved it to invalidated",
    "cv_not_validated": "not validated by Common Voice's votes (other)",
    "cv_deleted": "gone from the newest full release (deleted)",
    "sentence_reported": "its sentence is in reported.tsv",
    "not_scored": "never through the engines (not in the curated split)",
}


@dataclass(frozen=True)
class RunReport:
    """A run over many shards: their summed tally, the locales' results, and what the summary names."""

    shards: int
    tally: Tally
    locales: list[LocaleResult]
    models: dict[str, ModelInfo]
    config: dict[str, Any]

    @property
    def audio_hours(self) -> float:
        return self.tally.audio_seconds / 3600

    @property
    def changes(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for r in self.locales:
            for k, v in r.changes.items():
                out[k] = out.get(k, 0) + v
        return out


def aggregate(results: list[RunResult]) -> RunReport:
    first = results[0] if results else None
    locales = [r for res in results for r in res.locales]
    return RunReport(
        shards=len(results),
        tally=combine(r.tally for r in locales),
        locales=locales,
        models=first.models if first else {},
        config=first.config if first else {},
    )


def open_lines(result: RunResult, table: str) -> list[str]:
    """Copy-paste lines that open ``table``'s curated clips in DuckDB and in Hugging Face ``datasets``."""
    out = result.output.rstrip("/")
    locale = next((r.locale for r in result.locales if r.table == table), "en")
    lines = [
        f'DuckDB:    python -m pipeline.table.open {out} --locale {locale} "select id, transcription, score from clips '
        'where kept limit 5"',
        f"datasets:  curate export --output {out} --locale {locale} --format hf --to {out}-hf && "
        f"python -c \"import datasets; print(datasets.load_dataset('parquet', data_dir='{out}-hf'))\"",
    ]
    return lines


def human_bytes(n: int) -> str:
    size = float(n)
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1024 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} TB"


def human_duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 2 * 3600:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def _relative(path: str, output_root: str) -> str:
    root = output_root.rstrip("/") + "/"
    return path[len(root) :] if path.startswith(root) else path


def file_rows(report: RunReport) -> list[dict[str, Any]]:
    """One row per data file the run added: table, rows, size, the file.  Short columns first."""
    rows = []
    for r in report.locales:
        for f in r.files:
            rows.append(
                {
                    "table": f.table,
                    "snapshot": str(r.snapshot_id),
                    "rows": f.rows,
                    "size": human_bytes(f.bytes),
                    "file": f.path,
                }
            )
    return rows


def _bar(n: int, total: int, width: int = 24) -> str:
    return "█" * round(width * n / total) if total else ""


def _table(header: str, items: list[tuple[str, int]], unit: str = "clips") -> list[str]:
    total = max((n for _, n in items), default=0)
    lines = [f"| {header} | {unit} | |", "|---|---:|---|"]
    return lines + [f"| {label} | {n} | {_bar(n, total)} |" for label, n in items]


def histogram_markdown(report: RunReport) -> str:
    """The judge's scores, score_expected, WER against the prompt, and why rows were not kept."""
    h, t = report.tally.histogram, report.tally
    lines = ["## Judge score (argmax)", ""]
    lines += _table("score", [(str(k), h.score[str(k)]) for k in SCORE_CHOICES])
    lines += ["", "## score_expected (Σ p(k)·k)", ""]
    lines += _table("bin", [(f"{b.lo:.1f}–{b.hi:.1f}", b.count) for b in h.score_expected])
    lines += ["", "## WER against the prompted sentence", ""]
    wer = [(b, t.wer_bins.get(b, 0)) for b in WER_BINS]
    lines += _table("WER", wer) if sum(n for _, n in wer) else ["No row had a sentence to compare with."]
    lines += ["", "## Why rows were not kept", ""]
    reasons = [(code, t.reasons[code]) for code in REASON_NAMES if t.reasons.get(code)]
    reasons += [(code, n) for code, n in sorted(t.reasons.items()) if code not in REASON_NAMES]
    items = [(f"rejected: `{code}`, {REASON_NAMES.get(code, code)}", n) for code, n in reasons]
    items += [(f"quarantined at `{stage}`", n) for stage, n in sorted(t.quarantined_by_stage.items())]
    lines += _table("reason", items, "rows") if items else ["Every row was kept."]
    lines += ["", "A rejected row can fail several gates; it is counted under each."]
    return "\n".join(lines)


def kept_rule(config: dict[str, Any]) -> list[tuple[str, str]]:
    """What "kept" meant in this run, as short (name, rule) rows."""
    g = config.get("gates", {})
    rules = [("judge", f"`{config.get('threshold_on', 'score')}` ≥ {config.get('threshold')}")]
    agreement = [f"WER ≤ {g['max_wer']}"] if g.get("max_wer") is not None else []
    agreement += [f"CER ≤ {g['max_cer']}"] if g.get("max_cer") is not None else []
    rules.append(("agreement with the prompt", ", ".join(agreement) or "off"))
    lo, hi = g.get("min_duration_s"), g.get("max_duration_s")
    rules.append(("duration", f"{lo or 0}–{hi or '∞'} s"))
    rules.append(("Whisper's own rules", "no speech, repetition loops, log-prob ≥ " + str(g.get("min_avg_logprob"))))
    return rules


def summary_markdown(report: RunReport, wall_s: float, title: str, output_root: str, skipped: int = 0) -> str:
    tables = ", ".join(f"`{r.table}` @ {r.snapshot_id} ({r.tag})" for r in report.locales if not r.nothing_to_do)
    c = report.tally.counts
    tr, jd = report.models.get("transcriber"), report.models.get("judge")
    pct = (lambda n: f" ({100 * n / c.in_:.0f}%)") if c.in_ else (lambda n: "")
    lines = [
        f"# {title}",
        "",
        "| what | value |",
        "|---|---|",
        f"| output | `{output_root}` |",
        f"| tables | {tables or 'nothing to do: every input already applied'} |",
        *[f"| kept when: {name} | {rule} |" for name, rule in kept_rule(report.config)],
        f"| clips in | {c.in_} |",
        f"| kept | {c.kept}{pct(c.kept)} |",
        f"| rejected | {c.rejected}{pct(c.rejected)} (reasons in the histogram artifact) |",
        f"| quarantined | {c.quarantined}{pct(c.quarantined)} |",
        f"| audio | {human_duration(report.tally.audio_seconds)} |",
        f"| wall time | {human_duration(wall_s)} |",
        f"| throughput | {c.in_ / wall_s if wall_s else 0:.2f} clips/s, "
        f"{report.tally.audio_seconds / wall_s if wall_s else 0:.2f} audio-s/s |",
        f"| shards | {report.shards} ({skipped} with nothing to do) |",
        f"| transcriber | {tr.backend} `{tr.ref}` ({tr.revision}) |" if tr else "| transcriber | - |",
        f"| judge | `{jd.ref}` ({jd.revision}) |" if jd else "| judge | - |",
    ]
    return "\n".join(lines)

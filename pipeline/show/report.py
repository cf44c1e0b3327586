"""Run reports from shard results: headlines, the output file list, histograms, the rows not kept and a
summary (the nightly trend is ``trend.py``'s; the console's summary ``console.py``'s).

Pure text and rows: Prefect only publishes what this builds.  Histograms are markdown tables with a
bar of block characters per row (kept █, rejected ░) on one scale for every table (the share of the
run's judged clips), the thresholds marked on their rows: they render in Prefect 3.7's UI, which shows
Mermaid charts as raw code (only the V2 UI draws them), and in any markdown viewer.  No images: the
UI cannot show a local or ``s3://`` file.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pipeline.metrics import SCORE_CHOICES, SIGNAL_GATES, WER_BINS, signal_bin_edges
from pipeline.result import LocaleResult, ModelInfo, RunResult, Tally, add_stats, combine
from pipeline.show.progress import stage_words, why_quarantined
from pipeline.stages.gate_rules import REASON_NAMES

SIGNAL_TITLES = {
    "snr_db": "SNR (dB, speech vs pauses, Silero VAD)",
    "speech_ratio": "Speech ratio (share of 32 ms frames with speech)",
    "dnsmos_ovrl": "DNSMOS OVRL (P.835 overall, 1–5)",
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
    def tables_now(self) -> dict[str, tuple[int, int]]:
        """table -> (clips, kept) after the run: each shard's commit saw the table as it then was, and the
        last commit holds the others' rows too, so the largest is the table now."""
        now: dict[str, tuple[int, int]] = {}
        for r in self.locales:
            if r.table_rows is not None and r.table_rows >= now.get(r.table, (-1, 0))[0]:
                now[r.table] = (r.table_rows, r.table_kept or 0)
        return now

    @property
    def stages(self) -> dict[str, dict[str, float]]:
        """Per DAG stage, its own counts summed over the locales and shards (stage order kept)."""
        out: dict[str, dict[str, float]] = {}
        for r in self.locales:
            for stage, totals in r.stages.items():
                add_stats(out, stage, **totals)
        return out

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


def headline(report: RunReport) -> str:
    """``39/40 kept (98%), mean WER 0.08, 0 quarantined``: what cards and an artifact key's history show."""
    t = report.tally
    c = t.counts
    if not c.in_:
        return "nothing to do: every input already in the table"
    wer = f"mean WER {t.mean_wer:.2f}" if t.mean_wer is not None else "no WER"
    return f"{c.kept}/{c.in_} kept ({t.kept_pct:.0f}%), {wer}, {c.quarantined} quarantined"


def file_rows(report: RunReport, logs: list[str] = ()) -> list[dict[str, Any]]:
    """One row per data file the run added (its full path), then the run's logs: kind, table, rows, size."""
    rows = []
    for r in report.locales:
        for f in r.files:
            rows.append(
                {"kind": "data", "table": f.table, "rows": f.rows, "size": human_bytes(f.bytes), "path": f.path}
            )
    for log in logs:
        rows.append({"kind": "log", "table": "", "rows": "", "size": "", "path": log})
    return rows


def rejected_rows(report: RunReport, cap: int = 50) -> list[dict[str, Any]]:
    """The rows the run did not keep (capped): id, sentence, transcript, score, WER, and why."""
    out = []
    for r in report.locales:
        for row in r.rejected:
            why = ", ".join(row.get("reasons") or []) if row.get("error") is None else f"{row['stage']}: {row['error']}"
            out.append(
                {
                    "table": r.table,
                    "id": row["id"],
                    "why": why[:160],
                    "sentence": (row.get("sentence") or "")[:120],
                    "transcript": (row.get("transcription") or "")[:120],
                    "score": row.get("score"),
                    "wer": None if row.get("wer") is None else round(row["wer"], 2),
                }
            )
    return out[:cap]


BAR_WIDTH = 24


def _bar(kept: int, rejected: int, total: int) -> str:
    """Kept █ then rejected ░, on the run's scale: the full width is every judged clip."""
    k = round(BAR_WIDTH * kept / total) if total else 0
    r = round(BAR_WIDTH * rejected / total) if total else 0
    return "█" * k + "░" * r


def _split_table(header: str, items: list[tuple[str, int, int]], total: int) -> list[str]:
    """Rows of (label, clips, of them kept) as kept | rejected | share | bar."""
    lines = [f"| {header} | kept | rejected | share | |", "|---|---:|---:|---:|---|"]
    for label, n, kept in items:
        share = f"{100 * n / total:.0f}%" if total else "-"
        lines.append(f"| {label} | {kept} | {n - kept} | {share} | {_bar(kept, n - kept, total)} |")
    return lines


def _mark(label: str, marked: bool, note: str) -> str:
    return f"{label} ◀ {note}" if marked else label


def histogram_markdown(report: RunReport) -> str:
    """The judge's scores, score_expected and WER against the prompt, kept and rejected per bin on one
    scale with the thresholds marked; then why rows were not kept."""
    h, t = report.tally.histogram, report.tally
    judged = t.counts.kept + t.counts.rejected
    threshold = report.config.get("threshold", 3.0)
    on = report.config.get("threshold_on", "score")
    gates = report.config.get("gates", {})
    lines = [f"{judged} judged clips; bars: kept █ rejected ░, the full width is every judged clip.", ""]
    lines += ["## Judge score (argmax)", ""]
    if not sum(h.score.values()):
        lines.append("The judge scored no clip of this run (it is off for these locales: judge.locales).")
    else:
        items = []
        for k in SCORE_CHOICES:
            first_kept = on == "score" and k == next((c for c in SCORE_CHOICES if c >= threshold), None)
            items.append(
                (_mark(str(k), first_kept, f"threshold ≥ {threshold:g}"), h.score[str(k)], h.score_kept[str(k)])
            )
        lines += _split_table("score", items, judged)
        lines += ["", "## score_expected (Σ p(k)·k)", ""]
        note = f"threshold ≥ {threshold:g}"
        items = [
            (
                _mark(f"{b.lo:.1f}–{b.hi:.1f}", on == "score_expected" and b.lo <= threshold < b.hi, note),
                b.count,
                b.kept,
            )
            for b in h.score_expected
        ]
        lines += _split_table("bin", items, judged)
    lines += ["", "## WER against the prompted sentence", ""]
    max_wer = gates.get("max_wer")
    wer_total = sum(t.wer_bins.get(b, 0) for b in WER_BINS)
    if wer_total:
        items = []
        for b in WER_BINS:
            lo = 1.0 if b == ">1.0" else float(b.split("-")[0])
            hi = float("inf") if b == ">1.0" else float(b.split("-")[1])
            marked = max_wer is not None and lo <= max_wer < hi
            items.append(
                (
                    _mark(b, marked, f"max_wer {max_wer:g}" if max_wer is not None else ""),
                    t.wer_bins.get(b, 0),
                    t.wer_bins_kept.get(b, 0),
                )
            )
        lines += _split_table("WER", items, judged)
    else:
        lines.append("No row had a sentence to compare with.")
    for signal, bins in t.signal_bins.items():
        lines += ["", f"## {SIGNAL_TITLES.get(signal, signal)}", ""]
        limit = gates.get(SIGNAL_GATES.get(signal, ""))
        items = []
        for label, n in bins.items():
            lo, hi = signal_bin_edges(signal, label)
            marked = limit is not None and lo <= limit < hi
            items.append((_mark(label, marked, f"min {limit:g}" if limit is not None else ""), n,
                          t.signal_bins_kept.get(signal, {}).get(label, 0)))  # fmt: skip
        lines += _split_table("bin", items, judged)
    lines += ["", "## Why rows were not kept", ""]
    reasons = [(code, t.reasons[code]) for code in REASON_NAMES if t.reasons.get(code)]
    reasons += [(code, n) for code, n in sorted(t.reasons.items()) if code not in REASON_NAMES]
    items2 = [(f"rejected: `{code}`, {REASON_NAMES.get(code, code)}", n, "") for code, n in reasons]
    # Why, last: a long list of reasons in the first column pushed the counts off the artifact's page.
    items2 += [
        (f"quarantined at `{stage}`", n, _cell(why_quarantined(t.quarantined_why.get(stage, {}))))
        for stage, n in sorted(t.quarantined_by_stage.items())
    ]
    if items2:
        lines += ["| reason | rows | share of the run | | what it was |", "|---|---:|---:|---|---|"]
        total = t.counts.in_
        lines += [
            f"| {label} | {n} | {100 * n / total:.0f}% | {'░' * round(BAR_WIDTH * n / total)} | {why} |"
            for label, n, why in items2
        ]
    else:
        lines.append("Every row was kept.")
    lines += ["", "A rejected row can fail several gates; it is counted under each."]
    return "\n".join(lines)


def kept_rule(config: dict[str, Any]) -> list[tuple[str, str]]:
    """What "kept" meant in this run, as short (name, rule) rows."""
    g = config.get("gates", {})
    locales = (config.get("judge") or {}).get("locales")
    judge = f"`{config.get('threshold_on', 'score')}` ≥ {config.get('threshold')}"
    if locales == []:
        judge = "off (judge.locales is empty)"
    rules = [("judge", judge)]
    agreement = [f"WER ≤ {g['max_wer']}"] if g.get("max_wer") is not None else []
    agreement += [f"CER ≤ {g['max_cer']}"] if g.get("max_cer") is not None else []
    rules.append(("agreement with the prompt", ", ".join(agreement) or "off"))
    lo, hi = g.get("min_duration_s"), g.get("max_duration_s")
    rules.append(("duration", f"{lo or 0}–{hi or '∞'} s"))
    rules.append(("Whisper's own rules", "no speech, repetition loops, log-prob ≥ " + str(g.get("min_avg_logprob"))))
    sound = [f"SNR ≥ {g['min_snr_db']:g} dB"] if g.get("min_snr_db") is not None else []
    sound += [f"clipping ≤ {g['max_clipping_ratio']:g}"] if g.get("max_clipping_ratio") is not None else []
    sound += [f"speech ≥ {g['min_speech_ratio']:g}"] if g.get("min_speech_ratio") is not None else []
    sound += [f"loudness ≥ {g['min_loudness_lufs']:g} LUFS"] if g.get("min_loudness_lufs") is not None else []
    quality = config.get("quality", {})
    if quality.get("dnsmos") and g.get("min_dnsmos_ovrl") is not None:
        sound.append(f"DNSMOS OVRL ≥ {g['min_dnsmos_ovrl']:g}")
    sound += [f"bandwidth ≥ {g['min_bandwidth_hz']:g} Hz"] if g.get("min_bandwidth_hz") is not None else []
    sound += [f"dropouts ≤ {g['max_dropouts']:g}"] if g.get("max_dropouts") is not None else []
    rules.append(("how it sounds", ", ".join(sound) if quality.get("enabled", True) and sound else "off"))
    rules.append(
        ("Common Voice", "validated, sentence not reported" if g.get("exclude_reported", True) else "validated")
    )
    return rules


def language_words(r: LocaleResult) -> str:
    """``en; language check: whisper``, or what an unsupported locale runs without."""
    if r.language_check == "unsupported":
        return "no Whisper language for this locale; language check: unsupported (agreement gates only)"
    decoded = f" (this Whisper has no {r.language}: decoded as {r.decoded_as})" if r.decoded_as else ""
    return f"{r.language or 'detected'}{decoded}; language check: {r.language_check or 'whisper'}"


def locale_line(r: LocaleResult) -> str:
    """How a locale was heard and judged, on one line of the summary artifact."""
    judge = f"; judge {r.judge}" if r.judge else ""
    return f"{r.transcriber}, {language_words(r)}{judge}"


def _cell(text: str) -> str:
    """``text`` safe in a Markdown table's cell: a reason may hold a pipe or a newline."""
    return text.replace("|", "¦").replace("\n", " ")


def changes_words(ch: dict[str, int]) -> str:
    absent = ch.get("absent", 0)
    not_read = f", {absent} not in their release (not read)" if absent else ""
    return (
        f"{ch.get('engine_rows', 0) - absent} clip(s) through the engines{not_read}; {ch.get('added', 0)} added, "
        f"{ch.get('updated', 0)} updated, {ch.get('redecided', 0)} re-decided, {ch.get('withdrawn', 0)} withdrawn"
    )


def summary_markdown(
    report: RunReport, wall_s: float, title: str, output_root: str, skipped: int = 0, source: str | None = None
) -> str:
    tables = ", ".join(f"`{r.table}` @ {r.snapshot_id} ({r.tag})" for r in report.locales if not r.nothing_to_do)
    c = report.tally.counts
    ch = report.changes
    tr, jd = report.models.get("transcriber"), report.models.get("judge")
    pct = (lambda n: f" ({100 * n / c.in_:.0f}%)") if c.in_ else (lambda n: "")
    mean_wer = report.tally.mean_wer
    now = [(name, rows, kept) for name, (rows, kept) in report.tables_now.items()]
    lines = [
        f"# {title}",
        "",
        f"**{headline(report)}**",
        "",
        "| what | value |",
        "|---|---|",
        f"| input | `{source}` |" if source else "| input | - |",
        f"| output | `{output_root}` |",
        f"| tables | {tables or 'nothing to do: every input already applied'} |",
        f"| this run | {changes_words(ch)} |",
        *[f"| kept when: {name} | {rule} |" for name, rule in kept_rule(report.config)],
        f"| clips in | {c.in_} |",
        f"| kept | {c.kept}{pct(c.kept)} |",
        f"| rejected | {c.rejected}{pct(c.rejected)} (reasons: the histogram artifact; rows: the rejected one) |",
        f"| quarantined | {c.quarantined}{pct(c.quarantined)} |",
        f"| mean WER | {mean_wer:.3f} |" if mean_wer is not None else "| mean WER | - |",
        *[f"| table now | `{name}`: {rows} clips, {kept} kept |" for name, rows, kept in now],
        *[
            f"| locale {r.locale} | {r.tally.counts.in_} in, {r.tally.counts.kept} kept; {locale_line(r)} |"
            for r in report.locales
            if r.transcriber
        ],
        f"| audio | {human_duration(report.tally.audio_seconds)} |",
        f"| wall time | {human_duration(wall_s)} |",
        f"| throughput | {c.in_ / wall_s if wall_s else 0:.2f} clips/s, "
        f"{report.tally.audio_seconds / wall_s if wall_s else 0:.2f} audio-s/s |",
        f"| shards | {report.shards} ({skipped} with nothing to do) |",
        f"| transcriber | {tr.backend} `{tr.ref}` ({tr.revision}) |" if tr else "| transcriber | - |",
        f"| judge | `{jd.ref}` ({jd.revision}) |" if jd else "| judge | - |",
    ]
    if report.stages:
        lines += ["", "| stage | rows in | rows out | quarantined | busy s |", "|---|---:|---:|---:|---:|"]
        lines += [f"| {stage} | {stage_words(t, '|')} |" for stage, t in report.stages.items()]
    return "\n".join(lines)

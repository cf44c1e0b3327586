"""Run reports from shard manifests: the output file table, score histograms, a summary.

Pure aggregation plus one matplotlib PNG; Prefect only publishes what this builds.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pipeline.manifest import Manifest, ModelInfo, Tally, combine
from pipeline.metrics import SCORE_CHOICES


@dataclass(frozen=True)
class RunReport:
    """A run over many shards: their summed tally, and what the summary names."""

    shards: int
    tally: Tally
    models: dict[str, ModelInfo]

    @property
    def audio_hours(self) -> float:
        return self.tally.audio_seconds / 3600


def aggregate(manifests: list[Manifest]) -> RunReport:
    return RunReport(shards=len(manifests), tally=combine(manifests), models=manifests[0].models if manifests else {})


def file_rows(manifests: list[Manifest], roots: list[str]) -> list[dict[str, Any]]:
    """One row per output file: shard, kind, full path, rows, bytes."""
    rows = []
    for m, root in zip(manifests, roots, strict=True):
        for f in m.files:
            rows.append(
                {
                    "shard": (m.shard or {}).get("shard_id", ""),
                    "kind": f.kind,
                    "path": f"{root.rstrip('/')}/{f.path}",
                    "rows": f.rows,
                    "bytes": f.bytes,
                }
            )
    return rows


def histogram_markdown(report: RunReport) -> str:
    score = report.tally.histogram.score
    total = max(sum(score.values()), 1)
    lines = ["## Judge scores", "", "| score | clips | share |", "|---|---:|---|"]
    for k in SCORE_CHOICES:
        n = score[str(k)]
        lines.append(f"| {k} | {n} | {'█' * round(20 * n / total)} {100 * n / total:.0f}% |")
    lines += ["", "## score_expected (Σ p(k)·k)", "", "| bin | clips |", "|---|---:|"]
    for b in report.tally.histogram.score_expected:
        lines.append(f"| [{b.lo:.1f}, {b.hi:.1f}) | {b.count} |")
    return "\n".join(lines)


def summary_markdown(report: RunReport, wall_s: float, title: str) -> str:
    c = report.tally.counts
    tr, jd = report.models.get("transcriber"), report.models.get("judge")
    return "\n".join(
        [
            f"# {title}",
            "",
            "| metric | value |",
            "|---|---|",
            f"| shards | {report.shards} |",
            f"| clips in | {c.in_} |",
            f"| kept | {c.kept} |",
            f"| rejected | {c.rejected} |",
            f"| quarantined | {c.quarantined} |",
            f"| audio hours | {report.audio_hours:.3f} |",
            f"| wall time | {wall_s:.1f} s |",
            f"| throughput | {c.in_ / wall_s if wall_s else 0:.2f} clips/s, "
            f"{report.tally.audio_seconds / wall_s if wall_s else 0:.2f} audio-s/s |",
            f"| transcriber | {tr.backend} {tr.ref} ({tr.revision}) |" if tr else "| transcriber | - |",
            f"| judge | {jd.ref} ({jd.revision}) |" if jd else "| judge | - |",
        ]
    )


def render_histogram_png(report: RunReport) -> bytes:
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(9, 3.2))
    score = report.tally.histogram.score
    a.bar([str(k) for k in SCORE_CHOICES], [score[str(k)] for k in SCORE_CHOICES], color="#4C72B0")
    a.set(title="judge score", xlabel="score", ylabel="clips")
    bins = report.tally.histogram.score_expected
    b.bar([(x.lo + x.hi) / 2 for x in bins], [x.count for x in bins], width=0.45, color="#55A868")
    b.set(title="score_expected", xlabel="Σ p(k)·k", xlim=(1, 5))
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90)
    plt.close(fig)
    return buf.getvalue()

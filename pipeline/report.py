"""Run reports from shard manifests: the output file table, score histograms, a summary.

Pure aggregation plus one matplotlib PNG; Prefect only publishes what this builds.
"""

from __future__ import annotations

from typing import Any

from pipeline.metrics import SCORE_CHOICES


def aggregate(manifests: list[dict[str, Any]]) -> dict[str, Any]:
    counts = {k: sum(m["counts"][k] for m in manifests) for k in ("in", "kept", "rejected", "quarantined")}
    score = {str(k): sum(m["histogram"]["score"][str(k)] for m in manifests) for k in SCORE_CHOICES}
    bins: list[dict[str, Any]] = []
    for m in manifests:
        for i, b in enumerate(m["histogram"]["score_expected"]):
            if i == len(bins):
                bins.append({"lo": b["lo"], "hi": b["hi"], "count": 0})
            bins[i]["count"] += b["count"]
    return {
        "shards": len(manifests),
        "counts": counts,
        "audio_hours": sum(m["audio_seconds"] for m in manifests) / 3600,
        "histogram": {"score": score, "score_expected": bins},
        "models": manifests[0]["models"] if manifests else {},
    }


def file_rows(manifests: list[dict[str, Any]], roots: list[str]) -> list[dict[str, Any]]:
    """One row per output file: shard, kind, full path, rows, bytes."""
    rows = []
    for m, root in zip(manifests, roots, strict=True):
        for f in m["files"]:
            rows.append(
                {
                    "shard": m.get("shard", {}).get("shard_id", ""),
                    "kind": f["kind"],
                    "path": f"{root.rstrip('/')}/{f['path']}",
                    "rows": f["rows"],
                    "bytes": f["bytes"],
                }
            )
    return rows


def histogram_markdown(agg: dict[str, Any]) -> str:
    score = agg["histogram"]["score"]
    total = max(sum(score.values()), 1)
    lines = ["## Judge scores", "", "| score | clips | share |", "|---|---:|---|"]
    for k in SCORE_CHOICES:
        n = score[str(k)]
        lines.append(f"| {k} | {n} | {'█' * round(20 * n / total)} {100 * n / total:.0f}% |")
    lines += ["", "## score_expected (Σ p(k)·k)", "", "| bin | clips |", "|---|---:|"]
    for b in agg["histogram"]["score_expected"]:
        lines.append(f"| [{b['lo']:.1f}, {b['hi']:.1f}) | {b['count']} |")
    return "\n".join(lines)


def summary_markdown(agg: dict[str, Any], wall_s: float, title: str) -> str:
    c = agg["counts"]
    models = agg.get("models", {})
    tr, jd = models.get("transcriber", {}), models.get("judge", {})
    return "\n".join(
        [
            f"# {title}",
            "",
            "| metric | value |",
            "|---|---|",
            f"| shards | {agg['shards']} |",
            f"| clips in | {c['in']} |",
            f"| kept | {c['kept']} |",
            f"| rejected | {c['rejected']} |",
            f"| quarantined | {c['quarantined']} |",
            f"| audio hours | {agg['audio_hours']:.3f} |",
            f"| wall time | {wall_s:.1f} s |",
            f"| throughput | {c['in'] / wall_s if wall_s else 0:.2f} clips/s, "
            f"{agg['audio_hours'] * 3600 / wall_s if wall_s else 0:.2f} audio-s/s |",
            f"| transcriber | {tr.get('backend', '')} {tr.get('ref', '')} ({tr.get('revision', '')}) |",
            f"| judge | {jd.get('ref', '')} ({jd.get('revision', '')}) |",
        ]
    )


def render_histogram_png(agg: dict[str, Any]) -> bytes:
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(9, 3.2))
    score = agg["histogram"]["score"]
    a.bar([str(k) for k in SCORE_CHOICES], [score[str(k)] for k in SCORE_CHOICES], color="#4C72B0")
    a.set(title="judge score", xlabel="score", ylabel="clips")
    bins = agg["histogram"]["score_expected"]
    b.bar([(x["lo"] + x["hi"]) / 2 for x in bins], [x["count"] for x in bins], width=0.45, color="#55A868")
    b.set(title="score_expected", xlabel="Σ p(k)·k", xlim=(1, 5))
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90)
    plt.close(fig)
    return buf.getvalue()

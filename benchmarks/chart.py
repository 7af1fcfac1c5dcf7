"""The comparison chart: throughput and p99 latency against concurrency, one line per system,
one column of panels per batch size (MLP points)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import NullFormatter, ScalarFormatter  # noqa: E402


def write_chart(rows: list[dict], path: Path, model: str = "mlp") -> bool:
    """Write ``path`` (PNG) from ``compare.py``'s rows for ``model``; False if it has none."""
    rows = [r for r in rows if r["model"] == model]
    if not rows:
        return False
    batches = sorted({r["batch"] for r in rows})
    systems = sorted({r["system"] for r in rows}, key=lambda s: (s != "tsf", s))
    fig, axes = plt.subplots(2, len(batches), figsize=(5.5 * len(batches), 7.5), squeeze=False,
                             sharex=True)
    for column, batch in enumerate(batches):
        top, bottom = axes[0][column], axes[1][column]
        for system in systems:
            points = sorted((r for r in rows if r["batch"] == batch and r["system"] == system),
                            key=lambda r: r["conc"])
            if not points:
                continue
            conc = [r["conc"] for r in points]
            style = {"marker": "o", "label": system if system != "tornado" else "bare Tornado",
                     "linestyle": "--" if system == "tornado" else "-"}
            top.plot(conc, [r["rps"] for r in points], **style)
            bottom.plot(conc, [r["p99"] for r in points], **style)
        top.set_title(f"{model}, batch {batch}")
        top.set_ylabel("requests per second")
        bottom.set_ylabel("p99 latency (ms)")
        bottom.set_yscale("log")
        bottom.yaxis.set_major_formatter(ScalarFormatter())
        bottom.yaxis.set_minor_formatter(NullFormatter())
        bottom.set_xlabel("concurrent connections")
        ticks = sorted({r["conc"] for r in rows})
        for ax in (top, bottom):
            ax.set_xscale("log", base=2)
            ax.set_xticks(ticks, [str(t) for t in ticks])
            ax.grid(True, which="both", alpha=0.3)
        top.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True

"""Draw a profile run's two files as pictures for the docs (matplotlib, no browser needed).

    python scripts/profile_pictures.py RUN/3.trace.json RUN/3.stages.prof --out docs/img

* ``profile-trace.png``: the Chrome trace as a timeline in the manner of Perfetto: a row per
  thread, the stage ranges (``preprocess``, ``inference``, ``postprocess``) and the longest
  operators as bars;
* ``profile-stages.png``: the ``.prof`` as an icicle in the manner of snakeviz: from the batch
  runner down, each call's width its cumulative time.

Perfetto (ui.perfetto.dev) and ``snakeviz`` open the files themselves; these pictures only
show in the docs what they look like for a real run.
"""

from __future__ import annotations

import argparse
import json
import pstats
from pathlib import Path

STAGES = {"preprocess": "#4c72b0", "inference": "#dd8452", "postprocess": "#55a868"}
MIN_OP_US = 300  # operators shorter than this are left out of the timeline


def timeline(trace_path: Path, out: Path, batches: int = 3) -> None:
    """The first ``batches`` batches of the main thread: a row of stage ranges above a row
    of the operators they ran."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    events = [e for e in json.loads(trace_path.read_text())["traceEvents"]
              if e.get("ph") == "X" and "dur" in e]
    stages = sorted((e for e in events if e.get("name") in STAGES), key=lambda e: e["ts"])
    start = stages[0]["ts"]
    inference = [e for e in stages if e["name"] == "inference"]
    end = inference[min(batches, len(inference)) - 1]
    stop = end["ts"] + end["dur"] + 2000
    fig, ax = plt.subplots(figsize=(12, 2.6))
    labelled = set()
    for e in stages:
        if e["ts"] > stop:
            break
        name = e["name"]
        ax.barh(1, e["dur"] / 1e3, left=(e["ts"] - start) / 1e3, height=0.8,
                color=STAGES[name], label=None if name in labelled else name)
        labelled.add(name)
    for e in events:
        name = e.get("name", "")
        if e.get("cat") != "cpu_op" or e["dur"] < MIN_OP_US or not start <= e["ts"] <= stop \
                or name in ("aten::conv2d", "aten::convolution", "aten::_convolution",
                            "aten::batch_norm", "aten::_batch_norm_impl_index",
                            "aten::max_pool2d"):
            continue
        ax.barh(0, e["dur"] / 1e3, left=(e["ts"] - start) / 1e3, height=0.6,
                color="#8172b3", edgecolor="white", linewidth=0.4)
        if e["dur"] >= 12 * MIN_OP_US:
            ax.text((e["ts"] - start + e["dur"] / 2) / 1e3, 0,
                    name.split("::")[-1].replace("mkldnn_", "")[:11], ha="center",
                    va="center", fontsize=5, color="white", rotation=90, clip_on=True)
    ax.set_yticks([0, 1], [f"operators (≥ {MIN_OP_US} µs)", "stages"])
    ax.set_ylim(-0.6, 1.6)
    ax.set_xlabel("ms")
    ax.legend(loc="upper right", fontsize=8, ncol=3)
    ax.set_title(f"The worker's main thread over its first {batches} profiled batches "
                 "(from the Chrome trace)")
    fig.tight_layout()
    fig.savefig(out, dpi=110)


def _label(func: tuple) -> str:
    filename, line, name = func
    return name if filename == "~" else f"{name} ({Path(filename).name}:{line})"


def _hidden(func: tuple) -> bool:
    """pluggy's dispatch frames, drawn through: what they call are the handler's stages."""
    return "pluggy" in func[0]


def icicle(prof_path: Path, out: Path, depth: int = 9) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    stats = pstats.Stats(str(prof_path))
    stats.calc_callees()
    table = stats.stats  # func -> (cc, nc, tt, ct, callers)
    roots = [f for f in table if f[2] == "run" and "batch_runner" in f[0]] or \
        [max(table, key=lambda f: table[f][3])]
    root = roots[0]
    fig, ax = plt.subplots(figsize=(12, 0.55 * depth + 1))
    colours = plt.get_cmap("tab20")

    def draw(func: tuple, left: float, width: float, level: int, seen: tuple) -> None:
        ax.barh(level, width, left=left, height=0.95, color=colours(hash(func) % 20),
                edgecolor="white")
        if width > 0.04:
            ax.text(left + width / 2, level, _label(func), ha="center", va="center",
                    fontsize=7, clip_on=True)
        if level + 1 >= depth:
            return
        total = table[func][3] or 1.0
        x = left
        for callee, seconds in children(func, seen):
            share = width * min(1.0, seconds / total)
            if share < 0.004:
                continue
            draw(callee, x, share, level + 1, seen + (callee,))
            x += share

    def children(func: tuple, seen: tuple) -> list:
        """Callees with their cumulative seconds, hidden frames replaced by their own."""
        found = []
        for callee, info in stats.all_callees.get(func, {}).items():
            if callee in seen:
                continue
            if _hidden(callee):
                inner = children(callee, seen + (callee,))
                scale = info[3] / (table[callee][3] or 1.0)
                found.extend((f, s * min(1.0, scale)) for f, s in inner)
            else:
                found.append((callee, info[3]))
        return sorted(found, key=lambda pair: -pair[1])

    draw(root, 0.0, 1.0, 0, (root,))
    ax.set_xlim(0, 1)
    ax.set_ylim(depth - 0.5, -0.5)
    ax.set_yticks([])
    ax.set_xticks([])
    ax.set_title(f"{_label(root)}: {table[root][3]:.3f} s over the profiled batches "
                 "(width: cumulative time)")
    fig.tight_layout()
    fig.savefig(out, dpi=110)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("trace", type=Path)
    parser.add_argument("prof", type=Path)
    parser.add_argument("--out", type=Path, default=Path("docs/img"))
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    timeline(args.trace, args.out / "profile-trace.png")
    icicle(args.prof, args.out / "profile-stages.png")
    print(f"wrote {args.out / 'profile-trace.png'} and {args.out / 'profile-stages.png'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""
The report of an RL run: its curves (OUT/curves.png) and a table of its held-out evals.

    python report.py out/zero                      # curves.png in out/zero, and the eval table
    python report.py out/zero out/zero_s1          # the table for several runs, one block each

Reads only OUT/metrics.jsonl (train_rl.py writes one row per step and one per eval), so it runs
on a finished, killed or still running run alike; train_rl.py calls plot() after each eval.
"""

import json
import math
import os
import sys

PANELS = [  # (title, [(metric, label, style)]): "train" metrics every step, "eval" ones per size at each eval
    ("held-out accuracy", [("eval_acc", "greedy", "o-"), ("sample_acc", "sampled", "s--")]),
    ("training rollouts (T=1)", [("reward", "reward", "train"), ("accuracy", "accuracy", "train")]),
    ("response length (tokens)", [("length", None, "train")]),
    ("attempts (checks) per sampled response", [("checks", "checks", "o-")]),
    ("what follows a check", [("p_stop_yes", "P(stop | yes)", "o-"), ("p_go_no", "P(go on | no)", "s--")]),
    ("errors per sampled response", [("slips", "slips", "o-"), ("false_yes", "false yes", "s--")]),
    ("reflection words / response", [("reflection", None, "train")]),
    ("entropy, KL (nats / token)", [("entropy", "entropy", "train"), ("kl", "KL to reference", "train")]),
]

COLUMNS = [  # the table: (metric prefix, header); each for 3 and 4 numbers
    ("eval_acc", "greedy"), ("sample_acc", "sampled"), ("length", "length"), ("checks", "checks"),
    ("p_stop_yes", "P(stop|yes)"), ("p_go_no", "P(go on|no)"), ("wrong_lines", "wrong lines"), ("false_yes", "false yes"),
]


SHARES = {"eval_acc", "sample_acc", "p_stop_yes", "p_go_no", "wrong_lines"}  # printed as percentages


def read(run):
    """(train rows, eval rows) of a run directory's metrics.jsonl."""
    rows = [json.loads(line) for line in open(os.path.join(run, "metrics.jsonl"))]
    return [r for r in rows if "reward" in r], [r for r in rows if "eval_acc3" in r]


def plot(metrics_path, out_png):
    """PANELS against steps: training metrics raw (faint) and as a 20-step moving average; held-out
    ones at each eval for 3 and 4 numbers (sampled ones from pass_k samples per task)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    train, evals = read(os.path.dirname(metrics_path) or ".")
    fig, axes = plt.subplots(2, 4, figsize=(18, 7.5))
    for ax, (title, lines) in zip(axes.flat, PANELS):
        for j, (key, label, style) in enumerate(lines):
            if style == "train":
                x, y = [r["step"] for r in train], [r.get(key, math.nan) for r in train]
                avg = [sum(y[max(0, i - 19) : i + 1]) / len(y[max(0, i - 19) : i + 1]) for i in range(len(y))]
                ax.plot(x, y, lw=0.6, alpha=0.3, color=f"C{2 * j}")
                ax.plot(x, avg, lw=1.6, color=f"C{2 * j}", label=label)
            for k, color in (("3", "C0"), ("4", "C1")) if style != "train" else ():
                got = [(r["step"], r[key + k]) for r in evals if r.get(key + k) is not None]
                if got:
                    ax.plot(*zip(*got), style, color=color, label=f"{label}, {k} numbers")
        ax.set_title(title)
        ax.set_xlabel("step")
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out_png, dpi=80)
    plt.close(fig)


def table(runs):
    """A markdown table: one row per eval of each run, columns 'metric 3 / 4 numbers'."""
    def fmt(key, v):
        return "-" if v is None else f"{v:.1%}" if key in SHARES else f"{v:.3g}"

    lines = ["| run | step | " + " | ".join(h + " 3/4" for _, h in COLUMNS) + " |", "|---" * (len(COLUMNS) + 2) + "|"]
    for run in runs:
        for r in read(run)[1]:
            cells = [f"{fmt(key, r.get(key + '3'))} / {fmt(key, r.get(key + '4'))}" for key, _ in COLUMNS]
            lines.append(f"| {run} | {r['step']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    if len(sys.argv) < 2 or any(not os.path.isfile(os.path.join(r, "metrics.jsonl")) for r in sys.argv[1:]):
        sys.exit("usage: python report.py RUN_DIR [RUN_DIR ...]  (each holding a metrics.jsonl from train_rl.py)")
    for run in sys.argv[1:]:
        plot(os.path.join(run, "metrics.jsonl"), os.path.join(run, "curves.png"))
    print(table(sys.argv[1:]))

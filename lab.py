"""
The R1 debate on a laptop: four questions the 2025 papers argue about, one command each, on our checkpoints.

    python lab.py passk --ckpt base=checkpoints/countdown-base --ckpt zero=out/zero/ckpt     # 1. widen or sharpen?
    python lab.py ood --ckpt base=checkpoints/countdown-base --ckpt sft=out/sftonly_s0/ckpt   # 2. memorise or generalise?
    python lab.py spurious                                                                   # 3. is it the reward?
    python lab.py budget --ckpt zero=out/zero/ckpt                                           # 4. does thinking longer help?
    python lab.py search --ckpt sft=out/sftonly_s0/ckpt --ckpt r1=out/r1_s0/ckpt   # R1's RL stage: what changed

Each writes OUT/table.md, OUT/figure.png and OUT/results.json (OUT defaults to out/lab/COMMAND), and
picks up where it stopped when run again with the same flags: finished units are read back, not
rerun (a unit is a checkpoint x set x temperature for passk, one training run for spurious, ...).

Design notes:
1. pass@k is the unbiased estimator of Chen et al. 2021 from n samples per task, c of them right:
   1 - C(n - c, k) / C(n, k), computed as a product so that no binomial overflows. The samples are
   kept (OUT/samples/*.jsonl, one task a line, appended as they are drawn), so a curve is redrawn
   without sampling again and a killed run loses at most one batch. Beside every curve: a guesser
   that writes a uniformly random expression of the numbers (countdown.random_hit_rate), whose
   pass@k is exact: 1 - (1 - p)^k.
2. Out of distribution (Chu et al. 2025) means task sets no arm trained on: countdown.LAB_SETS
   (5 numbers; targets above 100; numbers above 99), beside the held-out 3- and 4-number sets.
3. Spurious rewards (Shao et al. 2025) are train_rl.py's R1-Zero run with --reward random, format or
   incorrect (rewards.spurious_reward) beside the rule reward, with one PPO epoch (exactly
   on-policy: the clip never acts) and with several (it does).
4. Budget forcing (s1, Muennighoff et al. 2025) is sample.generate's: n_waits times "Wait, " in
   place of the end of thinking, or the answer forced after max_think tokens; greedy. s1's metrics:
   Control, the share of forced runs whose thinking stays within the budget; Scaling, the mean slope
   of accuracy against thinking tokens over pairs of settings; Performance, the best accuracy.
   Beside it, majority vote over m samples at temperature 1, at about the same thinking tokens.
5. CPU time (user + system, this process) is recorded per unit and printed in the tables.
"""

import json
import math
import os
import resource
import sys
from collections import Counter

import torch
from tqdm import tqdm

import cli
import countdown
import train_rl
from checkpoint import check_tokenizer, load_tokenizer, write_jsonl
from model import Transformer
from rewards import countdown_correct, extract_answer
from sample import encode_ids, generate, heldout_eval, sample_countdown, stop_ids_for

PASSK_SETS = {"4": lambda n: countdown.heldout_tasks(4, n), "5": lambda n: countdown.lab_tasks("5 numbers", n)}


def pass_at_k(n, c, k):
    """The unbiased estimate of P(at least one of k samples is right) from n samples, c right (note 1)."""
    if n - c < k:
        return 1.0
    return 1.0 - math.prod((n - c - i) / (n - i) for i in range(k))


def cpu():
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def load(spec):
    """NAME=DIR -> (name, model, tokenizer)."""
    name, _, path = spec.partition("=")
    if not name or not path:
        raise ValueError(f"--ckpt {spec!r}: expected NAME=DIR")
    model = Transformer.from_pretrained(path).eval()
    tok = load_tokenizer(path)
    check_tokenizer(tok, model, path)
    return name, model, tok


def read_json(path):
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except FileNotFoundError:
        return None
    except ValueError as e:  # a truncated file: written atomically, so only a foreign one
        raise ValueError(f"{path}: not a readable result ({e}); delete it to recompute") from None


def write_json(path, obj):
    write_jsonl(path, [obj])  # atomic: one JSON object on one line


def figure(path, panels):
    """panels: [(title, xlabel, ylabel, xlog, [(label, xs, ys, style)])] side by side."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(panels), figsize=(5.5 * len(panels), 4.2), squeeze=False)
    for ax, (title, xlabel, ylabel, xlog, lines) in zip(axes[0], panels):
        for label, xs, ys, style in lines:
            ax.plot(xs, ys, style, label=label, lw=1.4, ms=4)
        ax.set(title=title, xlabel=xlabel, ylabel=ylabel)
        if xlog:
            ax.set_xscale("log", base=2)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# ------------------------------------------------------------------------ 1. pass@k at large k

def sample_counts(path, model, tok, tasks, n, temperature, chunk, seed):
    """n samples per task at this temperature, appended to path (JSONL) chunk tasks at a time;
    tasks already there are read back. Returns the number right per task."""
    done = {}
    if os.path.exists(path):
        with open(path, encoding="utf-8") as f:
            for line in f:
                if line.strip():
                    rec = json.loads(line)
                    done[tuple(rec["numbers"]), rec["target"]] = rec["right"]
    todo = [t for t in tasks if (tuple(t.numbers), t.target) not in done]
    with open(path, "a", encoding="utf-8") as f:
        for i in tqdm(range(0, len(todo), chunk), desc=os.path.basename(path), leave=False):
            part = todo[i : i + chunk]
            texts = sample_countdown(model, tok, part, "compact", 512, len(part) * n, temperature, n,
                                     seed + tasks.index(part[0]))
            for j, t in enumerate(part):
                right = [countdown_correct(x, list(t.numbers), t.target) for x in texts[j * n : (j + 1) * n]]
                done[tuple(t.numbers), t.target] = sum(right)
                f.write(json.dumps({"numbers": list(t.numbers), "target": t.target, "right": sum(right),
                                    "texts": texts[j * n : (j + 1) * n]}) + "\n")
            f.flush()
    return [done[tuple(t.numbers), t.target] for t in tasks]


def passk_main(args):
    os.makedirs(os.path.join(args.out, "samples"), exist_ok=True)
    ks = [k for k in (2 ** i for i in range(12)) if k <= args.n]
    res = read_json(os.path.join(args.out, "results.json")) or {}
    for spec in args.ckpt:
        name, model, tok = load(spec)
        for s in args.sets:
            tasks = PASSK_SETS[s](args.tasks)
            for T in args.temperatures:
                key = f"{name} | {s} numbers | T={T:g}"
                t0 = cpu()
                path = os.path.join(args.out, "samples", f"{name}_{s}_T{T:g}.jsonl")
                counts = sample_counts(path, model, tok, tasks, args.n, T, args.chunk, args.seed)
                prev = res.get(key, {}).get("cpu_s", 0.0)
                res[key] = {"ckpt": name, "set": s, "T": T, "n": args.n, "counts": counts,
                            "cpu_s": prev + cpu() - t0, **{f"pass@{k}": sum(pass_at_k(args.n, c, k) for c in counts)
                                                          / len(counts) for k in ks}}
                write_json(os.path.join(args.out, "results.json"), res)
    for s in args.sets:  # the random-expression guesser (note 1)
        ps = [countdown.random_hit_rate(t.numbers, t.target) for t in PASSK_SETS[s](args.tasks)]
        res[f"random | {s} numbers"] = {f"pass@{k}": sum(1 - (1 - p) ** k for p in ps) / len(ps) for k in ks}
    write_json(os.path.join(args.out, "results.json"), res)
    names = [spec.partition("=")[0] for spec in args.ckpt]
    lines = ["| model | set | T | " + " | ".join(f"pass@{k}" for k in ks) + " | CPU s |", "|---" * (len(ks) + 4) + "|"]
    for key, r in res.items():
        lines.append(f"| {key.replace(' | ', ' | ', 2)} | " + ("- | " if key.startswith("random") else "")
                     + " | ".join(f"{100 * r[f'pass@{k}']:.1f}" for k in ks) + f" | {r.get('cpu_s', 0):.0f} |")
    base = names[0]  # crossover and tasks solved by one side only, against the first --ckpt
    lines += ["", f"Against `{base}`: the smallest k at which its pass@k reaches the model's (crossover), and the "
              f"tasks solved at k = n = {args.n} by one side only.", "",
              "| model | set | T | crossover k | solved only by it | solved only by " + base + " |", "|---|---|---|---|---|---|"]
    for key, r in res.items():
        if "ckpt" not in r or r["ckpt"] == base:
            continue
        b = res.get(f"{base} | {r['set']} numbers | T={r['T']:g}")
        if b is None:
            continue
        cross = next((k for k in ks if b[f"pass@{k}"] >= r[f"pass@{k}"]), None)
        only_it = sum(c > 0 and cb == 0 for c, cb in zip(r["counts"], b["counts"]))
        only_base = sum(c == 0 and cb > 0 for c, cb in zip(r["counts"], b["counts"]))
        lines.append(f"| {r['ckpt']} | {r['set']} | {r['T']:g} | {cross or f'> {args.n}'} | {only_it} | {only_base} |")
    write_table(args.out, lines)
    panels = []
    for s in args.sets:
        for T in args.temperatures:
            curves = [(key.split(" | ")[0], ks, [r[f"pass@{k}"] for k in ks], "o-") for key, r in res.items()
                      if r.get("set") == s and r.get("T") == T]
            curves.append(("random expression", ks, [res[f"random | {s} numbers"][f"pass@{k}"] for k in ks], "k--"))
            panels.append((f"{s} numbers, T = {T:g}, {args.tasks} tasks", "k", "pass@k", True, curves))
    figure(os.path.join(args.out, "figure.png"), panels)


# --------------------------------------------------------------------- 2. out of distribution

def ood_main(args):
    res = read_json(os.path.join(args.out, "results.json")) or {}
    sets = {**{f"{k} numbers (held-out)": countdown.heldout_tasks(k, args.tasks) for k in (3, 4)},
            **{name: countdown.lab_tasks(name, args.tasks) for name in countdown.LAB_SETS}}
    for spec in args.ckpt:
        name = spec.partition("=")[0]
        if name in res:
            continue
        name, model, tok = load(spec)
        t0 = cpu()
        out = heldout_eval(model, tok, args.tasks, sets=sets, n_samples=args.n, seed=args.seed)
        res[name] = {"cpu_s": cpu() - t0, **{s: {"greedy": out[f"eval_acc{s}"], "sampled": out.get(f"sample_acc{s}"),
                                                 "no answer": out[f"no_answer{s}"]} for s in sets}}
        write_json(os.path.join(args.out, "results.json"), res)
    lines = ["| model | " + " | ".join(sets) + " | CPU s |", "|---" * (len(sets) + 2) + "|"]
    cell = lambda c: f"{100 * c['greedy']:.1f}" + ("" if c["sampled"] is None else f" / {100 * c['sampled']:.1f}")  # noqa: E731
    for name, r in res.items():
        lines.append(f"| {name} | " + " | ".join(cell(r[s]) for s in sets) + f" | {r['cpu_s']:.0f} |")
    lines += ["", f"greedy{'' if not args.n else f' / sampled (T = 1, {args.n} per task)'} accuracy, %, "
              f"on {args.tasks} tasks per set."]
    write_table(args.out, lines)
    names = list(res)
    figure(os.path.join(args.out, "figure.png"), [("greedy accuracy", "set", "accuracy", False,
                                                   [(n, list(range(len(sets))), [res[n][s]["greedy"] for s in sets], "o-")
                                                    for n in names])])


# ------------------------------------------------------------------------- 3. spurious rewards

def spurious_main(args):
    res = read_json(os.path.join(args.out, "results.json")) or {}
    runs = [(r, e, s) for r in args.rewards for e in args.epochs for s in args.seeds]
    for reward, epochs, seed in tqdm(runs, desc="runs"):
        key = f"{reward} | {epochs} epoch{'s' * (epochs > 1)} | seed {seed}"
        out = os.path.join(args.out, "runs", f"{reward}_e{epochs}_s{seed}")
        if key in res:
            continue
        argv = ["--reward", reward, "--ppo_epochs", str(epochs), "--seed", str(seed), "--steps", str(args.steps),
                "--out", out, "--eval_every", str(args.steps), "--save_every", str(min(50, args.steps))]
        resume = os.path.exists(os.path.join(out, "ckpt")) or os.path.exists(os.path.join(out, "ckpt.old"))
        t0 = cpu()
        train_rl.main(argv + (["--resume"] if resume else ["--overwrite"]))
        evals = [json.loads(x) for x in open(os.path.join(out, "metrics.jsonl")) if "eval_acc3" in x]
        res[key] = {"reward": reward, "epochs": epochs, "seed": seed, "cpu_s": cpu() - t0,
                    **{f"{k}_{e['step']}": e[k] for e in (evals[0], evals[-1]) for k in ("eval_acc3", "eval_acc4")},
                    "clip_frac": [json.loads(x).get("clip_frac", 0) for x in open(os.path.join(out, "metrics.jsonl"))
                                  if '"reward"' in x][-1]}
        write_json(os.path.join(args.out, "results.json"), res)
    s = args.steps
    lines = ["| reward | PPO epochs | seed | greedy 3 numbers, step 0 -> " + str(s) + " | 4 numbers | clip fraction, last step | CPU s |",
             "|---|---|---|---|---|---|---|"]
    for key, r in res.items():
        lines.append(f"| {r['reward']} | {r['epochs']} | {r['seed']} | {100 * r['eval_acc3_0']:.1f} -> "
                     f"{100 * r[f'eval_acc3_{s}']:.1f} ({100 * (r[f'eval_acc3_{s}'] - r['eval_acc3_0']):+.1f}) | "
                     f"{100 * r['eval_acc4_0']:.1f} -> {100 * r[f'eval_acc4_{s}']:.1f} | {r['clip_frac']:.3f} | {r['cpu_s']:.0f} |")
    write_table(args.out, lines)
    groups = {}
    for r in res.values():
        groups.setdefault(f"{r['reward']}, {r['epochs']} ep.", []).append(r[f"eval_acc3_{s}"] - r["eval_acc3_0"])
    names = sorted(groups)
    figure(os.path.join(args.out, "figure.png"), [(f"greedy 3-number accuracy gain after {s} steps", "run", "points", False,
                                                   [(n, [i] * len(groups[n]), [100 * g for g in groups[n]], "o")
                                                    for i, n in enumerate(names)])])


# --------------------------------------------------------------------------- 4. budget forcing

def forced(model, tok, tasks, n_waits=0, max_think=None):
    """Greedy completions under s1's budget forcing (note 4): (accuracy, thinking tokens each)."""
    ids = lambda s: encode_ids(tok, s)  # noqa: E731
    prompts = [ids(countdown.prompt_compact(t)) for t in tasks]
    outs = generate(model, prompts, 512, temperature=0, stop_ids=stop_ids_for(tok), think_end=ids("</think>"),
                    n_waits=n_waits, max_think=max_think, wait_ids=ids("Wait, "), answer_prefix=ids("\n<answer>"))
    texts = [tok.decode(o, skip_special_tokens=False) for o in outs]
    think = [len(ids(x.split("</think>")[0])) for x in texts]
    right = [countdown_correct(x, list(t.numbers), t.target) for x, t in zip(texts, tasks)]
    return sum(right) / len(tasks), think


def majority(texts, task):
    """The answer most samples give (by value), and whether it is right."""
    votes = Counter(a for a in (extract_answer(x) for x in texts) if a)
    for answer, _ in votes.most_common(1):
        return countdown_correct(f"<answer>{answer}</answer>", list(task.numbers), task.target)
    return False


def budget_main(args):
    res = read_json(os.path.join(args.out, "results.json")) or {}
    tasks = countdown.heldout_tasks(args.size, args.tasks)
    settings = [("waits", w) for w in range(7)] + [("budget", b) for b in args.budgets]
    for spec in args.ckpt:
        name, model, tok = load(spec)
        r = res.setdefault(name, {"cpu_s": 0.0})
        t0 = cpu()
        for kind, v in tqdm(settings, desc=name, leave=False):
            if f"{kind} {v}" not in r:
                acc, think = forced(model, tok, tasks, **({"n_waits": v} if kind == "waits" else {"max_think": v}))
                r[f"{kind} {v}"] = {"acc": acc, "tokens": sum(think) / len(think),
                                    "within": None if kind == "waits" else sum(t <= v for t in think) / len(think)}
        if "vote 1" not in r:  # majority vote at temperature 1 over m samples (note 4)
            texts = sample_countdown(model, tok, tasks, "compact", 512, 256, 1.0, max(args.votes), args.seed)
            per = max(args.votes)
            think = sum(len(encode_ids(tok, x.split("</think>")[0])) for x in texts) / len(texts)
            for m in args.votes:
                acc = sum(majority(texts[j * per : j * per + m], t) for j, t in enumerate(tasks)) / len(tasks)
                r[f"vote {m}"] = {"acc": acc, "tokens": m * think}
        r["cpu_s"] += cpu() - t0
        points = sorted((p["tokens"], p["acc"]) for k, p in r.items() if k.startswith(("waits", "budget")))
        pairs = [(b[1] - a[1]) / (b[0] - a[0]) for i, a in enumerate(points) for b in points[i + 1 :] if b[0] > a[0]]
        within = [p["within"] for k, p in r.items() if k.startswith("budget")]
        r["s1"] = {"control": sum(within) / len(within), "scaling": sum(pairs) / max(1, len(pairs)),
                   "performance": max(a for _, a in points)}
        write_json(os.path.join(args.out, "results.json"), res)
    lines = ["| model | " + " | ".join(f"{k} {v}" for k, v in settings) + " | control | scaling (per 100 tokens) | "
             "performance | CPU s |", "|---" * (len(settings) + 5) + "|"]
    for name, r in res.items():
        cells = [f"{100 * r[f'{k} {v}']['acc']:.1f} ({r[f'{k} {v}']['tokens']:.0f})" for k, v in settings]
        s1 = r["s1"]
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {100 * s1['control']:.0f}% | {100 * 100 * s1['scaling']:.2f} | "
                     f"{100 * s1['performance']:.1f} | {r['cpu_s']:.0f} |")
    lines += ["", f"Greedy accuracy, % (mean thinking tokens), on {args.tasks} held-out {args.size}-number tasks. "
              "'waits N': the end of thinking replaced by 'Wait, ' N times; 'budget B': the answer forced after B "
              "thinking tokens. Majority vote over m samples at T = 1: " + ", ".join(
                  f"{name} " + ", ".join(f"m={m} {100 * r[f'vote {m}']['acc']:.1f} ({r[f'vote {m}']['tokens']:.0f})"
                                        for m in args.votes) for name, r in res.items()) + "."]
    write_table(args.out, lines)
    panels = [("budget forcing (greedy) and majority vote (T = 1)", "thinking tokens per task", "accuracy", True,
               [line for name, r in res.items() for line in (
                   (f"{name}: waits", [r[f'waits {w}']['tokens'] for w in range(7)],
                    [r[f'waits {w}']['acc'] for w in range(7)], "o-"),
                   (f"{name}: forced answer", [r[f'budget {b}']['tokens'] for b in args.budgets],
                    [r[f'budget {b}']['acc'] for b in args.budgets], "s--"),
                   (f"{name}: majority vote", [r[f'vote {m}']['tokens'] for m in args.votes],
                    [r[f'vote {m}']['acc'] for m in args.votes], "^:"))])]
    figure(os.path.join(args.out, "figure.png"), panels)


# ------------------------------------------------------------ R1's RL stage: what RL changed in the search

def search_main(args):
    """Greedy responses of each checkpoint on the held-out sets, read by trace_reader.search_profile."""
    import trace_reader

    res = read_json(os.path.join(args.out, "results.json")) or {}
    for spec in args.ckpt:
        name, model, tok = load(spec)
        for k in args.sizes:
            key = f"{name} | {k} numbers"
            if key in res:
                continue
            tasks = countdown.heldout_tasks(k, args.tasks)
            texts = sample_countdown(model, tok, tasks, "compact", 512)
            prof = [trace_reader.search_profile(t, x) for t, x in zip(tasks, texts)]
            rates = trace_reader.behaviour_rates(tasks, texts)
            yes = [p["first_yes"] for p in prof if p["first_yes"]]
            closer = [p["first_closer"] for p in prof if p["first_closer"] is not None]
            res[key] = {"accuracy": sum(countdown_correct(x, list(t.numbers), t.target) for t, x in zip(tasks, texts)) / len(tasks),
                        "tokens": sum(len(encode_ids(tok, x)) for x in texts) / len(texts),
                        "missing at the budget": sum("</think>" not in x for x in texts) / len(texts),
                        "first yes at check": sum(yes) / max(1, len(yes)),
                        "first move closer": sum(closer) / max(1, len(closer)), "checks": rates["checks"],
                        "wrong lines": rates["wrong_lines"], "repeated lines": sum(p["repeats"] for p in prof) / len(prof),
                        "shown": [(p["kinds"], trace_reader.failure_kind(t, x))
                                  for p, t, x in zip(prof[: args.show], tasks, texts)]}
            write_json(os.path.join(args.out, "results.json"), res)
    cols = ["accuracy", "tokens", "missing at the budget", "first yes at check", "first move closer", "checks",
            "wrong lines", "repeated lines"]
    pct = {"accuracy", "missing at the budget", "first move closer", "wrong lines"}
    lines = ["| model | set | " + " | ".join(cols) + " |", "|---" * (len(cols) + 2) + "|"]
    for key, r in res.items():
        lines.append(f"| {key} | " + " | ".join(f"{100 * r[c]:.1f}%" if c in pct else f"{r[c]:.2f}" for c in cols) + " |")
    lines += ["", f"Greedy, on the first {args.tasks} held-out tasks per set; 'first yes at check': the check (leaf "
              "line) at which the first 'yes' came, over responses with one; 'first move closer': the first line's "
              "result nearer the target than both its operands; 'repeated lines': lines written twice in one thinking."]
    write_table(args.out, lines)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colors = {"step": "#9db4d6", "no": "#f0a35e", "yes": "#3a9a4a", "wrong": "#c43b3b"}
    keys = [key for key in res if key.endswith(f"{args.sizes[-1]} numbers")]
    rows = [(key.split(" | ")[0], j, *res[key]["shown"][j]) for j in range(args.show) for key in keys]
    fig, ax = plt.subplots(figsize=(12, 0.35 * len(rows) + 1))
    for y, (name, j, kinds, outcome) in enumerate(rows):
        for x, kind in enumerate(kinds):
            ax.add_patch(plt.Rectangle((x, -y - 0.4), 0.9, 0.8, color=colors[kind]))
        ax.text(len(kinds) + 0.3, -y, outcome, va="center", fontsize=7)
    ax.set_yticks([-y for y in range(len(rows))], [f"task {j + 1}: {name}" for name, j, _, _ in rows], fontsize=7)
    ax.set_xlim(0, max(len(k) for _, _, k, _ in rows) + 6)
    ax.set_ylim(-len(rows), 1)
    ax.set_xlabel("line of the thinking (blue: a step, orange: a check that says no, green: yes, red: a wrong result)")
    ax.set_title(f"the search, greedy, on the first {args.show} held-out {args.sizes[-1]}-number tasks")
    fig.tight_layout()
    fig.savefig(os.path.join(args.out, "figure.png"), dpi=110)
    plt.close(fig)


# -------------------------------------------------------------------------------------------- CLI

def write_table(out, lines):
    with open(os.path.join(out, "table.md.tmp"), "w", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")
    os.replace(os.path.join(out, "table.md.tmp"), os.path.join(out, "table.md"))
    print("\n".join(lines))


def get_args(argv=None):
    ap = cli.Parser(__doc__.strip().split("\n")[0])
    sub = ap.add_subparsers(dest="question", required=True)
    for q, help_ in (("passk", "1: pass@k at large k"), ("ood", "2: out-of-distribution task sets"),
                     ("spurious", "3: spurious rewards"), ("budget", "4: budget forcing"),
                     ("search", "what RL changed in the search (R1's RL stage)")):
        p = sub.add_parser(q, help=help_, description=help_)
        p.add_argument("--out", default=None, help="output directory (default out/lab/COMMAND)")
        p.add_argument("--seed", type=cli.COUNT0, default=0)
        p.add_argument("--threads", type=cli.ranged(int, 0, 256), default=0, help="CPU threads (0: torch's default)")
        if q != "spurious":
            p.add_argument("--ckpt", action="append", required=True, metavar="NAME=DIR", help="a checkpoint (repeat)")
        if q == "passk":
            p.add_argument("--sets", type=lambda s: s.split(","), default=["4", "5"], help="4, 5 or 4,5 numbers")
            p.add_argument("--tasks", type=cli.ranged(int, 1, countdown.HELDOUT_MAX), default=100)
            p.add_argument("--n", type=cli.ranged(int, 1, 2048), default=128, help="samples per task")
            p.add_argument("--temperatures", type=lambda s: [cli.POSITIVE(x) for x in s.split(",")], default=[1.0, 0.6])
            p.add_argument("--chunk", type=cli.COUNT, default=4, help="tasks per generate call")
        if q == "ood":
            p.add_argument("--tasks", type=cli.ranged(int, 1, countdown.HELDOUT_MAX), default=200)
            p.add_argument("--n", type=cli.COUNT0, default=8, help="samples per task at T = 1 (0: greedy only)")
        if q == "spurious":
            p.add_argument("--rewards", type=lambda s: s.split(","), default=["countdown", "random", "format", "incorrect"])
            p.add_argument("--epochs", type=lambda s: [cli.COUNT(x) for x in s.split(",")], default=[1, 4])
            p.add_argument("--seeds", type=lambda s: [cli.COUNT0(x) for x in s.split(",")], default=[0, 1])
            p.add_argument("--steps", type=cli.COUNT, default=150)
        if q == "search":
            p.add_argument("--sizes", type=cli.sizes, default=(3, 4), help="held-out sets: 3, 4 or 3,4 numbers")
            p.add_argument("--tasks", type=cli.ranged(int, 1, countdown.HELDOUT_MAX), default=500)
            p.add_argument("--show", type=cli.ranged(int, 1, 20), default=6, help="tasks drawn in the figure")
        if q == "budget":
            p.add_argument("--size", type=int, choices=[3, 4], default=3, help="held-out set: numbers per task")
            p.add_argument("--tasks", type=cli.ranged(int, 1, countdown.HELDOUT_MAX), default=200)
            p.add_argument("--budgets", type=lambda s: [cli.COUNT(x) for x in s.split(",")], default=[16, 32, 64, 128])
            p.add_argument("--votes", type=lambda s: [cli.COUNT(x) for x in s.split(",")], default=[1, 2, 4, 8])
    args = ap.parse_args(argv)
    if getattr(args, "sets", None) and set(args.sets) - set(PASSK_SETS):
        ap.error(f"--sets {','.join(args.sets)}: choose from {', '.join(PASSK_SETS)}")
    if getattr(args, "rewards", None) and set(args.rewards) - {"countdown", "random", "format", "incorrect"}:
        ap.error(f"--rewards {','.join(args.rewards)}: choose from countdown, random, format, incorrect")
    for spec in getattr(args, "ckpt", None) or []:
        if "=" not in spec or not os.path.isdir(spec.partition("=")[2]):
            ap.error(f"--ckpt {spec}: expected NAME=DIR with an existing checkpoint directory")
    if len({s.partition("=")[0] for s in getattr(args, "ckpt", None) or []}) < len(getattr(args, "ckpt", None) or []):
        ap.error("--ckpt: two checkpoints share a name")
    args.out = args.out or os.path.join("out", "lab", args.question)
    return args


def main(argv=None):
    args = get_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    os.makedirs(args.out, exist_ok=True)
    t0 = cpu()
    {"passk": passk_main, "ood": ood_main, "spurious": spurious_main, "budget": budget_main,
     "search": search_main}[args.question](args)
    print(f"{args.question}: {cpu() - t0:.0f} s of CPU time in this run; tables and figure in {args.out}", file=sys.stderr)


if __name__ == "__main__":
    cli.main(main)

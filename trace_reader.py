"""Reading Countdown traces: each line `a op b = c [vs T] [yes|no]` checked by the rule, what a
response's search does (checks, verdicts, stops), and teacher statistics. The task, the solver and
the teachers that write these traces are in countdown.py; evaluation (sample.py --heldout) and RL
evals (train_rl.py) read them here."""

import re
import statistics

from countdown import div


_TRACE_LINE = re.compile(r"(\d{1,12})([+\-*/])(\d{1,12})=(\d{1,12})(?: vs \d{1,12})?(?: (yes|no))?")  # bounded: int() stays cheap
FAILURE_KINDS = ("right", "arithmetic slip", "false yes", "other", "no answer")


def _line_value(a, op, b):
    """What a trace line `a op b = c` should have written as c (None for a division by zero)."""
    return {"+": a + b, "-": a - b, "*": a * b, "/": div(a, b) if b else None}[op]


def _checked_lines(response, target):
    """Each line `a op b = c [verdict]` of the thinking, checked by the rule: (match, whether c is
    a op b, whether the verdict holds for c: "yes" for the target, "no" for anything else; None
    without a verdict)."""
    for mt in _TRACE_LINE.finditer(response.split("</think>")[0]):
        a, op, b, c, verdict = mt.groups()
        c = int(c)
        yield mt, _line_value(int(a), op, int(b)) == c, None if verdict is None else (verdict == "yes") == (c == target)


def trace_errors(response, target):
    """(slips, false_yes): how many lines `a op b = c` of the thinking have the wrong c, and how many
    claim "yes" for a c that is not the target. Total: any text gives a pair."""
    slips = false_yes = 0
    for mt, result_right, verdict_holds in _checked_lines(response, target):
        slips += not result_right
        false_yes += mt.group(5) == "yes" and not verdict_holds
    return slips, false_yes


def search_behaviour(response, target):
    """What the search in a response did, as counts: its arithmetic lines and the slips among them,
    its checks (leaf lines) and their verdicts as written ("yes" / "no"), the false "yes"s (said of a
    value that is not the target), and what followed each check: the thinking closing right after
    it (a stop) or another line (going on). A check at the end of thinking that never closed is
    neither. R1-Zero's "aha" in numbers: P(stop | yes) and P(go on | no) rising from the base's
    indifference toward 1."""
    think, closed = response.split("</think>")[0], "</think>" in response
    checked = list(_checked_lines(think, target))
    out = dict(lines=len(checked), slips=0, checks=0, yes=0, no=0, false_yes=0, stop_yes=0, stop_no=0,
               go_yes=0, go_no=0)
    for i, (mt, result_right, holds) in enumerate(checked):
        out["slips"] += not result_right
        if holds is None:
            continue
        verdict, last = mt.group(5), i == len(checked) - 1
        out["checks"] += 1
        out[verdict] += 1
        out["false_yes"] += verdict == "yes" and not holds
        if not last:
            out["go_" + verdict] += 1
        elif closed and not think[mt.end() :].strip():
            out["stop_" + verdict] += 1
    return out


def search_profile(task, response):
    """How a response's search went (lab.py search: a model before and after RL): the lines of its
    thinking as the figure draws them ("step", "no", "yes", or "wrong" for a wrong result), the check
    at which the first "yes" came (1-based; None without one), whether the first move brought the
    numbers closer to the target (its result nearer than both operands), and how many lines repeat
    an earlier line of the same thinking (a search going round in circles)."""
    checked = list(_checked_lines(response, task.target))
    kinds = ["wrong" if not right else (mt.group(5) or "step") for mt, right, _ in checked]
    verdicts = [k for k in kinds if k in ("yes", "no")]
    first_yes = verdicts.index("yes") + 1 if "yes" in verdicts else None
    closer = None
    if checked:
        a, _, b, c, _ = checked[0][0].groups()
        closer = abs(int(c) - task.target) < min(abs(int(a) - task.target), abs(int(b) - task.target))
    texts = [mt.group(0) for mt, _, _ in checked]
    return {"kinds": kinds, "first_yes": first_yes, "first_closer": closer, "repeats": len(texts) - len(set(texts))}


def behaviour_rates(tasks, texts):
    """search_behaviour over many responses (texts[i] answers tasks[i]): per response, the checks,
    slips and false "yes"s; the share of arithmetic lines that are wrong; and P(stop | yes), P(go on
    | no) over the checks after which the response decided (stopped or went on); None without one."""
    tot = {}
    for task, text in zip(tasks, texts):
        for key, v in search_behaviour(text, task.target).items():
            tot[key] = tot.get(key, 0) + v
    n, get = max(1, len(texts)), lambda key: tot.get(key, 0)
    return {"checks": get("checks") / n, "slips": get("slips") / n, "false_yes": get("false_yes") / n,
            "wrong_lines": get("slips") / max(1, get("lines")),
            "p_stop_yes": get("stop_yes") / (get("stop_yes") + get("go_yes")) if get("stop_yes") + get("go_yes") else None,
            "p_go_no": get("go_no") / (get("stop_no") + get("go_no")) if get("stop_no") + get("go_no") else None}


def failure_kind(task, response):
    """Why a response in the trace format fails, by the first kind of error found in its thinking:
    "arithmetic slip" (a line a op b = c with the wrong c), "false yes" (a leaf line claiming "yes"
    for a value that is not the target), "other" (mostly a number copied wrong), "no answer"; or
    "right". Only lines over non-negative integers are read (all of them under the sos rules)."""
    from rewards import countdown_correct, extract_answer

    if countdown_correct(response, list(task.numbers), task.target):
        return "right"
    if extract_answer(response) is None:
        return "no answer"
    slips, false_yes = trace_errors(response, task.target)
    return "arithmetic slip" if slips else "false yes" if false_yes else "other"


def trace_stats(traces):
    """Chars per trace (mean, median, p95, max) and the share of traces with a dead end / "Wait"."""
    n = sorted(map(len, traces))
    share = lambda s: round(sum(s in t for t in traces) / len(traces), 3)  # noqa: E731
    return dict(mean=round(statistics.mean(n), 1), median=statistics.median(n),
                p95=n[int(0.95 * len(n))], max=n[-1], dead_end=share(" no\n"), wait=share("Wait, "))


def yes_by_leaf(traces):
    """{leaf number: (leaves that say "yes", leaves)}: how predictable a teacher's "yes" is from
    its place alone (search_trace: the third 3-number leaf nearly always says "yes")."""
    out = {}
    for t in traces:
        for i, line in enumerate((l for l in t.split("\n") if l.endswith((" yes", " no"))), 1):
            yes, n = out.get(i, (0, 0))
            out[i] = (yes + line.endswith(" yes"), n + 1)
    return dict(sorted(out.items()))

"""Countdown: tasks, an exact solver, a search-trace teacher and the prompt templates.

A task is 3 or 4 integers and a target; an answer is an expression that uses each number exactly
once with + - * / and parentheses and equals the target. Design choices, numbered:

1. Two distributions. rules="sos" (Stream of Search; the tiny CPU run): numbers 1-99, target
   10-100, every intermediate a positive integer (a-b only when a > b, a/b only when exact).
   rules="any" (close to TinyZero's Countdown-Tasks-3to4; the Qwen preset): numbers 1-99, target
   1-1000, any rational intermediate, as the reward accepts any correct expression.
2. The solver is a subset DP (the values each subset of the numbers reaches, with back-pointers;
   the last operation is a look-up). Values stay ints unless a division is inexact, so a 4-number
   task takes milliseconds. It finds a solution or proves there is none.
3. A target is drawn uniformly among the in-range targets the sampled numbers reach: every task
   is solvable, and targets are not biased towards the trivial a+b+c.
4. Held-out sets come from constant seeds through random.Random (identical across runs and
   machines); a set of n is the first n of a fixed list of HELDOUT_MAX. A train set excludes the
   canonical keys (sorted numbers, target) of both held-out sizes of its rules.
5. Traces are short and regular, because a tiny model fails at copying numbers and at arithmetic,
   not at search: one step per line, always written the same way, "36+12=48 [48 7]" (operation,
   result, then the remaining numbers: the new value first, the rest in prompt order), larger
   operand first. With two numbers left one line checks the operation closest to the target,
   "48-7=41 vs 41 yes" or "48+7=55 vs 41 no" (naming the target on the line lets a tiny model
   check locally): complete, since if any operation hits, the closest one does.
6. The search is depth-first, children in heuristic order (the new value's distance to the
   target, small for factors and multiples of it). The teacher knows from the solver which
   children are solvable: it shows the dead children ranked before the first solvable one (at
   most max_dead, within max_chars), then follows the solvable one. Every "no" is a true failure
   and every abandoned state is dead; a dead 3-number state is abandoned after one or two failed
   leaves (a bounded look, not a proof). A backtrack sometimes opens with "Wait, ".
7. Every template ends with "<think>"; a trace is the continuation (it starts with a newline and
   never repeats "<think>"), so score format rewards on "<think>" + response.
8. The oracle in note 6 leaks: since at most max_dead dead ends are shown, the count of "no"s
   predicts the "yes" (a model can say "yes" at the third leaf without checking it). dfs_trace is
   the search without the oracle, in the same line format: every child in order until a leaf hits,
   so each verdict follows only from its line. It cannot show every 4-number search within the
   budget; those tasks are left out of its SFT data.
9. guess_trace is R1-Zero's base corpus: the ingredients of a search with none of the skill.
   Attempts are drawn uniformly from every path and every final move (not the closest one, which
   would already be half a search): 17% of 3-number and 4% of 4-number attempts hit. Every line
   is right, every check true, and the stop (and "Wait, ") ignore the verdict, so the base stops
   after a "no" and goes on after a "yes" as often as the other way round. What RL has to teach
   is when to stop; what the base has to bring is arithmetic it can trust.
"""

import argparse
import random
from dataclasses import dataclass
from fractions import Fraction
from typing import NamedTuple

HELDOUT_MAX = 1000  # held-out sets are prefixes of a fixed list this long
HELDOUT_SEED = {("sos", 3): 7_301, ("sos", 4): 7_401, ("any", 3): 8_301, ("any", 4): 8_401}
NUMBER_RANGE = (1, 99)
TARGET_RANGE = {"sos": (10, 100), "any": (1, 1000)}
MAX_CHARS = {3: 150, 4: 400}  # search_trace's budget per number of inputs (tokens ~ 0.7 chars here)
DFS_CHARS = {3: 360, 4: 540}  # dfs_trace: all but ~1 in 1000 3-number tasks fit; 540 chars ~ 380 tokens
GUESS_CHARS = {3: 360, 4: 540}  # guess_trace: the thinking's budget, as dfs_trace's
GUESS_MAX_VALUE = 1000  # guess_trace: attempts keep every intermediate below this
GUESS_P_STOP = 1 / 3  # guess_trace: the chance of stopping after any attempt (3 attempts on average)
_HELDOUT = {}  # (rules, n_numbers) -> the HELDOUT_MAX held-out tasks, built on first use


@dataclass(frozen=True)
class Task:
    """The numbers to use (3 or 4, each exactly once) and the target."""
    numbers: tuple[int, ...]
    target: int


class Move(NamedTuple):
    """One way to combine two values: a op b = value, larger operand first; x_first says whether a
    is the first of the two values the caller passed."""
    a: object
    op: str
    b: object
    value: object
    x_first: bool


class Child(NamedTuple):
    """A search state one move away: the move written as a op b, then the remaining values (the new
    one first) and the expression behind each."""
    a: object
    op: str
    b: object
    vals: list
    exprs: list


def canonical(task):
    """The split key: (sorted numbers, target)."""
    return tuple(sorted(task.numbers)), task.target


# ----------------------------------------------------------------------------- exact arithmetic

def _moves(x, y, rules):
    """Every allowed Move combining x and y; the larger operand goes first."""
    sw = x < y
    a, b = (y, x) if sw else (x, y)
    out = [Move(a, "+", b, a + b, not sw), Move(a, "*", b, a * b, not sw)]
    if rules == "sos":  # positive integers only: a-b when a > b, a/b when exact
        if a > b:
            out.append(Move(a, "-", b, a - b, not sw))
        return out + ([Move(a, "/", b, a // b, not sw)] if a % b == 0 else [])
    out += [Move(a, "-", b, a - b, not sw)] + ([Move(b, "-", a, b - a, sw)] if a != b else [])
    if type(a) is not int or type(b) is not int:  # keep integral values as ints
        out = [m._replace(value=_norm(m.value)) for m in out]
    if b != 0:
        out.append(Move(a, "/", b, div(a, b), not sw))
    if a != 0 and a != b:
        out.append(Move(b, "/", a, div(b, a), sw))
    return out


def _norm(v):
    return v.numerator if type(v) is Fraction and v.denominator == 1 else v


def div(a, b):
    """Exact a/b: an int when it divides, else a Fraction."""
    if type(a) is int and type(b) is int:
        return a // b if a % b == 0 else Fraction(a, b)
    return _norm(Fraction(a) / b)


def _reachable(values, rules):
    """Subset DP over every proper subset of values (the full set is left to the caller).

    Returns R with R[mask] = {value: back-pointer}; a back-pointer is None for an input, else
    (a, op, b, mask_a, mask_b), the expression a op b with a from mask_a.
    """
    R = {}
    for mask in range(1, (1 << len(values)) - 1):  # every submask of mask comes before it
        if mask & (mask - 1) == 0:  # a single input
            R[mask] = {values[mask.bit_length() - 1]: None}
            continue
        out = R[mask] = {}
        for sub, rest in _splits(mask):
            for x in R[sub]:
                for y in R[rest]:
                    for a, op, b, v, x_first in _moves(x, y, rules):
                        if v not in out:
                            out[v] = (a, op, b) + ((sub, rest) if x_first else (rest, sub))
    return R


def _splits(mask):
    """Each unordered split of mask into two non-empty subsets, once."""
    sub = (mask - 1) & mask
    while sub:
        if sub < mask ^ sub:
            yield sub, mask ^ sub
        sub = (sub - 1) & mask


def _expr(R, mask, v):
    """The expression for value v of subset mask, in parentheses unless it is an input."""
    bp = R[mask][v]
    if bp is None:
        return str(v)
    a, op, b, ma, mb = bp
    return "(" + _expr(R, ma, a) + op + _expr(R, mb, b) + ")"


def solve(numbers, target, rules="any"):
    """An expression using each of the (2 or more) numbers once that equals target, else None.

    The last operation is a look-up: for each split and each value x of one side, the values the
    other side would need (target - x, x - target, target / x, ...).
    """
    values, T = tuple(numbers), target
    R = _reachable(values, rules)
    for sx, sy in _splits((1 << len(values)) - 1):
        for x in R[sx]:
            need = {T - x, x - T, x + T, T * x} | ({div(T, x)} if x != 0 else set())
            need |= {div(x, T)} if T != 0 else set()
            for y in need & R[sy].keys():
                for a, op, b, v, x_first in _moves(x, y, rules):
                    if v == T:
                        ma, mb = (sx, sy) if x_first else (sy, sx)
                        return _expr(R, ma, a) + op + _expr(R, mb, b)
    return None


def random_hit_rate(numbers, target):
    """The chance that a uniformly random expression hits the target: over every expression tree that
    uses each number once (any shape, any leaf order, + - * / at every node; a division by zero is a
    miss), exact arithmetic. The lab's baseline for pass@k: a guesser's pass@k is 1 - (1 - p)^k."""
    values = tuple(numbers)
    count, total = {}, {}  # per subset mask: {value: trees}, and all its trees
    for mask in range(1, 1 << len(values)):
        if mask & (mask - 1) == 0:
            count[mask], total[mask] = {Fraction(values[mask.bit_length() - 1]): 1}, 1
            continue
        out, n = {}, 0
        sub = (mask - 1) & mask
        while sub:  # every ordered split (sub, rest)
            rest = mask ^ sub
            n += 4 * total[sub] * total[rest]
            for a, ca in count[sub].items():
                for b, cb in count[rest].items():
                    for v in (a + b, a - b, a * b) + ((a / b,) if b else ()):
                        out[v] = out.get(v, 0) + ca * cb
            sub = (sub - 1) & mask
        count[mask], total[mask] = out, n
    full = (1 << len(values)) - 1
    return count[full].get(Fraction(target), 0) / total[full]


def reachable_targets(numbers, rules="sos", target_range=None):
    """Sorted integer targets in target_range (default the rules') that numbers can reach."""
    lo, hi = target_range or TARGET_RANGE[rules]
    values = tuple(numbers)
    R = _reachable(values, rules)
    out = set()
    for sx, sy in _splits((1 << len(values)) - 1):
        for x in R[sx]:
            for y in R[sy]:
                out.update(v for _, _, _, v, _ in _moves(x, y, rules) if type(v) is int)
    return sorted(v for v in out if lo <= v <= hi)


# ----------------------------------------------------------------------------- trace teacher

def _fmt(v):
    """A value as written in traces: 48, or (-5) and (7/2) in parentheses so a line still parses."""
    return str(v) if type(v) is int and v >= 0 else "(" + str(v) + ")"


def _children(vals, exprs, rules):
    """Each distinct state one move away, as a Child."""
    out, seen = [], set()
    for i in range(len(vals)):
        for j in range(i + 1, len(vals)):
            rest = [k for k in range(len(vals)) if k not in (i, j)]
            for a, op, b, v, x_first in _moves(vals[i], vals[j], rules):
                new = [v] + [vals[k] for k in rest]
                if tuple(sorted(new)) not in seen:  # one child per distinct state
                    seen.add(tuple(sorted(new)))
                    ea, eb = (exprs[i], exprs[j]) if x_first else (exprs[j], exprs[i])
                    e = _wrap(ea) + op + _wrap(eb)
                    out.append(Child(a, op, b, new, [e] + [exprs[k] for k in rest]))
    return out


def _wrap(e):
    return e if e.isdigit() else "(" + e + ")"


def _score(v, T):
    """Heuristic cost of a new value: distance to the target, small for a factor or multiple of it
    (v * (T/v) or v / (v/T) finishes), large for a negative or fractional value."""
    if type(v) is not int or v <= 0:
        return abs(T - v) + 1000
    if 1 < v != T and (T % v == 0 or v % T == 0):
        return min(abs(T - v), T // v if T % v == 0 else v // T)
    return abs(T - v)


def _ordered(vals, exprs, T, rules, rng):
    """Children in the order the search tries them: best heuristic score first, ties at random."""
    kids = _children(vals, exprs, rules)
    if rng is not None:
        rng.shuffle(kids)  # the sort is stable: this breaks ties
    return sorted(kids, key=lambda kid: _score(kid.vals[0], T))


def _step(kid):
    """A move as written: "36+12=48 [48 7]"."""
    return f"{_fmt(kid.a)}{kid.op}{_fmt(kid.b)}={_fmt(kid.vals[0])} [{' '.join(map(_fmt, kid.vals))}]"


def _leaf(vals, exprs, T, rules):
    """Check a 2-number state with the one operation closest to T. Returns (line, ok, answer)."""
    a, op, b, v, x_first = min(_moves(*vals, rules), key=lambda m: abs(T - m.value))  # first of ties
    ea, eb = exprs if x_first else exprs[::-1]
    line = f"{_fmt(a)}{op}{_fmt(b)}={_fmt(v)} vs {T} " + ("yes" if v == T else "no")
    return line, v == T, _wrap(ea) + op + _wrap(eb)


def trace_rules(task):
    """The arithmetic a trace uses: positive integers when that solves the task, else any."""
    return "sos" if solve(task.numbers, task.target, "sos") is not None else "any"


def search_trace(task, rng, max_chars=None, max_dead=3, p_wait=0.5):
    """A chain of thought that shows search, then the answer (the continuation of "<think>").

    Depth-first over states in heuristic order; the dead children ranked before the first solvable
    one are shown (at most max_dead in all, within max_chars), then the solvable one is followed.
    A dead 3-number state is tried for one or two leaves before backing up. Returns the response.
    """
    T, rules = task.target, trace_rules(task)
    if rules == "any" and solve(task.numbers, T, "any") is None:
        raise ValueError(f"unsolvable task {task}")
    max_chars = max_chars or MAX_CHARS.get(len(task.numbers), 400)
    memo = {}

    def solvable(kid):
        key = tuple(sorted(kid.vals))
        if key not in memo:
            memo[key] = solve(key, T, rules) is not None
        return memo[key]

    def line(text, fail=False):  # (text, ends in a failure, may open with "Wait, ")
        return text, fail, rng is not None and rng.random() < p_wait

    def dead(kid):  # the lines that show a dead child failing
        out = [line(_step(kid))]
        if len(kid.vals) == 2:
            return out + [line(_leaf(kid.vals, kid.exprs, T, rules)[0], True)]
        for gk in _ordered(kid.vals, kid.exprs, T, rules, rng)[: rng.choice((1, 2)) if rng else 1]:
            out += [line(_step(gk)), line(_leaf(gk.vals, gk.exprs, T, rules)[0], True)]
        return out

    levels, vals, exprs = [], list(task.numbers), [str(x) for x in task.numbers]
    while len(vals) > 2:  # the winning path: the first solvable child at every level
        kids = _ordered(vals, exprs, T, rules, rng)
        w = next(i for i, kid in enumerate(kids) if solvable(kid))
        levels.append((kids[:w], [], line(_step(kids[w]))))
        vals, exprs = kids[w].vals, kids[w].exprs
    text, ok, answer = _leaf(vals, exprs, T, rules)
    assert ok, "the winning path must end in the target"
    last = line(text)

    def render():
        out, prev_fail = [], False
        lines = [x for _, shown, win in levels for x in sum(shown, []) + [win]] + [last]
        for text, fail, wait in lines:
            out.append(("Wait, " if wait and prev_fail else "") + text)
            prev_fail = fail
        return close(out, answer)

    n_dead = 0
    for dead_kids, shown, _ in levels:  # add dead ends in search order while they fit
        for kid in dead_kids[: max_dead - n_dead]:
            shown.append(dead(kid))
            if len(render()) > max_chars:
                shown.pop()
                break
            n_dead += 1
    return render()


def optimal_trace(task):
    """Only the winning line (no dead ends): the ablation of search_trace."""
    return search_trace(task, None, max_dead=0)


def dfs_trace(task, rng, max_chars=None, look=3, p_wait=0.5):
    """A search the model can run itself: depth-first in heuristic order, no look at the solver.

    search_trace knows from the solver which child is solvable: it skips dead children past
    max_dead, so where its "yes" comes is predictable from the count of "no"s before it (the third
    leaf of a 3-number trace says "yes" 605 times in 623: `python countdown.py`), which a model can
    copy without doing the arithmetic. Here every child is tried, in order, until a leaf hits: a 3-number task checks the
    leaf of each child (complete; nearly every task fits in 360 chars), a 4-number task tries the first
    `look` grandchildren of each child (a bounded look, so it can pass a solution by and go on).
    Every "no" and "yes" follows from the line's own arithmetic. Returns the response, or None when
    no leaf hits within max_chars (43% of 4-number tasks at 540; the caller drops them).
    """
    T, rules = task.target, trace_rules(task)
    max_chars = max_chars or DFS_CHARS.get(len(task.numbers), 540)
    lines, failed, size = [], False, -1  # size: len("\n".join(lines))

    def emit(text, fail):  # a line, opening with "Wait, " sometimes when the last one failed
        nonlocal failed, size
        lines.append(("Wait, " if failed and rng is not None and rng.random() < p_wait else "") + text)
        failed, size = fail, size + 1 + len(lines[-1])
        return size <= max_chars

    def check(kid):  # the step into a 2-number state and its leaf: (within budget, answer or None)
        if not emit(_step(kid), False):
            return False, None
        text, ok, answer = _leaf(kid.vals, kid.exprs, T, rules)
        return emit(text, not ok), answer if ok else None

    for kid in _ordered(list(task.numbers), [str(x) for x in task.numbers], T, rules, rng):
        grandkids = [kid]
        if len(kid.vals) == 3:
            if not emit(_step(kid), False):
                return None
            grandkids = _ordered(kid.vals, kid.exprs, T, rules, rng)[:look]
        for gk in grandkids:
            fits, answer = check(gk)
            if not fits:
                return None
            if answer is not None:
                text = close(lines, answer)
                return text if len(text) <= max_chars else None
    return None


def attempts(task, rules="sos", max_value=GUESS_MAX_VALUE):
    """Every attempt at a task: each distinct path of moves down to a 2-number state, then one of
    that state's final moves, checked against the target (every value below max_value). Returns
    [(lines, hit, answer)]. The final move is any of the state's moves, not the one closest to the
    target (as the teachers' _leaf picks): a base that picked the closest would already be half a
    search, and hit 39% of 3-number attempts instead of 17% (design note 9)."""
    T, out = task.target, []

    def walk(vals, exprs, lines):
        if len(vals) == 2:
            for a, op, b, v, x_first in _moves(*vals, rules):
                if type(v) is int and 0 < v < max_value:
                    ea, eb = exprs if x_first else exprs[::-1]
                    line = f"{_fmt(a)}{op}{_fmt(b)}={_fmt(v)} vs {T} " + ("yes" if v == T else "no")
                    out.append((lines + [line], v == T, _wrap(ea) + op + _wrap(eb)))
            return
        for kid in _children(vals, exprs, rules):
            if all(type(v) is int and 0 < v < max_value for v in kid.vals):
                walk(kid.vals, kid.exprs, lines + [_step(kid)])

    walk(list(task.numbers), [str(x) for x in task.numbers], [])
    return out


def guess_trace(task, rng, p_stop=GUESS_P_STOP, p_wait=0.3, max_chars=None, rules="sos"):
    """A document for R1-Zero's base (stage 0): random attempts, each checked, and a random stop.

    The attempts are distinct and in uniformly random order (the target plays no part in which one
    comes next); every line is right and every check is true. After each attempt the document stops
    with probability p_stop, whatever the verdict, and answers with its last attempt; a new attempt
    opens with "Wait, " with probability p_wait, whatever the verdict. So it holds the ingredients of
    a search (attempts, arithmetic, checks) and none of the skill: it goes on after a "yes" and
    stops after a "no" as often as the other way round (design note 9). max_chars caps the thinking.
    """
    max_chars = max_chars or GUESS_CHARS.get(len(task.numbers), 540)
    pool = attempts(task, rules)
    rng.shuffle(pool)
    lines, answer = [], None
    for k, (att, _, ans) in enumerate(pool):
        new = list(att)
        if k and rng.random() < p_wait:
            new[0] = "Wait, " + new[0]
        if lines and len("\n".join(lines + new)) > max_chars:
            break
        lines, answer = lines + new, ans
        if rng.random() < p_stop:
            break
    return close(lines, answer)


def close(lines, answer):
    """A response from its thinking lines and its answer: the continuation of "<think>" (note 7)."""
    return "\n" + "\n".join(lines) + "\n</think>\n<answer>" + answer + "</answer>"


# ----------------------------------------------------------------------------- tasks and splits

def generate_tasks(n, seed, n_numbers=(3, 4), rules="sos", exclude=frozenset(), number_range=NUMBER_RANGE,
                   target_range=None):
    """n distinct solvable tasks: sample the numbers (n_numbers: a size or sizes to draw from), then
    a target uniformly among those they reach (in target_range, default the rules'); never a
    canonical key in exclude. The first n of a longer list from the same seed are the same tasks."""
    rng = random.Random(seed)
    sizes = (n_numbers,) if isinstance(n_numbers, int) else tuple(n_numbers)
    if not sizes or min(sizes) < 2:
        raise ValueError(f"a Countdown task has at least 2 numbers, got sizes {sizes}")
    tasks, seen, misses = [], set(exclude), 0
    while len(tasks) < n:
        if misses > 50_000:  # draws in a row that found nothing new: the request cannot be met
            raise ValueError(f"found only {len(tasks)} of {n} distinct solvable {rules} tasks with {sizes} numbers "
                             f"after {misses} draws in a row found none: ask for fewer")
        misses += 1
        numbers = tuple(rng.randint(*number_range) for _ in range(rng.choice(sizes)))
        targets = reachable_targets(numbers, rules, target_range)
        if not targets:
            continue
        task = Task(numbers, rng.choice(targets))
        if canonical(task) not in seen:
            seen.add(canonical(task))
            tasks.append(task)
            misses = 0
    return tasks


def heldout_tasks(n_numbers, n=500, rules="sos"):
    """The fixed held-out set: the first n of HELDOUT_MAX tasks drawn from a constant seed."""
    assert n <= HELDOUT_MAX, f"held-out sets hold at most {HELDOUT_MAX} tasks"
    key = (rules, n_numbers)
    if key not in _HELDOUT:
        _HELDOUT[key] = generate_tasks(HELDOUT_MAX, HELDOUT_SEED[key], n_numbers, rules)
    return list(_HELDOUT[key][:n])


# The lab's sets (lab.py): outside the training distribution (3 and 4 numbers from 1-99, targets
# 10-100), fixed by seed as the held-out sets are. name: (numbers per task, number range, target range, seed)
LAB_SETS = {"5 numbers": (5, (1, 99), (10, 100), 9_501), "targets > 100": (3, (1, 99), (101, 999), 9_302),
            "numbers > 99": (3, (100, 999), (10, 100), 9_303)}


def lab_tasks(name, n):
    """The first n tasks of the lab set `name` (sos rules: every intermediate a positive integer)."""
    k, numbers, targets, seed = LAB_SETS[name]
    return generate_tasks(n, seed, k, "sos", number_range=numbers, target_range=targets)


def heldout_keys(rules="sos"):
    """Canonical keys of both held-out sets (3 and 4 numbers) of these rules."""
    return frozenset(canonical(t) for k in (3, 4) for t in heldout_tasks(k, HELDOUT_MAX, rules))


def train_tasks(n, seed, n_numbers=(3, 4), rules="sos"):
    """Training tasks: like generate_tasks, never sharing a canonical key with a held-out set."""
    return generate_tasks(n, seed, n_numbers, rules, exclude=heldout_keys(rules))


# ----------------------------------------------------------------------------- prompts and SFT data

_QUESTION = ("Using the numbers {numbers}, create an equation that equals {target}. You can use "
             "basic arithmetic operations (+, -, *, /) and each number can only be used once. Show "
             "your work in <think> </think> tags. And return the final answer in <answer> "
             "</answer> tags, for example <answer> (1 + 2) / 3 </answer>.")


def prompt_compact(task):
    """For tiny from-scratch models: "36 12 7 -> 41\\n<think>"."""
    return " ".join(map(str, task.numbers)) + f" -> {task.target}\n<think>"


def prompt_base(task):
    """TinyZero's base-model template (R1-Zero style), assistant turn pre-filled with <think>."""
    q = _QUESTION.format(numbers=list(task.numbers), target=task.target)
    return ("A conversation between User and Assistant. The user asks a question, and the "
            "Assistant solves it. The assistant first thinks about the reasoning process in the "
            "mind and then provides the user with the answer.\nUser: " + q + "\nAssistant: Let me "
            "solve this step by step.\n<think>")


def prompt_chat(task):
    """TinyZero's Qwen-instruct template (its wording, leading space included)."""
    q = _QUESTION.format(numbers=list(task.numbers), target=task.target)
    return ("<|im_start|>system\nYou are a helpful assistant. You first thinks about the reasoning "
            "process in the mind and then provides the user with the answer.<|im_end|>\n"
            f"<|im_start|>user\n {q}<|im_end|>\n<|im_start|>assistant\nLet me solve this step by "
            "step.\n<think>")


TEMPLATES = {"compact": prompt_compact, "base": prompt_base, "chat": prompt_chat}


TRACES = {"search": search_trace, "optimal": lambda task, rng: optimal_trace(task), "dfs": dfs_trace,
          "guess": guess_trace}


def sft_records(tasks, rng, kind="search", template="compact"):
    """{"prompt", "response"} per task with the TRACES[kind] teacher (train_sft.py's data); a task
    whose trace does not fit (dfs only) is left out."""
    prompt, out = TEMPLATES[template], []
    for task in tasks:
        response = TRACES[kind](task, rng)
        if response is not None:
            out.append({"prompt": prompt(task), "response": response})
    return out


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="Countdown tasks, example traces, trace lengths")
    parser.add_argument("--rules", default="sos", choices=["sos", "any"], help="task distribution")
    parser.add_argument("--examples", type=int, default=3, help="example tasks per size to print")
    parser.add_argument("--stats", type=int, default=2000, help="tasks per size for the statistics")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    from trace_reader import trace_stats, yes_by_leaf

    rng = random.Random(args.seed)
    for k in (3, 4):
        for task in train_tasks(args.examples, args.seed, k, args.rules):
            print(prompt_compact(task) + search_trace(task, rng), end="\n\n")
    for k in (3, 4):
        tasks = train_tasks(args.stats, args.seed + 1, k, args.rules)
        for kind, teacher in TRACES.items():
            traces = [x for x in (teacher(t, rng) for t in tasks) if x is not None]
            print(f"{args.rules} {k} numbers, {kind} traces of {len(traces)} of {len(tasks)} tasks:",
                  trace_stats(traces), "\n  leaf: (says yes, leaves)", yes_by_leaf(traces))

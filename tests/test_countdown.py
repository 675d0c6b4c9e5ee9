"""countdown.py against an independent brute force and an evaluator written here (no eval)."""

import operator
import random
import re
from collections import Counter
from fractions import Fraction
from itertools import permutations

import pytest

import countdown
import trace_reader
from countdown import (Task, canonical, dfs_trace, generate_tasks, heldout_tasks, optimal_trace, prompt_base,
                       prompt_chat, prompt_compact, reachable_targets, search_trace, solve,
                       train_tasks, sft_records)

# ----------------------------------------------------------------------------- test-side references

OPS = {"+": operator.add, "-": operator.sub, "*": operator.mul, "/": operator.truediv}


def combine(a, b, rules):
    """a op b for the four operations, exact (ints, and Fractions from division); "sos" keeps
    positive integers only."""
    out = [a + b, a - b, a * b] + ([Fraction(a) / b] if b != 0 else [])
    return [v for v in out if v > 0 and v.denominator == 1] if rules == "sos" else out


def tree_values(seq, rules, memo):
    """Values of every binary expression tree over the numbers of seq, in that order."""
    if len(seq) == 1:
        return {seq[0]}
    if seq not in memo:
        memo[seq] = {v for k in range(1, len(seq)) for a in tree_values(seq[:k], rules, memo)
                     for b in tree_values(seq[k:], rules, memo) for v in combine(a, b, rules)}
    return memo[seq]


def all_values(numbers, rules):
    """Every value of every expression tree over every order of the numbers."""
    memo = {}
    return set().union(*(tree_values(p, rules, memo) for p in set(permutations(numbers))))


def evaluate(expr, rules="any"):
    """(value, leaves) of an arithmetic expression; raises ValueError when malformed or when an
    intermediate breaks the rules ("sos": every intermediate a positive integer)."""
    toks = re.findall(r"\d+|[-+*/()]|\S", expr)
    pos = 0

    def take():
        nonlocal pos
        pos += 1
        return toks[pos - 1]

    def factor():
        if pos == len(toks):
            raise ValueError(expr)
        t = take()
        if t == "(":
            v, leaves = add()
            if take() != ")":
                raise ValueError(expr)
            return v, leaves
        if not t.isdigit():
            raise ValueError(expr)
        return Fraction(int(t)), [int(t)]

    def binary(sub, ops):
        v, leaves = sub()
        while pos < len(toks) and toks[pos] in ops:
            op = take()
            w, more = sub()
            if op == "/" and w == 0:
                raise ValueError("division by zero")
            v = OPS[op](v, w)
            if rules == "sos" and (v <= 0 or v.denominator != 1):
                raise ValueError(f"intermediate {v} breaks the sos rules")
            leaves = leaves + more
        return v, leaves

    def mul():
        return binary(factor, "*/")

    def add():
        return binary(mul, "+-")

    v, leaves = add()
    if pos != len(toks):
        raise ValueError(expr)
    return v, leaves


def correct(expr, task, rules="any"):
    v, leaves = evaluate(expr, rules)
    return v == task.target and Counter(leaves) == Counter(task.numbers)


def random_tasks(n, k, rules, seed, hi=99):
    """Random numbers; half the targets drawn from the brute-force reachable set, half uniform."""
    rng, out = random.Random(seed), []
    lo_t, hi_t = countdown.TARGET_RANGE[rules]
    while len(out) < n:
        numbers = tuple(rng.randint(1, hi) for _ in range(k))
        values = all_values(numbers, rules)
        ints = sorted(int(v) for v in values if v.denominator == 1 and lo_t <= v <= hi_t)
        target = rng.choice(ints) if ints and rng.random() < 0.5 else rng.randint(lo_t, hi_t)
        out.append((Task(numbers, target), values))
    return out


# ----------------------------------------------------------------------------- solver

@pytest.mark.parametrize("rules", ["sos", "any"])
@pytest.mark.parametrize("k,n,hi", [(3, 1200, 99), (3, 400, 9), (4, 100, 99), (4, 150, 9)])
def test_solver_agrees_with_brute_force_and_its_solutions_are_correct(rules, k, n, hi):
    found = 0
    for task, values in random_tasks(n, k, rules, seed=k * 100 + hi, hi=hi):
        expr = solve(task.numbers, task.target, rules)
        assert (expr is not None) == (task.target in values), task
        if expr is not None:
            found += 1
            assert correct(expr, task, rules), (task, expr)
    assert 0.3 * n < found < n


@pytest.mark.parametrize("rules", ["sos", "any"])
def test_reachable_targets_are_the_brute_force_integers_in_range(rules):
    lo, hi = countdown.TARGET_RANGE[rules]
    for task, values in random_tasks(40, 4, rules, seed=7) + random_tasks(200, 3, rules, seed=8):
        want = sorted(int(v) for v in values if v.denominator == 1 and lo <= v <= hi)
        assert reachable_targets(task.numbers, rules) == want


def test_solver_finds_fractional_solutions_only_under_any_rules():
    assert correct(solve((3, 3, 8, 8), 24, "any"), Task((3, 3, 8, 8), 24))
    assert solve((3, 3, 8, 8), 24, "sos") is None
    assert solve((5, 5), 0, "sos") is None and solve((5, 5), 0, "any") == "5-5"


# ----------------------------------------------------------------------------- tasks and splits

@pytest.mark.parametrize("rules", ["sos", "any"])
def test_generated_tasks_are_solvable_distinct_and_in_range(rules):
    tasks = generate_tasks(150, seed=3, rules=rules)
    lo, hi = countdown.TARGET_RANGE[rules]
    assert len({canonical(t) for t in tasks}) == 150
    assert Counter(len(t.numbers) for t in tasks).keys() == {3, 4}
    for t in tasks:
        assert all(1 <= x <= 99 for x in t.numbers) and lo <= t.target <= hi
        assert correct(solve(t.numbers, t.target, rules), t, rules)  # a correct answer proves it


def test_generation_is_deterministic_per_seed():
    assert generate_tasks(100, seed=11) == generate_tasks(100, seed=11)
    assert generate_tasks(100, seed=11) != generate_tasks(100, seed=12)


def test_targets_are_not_concentrated_on_few_values():
    targets = Counter(t.target for t in generate_tasks(1000, seed=0, n_numbers=3))
    assert len(targets) > 80 and max(targets.values()) < 40


def test_heldout_sets_are_fixed_and_large():
    first = {k: heldout_tasks(k) for k in (3, 4)}
    countdown._HELDOUT.clear()  # regenerate from the seed, as a new process would
    for k in (3, 4):
        assert heldout_tasks(k) == first[k] and len(first[k]) == 500
        assert all(len(t.numbers) == k for t in first[k])
        assert heldout_tasks(k, 100) == first[k][:100]
    assert first[3][0] == Task((79, 30, 64), 15)  # pinned: a changed generator changes every eval


def test_train_never_contains_a_heldout_key():
    held = {canonical(t) for k in (3, 4) for t in heldout_tasks(k, countdown.HELDOUT_MAX)}
    train = train_tasks(4000, seed=0)
    assert not held & {canonical(t) for t in train}
    # without the exclusion the same draw would overlap: the exclusion is doing work
    assert held & {canonical(t) for t in generate_tasks(4000, seed=0)}


# ----------------------------------------------------------------------------- traces

V = r"(\d+|\(-?\d+(?:/\d+)?\))"
STEP = re.compile(rf"^(?:Wait, )?{V}([-+*/]){V}={V} \[(.*)\]$")
LEAF = re.compile(rf"^(?:Wait, )?{V}([-+*/]){V}={V} vs (\d+) (yes|no)$")


def val(s):
    return Fraction(s.strip("()"))


def apply(a, op, b):
    return None if op == "/" and b == 0 else OPS[op](Fraction(a), b)


def sos_ok(v):
    return v > 0 and v.denominator == 1


def check_trace(task, trace):
    """Asserts the trace's format and facts; returns (lines, n_dead_leaves)."""
    m = re.fullmatch(r"\n(.*)\n</think>\n<answer>(.*)</answer>", trace, re.S)
    assert m, trace
    lines, answer = m.group(1).split("\n"), m.group(2)
    assert correct(answer, task), trace
    latest = {len(task.numbers): Counter(map(Fraction, task.numbers))}  # the latest state per size
    fails, sos = 0, countdown.trace_rules(task) == "sos"
    for i, line in enumerate(lines):
        step, leaf = STEP.match(line), LEAF.match(line)
        assert step or leaf, line
        assert not line.startswith("Wait, ") or lines[i - 1].endswith(" no"), trace  # a backtrack
        a, op, b, c = map((step or leaf).group, (1, 2, 3, 4))
        a, b, c = val(a), val(b), val(c)
        assert apply(a, op, b) == c, line  # true arithmetic
        if op in "+*":
            assert a >= b, line  # the larger operand first
        state = [val(x) for x in step.group(5).split(" ")] if step else []
        parent = latest[len(state) + 1] if step else latest[2]
        assert not Counter([a, b]) - parent, line  # the operands come from the latest state
        if step:
            assert state[0] == c and Counter(state) == parent - Counter([a, b]) + Counter([c]), line
            latest[len(state)] = Counter(state)
            latest = {k: s for k, s in latest.items() if k >= len(state)}
        else:
            results = [apply(x, o, y) for x, y in permutations(parent.elements()) for o in OPS]
            results = [r for r in results if r is not None and (sos_ok(r) or not sos)]
            hit = task.target in results
            assert int(leaf.group(5)) == task.target, line  # the check names the target
            assert (leaf.group(6) == "yes") == hit == (i == len(lines) - 1), trace  # true checks
            assert abs(c - task.target) == min(abs(r - task.target) for r in results), line
            fails += leaf.group(6) == "no"
    return lines, fails


def trace_tasks(rules, k, n=150):
    return heldout_tasks(k, n, rules) if rules == "sos" else generate_tasks(n, 5, k, rules)


@pytest.mark.parametrize("rules", ["sos", "any"])
@pytest.mark.parametrize("k", [3, 4])
def test_search_traces_are_true_and_end_with_a_correct_answer(rules, k):
    rng = random.Random(0)
    with_dead = 0
    for task in trace_tasks(rules, k):
        trace = search_trace(task, rng)
        _, fails = check_trace(task, trace)
        with_dead += fails > 0
        assert len(trace) <= countdown.MAX_CHARS[k]
    assert with_dead > 0.3 * 150


def test_search_traces_backtrack_only_out_of_dead_states():
    """Every state a trace visits off its final path is unsolvable; the final path is solvable."""
    rng = random.Random(1)
    for task in heldout_tasks(4, 100):
        lines, _ = check_trace(task, trace := search_trace(task, rng))
        states = [tuple(sorted(val(x) for x in STEP.match(l).group(5).split(" ")))
                  for l in lines if STEP.match(l)]
        final = {len(s): s for s in states}  # the last state of each size is on the final path
        for s in states:
            assert (Fraction(task.target) in all_values(s, "sos")) == (final[len(s)] == s), trace


def test_some_search_traces_say_wait():
    rng = random.Random(2)
    traces = [search_trace(t, rng) for t in heldout_tasks(3, 200)]
    assert 10 < sum("\nWait, " in t for t in traces) < 150


def test_search_traces_are_reproducible_per_rng_seed():
    tasks = heldout_tasks(4, 50)
    assert [search_trace(t, random.Random(3)) for t in tasks] == \
        [search_trace(t, random.Random(3)) for t in tasks]


@pytest.mark.parametrize("k", [3, 4])
def test_optimal_traces_are_the_winning_line_only(k):
    for task in heldout_tasks(k, 200):
        lines, fails = check_trace(task, optimal_trace(task))
        assert fails == 0 and len(lines) == k - 1


def test_trace_of_a_known_task():
    assert optimal_trace(Task((36, 12, 7), 41)) == \
        "\n36+12=48 [48 7]\n48-7=41 vs 41 yes\n</think>\n<answer>(36+12)-7</answer>"


def test_unsolvable_task_has_no_trace():
    with pytest.raises(ValueError):
        search_trace(Task((1, 1, 1), 97), random.Random(0))


@pytest.mark.parametrize("rules", ["sos", "any"])
@pytest.mark.parametrize("k", [3, 4])
def test_dfs_traces_are_true_and_fit(rules, k):
    rng, n = random.Random(0), 0
    for task in trace_tasks(rules, k):
        trace = dfs_trace(task, rng)
        if trace is not None:
            check_trace(task, trace)
            assert len(trace) <= countdown.DFS_CHARS[k]
            n += 1
    assert n >= (148 if k == 3 else 45)  # every 3-number task but rare long ones; 4: the bounded look misses


def test_dfs_trace_of_a_known_task():
    """By hand: 36+7=43 (2 from 41) is tried first and fails (43-12=31 is the closest), then 48."""
    assert dfs_trace(Task((36, 12, 7), 41), None) == \
        "\n36+7=43 [43 12]\n43-12=31 vs 41 no\n36+12=48 [48 7]\n48-7=41 vs 41 yes\n</think>\n<answer>(36+12)-7</answer>"


def test_dfs_traces_try_children_in_order_without_skipping():
    """No look at the solver: the states tried are a prefix of the heuristic order (rng=None: no
    shuffled ties), and a 4-number trace looks at most `look` grandchildren under each child."""
    for task in heldout_tasks(3, 100):
        steps = [l for l in dfs_trace(task, None).split("\n") if STEP.match(l)]
        kids = countdown._ordered(list(task.numbers), [str(x) for x in task.numbers], task.target, "sos", None)
        assert steps == [countdown._step(kid) for kid in kids[: len(steps)]]
    for task in heldout_tasks(4, 100):
        trace = dfs_trace(task, random.Random(0), look=2)
        if trace is not None:
            sizes = [len(STEP.match(l).group(5).split(" ")) for l in trace.split("\n") if STEP.match(l)]
            runs = "".join(map(str, sizes)).split("3")[1:]  # the 2-number states under each child
            assert sizes[0] == 3 and all(1 <= len(r) <= 2 for r in runs)


def test_dfs_trace_over_budget_is_none():
    task = Task((38, 29, 49), 40)  # the third child hits: six lines
    assert dfs_trace(task, None, max_chars=60) is None
    assert dfs_trace(task, None).endswith("<answer>29+(49-38)</answer>")


# ----------------------------------------------------------------------------- prompts and SFT data

@pytest.mark.parametrize("template", [prompt_compact, prompt_base, prompt_chat])
def test_templates_contain_the_task_and_prefill_think(template):
    task = Task((44, 19, 35), 98)
    p = template(task)
    assert all(str(x) in p for x in (44, 19, 35, 98)) and p.endswith("<think>")
    assert "<think>" not in optimal_trace(task) + search_trace(task, random.Random(0))


def test_base_template_is_tinyzeros():
    p = prompt_base(Task((44, 19, 35), 98))
    assert "Using the numbers [44, 19, 35], create an equation that equals 98." in p
    assert p.startswith("A conversation between User and Assistant.")
    assert p.endswith("\nAssistant: Let me solve this step by step.\n<think>")


def test_chat_template_is_qwens():
    p = prompt_chat(Task((44, 19, 35), 98))
    assert p.startswith("<|im_start|>system\n") and p.count("<|im_end|>") == 2
    assert p.endswith("<|im_start|>assistant\nLet me solve this step by step.\n<think>")


def test_compact_prompt_is_short():
    assert prompt_compact(Task((3, 7, 25), 46)) == "3 7 25 -> 46\n<think>"


def test_sft_records_pair_each_prompt_with_its_teacher_trace():
    tasks = heldout_tasks(3, 20)
    rows = sft_records(tasks, random.Random(0), kind="optimal", template="base")
    assert rows[0] == {"prompt": prompt_base(tasks[0]), "response": optimal_trace(tasks[0])}
    assert len(rows) == 20
    tasks = heldout_tasks(4, 40)  # dfs leaves out the tasks whose search does not fit
    rows = sft_records(tasks, random.Random(0), kind="dfs")
    assert 0 < len(rows) < 40 and all(r["response"].endswith("</answer>") for r in rows)


# ----------------------------------------------------------------------------- failure kinds

TASK = Task((65, 18, 37), 10)  # 65-37=28, 28-18=10


@pytest.mark.parametrize("response,kind", [
    ("\n65-37=28 [28 18]\n28-18=10 yes\n</think>\n<answer>(65-37)-18</answer>", "right"),
    ("\n65-37=28 [28 18]\n28-18=10 yes\n</think>\n<answer>(65-37)+18</answer>", "other"),  # answer miscopied
    ("\n65-37=27 [27 18]\n27-18=9 no\n65+18=83 [83 37]\n83-37=46 yes\n</think>\n<answer>(65+18)-37</answer>",
     "arithmetic slip"),  # the slip comes first, then a false yes: a slip
    ("\n65+18=83 [83 37]\n83-37=46 yes\n</think>\n<answer>(65+18)-37</answer>", "false yes"),
    ("\n65*18=1170 [1170 37]\n1170/37=31 no\n</think>\n<answer>(65*18)/37</answer>", "arithmetic slip"),  # 1170/37 is not 31
    ("\n65-37=28 [28 18]\n28-18=10 yes\n</think>\n<answer>(65-37)-18", "no answer"),  # never closed
    ("\n65-37=28 [28 18]\n28-18=10 yes", "no answer"),
])
def test_failure_kind_hand_labelled(response, kind):
    assert trace_reader.failure_kind(TASK, response) == kind
    assert kind in trace_reader.FAILURE_KINDS


@pytest.mark.parametrize("response,errors", [
    ("\n65-37=28 [28 18]\n28-18=10 yes\n</think>\n<answer>(65-37)-18</answer>", (0, 0)),
    # the slip (27), then a line right given the slip (27-18=9), then a false yes (46 is not 10)
    ("\n65-37=27 [27 18]\n27-18=9 no\n65+18=83 [83 37]\n83-37=46 yes\n</think>\n<answer>x</answer>", (1, 1)),
    ("\n65*18=1170 [1170 37]\n1170/37=31 no\n3/0=0 no\n</think>", (2, 0)),  # 1170/37 is not 31; /0 never right
    ("\n28-18=10 yes\n</think>\n99+1=7 yes", (0, 0)),  # only the thinking is read
    # numbers are read 12 digits at a time (int() of 5000 digits would raise): one wrong line, no verdict
    ("9" * 5000 + "+1=" + "9" * 5000 + " yes", (1, 0)),
    ("", (0, 0)),
], ids=["clean", "slip-then-false-yes", "division", "thinking-only", "huge-numbers", "empty"])
def test_trace_errors_hand_counted(response, errors):
    assert trace_reader.trace_errors(response, TASK.target) == errors


def test_yes_by_leaf_counts_by_place():
    traces = ["\n36+7=43 [43 12]\n43-12=31 vs 41 no\n36+12=48 [48 7]\n48-7=41 vs 41 yes\n</think>\n<answer>x</answer>",
              "\n36+12=48 [48 7]\n48-7=41 vs 41 yes\n</think>\n<answer>x</answer>"]
    assert trace_reader.yes_by_leaf(traces) == {1: (1, 2), 2: (1, 1)}
    rng = random.Random(0)  # the oracle teacher's third 3-number leaf nearly always says "yes"; dfs's does not
    search = trace_reader.yes_by_leaf([search_trace(t, rng) for t in heldout_tasks(3, 300)])
    dfs = trace_reader.yes_by_leaf([x for x in (dfs_trace(t, rng) for t in heldout_tasks(3, 300)) if x])
    assert search[3][0] / search[3][1] > 0.95 and dfs[3][0] / dfs[3][1] < 0.8


# ----------------------------------------------------------------------------- R1-Zero's base corpus

GUESS = re.compile(r"\n(.*)\n</think>\n<answer>(.*)</answer>", re.S)


def split_attempts(lines, k):
    """A guess document's lines, cut into attempts (k - 1 lines each: the moves, then the check)."""
    assert len(lines) % (k - 1) == 0
    return [lines[i : i + k - 1] for i in range(0, len(lines), k - 1)]


@pytest.mark.parametrize("k", [3, 4])
def test_guess_documents_are_true_distinct_attempts_answered_by_the_last(k):
    """Every line is right, every check names the target and says yes exactly when it is hit, every
    value stays below GUESS_MAX_VALUE, no attempt repeats, and the answer is the last attempt's."""
    rng = random.Random(k)
    for task in heldout_tasks(k, 150):
        doc = countdown.guess_trace(task, rng)
        m = GUESS.fullmatch(doc)
        assert m, doc
        attempts = split_attempts(m.group(1).split("\n"), k)
        assert len({tuple(x.removeprefix("Wait, ") for x in a) for a in attempts}) == len(attempts), doc
        for a in attempts:
            state = Counter(map(Fraction, task.numbers))
            for line in a[:-1]:
                step = STEP.match(line)
                assert step, line
                x, op, y, c = val(step.group(1)), step.group(2), val(step.group(3)), val(step.group(4))
                assert apply(x, op, y) == c and 0 < c < countdown.GUESS_MAX_VALUE and c.denominator == 1, line
                assert not Counter([x, y]) - state, line  # operands from the current state
                state = state - Counter([x, y]) + Counter([c])
                assert Counter(val(v) for v in step.group(5).split(" ")) == state, line
            leaf = LEAF.match(a[-1])
            assert leaf, a[-1]
            x, op, y, c = val(leaf.group(1)), leaf.group(2), val(leaf.group(3)), val(leaf.group(4))
            assert Counter([x, y]) == state and apply(x, op, y) == c and 0 < c < countdown.GUESS_MAX_VALUE, a[-1]
            assert int(leaf.group(5)) == task.target and (leaf.group(6) == "yes") == (c == task.target), a[-1]
        answer_value, leaves = evaluate(m.group(2), "sos")
        assert answer_value == c and Counter(leaves) == Counter(task.numbers), doc  # the last attempt's expression


def test_guess_documents_stop_and_say_wait_whatever_the_verdict():
    """The stop after a check and the "Wait, " before the next attempt do not depend on the verdict:
    the base's reflection is superficial by construction."""
    rng, counts = random.Random(0), Counter()
    for task in countdown.train_tasks(3000, 5, (3,)):
        lines = GUESS.fullmatch(countdown.guess_trace(task, rng)).group(1).split("\n")
        attempts = split_attempts(lines, 3)
        for i, a in enumerate(attempts):
            verdict = a[-1].rsplit(" ", 1)[1]
            if i + 1 < len(attempts):
                counts[verdict, "go"] += 1
                counts[verdict, "wait"] += attempts[i + 1][0].startswith("Wait, ")
            elif sum(len(x) + 1 for x in lines) < countdown.GUESS_CHARS[3] - 80:  # a stop, not the budget
                counts[verdict, "stop"] += 1
    for verdict in ("yes", "no"):
        n = counts[verdict, "go"] + counts[verdict, "stop"]
        assert n > 1000 and abs(counts[verdict, "stop"] / n - countdown.GUESS_P_STOP) < 0.04, (verdict, counts)
        assert abs(counts[verdict, "wait"] / counts[verdict, "go"] - 0.3) < 0.05, (verdict, counts)


def test_search_behaviour_counts_checks_verdicts_and_what_follows_them():
    r = ("\n54-6=48 [48 98]\n98-48=50 vs 50 yes\n54+6=60 [60 98]\n98-60=38 vs 50 no\n"
         "Wait, 98-54=44 [44 6]\n44+6=51 vs 50 yes\n</think>\n<answer>(98-54)+6</answer>")
    got = trace_reader.search_behaviour(r, 50)
    assert got == dict(lines=6, slips=1, checks=3, yes=2, no=1, false_yes=1, stop_yes=1, stop_no=0, go_yes=1, go_no=1)
    cut = trace_reader.search_behaviour(r.split("</think>")[0], 50)  # never closed: the last check is no decision
    assert cut["stop_yes"] == 0 and cut["go_yes"] == 1 and cut["go_no"] == 1
    trailing = trace_reader.search_behaviour("\n98-60=38 vs 50 no\n98-\n</think>", 50)  # a half line after the check
    assert trailing["stop_no"] == 0 and trailing["go_no"] == 0
    assert trace_reader.search_behaviour("", 50) == dict(lines=0, slips=0, checks=0, yes=0, no=0, false_yes=0,
                                                      stop_yes=0, stop_no=0, go_yes=0, go_no=0)


def test_behaviour_rates_pool_the_counts_of_many_responses():
    t = Task((98, 54, 6), 50)
    stop_on_yes = "\n98-54=44 [44 6]\n44+6=50 vs 50 yes\n</think>\n<answer>(98-54)+6</answer>"
    go_on_after_no = "\n54+6=60 [60 98]\n98-60=38 vs 50 no\n98-54=44 [44 6]\n44+6=50 vs 50 yes\n</think>"
    stop_on_no = "\n54+6=60 [60 98]\n98-60=37 vs 50 no\n</think>"  # with a slip
    rates = trace_reader.behaviour_rates([t, t, t], [stop_on_yes, go_on_after_no, stop_on_no])
    assert rates == dict(checks=4 / 3, slips=1 / 3, false_yes=0.0, wrong_lines=1 / 8, p_stop_yes=1.0, p_go_no=0.5)
    assert trace_reader.behaviour_rates([t], ["no checks at all"])["p_stop_yes"] is None

"""lab.py: the pass@k estimator and the random-expression baseline against brute force, the spurious
rewards, and a killed pass@k run that picks up where it stopped."""

import itertools
import json
import math
import random
from fractions import Fraction

import pytest

import countdown
import lab
import sample
from rewards import spurious_reward


@pytest.mark.parametrize("n,c", [(1, 0), (1, 1), (5, 0), (5, 2), (6, 6), (8, 3)])
def test_pass_at_k_is_the_share_of_k_subsets_with_a_right_sample(n, c):
    """The estimator against enumerating every k-subset of n samples, c of them right."""
    samples = [True] * c + [False] * (n - c)
    for k in range(1, n + 1):
        subsets = list(itertools.combinations(samples, k))
        assert lab.pass_at_k(n, c, k) == pytest.approx(sum(any(s) for s in subsets) / len(subsets), abs=1e-12)


def test_pass_at_k_does_not_overflow_at_large_n():
    assert 0 < lab.pass_at_k(1024, 3, 256) < 1 and lab.pass_at_k(1024, 0, 256) == 0.0
    assert lab.pass_at_k(1024, 3, 256) == pytest.approx(1 - math.comb(1021, 256) / math.comb(1024, 256), rel=1e-9)


def all_values(nums):
    """Every expression tree over nums (each once, any shape and order, + - * /), by brute force:
    its value, or None after a division by zero."""
    if len(nums) == 1:
        return [Fraction(nums[0])]
    out = []
    for r in range(1, len(nums)):
        for left in itertools.combinations(range(len(nums)), r):
            a = [nums[i] for i in left]
            b = [nums[i] for i in range(len(nums)) if i not in left]
            for x in all_values(a):
                for y in all_values(b):
                    out += [None] * 4 if None in (x, y) else [x + y, x - y, x * y, x / y if y else None]
    return out


@pytest.mark.parametrize("numbers,target", [((2, 3), 6), ((1, 2, 3), 6), ((4, 4, 2), 0), ((7, 3, 2, 5), 24)])
def test_random_hit_rate_counts_every_expression_tree_once(numbers, target):
    vals = all_values(list(numbers))
    assert countdown.random_hit_rate(numbers, target) == pytest.approx(sum(v == target for v in vals) / len(vals))


def test_spurious_rewards():
    nums, target = [3, 4, 5], 23
    right, wrong, bad = "<answer>4*5+3</answer> ", "<answer>3+4+5</answer>", "<answer>3+4</answer>"
    assert [spurious_reward("format", x, nums, target, 0.9) for x in (right, wrong, bad, "none")] == [1, 1, 1, 0]
    assert [spurious_reward("incorrect", x, nums, target, 0.9) for x in (right, wrong, bad, "none")] == [0, 1, 0, 0]
    assert spurious_reward("random", "anything", nums, target, 0.49) == 1 and spurious_reward("random", "", nums, target, 0.5) == 0
    with pytest.raises(ValueError):
        spurious_reward("true", right, nums, target, 0.0)


def test_lab_sets_are_fixed_and_out_of_the_training_distribution():
    five, big_t, big_n = (countdown.lab_tasks(name, 30) for name in countdown.LAB_SETS)
    assert five == countdown.lab_tasks("5 numbers", 30) and five[:10] == countdown.lab_tasks("5 numbers", 10)
    assert all(len(t.numbers) == 5 for t in five)
    assert all(t.target > 100 for t in big_t) and all(min(t.numbers) > 99 for t in big_n)
    assert all(countdown.solve(t.numbers, t.target, "sos") for t in five[:5] + big_t[:5] + big_n[:5])


def test_a_killed_passk_run_resumes_to_the_samples_of_an_unbroken_one(tmp_path, monkeypatch):
    """Samples are appended a chunk at a time: a run killed after its first chunk, run again, writes
    exactly the file an unbroken run writes (each chunk's seed is fixed by its first task)."""
    tasks = countdown.heldout_tasks(4, 3)
    calls = []

    def fake(model, tok, part, template, max_new_tokens, batch_size, temperature, n, seed):
        calls.append(seed)
        rng = random.Random(seed)
        return [rng.choice(["<answer>1+2</answer>", "no"]) for _ in range(len(part) * n)]

    monkeypatch.setattr(lab, "sample_countdown", fake)
    whole = lab.sample_counts(tmp_path / "a.jsonl", None, None, tasks, 4, 1.0, 1, 7)
    real = lab.sample_countdown

    def killed(*a):
        if len(calls) == 4:  # the second chunk of the second run
            raise KeyboardInterrupt
        return real(*a)

    monkeypatch.setattr(lab, "sample_countdown", killed)
    with pytest.raises(KeyboardInterrupt):
        lab.sample_counts(tmp_path / "b.jsonl", None, None, tasks, 4, 1.0, 1, 7)
    assert len((tmp_path / "b.jsonl").read_text().splitlines()) == 1
    monkeypatch.setattr(lab, "sample_countdown", real)
    assert lab.sample_counts(tmp_path / "b.jsonl", None, None, tasks, 4, 1.0, 1, 7) == whole
    assert (tmp_path / "a.jsonl").read_text() == (tmp_path / "b.jsonl").read_text()
    assert calls == [7, 8, 9, 7, 8, 9]  # the resumed run samples only the two chunks left


def test_lab_cli_rejects_bad_input_in_one_line(capsys):
    for argv in (["passk", "--ckpt", "x=/no/such/dir"], ["passk", "--ckpt", "nodir"], ["passk", "--sets", "6"],
                 ["spurious", "--rewards", "true"], ["budget", "--ckpt", "a=checkpoints/countdown-base", "--budgets", "0"]):
        with pytest.raises(SystemExit) as e:
            lab.get_args(argv)
        assert e.value.code != 0
        assert capsys.readouterr().err.strip().count("\n") == 0


class OneTokenEach:
    """A tokenizer stand-in: every text is one token (heldout_eval only counts lengths)."""

    def encode(self, text, add_special_tokens=False):
        return type("Encoding", (), {"ids": [0]})()


def test_heldout_eval_on_named_sets_keys_its_results_by_set(monkeypatch):
    tasks = countdown.lab_tasks("targets > 100", 2)
    answers = lambda model, tok, tasks, template, max_new, batch, temperature=0.0, n=1, seed=0: (  # noqa: E731
        ["<answer>1</answer>"] * len(tasks) * n)
    monkeypatch.setattr(sample, "sample_countdown", answers)
    res = sample.heldout_eval(None, OneTokenEach(), 2, sets={"big": tasks}, n_samples=2)
    assert res["eval_accbig"] == 0 and res["otherbig"] == 2 and res["pass@2_big"] == 0 and res["lengthbig"] == 1
    assert json.dumps(res)  # a flat dict of numbers, as train_rl logs it


def test_search_profile_reads_a_search_that_goes_round_in_circles():
    import trace_reader

    task = countdown.Task((71, 1, 89, 43), 25)
    response = ("\n89-71=18 [18 1 43]\n18+1=19 [19 43]\n43-19=24 vs 25 no\n18+1=19 [19 43]\n43-19=24 vs 25 no\n"
                "Wait, 43-18=25 [25 1]\n25*1=25 vs 25 yes\n</think>\n<answer>(43-(89-71))*1</answer>")
    p = trace_reader.search_profile(task, response)
    assert p["kinds"] == ["step", "step", "no", "step", "no", "step", "yes"]
    assert p["first_yes"] == 3 and p["first_closer"] is True and p["repeats"] == 2
    wrong = trace_reader.search_profile(task, "\n89+71=150 [150 1 43]\n</think>")
    assert wrong["kinds"] == ["wrong"] and wrong["first_closer"] is False and wrong["first_yes"] is None

"""Specification of rewards.py: one behaviour per test, with the value it must produce."""

import ast
import math
import random
import re
import time
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import rewards
from rewards import (REFLECTION_WORDS, countdown_correct, countdown_reward, expr_numbers,
                     extract_answer, format_reward, int_answer_reward,
                     language_consistency_reward, numeric_answer, numeric_answer_reward,
                     overlong_penalty, reflection_count, safe_eval)

# -----------------------------------------------------------------------------
# extract_answer


def test_extract_answer_takes_the_last_complete_answer():
    assert extract_answer("<answer>1</answer> then <answer>2</answer> end") == "2"


def test_extract_answer_ignores_a_trailing_unclosed_answer():
    assert extract_answer("<answer>1</answer> <answer>2") == "1"


def test_extract_answer_is_none_without_a_closed_answer():
    assert extract_answer("no tags") is None
    assert extract_answer("<answer>1") is None
    assert extract_answer("1</answer>") is None


def test_extract_answer_strips_whitespace_and_may_be_empty():
    assert extract_answer("<answer>\n 3 + 4 \n</answer>") == "3 + 4"
    assert extract_answer("<answer></answer>") == ""


def test_extract_answer_pairs_the_innermost_open_tag():
    assert extract_answer("<answer><answer>5</answer>") == "5"
    assert extract_answer("<answer>5</answer></answer>") == "5"


# -----------------------------------------------------------------------------
# safe_eval and expr_numbers


@pytest.mark.parametrize("expr, value", [
    ("3 + 4", Fraction(7)),
    ("2 + 3 * 4", Fraction(14)),        # precedence
    ("8 - 3 - 2", Fraction(3)),         # left associative
    ("8 / 4 / 2", Fraction(1)),
    ("(1 / 2) * 4", Fraction(2)),       # exact non-integer intermediate
    ("7 / 3 * 3", Fraction(7)),
    ("1 / 3", Fraction(1, 3)),
    ("((((5))))", Fraction(5)),
    ("3 - 10", Fraction(-7)),           # negative results are fine, negative literals are not
    (" \t(2+3)\n*4 ", Fraction(20)),
])
def test_safe_eval_is_exact(expr, value):
    assert safe_eval(expr) == value


@pytest.mark.parametrize("expr", [
    "", "   ", "-3 + 5", "3 * -2", "+3", "2 ** 3", "9**9**9", "1.5 + 1", "1 / 0", "4 / (2 - 2)",
    "1 2", "(1 + 2", "1 + 2)", "()", "3 +", "* 3", "3 ^ 2", "3 x 2", "３ + 1", "٣ + 1", "1\x00+2",
    "abs(3)", "__import__('os')", "1234567 + 1", "1" + "+1" * 100,
])
def test_safe_eval_rejects_invalid_expressions(expr):
    assert safe_eval(expr) is None


def test_safe_eval_accepts_nesting_at_the_depth_limit_and_rejects_one_more():
    d = rewards.MAX_DEPTH
    assert safe_eval("(" * d + "1" + ")" * d) == 1
    assert safe_eval("(" * (d + 1) + "1" + ")" * (d + 1)) is None


def test_safe_eval_accepts_six_digit_literals():
    assert safe_eval("999999 * 999999") == 999998000001


def test_expr_numbers_lists_literals_in_order():
    assert expr_numbers("(25 - 5) * 3 / 3") == [25, 5, 3, 3]


def test_expr_numbers_is_none_for_an_invalid_expression():
    assert expr_numbers("3 ** 2") is None
    assert expr_numbers("1 / 0") is None


# -----------------------------------------------------------------------------
# Countdown

NUMS, TARGET = [2, 3, 7], 17  # 7 * 2 + 3


@pytest.mark.parametrize("answer", [
    "7 * 2 + 3",
    "3 + 2 * 7",
    "  (7*2)+3 ",
    "((7) * (2)) + ((3))",
    "(7 * 2 + 3) = 17",                 # a true equation: the left side is checked
    "7 * 2 + 3 =17",
])
def test_countdown_accepts_any_correct_form(answer):
    assert countdown_correct(f"<answer>{answer}</answer>", NUMS, TARGET)


def test_countdown_accepts_exact_non_integer_intermediates():
    assert countdown_correct("<answer>(1 / 2) * 4</answer>", [1, 2, 4], 2)
    assert countdown_correct("<answer>8 / (3 - 8 / 3)</answer>", [3, 3, 8, 8], 24)


def test_countdown_finds_the_answer_anywhere_in_the_text():
    text = "<think>try 7 * 3 + 2 = 23, no.</think>\nSo:\n<answer>7 * 2 + 3</answer>\nDone, 17."
    assert countdown_correct(text, NUMS, TARGET)


def test_countdown_ignores_the_order_of_the_given_numbers():
    assert countdown_correct("<answer>7 * 2 + 3</answer>", [3, 7, 2], TARGET)


@pytest.mark.parametrize("answer, numbers", [
    pytest.param("7 * 3 + 2", NUMS, id="wrong_value"),
    pytest.param("7 * 2 + 3 * (7 / 7)", NUMS, id="number_reused"),
    pytest.param("7 * 2 + 3", [1, 2, 3, 7], id="number_missing"),
    pytest.param("7 * 2 + 3 * 1", NUMS, id="number_not_in_list"),
    pytest.param("7 * 2 + 3 + 0", NUMS, id="extra_zero"),
    pytest.param("17", NUMS, id="only_the_target"),
    pytest.param("7 * 2 - -3", NUMS, id="unary_minus"),
    pytest.param("7 * 2 + 3 ** 1", NUMS, id="power"),
    pytest.param("7 * 2.0 + 3", NUMS, id="decimal"),
    pytest.param("", NUMS, id="empty_answer"),
    pytest.param("７ * 2 + 3", NUMS, id="fullwidth_digit"),
    pytest.param("7 * 2 + 3 = 18", NUMS, id="false_equation"),
    pytest.param("7 * 2 + 3 = 17 = 17", NUMS, id="two_equals_signs"),
    pytest.param("7 × 2 + 3", NUMS, id="not_an_ascii_operator"),
])
def test_countdown_rejects_wrong_answers(answer, numbers):
    assert not countdown_correct(f"<answer>{answer}</answer>", numbers, TARGET)


def test_countdown_last_answer_wins_when_it_is_wrong():
    assert not countdown_correct("<answer>7 * 2 + 3</answer> <answer>7 * 3 + 2</answer>", NUMS, 17)


def test_countdown_last_answer_wins_when_it_is_right():
    assert countdown_correct("<answer>7 * 3 + 2</answer> <answer>7 * 2 + 3</answer>", NUMS, 17)


def test_countdown_reward_is_one_for_a_correct_answer():
    assert countdown_reward("<answer>7 * 2 + 3</answer>", NUMS, TARGET) == 1.0


def test_countdown_reward_is_format_score_for_a_wrong_or_invalid_answer():
    assert countdown_reward("<answer>7 * 3 + 2</answer>", NUMS, TARGET) == 0.1
    assert countdown_reward("<answer>hello</answer>", NUMS, TARGET) == 0.1
    assert countdown_reward("<answer></answer>", NUMS, TARGET) == 0.1


def test_countdown_reward_is_zero_without_a_complete_answer():
    assert countdown_reward("7 * 2 + 3", NUMS, TARGET) == 0.0
    assert countdown_reward("<answer>7 * 2 + 3", NUMS, TARGET) == 0.0


def test_countdown_reward_scores_are_configurable():
    kw = dict(correct_score=2.0, format_score=0.0)
    assert countdown_reward("<answer>7 * 2 + 3</answer>", NUMS, TARGET, **kw) == 2.0
    assert countdown_reward("<answer>7 * 3 + 2</answer>", NUMS, TARGET, **kw) == 0.0


# -----------------------------------------------------------------------------
# format


def test_format_lenient_accepts_the_tags_in_order_anywhere():
    assert format_reward("hi <think>a</think> text <answer>1</answer> bye") == 1.0


def test_format_lenient_rejects_missing_or_misordered_tags():
    assert format_reward("<think>a</think>") == 0.0
    assert format_reward("<answer>1</answer><think>a</think>") == 0.0
    assert format_reward("<think>a<answer>1</answer></think>") == 0.0


def test_format_strict_accepts_only_whitespace_around_the_blocks():
    assert format_reward(" <think>\na\n</think>\n\n<answer>\n1\n</answer>\n", strict=True) == 1.0
    assert format_reward("hi <think>a</think><answer>1</answer>", strict=True) == 0.0
    assert format_reward("<think>a</think> so <answer>1</answer>", strict=True) == 0.0
    assert format_reward("<think>a</think><answer>1</answer> bye", strict=True) == 0.0


def test_format_strict_rejects_repeated_tags():
    text = "<think>a</think><answer>1</answer><answer>2</answer>"
    assert format_reward(text) == 1.0
    assert format_reward(text, strict=True) == 0.0
    assert format_reward("<think><think>a</think><answer>1</answer>", strict=True) == 0.0


def test_format_with_think_prefilled_starts_inside_the_thinking():
    text = "Let me think.</think>\n<answer>1</answer>"
    assert format_reward(text, think_prefilled=True) == 1.0
    assert format_reward(text, strict=True, think_prefilled=True) == 1.0
    assert format_reward(text) == 0.0
    reopened = "<think>a</think><answer>1</answer>"
    assert format_reward(reopened, strict=True, think_prefilled=True) == 0.0


# -----------------------------------------------------------------------------
# numeric answers


@pytest.mark.parametrize("text, answer", [
    ("She has 3 + 4 = 7 apples.\n#### 7", "7"),
    ("#### 1,234", "1234"),
    ("so the answer is\n#### $-5.50", "-5.50"),
    ("#### 12 and later 99", "12"),                     # '####' wins over the last number
    ("first 3, then \\boxed{42} and 7", "42"),          # boxed wins over the last number
    ("\\boxed{1} \\boxed{\\$1,000}", "1000"),           # the last boxed
    ("The answer is 18.", "18"),
    ("costs 1,000,000 dollars", "1000000"),
    ("5-3", "3"),                                       # subtraction, not -3
    ("x = -3", "-3"),
    ("from 2 to 3.75", "3.75"),
    ("no digits here", None),
    ("\\boxed{\\frac{1}{2}}", None),                    # boxed but not a single number
    ("#### none", None),
    ("٤٢", None),                                       # ASCII digits only
])
def test_numeric_answer_extracts_the_final_number(text, answer):
    assert numeric_answer(text) == answer


def test_numeric_answer_rejects_absurdly_long_numbers():
    assert numeric_answer("x " + "9" * 100) is None
    assert numeric_answer("#### " + "9" * 100) is None


@pytest.mark.parametrize("text, gold, reward", [
    ("#### 42", "42", 1.0),
    ("the answer is 42.0", 42, 1.0),
    ("#### 1,000", "1000", 1.0),
    ("#### 1000", "1,000", 1.0),
    ("so 0.1", 0.1, 1.0),                               # float gold compared by its repr
    ("#### 43", "42", 0.0),
    ("no number", "42", 0.0),
    ("#### 42", "Janet sells 16 - 3 - 4 = 9 eggs.\n#### 42", 1.0),  # a whole GSM8K solution
    ("#### 42", float("nan"), 0.0),
    ("#### 42", np.int64(42), 1.0),                     # numpy scalars from a dataset
    ("so 0.1", np.float64(0.1), 1.0),
])
def test_numeric_answer_reward_compares_exactly(text, gold, reward):
    assert numeric_answer_reward(text, gold) == reward


@pytest.mark.parametrize("text, reward", [
    ("<answer>42</answer>", 0.5),
    ("<answer> -7 </answer>", 0.5),
    ("<answer>4.2</answer>", 0.0),
    ("<answer>forty two</answer>", 0.0),
    ("<answer>٤٢</answer>", 0.0),
    ("42", 0.0),
])
def test_int_answer_reward_is_half_for_an_integer_answer(text, reward):
    assert int_answer_reward(text) == reward


# -----------------------------------------------------------------------------
# language consistency


def test_language_consistency_is_the_share_of_letters_in_the_script():
    assert language_consistency_reward("<think>abc 中文</think>") == 3 / 5
    assert language_consistency_reward("<think>abc 中文</think>", "cjk") == 2 / 5


def test_language_consistency_counts_only_the_chain_of_thought():
    assert language_consistency_reward("<think>hello</think><answer>答案</answer>") == 1.0
    assert language_consistency_reward("ab 世界") == 0.5             # no <think>: whole text
    assert language_consistency_reward("ab中文</think>x", "cjk") == 0.5  # up to </think>


def test_language_consistency_ignores_digits_punctuation_and_spaces():
    assert language_consistency_reward("<think>1 + 2 = 3, so: ok!</think>") == 1.0


def test_language_consistency_counts_accented_latin_letters_as_latin():
    assert language_consistency_reward("<think>café naïve Ærø</think>") == 1.0


def test_language_consistency_counts_kana_and_hangul_as_cjk():
    assert language_consistency_reward("<think>ひらがなカタカナ한국어</think>", "cjk") == 1.0


def test_language_consistency_is_one_without_letters():
    assert language_consistency_reward("") == 1.0
    assert language_consistency_reward("<think>12 + 3</think>") == 1.0


def test_language_consistency_rejects_an_unknown_script():
    with pytest.raises(ValueError, match="cyrillic"):
        language_consistency_reward("text", "cyrillic")


# -----------------------------------------------------------------------------
# reflection words and overlong shaping


def test_reflection_words_are_oat_zeros_list_without_but():
    oat_zero = {"wait", "recheck", "retry", "rethink", "alternatively", "however", "try again"}
    assert oat_zero <= set(REFLECTION_WORDS)
    assert "but" not in REFLECTION_WORDS


def test_reflection_count_is_case_insensitive_and_counts_whole_words():
    assert reflection_count("Wait. WAIT, wait!") == 3
    assert reflection_count("waiting awaits await verifying unverify") == 0


def test_reflection_count_counts_phrases_and_hyphen_variants():
    text = ("Let me check. Let me  check. Try again. "
            "re-examine, reexamine, double-check, double check")
    assert reflection_count(text) == 7


def test_reflection_count_ignores_but():
    assert reflection_count("but but but") == 0


@pytest.mark.parametrize("length, reward", [
    (0, 0.0), (80, 0.0), (90, -0.5), (100, -1.0), (101, -1.0), (10_000, -1.0),
])
def test_overlong_penalty_is_dapos_soft_punishment(length, reward):
    assert overlong_penalty(length, max_len=100, cache_len=20) == reward


def test_overlong_penalty_without_a_cache_is_a_hard_cutoff():
    assert overlong_penalty(100, 100, 0) == 0.0
    assert overlong_penalty(101, 100, 0) == -1.0


# -----------------------------------------------------------------------------
# properties

_PIECES = ["<answer>", "</answer>", "<think>", "</think>", "(", ")", "+", "-", "*", "/", "**",
           "=", " ", "1", "7", "42", "0", ".5", ",000", "#### ", "\\boxed{", "}", "wait ",
           "中", "é", "\x00", "３", "٣"]
_junk = st.lists(st.one_of(st.sampled_from(_PIECES), st.text(max_size=8)), max_size=40).map("".join)


@settings(max_examples=200, deadline=None)
@given(_junk)
def test_every_reward_returns_a_float_in_range_for_any_text(text):
    assert countdown_reward(text, [1, 7, 42], 50) in (0.0, 0.1, 1.0)
    assert isinstance(countdown_correct(text, [1, 7, 42], 50), bool)
    assert format_reward(text) in (0.0, 1.0)
    assert format_reward(text, strict=True, think_prefilled=True) in (0.0, 1.0)
    assert numeric_answer_reward(text, "42") in (0.0, 1.0)
    assert int_answer_reward(text) in (0.0, 0.5)
    assert 0.0 <= language_consistency_reward(text) <= 1.0
    assert 0.0 <= language_consistency_reward(text, "cjk") <= 1.0
    assert reflection_count(text) >= 0
    assert safe_eval(text) is None or isinstance(safe_eval(text), Fraction)
    assert extract_answer(text) is None or isinstance(extract_answer(text), str)
    assert numeric_answer(text) is None or isinstance(numeric_answer(text), str)


@st.composite
def _expressions(draw):
    """(expression text, its numbers, its exact value), built and evaluated as a tree here."""
    nums = draw(st.lists(st.integers(0, 999), min_size=1, max_size=5))
    space = st.sampled_from(["", " ", "  "])

    def paren(s):  # random redundant parentheses
        return f"({s})" if draw(st.booleans()) else s

    nodes = [(paren(str(n)), Fraction(n)) for n in nums]
    while len(nodes) > 1:
        i = draw(st.integers(0, len(nodes) - 2))
        (a, va), (b, vb) = nodes.pop(i), nodes.pop(i)
        op = draw(st.sampled_from("+-*/" if vb != 0 else "+-*"))
        v = {"+": va + vb, "-": va - vb, "*": va * vb, "/": va / vb if vb else None}[op]
        nodes.insert(i, (paren(f"({a}{draw(space)}{op}{draw(space)}{b})"), v))
    return nodes[0][0], nums, nodes[0][1]


_no_answer_tag = st.text(max_size=30).filter(lambda s: "<answer>" not in s)


@settings(max_examples=200, deadline=None)
@given(_expressions(), _no_answer_tag, _no_answer_tag, st.randoms(use_true_random=False))
def test_any_valid_expression_scores_one_iff_it_hits_the_target(case, before, after, rnd):
    expr, nums, value = case
    assert safe_eval(expr) == value
    assert sorted(expr_numbers(expr)) == sorted(nums)
    shuffled = rnd.sample(nums, len(nums))
    text = f"{before}<answer>{expr}</answer>{after}"
    if value.denominator == 1:
        assert countdown_reward(text, shuffled, int(value)) == 1.0
        assert countdown_reward(text, shuffled, int(value) + 1) == 0.1   # off by one: < 1.0
    else:
        assert countdown_reward(text, shuffled, math.floor(value)) == 0.1


@settings(max_examples=200, deadline=None)
@given(st.text(alphabet="0123456789+-*/() ", max_size=30), st.lists(st.integers(0, 99), max_size=4))
def test_an_answer_off_the_target_never_scores_full_credit(expr, nums):
    value = safe_eval(expr)
    target = 1 if value is None else math.floor(value) + 1   # never equal to value
    assert countdown_reward(f"<answer>{expr}</answer>", nums, target) == 0.1


# -----------------------------------------------------------------------------
# pathological inputs: every function returns quickly and the right thing

MB = 1_000_000
_PATHOLOGICAL = {
    "1MB_open_parens": "(" * MB,
    "1MB_answer_tags": "<answer>" * (MB // 8),
    "answer_of_1M_parens": "<answer>" + "(" * MB + "</answer>",
    "power_tower": "<answer>9**9**9</answer>",
    "100k_nines": "<answer>" + "9" * 100_000 + "</answer>",
    "division_by_zero": "<answer>1/0</answer>",
    "depth_at_limit": "<answer>" + "(" * 32 + "1" + ")" * 32 + "</answer>",
    "depth_over_limit": "<answer>" + "(" * 33 + "1" + ")" * 33 + "</answer>",
    "100k_open_tags_one_close": "<answer>" * 100_000 + "</answer>",
    "random_bytes": random.Random(0).randbytes(MB).decode("utf-8", errors="replace"),
    "unicode_digits": "<answer>" + "٣３" * (MB // 2) + "</answer>",
    "nul_bytes": "\x00" * MB,
    "1MB_of_numbers": "1 " * (MB // 2),
    "1MB_of_commas": "1," * (MB // 2),
    "1MB_of_wait": "wait " * (MB // 5),
    "hashes_then_1M_digits": "#### " + "9" * MB,
    "100k_boxed": "\\boxed{" * 100_000,
    "1MB_of_cjk": "<think>" + "中文，测试。" * (MB // 6),
    "huge_product": "<answer>" + "*".join(["999999"] * 28) + "</answer>",
}

_CALLS = {
    "extract_answer": extract_answer,
    "safe_eval": safe_eval,
    "expr_numbers": expr_numbers,
    "countdown_reward": lambda t: countdown_reward(t, [1, 2, 3], 6),
    "format_reward": format_reward,
    "format_reward_strict": lambda t: format_reward(t, strict=True),
    "numeric_answer_reward": lambda t: numeric_answer_reward(t, "42"),
    "int_answer_reward": int_answer_reward,
    "language_consistency_reward": language_consistency_reward,
    "language_consistency_reward_cjk": lambda t: language_consistency_reward(t, "cjk"),
    "reflection_count": reflection_count,
}


def _best_of_3(fn, text):
    best = math.inf
    for _ in range(3):
        t0 = time.perf_counter()
        fn(text)
        best = min(best, time.perf_counter() - t0)
    return best


@pytest.mark.parametrize("name", list(_PATHOLOGICAL))
def test_pathological_input_never_hangs(name):
    """Every call returns within 2 s (best of 3). Quiet, each takes under 50 ms; the bound is 40x
    that, so a loaded machine cannot fail it, while a hang or anything quadratic in the input (a
    regex that backtracks over 1 MB, a parse that rescans it) still does."""
    text = _PATHOLOGICAL[name]
    slow = {f: round(1000 * s, 1) for f, fn in _CALLS.items() if (s := _best_of_3(fn, text)) > 2.0}
    assert not slow, f"{name}: ms per call {slow}"


def test_pathological_answers_are_invalid_but_present():
    for name in ["power_tower", "100k_nines", "division_by_zero", "depth_over_limit",
                 "answer_of_1M_parens", "unicode_digits", "100k_open_tags_one_close"]:
        assert countdown_reward(_PATHOLOGICAL[name], [9, 9, 9], 9) == 0.1, name
    assert countdown_reward(_PATHOLOGICAL["1MB_open_parens"], [1], 1) == 0.0


def test_depth_limit_answer_is_correct_one_more_level_is_not():
    assert countdown_correct(_PATHOLOGICAL["depth_at_limit"], [1], 1)
    assert not countdown_correct(_PATHOLOGICAL["depth_over_limit"], [1], 1)


def test_rewards_source_never_evaluates_code():
    source = Path(rewards.__file__).read_text()
    assert not re.search(r"(?<![\w.])(eval|exec|compile|__import__)\s*\(", source)
    assert "literal_eval" not in source
    called = {node.func.id for node in ast.walk(ast.parse(source))
              if isinstance(node, ast.Call) and isinstance(node.func, ast.Name)}
    assert not called & {"eval", "exec", "compile", "__import__", "getattr"}

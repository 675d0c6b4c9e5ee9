"""
Rule-based rewards for R1-style RL: Countdown accuracy, format, numeric answers (GSM8K),
language consistency (R1), the reflection-word metric (oat-zero) and overlong shaping (DAPO).

Design choices, and why:

1. Every reward is a total function of the completion string. Completions come from a policy
   that is being optimised against these functions, so anything it can write will eventually be
   written: empty strings, megabytes of '(', unicode digits, '9**9**9', '1/0'. Each function
   returns a float in a documented range, never raises on any str, runs in linear time (well under
   50 ms on 1 MB) and never runs code: there is no eval/exec anywhere in this file.
2. Arithmetic is parsed here, by a depth-bounded recursive-descent parser over a whitelist:
   ASCII digits, + - * / ( ) and whitespace. Bounds: 200 characters, 32 nested parentheses,
   6 digits per literal. Within them no value has more than ~200 digits, so exact
   `Fraction` arithmetic is always cheap. Rejected on purpose: unary minus, '**', decimals,
   unicode digits ('３', '٣'); division by zero makes the expression invalid.
3. Exact arithmetic: a correct answer is one whose value equals the target as a Fraction, so
   '(1 / 2) * 4' is 2 and 7 / 3 * 3 is 7, with no float tolerance to argue about.
4. The answer is the content of the last complete <answer>...</answer> anywhere in the text
   (found with str.rfind, not a backtracking regex). TinyZero looks only at the last line; a model
   that writes the answer then a closing sentence should not be punished for it. An unclosed
   <answer> is no answer.
5. An answer may be an equation 'expr = N': it is accepted when N is a plain integer equal to
   the value of expr, and then only expr is checked. A false equation ('3 + 4 = 8') is wrong.
6. Pure accuracy (`countdown_correct`, a bool) is kept apart from the shaped reward
   (`countdown_reward`: TinyZero's 1.0 / 0.1 / 0.0), so logs can report both.
7. Language consistency counts letters only (str.isalpha), through code-point lookup tables built
   once with numpy: a Python loop over a 1 MB chain of thought would take too long. A chain of
   thought with no letters at all has nothing inconsistent in it and scores 1.0.
8. Reflection words are counted case-insensitively as whole words, one regex per word with a
   literal prefix (fast to search); each pattern runs only if its longest word occurs at all.
"""

import functools
import numbers
import re
from fractions import Fraction

import numpy as np

MAX_EXPR_LEN = 200  # characters of an answer expression
MAX_DEPTH = 32  # nested parentheses
MAX_DIGITS = 6  # digits per integer literal
MAX_NUMBER_LEN = 64  # characters of a GSM8K-style number

# -----------------------------------------------------------------------------
# answer extraction and safe arithmetic


def extract_answer(text: str) -> str | None:
    """Content (stripped) of the last complete <answer>...</answer> in text, or None."""
    close = text.rfind("</answer>")
    if close < 0:
        return None
    start = text.rfind("<answer>", 0, close)
    if start < 0:
        return None
    start += len("<answer>")
    return text[start:text.find("</answer>", start)].strip()  # first close after the open


class _Invalid(Exception):
    """Raised inside the parser; never escapes this module."""


_TOKEN = re.compile(r"[0-9]+|[-+*/()]")
_LITERAL = re.compile(r"\s*[0-9]{1,%d}\s*" % MAX_DIGITS)


def _tokenize(expr: str) -> list | None:
    """Ints and operator characters of expr; None if it is too long or holds anything else."""
    if len(expr) > MAX_EXPR_LEN or _TOKEN.sub("", expr).strip(" \t\r\n"):
        return None
    toks = _TOKEN.findall(expr)
    if any(len(t) > MAX_DIGITS for t in toks):
        return None
    return [int(t) if t.isdigit() else t for t in toks]  # only ASCII digits get this far


def _parse(expr: str) -> tuple[Fraction, list[int]] | None:
    """Exact value and integer literals of expr, or None if it is not a valid expression.

    Grammar: sum := product (('+' | '-') product)*;  product := atom (('*' | '/') atom)*;
    atom := INT | '(' sum ')'. At most MAX_DEPTH nested parentheses, so recursion is bounded.
    """
    toks = _tokenize(expr)
    if not toks:
        return None
    nums, pos = [], 0

    def peek():
        return toks[pos] if pos < len(toks) else None

    def take():
        nonlocal pos
        tok = peek()
        pos += 1
        return tok

    def sum_(depth):
        v = product(depth)
        while peek() in ("+", "-"):
            op, r = take(), product(depth)
            v = v + r if op == "+" else v - r
        return v

    def product(depth):
        v = atom(depth)
        while peek() in ("*", "/"):
            op, r = take(), atom(depth)
            if op == "/" and r == 0:
                raise _Invalid
            v = v * r if op == "*" else v / r
        return v

    def atom(depth):
        tok = take()
        if isinstance(tok, int):
            nums.append(tok)
            return Fraction(tok)
        if tok == "(" and depth < MAX_DEPTH:
            v = sum_(depth + 1)
            if take() == ")":
                return v
        raise _Invalid  # unary sign, stray operator, ')' missing, too deep, or end of input

    try:
        value = sum_(0)
    except _Invalid:
        return None
    if pos != len(toks):  # trailing tokens, e.g. '1 2' or '(1))'
        return None
    return value, nums


def safe_eval(expr: str) -> Fraction | None:
    """Exact value of an arithmetic expression (ints, + - * /, parentheses), or None if invalid."""
    parsed = _parse(expr)
    return None if parsed is None else parsed[0]


def expr_numbers(expr: str) -> list[int] | None:
    """Integer literals of a valid expression, in order of appearance; None if invalid."""
    parsed = _parse(expr)
    return None if parsed is None else parsed[1]


# -----------------------------------------------------------------------------
# Countdown


def countdown_correct(completion: str, numbers: list[int], target: int) -> bool:
    """True iff the last <answer> uses exactly `numbers` (each once) and equals `target` exactly."""
    answer = extract_answer(completion)
    if answer is None:
        return False
    expr, eq, rhs = answer.partition("=")  # an optional '= N' must be true (design choice 5)
    parsed = _parse(expr)
    if parsed is None or (eq and not (_LITERAL.fullmatch(rhs) and int(rhs) == parsed[0])):
        return False
    value, used = parsed
    return sorted(used) == sorted(numbers) and value == target


def countdown_reward(completion: str, numbers: list[int], target: int, *,
                     correct_score: float = 1.0, format_score: float = 0.1) -> float:
    """TinyZero's shaped reward: correct_score if correct, format_score if there is an
    <answer>...</answer> that is wrong or invalid, 0.0 if there is none."""
    if countdown_correct(completion, numbers, target):
        return float(correct_score)
    return 0.0 if extract_answer(completion) is None else float(format_score)


SPURIOUS = ("random", "format", "incorrect")


def spurious_reward(kind: str, completion: str, numbers: list[int], target: int, coin: float) -> float:
    """The spurious rewards of Shao et al. 2025 ("Spurious Rewards"), for the lab's question 3:
    "random": 1 with probability 1/2 whatever the completion (coin: a uniform draw in [0, 1) the
    caller fixes by seed); "format": 1 for any <answer>...</answer>; "incorrect": 1 for an answer
    that uses each number once and misses the target (their incorrect-label reward), else 0."""
    if kind == "random":
        return float(coin < 0.5)
    answer = extract_answer(completion)
    if kind == "format":
        return float(answer is not None)
    if kind == "incorrect":
        parsed = None if answer is None else _parse(answer.partition("=")[0])
        return float(parsed is not None and sorted(parsed[1]) == sorted(numbers) and parsed[0] != target)
    raise ValueError(f"spurious reward kind must be one of {SPURIOUS}, got {kind!r}")


# -----------------------------------------------------------------------------
# format

_TAGS = ("<think>", "</think>", "<answer>", "</answer>")


def format_reward(text: str, strict: bool = False, think_prefilled: bool = False) -> float:
    """1.0 if text has <think>...</think> then <answer>...</answer>, else 0.0.

    Lenient: the four tags appear in this order somewhere. Strict: each tag exactly once and
    nothing but whitespace before <think>, between </think> and <answer>, and after </answer>.
    think_prefilled: the prompt ended with '<think>', so the completion starts inside the
    thinking and must not open it again (strict) / need not open it (lenient).
    """
    tags = _TAGS[1:] if think_prefilled else _TAGS
    spans, pos = [], 0
    for tag in tags:  # earliest in-order occurrence of each tag
        i = text.find(tag, pos)
        if i < 0:
            return 0.0
        spans.append((i, i + len(tag)))
        pos = i + len(tag)
    if not strict:
        return 1.0
    if any(text.count(tag) != 1 for tag in tags) or (think_prefilled and "<think>" in text):
        return 0.0
    (_, end_think), (ans, _), (_, end) = spans[-3], spans[-2], spans[-1]
    gaps = [text[end_think:ans], text[end:]] + ([] if think_prefilled else [text[:spans[0][0]]])
    return 1.0 if all(not g.strip() for g in gaps) else 0.0


# -----------------------------------------------------------------------------
# numeric answers (GSM8K) and Will Brown's integer reward

# a sign only where it cannot be subtraction ('5-3' ends in 3, 'x = -3' in -3); 1,000 style commas
_NUM = re.compile(r"(?:(?<![0-9A-Za-z)\]])[-+])?"
                  r"(?:[0-9]{1,3}(?:,[0-9]{3})+(?![0-9])|[0-9]+)(?:\.[0-9]+)?")
_AFTER_HASHES = re.compile(r"\s*\$?\s*(" + _NUM.pattern + ")")
_INT = re.compile(r"[-+]?[0-9]+")


def _clean(num: str) -> str | None:
    num = num.replace(",", "")
    return num if len(num) <= MAX_NUMBER_LEN else None


def _last_number(text: str) -> str | None:
    """Last number in text; looks only at a short window ending at the last ASCII digit."""
    p = max(text.rfind(d) for d in "0123456789")
    if p < 0:
        return None
    lo = max(0, p - MAX_NUMBER_LEN)
    *_, m = _NUM.finditer(text, lo, p + 1)  # the window is at most 65 characters
    if m.start() == lo and lo > 0:  # the number may start before the window: too long anyway
        return None
    return _clean(m.group())


def numeric_answer(text: str) -> str | None:
    """GSM8K-style final answer, commas removed: '#### N' if present, else the last \\boxed{...}
    (which must hold exactly one number), else the last number in the text. The first of these
    that is present decides: '#### none' is None even if the text has numbers."""
    i = text.rfind("####")
    if i >= 0:
        m = _AFTER_HASHES.match(text, i + 4)
        return _clean(m.group(1)) if m else None
    i = text.rfind("\\boxed{")
    if i >= 0:
        depth, start = 1, i + len("\\boxed{")
        for j in range(start, min(len(text), start + 4 * MAX_NUMBER_LEN)):
            depth += {"{": 1, "}": -1}.get(text[j], 0)
            if depth == 0:
                nums = _NUM.findall(text, start, j)
                return _clean(nums[0]) if len(nums) == 1 else None  # '\frac{1}{2}' is not 1
        return None
    return _last_number(text)


def _to_fraction(x: str | float | int) -> Fraction | None:
    """Exact value of a gold answer: a number, a number string, or a text with a numeric answer."""
    if isinstance(x, str):
        s = x.strip()
        s = _clean(s) if _NUM.fullmatch(s) else numeric_answer(s)
        return None if s is None else Fraction(s)
    try:  # a float is read as its shortest repr: 0.1 means 1/10; numpy scalars work too
        return Fraction(int(x)) if isinstance(x, numbers.Integral) else Fraction(str(float(x)))
    except (ValueError, OverflowError):  # nan, inf
        return None


def numeric_answer_reward(text: str, gold: str | float | int) -> float:
    """1.0 if the numeric answer of text equals gold exactly ('42.0' == 42, '1,000' == 1000)."""
    pred, ref = numeric_answer(text), _to_fraction(gold)
    return 1.0 if pred is not None and ref is not None and Fraction(pred) == ref else 0.0


def int_answer_reward(text: str) -> float:
    """0.5 if the last <answer> holds an integer (ASCII digits, optional sign), else 0.0."""
    answer = extract_answer(text)
    return 0.5 if answer is not None and _INT.fullmatch(answer) else 0.0


# -----------------------------------------------------------------------------
# language consistency (R1)

SCRIPTS = {  # code-point ranges, inclusive; only letters (str.isalpha) inside them count
    "latin": [(0x41, 0x5A), (0x61, 0x7A), (0xAA, 0xAA), (0xBA, 0xBA), (0xC0, 0x24F),
              (0x1E00, 0x1EFF)],
    "cjk": [(0x1100, 0x11FF), (0x3040, 0x30FF), (0x3130, 0x318F), (0x31F0, 0x31FF),
            (0x3400, 0x4DBF), (0x4E00, 0x9FFF), (0xAC00, 0xD7AF), (0xF900, 0xFAFF),
            (0xFF66, 0xFF9D), (0x20000, 0x3134F)],
}


@functools.cache
def _letter_tables() -> dict[str, np.ndarray]:
    """Boolean tables over all code points: 'alpha' and one per script (built once: a pass over them all)."""
    n = 0x110000
    alpha = np.fromiter(map(str.isalpha, map(chr, range(n))), dtype=bool, count=n)
    tables = {"alpha": alpha}
    for name, ranges in SCRIPTS.items():
        t = np.zeros(n, dtype=bool)
        for lo, hi in ranges:
            t[lo:hi + 1] = True
        tables[name] = t & alpha
    return tables


def language_consistency_reward(text: str, script: str = "latin") -> float:
    """Share of the letters of the chain of thought that are in `script` ('latin' or 'cjk').

    The chain of thought is the content of <think>...</think> (to the end if unclosed, from the
    start if only </think> is there). In [0, 1]; 1.0 when it has no letters at all.
    """
    if script not in SCRIPTS:
        raise ValueError(f"unknown script {script!r}; valid: {sorted(SCRIPTS)}")
    i = text.find("<think>")
    start = 0 if i < 0 else i + len("<think>")
    end = text.find("</think>", start)
    cot = text[start:] if end < 0 else text[start:end]
    tables = _letter_tables()
    cps = np.frombuffer(cot.encode("utf-32-le", "surrogatepass"), dtype="<u4")
    n_letters = int(tables["alpha"][cps].sum())
    return 1.0 if n_letters == 0 else int(tables[script][cps].sum()) / n_letters


# -----------------------------------------------------------------------------
# reflection metric (oat-zero) and overlong shaping (DAPO)

REFLECTION_WORDS = ("wait", "recheck", "retry", "rethink", "alternatively", "however",
                    "re-examine", "re-evaluate", "double-check", "let me check", "try again",
                    "verify")


def _word_pattern(phrase: str) -> tuple[str, re.Pattern]:
    """(longest part, regex) for a phrase whose parts may be joined by spaces or hyphens."""
    first, *rest = re.split(r"[ -]", phrase)
    sep = r"[\s-]*" if first == "re" else r"[\s-]+"  # 're-examine' may also be 'reexamine'
    # the literal comes first so the regex engine can search for it; the lookbehind after it
    # checks that no word character precedes it (a whole word) without hiding the literal
    pat = first + rf"(?<!\w{first})" + "".join(sep + w for w in rest) + r"\b"
    return max([first, *rest], key=len), re.compile(pat)


_REFLECTION_PATTERNS = [_word_pattern(w) for w in REFLECTION_WORDS]


def reflection_count(text: str) -> int:
    """Number of self-reflection words/phrases in text (case-insensitive, whole words)."""
    low = text.lower()
    # len(split) - 1 is the number of matches, without findall's list of them
    return sum(len(pat.split(low)) - 1 for key, pat in _REFLECTION_PATTERNS if key in low)


def overlong_penalty(length: int, max_len: int, cache_len: int) -> float:
    """DAPO soft overlong punishment, added to the reward: 0 up to max_len - cache_len, then
    falling linearly to -1 at max_len, and -1 beyond."""
    if length > max_len:
        return -1.0
    if cache_len <= 0 or length <= max_len - cache_len:
        return 0.0
    return (max_len - cache_len - length) / cache_len

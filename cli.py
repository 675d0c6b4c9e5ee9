"""
What the three command-line scripts (train_sft.py, train_rl.py, sample.py) share: flags checked at
parse time, one-line errors, and output directories that are never silently overwritten.

Design notes:
1. A bad flag costs no compute: every numeric flag has a type that checks its range when argparse
   reads it, and the message names the flag, the value and the range.
2. Bad input is one line and a non-zero exit: `main` prints `error: ...` for the errors the code
   raises on purpose about input (OSError, ValueError, FloatingPointError), the traceback only with
   --debug. Anything else is a bug, often in an edit of the code, and shows its traceback.
3. An output directory that already holds a run (a checkpoint or a metrics file) is refused unless
   the command says --resume (continue it) or --overwrite (start over).
"""

import argparse
import math
import os
import sys


class Parser(argparse.ArgumentParser):
    """argparse with a one-line error (argparse's own prints the usage block first) and --debug."""

    def __init__(self, description="", **kw):  # **kw: what add_subparsers passes its parsers
        super().__init__(description=description, **kw)
        self.add_argument("--debug", action="store_true", help="show the Python traceback of an error")

    def error(self, message):
        print(f"error: {message} (see --help)", file=sys.stderr)
        sys.exit(2)


def ranged(kind, lo=None, hi=None, lo_open=False):
    """An argparse type: int or float within [lo, hi] ((lo, hi] with lo_open); finite."""
    what = "an integer" if kind is int else "a number"
    bounds = "" if lo is None and hi is None else (
        f" {'>' if lo_open else '>='} {lo}" if hi is None else f" in {'(' if lo_open else '['}{lo}, {hi}]")

    def parse(text):
        try:
            v = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {what}{bounds}, got {text!r}") from None
        if not math.isfinite(v) or (lo is not None and (v < lo or lo_open and v == lo)) or (hi is not None and v > hi):
            raise argparse.ArgumentTypeError(f"expected {what}{bounds}, got {text}")
        return v

    parse.__name__ = kind.__name__
    return parse


COUNT = ranged(int, 1)  # sizes, steps, batch sizes: at least 1
COUNT0 = ranged(int, 0)  # intervals where 0 means "never" / "none"
POSITIVE = ranged(float, 0, lo_open=True)  # learning rates, clip norms
NONNEG = ranged(float, 0)  # temperatures, coefficients
FRACTION = ranged(float, 0, 1)  # probabilities, ratios
TOP_P = ranged(float, 0, 1, lo_open=True)


def sizes(text):
    """--n_numbers: "3" or "3,4" -> (3, 4); Countdown tasks have 2 to 5 numbers."""
    parts = str(text).split(",")
    if not all(p.strip().isdigit() and 2 <= int(p) <= 5 for p in parts):
        raise argparse.ArgumentTypeError(f"expected task sizes from 2 to 5 numbers, e.g. 3 or 3,4; got {text!r}")
    return tuple(int(p) for p in parts)


def prepare_out(out, resume, overwrite):
    """Make the output directory; refuse one that holds a run unless resuming or overwriting."""
    if not out or not out.strip():
        raise ValueError("--out is empty: name an output directory")
    held = [x for x in ("ckpt", "ckpt.old", "metrics.jsonl") if os.path.exists(os.path.join(out, x))]
    if os.path.exists(out) and not os.path.isdir(out):
        raise NotADirectoryError(f"--out {out}: exists and is not a directory")
    if held and not (resume or overwrite):
        raise FileExistsError(f"--out {out} holds a run ({', '.join(held)}): pass --resume to continue it "
                              "or --overwrite to start over")
    if resume and not held:
        raise FileNotFoundError(f"--resume: {out} holds no run to continue (no ckpt, no metrics.jsonl)")
    os.makedirs(out, exist_ok=True)


def main(run, argv=None):
    """Run a script's main(argv) with design note 2's error handling."""
    argv = sys.argv[1:] if argv is None else argv
    try:
        return run(argv)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)
    except (OSError, ValueError, FloatingPointError) as e:  # bad input: one line; other exceptions propagate
        if "--debug" in argv:
            raise
        print(f"error: {' '.join(str(e).split()) or type(e).__name__}", file=sys.stderr)
        sys.exit(1)


def device(text):
    """--device: cpu, or cuda / cuda:N when this machine has that GPU."""
    import torch

    if text == "cpu":
        return text
    if text == "cuda" or text.startswith("cuda:") and text[5:].isdigit():
        n = torch.cuda.device_count()
        if n and int(text[5:] or 0) < n:
            return text
        raise argparse.ArgumentTypeError(f"{text}: this machine has {n} CUDA device(s); use --device cpu")
    raise argparse.ArgumentTypeError(f"expected cpu, cuda or cuda:N, got {text!r}")

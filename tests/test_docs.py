"""The commands the README and docs/ print next to their numbers still parse: a renamed or removed
flag would otherwise leave a reader with a command that no longer runs."""

import pathlib
import re
import shlex

import pytest

import train_rl
import train_sft

ROOT = pathlib.Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
PARSERS = {"train_rl.py": train_rl.get_args, "train_sft.py": train_sft.get_args}


def commands(text):
    """(script, argv) for each `python3 train_*.py ...` in the text, up to a backtick, a newline or &&."""
    for m in re.finditer(r"python3 (train_rl\.py|train_sft\.py)([^`\n&]*)", text):
        yield m.group(1), shlex.split(m.group(2), comments=True)


def probe_flags(text):
    """The flags in table cells that hold nothing else (docs/rl_probes.md: added to train_rl.py)."""
    for cell in re.findall(r"\| `(--[^`|]*)` \|", text):
        yield shlex.split(cell)


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.name)
def test_documented_commands_parse(doc):
    text = doc.read_text()
    found = 0
    for script, argv in commands(text):
        PARSERS[script](argv)  # argparse exits (SystemExit) on an unknown flag or a bad value
        found += 1
    for flags in probe_flags(text):
        train_rl.get_args(["--pass_k_tasks", "0", *flags])
        found += 1
    assert found > 0


def test_a_bad_flag_is_caught():
    with pytest.raises(SystemExit):
        train_rl.get_args(["--no_such_flag"])
    assert list(commands("run `python3 train_rl.py --steps 3 && python3 x.py`")) == [("train_rl.py", ["--steps", "3"])]

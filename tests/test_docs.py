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
    """(flags, commit) for each table cell that holds only flags (docs/rl_probes.md: added to
    train_rl.py); commit is None for flags of the current code, else the commit they ran at."""
    for flags, commit in re.findall(r"\| `(--[^`|]*)`(?: at `([0-9a-f]{7,40})`)? \|", text):
        yield shlex.split(flags), commit or None


def check(text):
    """Every command and probe flag of the current code in the text parses; a probe whose code has
    left the scripts names the commit it ran at, and today's parser rejects it (so no row claims a
    commit it does not need). Returns how many it checked."""
    found = 0
    for script, argv in commands(text):
        PARSERS[script](argv)  # argparse exits (SystemExit) on an unknown flag or a bad value
        found += 1
    for flags, commit in probe_flags(text):
        if commit is None:
            train_rl.get_args(["--pass_k_tasks", "0", *flags])
        else:
            with pytest.raises(SystemExit):
                train_rl.get_args(["--pass_k_tasks", "0", *flags])
        found += 1
    return found


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.name)
def test_documented_commands_parse(doc):
    assert check(doc.read_text()) > 0


def test_the_check_catches_a_stale_command_and_a_stale_probe_row():
    assert list(commands("run `python3 train_rl.py --steps 3 && python3 x.py`")) == [("train_rl.py", ["--steps", "3"])]
    assert check("`python3 train_rl.py --steps 3`\n| `--lr 1e-4` |") == 2
    with pytest.raises(SystemExit):  # a flag the script no longer has
        check("`python3 train_sft.py --no_such_flag 1`")
    with pytest.raises(pytest.fail.Exception):  # a probe row names a commit though its flags still parse
        check("| `--lr 1e-4` at `abc1234` |")


def test_ci_runs_the_readme_test_command_verbatim():
    """The README's second command is what CI runs, so it works alone on a fresh machine."""
    block = re.search(r"```bash\n(.*?)```", (ROOT / "README.md").read_text(), re.S).group(1)
    lines = [x for x in block.splitlines() if x and not x.startswith("#")]
    assert len(lines) == 2 and "pip install" in lines[0] and "pip install" in lines[1]
    assert lines[1].endswith("python3 -m pytest -q tests")
    assert lines[1] in (ROOT / ".ci" / "run").read_text().splitlines()

"""report.py: the table says what the metrics say, and the curves are drawn from any run directory."""

import json
import subprocess
import sys

import report


def write_run(path, evals):
    path.mkdir()
    with open(path / "metrics.jsonl", "w") as f:
        for step in range(3):
            f.write(json.dumps({"step": step, "reward": 0.1 * step, "accuracy": 0.05, "length": 40 + step,
                                "reflection": 0.0, "entropy": 0.5, "kl": 0.01 * step}) + "\n")
        for r in evals:
            f.write(json.dumps(r) + "\n")


def test_table_has_one_row_per_eval_with_shares_as_percentages(tmp_path):
    write_run(tmp_path / "a", [{"step": 0, "eval_acc3": 0.25, "eval_acc4": 0.05, "checks3": 2.5, "p_go_no4": None},
                               {"step": 2, "eval_acc3": 0.5, "eval_acc4": 0.1, "checks3": 0.75}])
    lines = report.table([str(tmp_path / "a")]).splitlines()
    assert len(lines) == 4  # header, rule, two evals
    assert "| 0 | 25.0% / 5.0% |" in lines[2] and "2.5 / -" in lines[2]
    assert "| 2 | 50.0% / 10.0% |" in lines[3] and "0.75 / -" in lines[3]  # a count, not a share


def test_cli_draws_curves_and_refuses_a_directory_without_metrics(tmp_path):
    write_run(tmp_path / "a", [{"step": 0, "eval_acc3": 0.25, "eval_acc4": 0.05}])
    out = subprocess.run([sys.executable, "report.py", str(tmp_path / "a")], capture_output=True, text=True)
    assert out.returncode == 0 and (tmp_path / "a" / "curves.png").exists() and "25.0% / 5.0%" in out.stdout
    bad = subprocess.run([sys.executable, "report.py", str(tmp_path)], capture_output=True, text=True)
    assert bad.returncode != 0 and bad.stderr.count("\n") == 1 and "usage" in bad.stderr

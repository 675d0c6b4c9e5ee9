"""Scale-out: under torchrun (2 CPU processes, gloo) train_sft.py and train_rl.py take the steps one
process takes with the same global batch, with DDP and with FSDP2; an FSDP2 checkpoint is a plain HF
directory that loads in one process and resumes; a rank that fails stops the whole job."""

import json
import os
import re
import shlex
import subprocess
import sys
import time

import pytest
import torch

import countdown
import train_rl
import train_sft
from model import ModelConfig, Transformer
from sample import generate

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# batch 7 splits 4 + 3 over two processes; 2 micro-batches per step
SFT = ["--dim", "32", "--n_heads", "2", "--n_kv_heads", "1", "--inter_dim", "64", "--n_layers", "2", "--batch_size", "7",
       "--grad_accum", "2", "--warmup", "2", "--n_train", "300", "--eval_every", "0", "--final_tasks", "2",
       "--max_len", "256", "--save_every", "100", "--steps", "4", "--lr", "1e-2", "--threads", "1"]
# 3 prompts x 4 samples: the first process samples 1 group, the second 2; micro-batches of 3 rows
RL = ["--steps", "3", "--prompts_per_step", "3", "--group_size", "4", "--max_new_tokens", "40", "--micro_batch", "3",
      "--eval_tasks", "1", "--pass_k_tasks", "0", "--eval_every", "100", "--save_every", "100", "--beta", "0.04",
      "--ppo_epochs", "2", "--pool", "50", "--lr", "1e-3"]

DRIVER = """
import json, sys
sys.path[:0] = [{repo!r}, {tests!r}]
import torch
torch.set_num_threads(1)
import cli, test_distributed, train_rl, train_sft
runs, patch = json.load(open(sys.argv[1]))
if patch:
    getattr(test_distributed, patch)()
for script, argv in runs:
    cli.main({{"sft": train_sft.main, "rl": train_rl.main}}[script], argv)
"""


def torchrun(tmp_path, runs, patch=None, timeout=120):
    """Run (script, argv) pairs one after another in the same 2 processes under torchrun, after
    calling the function of this module named patch."""
    (tmp_path / "driver.py").write_text(DRIVER.format(repo=REPO, tests=os.path.join(REPO, "tests")))
    (tmp_path / "runs.json").write_text(json.dumps([runs, patch]))
    env = dict(os.environ, OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           str(tmp_path / "driver.py"), str(tmp_path / "runs.json")]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env, cwd=tmp_path)


def odd_targets_score_zero():
    """Tasks with an odd target score 0 whatever the completion, so their groups carry no signal. At
    steps 0 and 2 the first process's only task has an odd target: it has nothing to train on, and
    must still run the micro-batches the other process runs (parallel.py note 3)."""
    real = train_rl.countdown_reward
    train_rl.countdown_reward = lambda x, numbers, target, **k: real(x, numbers, target, **k) if target % 2 == 0 else 0.0
    return real


def rank1_hangs():
    import parallel

    real = train_sft.collate

    def collate(data, ids, pad_id=0):
        if parallel.RANK == 1:
            time.sleep(3600)
        return real(data, ids, pad_id)

    train_sft.collate = collate


def rank1_hits_bad_data():
    import parallel

    real = train_sft.collate

    def collate(data, ids, pad_id=0):
        if parallel.RANK == 1:
            raise ValueError("bad data on rank 1")
        return real(data, ids, pad_id)

    train_sft.collate = collate


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """One process runs SFT, then RL from the SFT checkpoint; two processes run the same under DDP,
    and under FSDP2 killed halfway (--stop_at) and resumed. In RL, odd targets score 0."""
    d = tmp_path_factory.mktemp("dist")
    train_sft.main(SFT + ["--out", str(d / "sft_1")])
    init = ["--init", str(d / "sft_1" / "ckpt")]
    real = odd_targets_score_zero()
    try:
        train_rl.main(RL + init + ["--out", str(d / "rl_1")])
    finally:
        train_rl.countdown_reward = real
    r = torchrun(d, [
        ["sft", SFT + ["--out", str(d / "sft_ddp")]],
        ["sft", SFT + ["--out", str(d / "sft_fsdp"), "--fsdp", "--stop_at", "2"]],
        ["sft", SFT + ["--out", str(d / "sft_fsdp"), "--fsdp", "--resume"]],
        ["rl", RL + init + ["--out", str(d / "rl_ddp")]],
        ["rl", RL + init + ["--out", str(d / "rl_fsdp"), "--fsdp", "--stop_at", "1"]],
        ["rl", RL + ["--out", str(d / "rl_fsdp"), "--fsdp", "--resume"]],
    ], patch="odd_targets_score_zero")
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    return d


def weights(path):
    return Transformer.from_pretrained(path / "ckpt").state_dict()


def max_diff(a, b):
    assert a.keys() == b.keys()
    return max((a[k] - b[k]).abs().max().item() for k in a)


@pytest.mark.parametrize("run", ["sft_ddp", "sft_fsdp", "rl_ddp", "rl_fsdp"])
def test_two_processes_take_the_steps_of_one(runs, run):
    one = weights(runs / f"{run.split('_')[0]}_1")
    assert max_diff(weights(runs / run), one) < 1e-5
    start = weights(runs / "sft_1") if run.startswith("rl") else None
    assert start is None or max_diff(one, start) > 1e-3  # RL did move the policy


def test_two_processes_log_what_one_logs_once(runs):
    """Rank 0 alone writes the metrics: the same rows as one process, the numbers to float rounding
    (the gradient norm too: each process's loss is scaled so that the averaged gradient is the sum)."""
    for run in ("sft_ddp", "sft_fsdp", "rl_ddp", "rl_fsdp"):
        one = [json.loads(x) for x in open(runs / f"{run.split('_')[0]}_1" / "metrics.jsonl")]
        two = [json.loads(x) for x in open(runs / run / "metrics.jsonl")]
        assert [sorted(r) for r in two] == [sorted(r) for r in one]
        for key in ("loss", "grad_norm", "reward", "accuracy", "groups_with_signal", "kl", "entropy", "length"):
            assert [r.get(key) for r in two] == pytest.approx([r.get(key) for r in one], abs=1e-5)


def test_a_process_with_no_group_to_train_on_still_takes_part(runs):
    """At step 0 the first process's only task has an odd target: no signal, no row to train on. The
    other process trains; the weights equal one process's (test_two_processes_take_the_steps_of_one)."""
    tasks = train_rl.step_tasks(countdown.train_tasks(50, 1, (3, 4), "sos"), 0, 3, 0)  # train_rl's pool, seed 0
    assert [t.target % 2 for t in tasks] == [1, 0, 0]
    step0 = [json.loads(x) for x in open(runs / "rl_ddp" / "metrics.jsonl")][1]
    assert step0["step"] == 0 and "grad_norm" in step0 and 0 < step0["groups_with_signal"] <= 2 / 3


def test_fsdp_checkpoint_loads_in_one_process_with_the_same_logits(runs):
    for kind in ("sft", "rl"):
        ckpt = runs / f"{kind}_fsdp" / "ckpt"
        assert {"config.json", "model.safetensors", "tokenizer.json", "train_state.pt"} <= set(os.listdir(ckpt))
        idx = torch.randint(0, 90, (3, 17), generator=torch.Generator().manual_seed(0))
        with torch.no_grad():
            logits = Transformer.from_pretrained(ckpt)(idx)
            one = Transformer.from_pretrained(runs / f"{kind}_1" / "ckpt")(idx)
        assert (logits - one).abs().max() < 1e-4
        assert torch.load(ckpt / "train_state.pt", weights_only=False)["fsdp"] is True


def test_a_failing_rank_stops_the_job_with_its_error(tmp_path):
    t0 = time.time()
    r = torchrun(tmp_path, [["sft", SFT + ["--out", str(tmp_path / "sft"), "--dist_timeout", "1"]]], "rank1_hits_bad_data")
    assert r.returncode != 0 and time.time() - t0 < 60
    assert "error: bad data on rank 1" in r.stderr


def test_a_hanging_rank_stops_the_job_after_the_timeout(tmp_path):
    t0 = time.time()
    r = torchrun(tmp_path, [["sft", SFT + ["--out", str(tmp_path / "sft"), "--dist_timeout", "0.05"]]], "rank1_hangs")
    assert r.returncode != 0 and time.time() - t0 < 60
    assert "Timed out" in r.stderr  # rank 0's collective raises after 3 s (a traceback: not bad input)


def test_a_slice_of_the_batch_samples_what_the_whole_batch_samples():
    """sample.py note 6, which train_rl relies on: rows row0.. of a batch of n_rows get the tokens they
    get when one call samples the whole batch, though rows stop (and leave the cache) at other steps."""
    torch.manual_seed(0)
    m = Transformer(ModelConfig(vocab_size=40, dim=32, n_layers=2, n_heads=2, n_kv_heads=1, inter_dim=64)).eval()
    g = torch.Generator().manual_seed(1)
    prompts = [torch.randint(1, 40, (n,), generator=g).tolist() for n in (3, 9, 1, 6, 4, 7)]
    kw = dict(max_new_tokens=30, temperature=1.0, stop_ids=[5, 6, 7], seed=3)
    whole = generate(m, prompts, **kw)
    parts = generate(m, prompts[:2], row0=0, n_rows=6, **kw) + generate(m, prompts[2:], row0=2, n_rows=6, **kw)
    assert parts == whole and len({len(c) for c in whole}) > 3  # rows stopped at different steps


def test_the_readme_torchrun_commands_parse():
    text = open(os.path.join(REPO, "README.md")).read()
    found = re.findall(r"torchrun [^`\n]*?(train_rl\.py|train_sft\.py)([^`\n]*)", text)
    for script, argv in found:
        {"train_rl.py": train_rl.get_args, "train_sft.py": train_sft.get_args}[script](shlex.split(argv))
    assert len(found) >= 3


def test_moe_under_ddp_and_fsdp_takes_the_steps_of_one_process(tmp_path):
    """--moe under DDP (SFT, then RL) and FSDP2 (SFT): the expert loads are summed over the processes before the
    balancing step, so the routers' biases (and all weights) equal one process's; experts that get no
    token on a process still get their (zero) gradient, or DDP would wait for it forever. (In RL one
    process runs an empty micro-batch, odd targets scoring 0; train_rl counts its row as no load,
    though at this size counting it would not flip any sign either.)"""
    moe = SFT + ["--moe", "--bias_update_speed", "0.01"]
    rl = RL + ["--init", str(tmp_path / "one" / "ckpt")]
    train_sft.main(moe + ["--out", str(tmp_path / "one")])
    real = odd_targets_score_zero()
    try:
        train_rl.main(rl + ["--out", str(tmp_path / "rl_one")])
    finally:
        train_rl.countdown_reward = real
    r = torchrun(tmp_path, [["sft", moe + ["--out", str(tmp_path / "ddp")]], ["rl", rl + ["--out", str(tmp_path / "rl_ddp")]],
                            ["sft", moe + ["--out", str(tmp_path / "fsdp"), "--fsdp"]]], patch="odd_targets_score_zero")
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    for one, two in (("one", "ddp"), ("rl_one", "rl_ddp"), ("one", "fsdp")):
        a, b = weights(tmp_path / one), weights(tmp_path / two)
        assert max_diff(a, b) < 1e-5
        bias = [k for k in a if k.endswith("e_score_correction_bias")]
        assert bias and all(a[k].abs().max() > 0 for k in bias)  # balancing did move them
    assert max_diff(weights(tmp_path / "rl_one"), weights(tmp_path / "one")) > 1e-3  # RL did train

"""train_rl.py: completion log-probs are exact under padding, runs resume exactly, the Qwen preset runs."""

import contextlib
import json
import random

import pytest
import torch

import countdown
import parallel
import train_rl
import train_sft
from model import ModelConfig, Transformer, load_tokenizer
from r1_kernels import backend


def tiny_countdown_checkpoint(path, extra_specials=(), **moe):
    rng = random.Random(0)
    tasks = countdown.train_tasks(200, 0)
    texts = [countdown.prompt_compact(t) + countdown.search_trace(t, rng) + "<|endoftext|>" for t in tasks]
    texts += [countdown.prompt_base(t) for t in tasks[:50]]
    tok = train_sft.train_tokenizer(texts, 96)
    if extra_specials:
        tok.add_special_tokens(list(extra_specials))
    torch.manual_seed(0)
    cfg = ModelConfig(vocab_size=tok.get_vocab_size(), dim=32, n_layers=2, n_heads=2, n_kv_heads=1, inter_dim=64,
                      max_seq_len=512, **moe)
    Transformer(cfg).save_pretrained(path, tokenizer=tok)
    return tok


@pytest.mark.parametrize("temperature", [1.0, 0.6])
def test_completion_logp_equals_unpadded_forward(temperature):
    torch.manual_seed(0)
    m = Transformer(ModelConfig(vocab_size=40, dim=32, n_layers=2, n_heads=4, n_kv_heads=2, inter_dim=64)).eval()
    prompts = [[1, 2, 3], [4, 5, 6, 7, 8, 9], [10]]
    completions = [[11, 12], [13, 14, 15, 16], []]
    idx, valid, P = train_rl.sequences(prompts, completions)
    with torch.no_grad():
        logp, ent = train_rl.completion_logp(m, idx, valid, P, with_entropy=True, temperature=temperature)
        for b, (p, c) in enumerate(zip(prompts, completions)):
            if not c:
                continue  # the sampling distribution: softmax(logits / T), in float64
            ref = torch.log_softmax(m(torch.tensor([p + c]))[0, len(p) - 1 : -1].double() / temperature, -1)
            assert (logp[b, : len(c)] - ref.gather(-1, torch.tensor(c)[:, None]).squeeze(-1)).abs().max() < 1e-5
            assert (ent[b, : len(c)] - (-(ref.exp() * ref).sum(-1))).abs().max() < 1e-5
    assert valid[:, P:].sum(1).tolist() == [2, 4, 0]


def test_step_tasks_walk_a_fixed_permutation():
    pool = list(range(10))
    steps = [train_rl.step_tasks(pool, s, 3, seed=1) for s in range(3)]
    assert sorted(sum(steps, [])) == sorted(set(sum(steps, [])))  # no repeats within an epoch
    assert steps == [train_rl.step_tasks(pool, s, 3, seed=1) for s in range(3)]


@pytest.mark.skipif(backend.triton is None, reason="triton is Linux-only")
def test_a_zero_preset_grpo_step_on_the_triton_kernels_equals_the_pytorch_step(monkeypatch):
    """The Triton path forced through the interpreter (what CUDA runs by default): the fused
    log-probs and the fused policy loss give the PyTorch path's losses and gradients."""
    args = train_rl.get_args(["--prompts_per_step", "4", "--max_new_tokens", "40"])  # the zero preset, smaller
    tasks = train_rl.step_tasks(countdown.train_tasks(50, args.seed + 1, args.n_numbers, args.rules), 0, 4, args.seed)
    policy_loss, optimizer_step = train_rl.policy_loss, parallel.optimizer_step

    def step(forced):
        monkeypatch.setattr(backend, "BACKEND", forced)
        model, ref = Transformer.from_pretrained(args.init), Transformer.from_pretrained(args.init).eval()
        opt = torch.optim.AdamW(model.parameters(), lr=args.lr)
        losses, grads = [], []

        def record_loss(*a, **kw):
            loss, m = policy_loss(*a, **kw)
            losses.append(loss.item())
            return loss, m

        def record_grads(model, *a):
            grads.extend(p.grad.clone() for p in model.parameters())
            return optimizer_step(model, *a)

        monkeypatch.setattr(train_rl, "policy_loss", record_loss)
        monkeypatch.setattr(parallel, "optimizer_step", record_grads)
        rec = train_rl.grpo_step(model, ref, opt, load_tokenizer(args.init), tasks, args, 0, contextlib.nullcontext())
        return rec, losses, grads

    (rec, losses, grads), (rec_t, losses_t, grads_t) = step("torch"), step("triton")
    assert rec["groups_with_signal"] > 0 and len(losses) == len(losses_t) > 0
    assert losses_t == pytest.approx(losses, abs=1e-6)
    assert rec_t["grad_norm"] == pytest.approx(rec["grad_norm"], rel=1e-4)
    for g, g_t in zip(grads, grads_t):
        torch.testing.assert_close(g_t, g, atol=2e-5, rtol=1e-3)


RL = ["--steps", "2", "--prompts_per_step", "2", "--group_size", "4", "--max_new_tokens", "40", "--overlong", "30",
      "--eval_tasks", "2", "--pass_k_tasks", "0", "--eval_every", "100", "--save_every", "100", "--micro_batch", "4",
      "--beta", "0.04", "--ppo_epochs", "2", "--pool", "50", "--lr", "1e-2"]


def test_killed_and_resumed_rl_run_equals_uninterrupted_run(tmp_path):
    tiny_countdown_checkpoint(tmp_path / "init")
    init = ["--init", str(tmp_path / "init")]
    train_rl.main(RL + init + ["--out", str(tmp_path / "a")])
    train_rl.main(RL + init + ["--out", str(tmp_path / "b"), "--stop_at", "1"])
    train_rl.main(RL + ["--out", str(tmp_path / "b"), "--resume"])
    a = Transformer.from_pretrained(tmp_path / "a" / "ckpt").state_dict()
    b = Transformer.from_pretrained(tmp_path / "b" / "ckpt").state_dict()
    start = Transformer.from_pretrained(tmp_path / "init").state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], start[k]) for k in a)  # the policy did move
    rows = [json.loads(x) for x in open(tmp_path / "b" / "metrics.jsonl")]
    assert [r["step"] for r in rows if "reward" in r] == [0, 1]


def test_moe_rl_run_balances_and_resumes_exactly(tmp_path):
    """GRPO on an MoE policy, with gradient checkpointing: the biases move, the logs carry the expert
    load, and a resumed run equals the unbroken one."""
    tiny_countdown_checkpoint(tmp_path / "init", n_routed_experts=4, top_k=2, moe_inter_dim=16, n_shared_experts=1,
                              score_func="sigmoid", bias_update_speed=0.01)
    run = RL + ["--init", str(tmp_path / "init"), "--grad_ckpt", "1"]
    train_rl.main(run + ["--out", str(tmp_path / "a")])
    train_rl.main(run + ["--out", str(tmp_path / "b"), "--stop_at", "1"])
    train_rl.main(RL + ["--out", str(tmp_path / "b"), "--resume"])
    a = Transformer.from_pretrained(tmp_path / "a" / "ckpt").state_dict()
    b = Transformer.from_pretrained(tmp_path / "b" / "ckpt").state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert a["layers.0.mlp.gate.e_score_correction_bias"].abs().max() > 0
    steps = [r for r in map(json.loads, open(tmp_path / "a" / "metrics.jsonl")) if "reward" in r]
    assert all(len(r["moe_max_over_mean"]) == 2 and len(r["moe_dead_experts"]) == 2 for r in steps)


def test_qwen_preset_code_path_runs_on_cpu(tmp_path, monkeypatch):
    transformers = pytest.importorskip("transformers")
    tok = tiny_countdown_checkpoint(tmp_path / "ours", extra_specials=["<|im_start|>", "<|im_end|>"])
    cfg = transformers.Qwen2Config(vocab_size=tok.get_vocab_size(), hidden_size=32, intermediate_size=64,
                                   num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=1,
                                   max_position_embeddings=1024, tie_word_embeddings=True)
    torch.manual_seed(0)
    transformers.Qwen2ForCausalLM(cfg).save_pretrained(tmp_path / "qwen")
    tok.save(str(tmp_path / "qwen" / "tokenizer.json"))
    calls = []
    real = torch.utils.checkpoint.checkpoint
    monkeypatch.setattr(torch.utils.checkpoint, "checkpoint", lambda *a, **k: calls.append(1) or real(*a, **k))
    for template in ("base", "chat"):
        out = tmp_path / f"rl_{template}"
        train_rl.main(["--preset", "qwen", "--init", str(tmp_path / "qwen"), "--out", str(out), "--template", template,
                       "--device", "cpu", "--steps", "1", "--prompts_per_step", "2", "--group_size", "2",
                       "--max_new_tokens", "12", "--eval_tasks", "1", "--pass_k_tasks", "0", "--pool", "8",
                       "--keep_equal", "--overlong", "8"])
        rows = [json.loads(x) for x in open(out / "metrics.jsonl")]
        assert any("reward" in r for r in rows) and (out / "curves.png").exists()
        assert json.load(open(out / "ckpt" / "config.json"))["model_type"] == "qwen2"
    assert calls  # gradient checkpointing was on


def test_format_score_is_the_reward_of_a_wrong_answer(tmp_path, monkeypatch):
    """A wrong answer earns --format_score, no answer earns 0, a right one 1."""
    tok = tiny_countdown_checkpoint(tmp_path / "init")
    task = countdown.Task((65, 18, 37), 10)
    texts = ["\n65-18=47 [47 37]\n47-37=10 yes\n</think>\n<answer>(65-18)-37</answer>",
             "\n65+18=83 [83 37]\n83-37=46 no\n</think>\n<answer>(65+18)-37</answer>",
             "\n65+18=83 [83 37]\n83-37=46 no"]
    monkeypatch.setattr(train_rl, "generate", lambda *a, **k: [tok.encode(x).ids for x in texts])
    model = Transformer.from_pretrained(tmp_path / "init")
    for score in (0.1, 0.0, 0.5):
        args = train_rl.get_args(["--init", str(tmp_path / "init"), "--group_size", "3", "--beta", "0",
                                  "--format_score", str(score)])
        opt = torch.optim.AdamW(model.parameters(), lr=0.0)
        rec = train_rl.grpo_step(model, None, opt, tok, [task], args, 0, torch.autocast("cpu", enabled=False))
        assert rec["reward"] == pytest.approx((1 + score + 0) / 3) and rec["accuracy"] == pytest.approx(1 / 3)


def test_top_p_reaches_the_rollouts_only(tmp_path, monkeypatch):
    """--top_p truncates the sampler; the loss still sees the full distribution (same loss as top_p 1)."""
    tok = tiny_countdown_checkpoint(tmp_path / "init")
    task = countdown.Task((65, 18, 37), 10)
    texts = ["\n65-18=47 [47 37]\n47-37=10 yes\n</think>\n<answer>(65-18)-37</answer>",
             "\n65+18=83 [83 37]\n83-37=46 no\n</think>\n<answer>(65+18)-37</answer>"]
    seen = []
    monkeypatch.setattr(train_rl, "generate", lambda *a, **k: seen.append(k["top_p"]) or [tok.encode(x).ids for x in texts])
    recs = []
    for top_p in (1.0, 0.9):
        model = Transformer.from_pretrained(tmp_path / "init")
        args = train_rl.get_args(["--init", str(tmp_path / "init"), "--group_size", "2", "--beta", "0",
                                  "--top_p", str(top_p)])
        opt = torch.optim.AdamW(model.parameters(), lr=0.0)
        recs.append(train_rl.grpo_step(model, None, opt, tok, [task], args, 0, torch.autocast("cpu", enabled=False)))
    assert seen == [1.0, 0.9] and recs[0]["grad_norm"] == recs[1]["grad_norm"] > 0


TASK = countdown.Task((65, 18, 37), 10)
RIGHT = "\n65-18=47 [47 37]\n47-37=10 yes\n</think>\n<answer>(65-18)-37</answer>"  # reward 1
WRONG = "\n65+18=83 [83 37]\n83-37=46 no\n</think>\n<answer>(65+18)-37</answer>"  # reward 0.1


def advantages_seen(tmp_path, monkeypatch, tasks, texts, *flags):
    """Run one grpo_step on scripted completions (G = len(texts) // len(tasks)); return the step's
    record and the advantages policy_loss was given (one entry per row trained on)."""
    tok = tiny_countdown_checkpoint(tmp_path / "init")
    monkeypatch.setattr(train_rl, "generate", lambda *a, **k: [tok.encode(x).ids for x in texts])
    seen = []
    real = train_rl.policy_loss
    monkeypatch.setattr(train_rl, "policy_loss", lambda *a, **k: seen.append(a[3]) or real(*a, **k))
    model = Transformer.from_pretrained(tmp_path / "init")
    G = len(texts) // len(tasks)
    args = train_rl.get_args(["--init", str(tmp_path / "init"), "--group_size", str(G), "--beta", "0", *flags])
    opt = torch.optim.AdamW(model.parameters(), lr=0.0)
    rec = train_rl.grpo_step(model, None, opt, tok, tasks, args, 0, torch.autocast("cpu", enabled=False))
    return rec, torch.cat(seen) if seen else None


def test_groups_with_equal_rewards_are_dropped_unless_kept(tmp_path, monkeypatch):
    """DAPO dynamic sampling: a group whose G rewards are equal is not trained on (--keep_equal keeps
    it, with advantage 0); the other group gets (r - mean) / std."""
    tasks = [TASK, countdown.Task((3, 4, 5), 12)]
    texts = [RIGHT, WRONG, WRONG, WRONG]  # task 0: rewards 1, 0.1; task 1: 0.1, 0.1
    rec, adv = advantages_seen(tmp_path, monkeypatch, tasks, texts)
    base = 0.45 / (0.9 / 2**0.5 + 1e-6)  # (1 - 0.55) / std([1, 0.1]), unbiased std
    assert rec["groups_with_signal"] == 0.5 and adv.tolist() == pytest.approx([base, -base])
    rec, adv = advantages_seen(tmp_path / "keep", monkeypatch, tasks, texts, "--keep_equal")
    assert adv.tolist() == pytest.approx([base, -base, 0.0, 0.0])
    rec, adv = advantages_seen(tmp_path / "none", monkeypatch, tasks[1:], texts[2:])
    assert rec["groups_with_signal"] == 0.0 and adv is None and "grad_norm" not in rec  # nothing to learn from


def test_neg_weight_scales_the_negative_advantages(tmp_path, monkeypatch):
    rec, adv = advantages_seen(tmp_path, monkeypatch, [TASK], [RIGHT, WRONG], "--neg_weight", "0")
    base = 0.45 / (0.9 / 2**0.5 + 1e-6)
    assert adv.tolist() == pytest.approx([base, 0.0])


def test_warmup_ramps_the_learning_rate(tmp_path):
    tiny_countdown_checkpoint(tmp_path / "init")
    train_rl.main(RL + ["--init", str(tmp_path / "init"), "--out", str(tmp_path / "w"), "--warmup", "4"])
    state = torch.load(tmp_path / "w" / "ckpt" / "train_state.pt", weights_only=False)
    assert state["optimizer"]["param_groups"][0]["lr"] == pytest.approx(1e-2 * 2 / 4)  # lr of step 1 of 4


@pytest.mark.parametrize("agg", ["token-mean", "seq-mean-token-mean", "seq-mean-token-sum-norm"])
def test_length_sorted_trimmed_micro_batches_give_the_one_batch_update(tmp_path, monkeypatch, agg):
    """Rows go to micro-batches longest first, each cut to its own longest completion (design note 3):
    two PPO epochs with micro-batches of 1 and 3 rows end at the weights of one untrimmed batch."""
    tok = tiny_countdown_checkpoint(tmp_path / "init")
    long_wrong = "\n65+18=83 [83 37]\n83-37=46 no\n" * 6 + "</think>\n<answer>(65+18)-37</answer>"
    texts = [WRONG, long_wrong, RIGHT, "\n65-18=47", RIGHT, "<answer>1</answer>", long_wrong, WRONG]
    monkeypatch.setattr(train_rl, "generate", lambda *a, **k: [tok.encode(x).ids for x in texts])
    weights = []
    for micro_batch in (100, 3, 1):
        model = Transformer.from_pretrained(tmp_path / "init")
        ref = Transformer.from_pretrained(tmp_path / "init")
        torch.manual_seed(1)
        with torch.no_grad():
            for p in ref.parameters():
                p.add_(0.01 * torch.randn_like(p))  # a reference that differs, so the KL term has a gradient
        args = train_rl.get_args(["--init", str(tmp_path / "init"), "--group_size", "4", "--beta", "0.1",
                                  "--agg", agg, "--ppo_epochs", "2", "--micro_batch", str(micro_batch)])
        opt = torch.optim.SGD(model.parameters(), lr=1.0)
        rec = train_rl.grpo_step(model, ref, opt, tok, [TASK, TASK], args, 0, torch.autocast("cpu", enabled=False))
        weights.append(torch.cat([p.detach().flatten() for p in model.parameters()]))
        assert rec["groups_with_signal"] == 1.0 and rec["grad_norm"] > 0
    start = torch.cat([p.detach().flatten() for p in Transformer.from_pretrained(tmp_path / "init").parameters()])
    assert (weights[0] - start).abs().max() > 1e-3  # the update is not nothing
    assert (weights[1] - weights[0]).abs().max() < 1e-6 and (weights[2] - weights[0]).abs().max() < 1e-6

"""train_rl.py: completion log-probs are exact under padding, runs resume exactly, the Qwen preset runs."""

import json
import random

import pytest
import torch

import countdown
import train_rl
import train_sft
from model import ModelConfig, Transformer


def tiny_countdown_checkpoint(path, extra_specials=()):
    rng = random.Random(0)
    tasks = countdown.train_tasks(200, 0)
    texts = [countdown.prompt_compact(t) + countdown.search_trace(t, rng) + "<|endoftext|>" for t in tasks]
    texts += [countdown.prompt_base(t) for t in tasks[:50]]
    tok = train_sft.train_tokenizer(texts, 96)
    if extra_specials:
        tok.add_special_tokens(list(extra_specials))
    torch.manual_seed(0)
    cfg = ModelConfig(vocab_size=tok.get_vocab_size(), dim=32, n_layers=2, n_heads=2, n_kv_heads=1, inter_dim=64,
                      max_seq_len=512)
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


def test_trace_penalty_lowers_the_reward_of_wrong_lines_only(tmp_path, monkeypatch):
    """Two scripted completions of one task, both with a wrong answer: one whose every line is right
    (reward 0.1), one with a slip (0.1 - penalty). Accuracy is logged apart and does not change."""
    tok = tiny_countdown_checkpoint(tmp_path / "init")
    task = countdown.Task((65, 18, 37), 10)
    texts = ["\n65+18=83 [83 37]\n83-37=46 no\n</think>\n<answer>(65+18)-37</answer>",
             "\n65+18=84 [84 37]\n84-37=47 no\n</think>\n<answer>(65+18)-37</answer>"]
    monkeypatch.setattr(train_rl, "generate", lambda *a, **k: [tok.encode(x).ids for x in texts])
    model = Transformer.from_pretrained(tmp_path / "init")
    for penalty, reward, signal in [(0.0, 0.1, 0.0), (0.25, (0.1 + 0.1 - 0.25) / 2, 1.0)]:
        args = train_rl.get_args(["--init", str(tmp_path / "init"), "--group_size", "2", "--beta", "0",
                                  "--trace_penalty", str(penalty)])
        opt = torch.optim.AdamW(model.parameters(), lr=0.0)
        rec = train_rl.grpo_step(model, None, opt, tok, [task], args, 0, torch.autocast("cpu", enabled=False))
        assert rec["reward"] == pytest.approx(reward) and rec["accuracy"] == 0.0
        assert rec["slips"] == 0.5 and rec["false_yes"] == 0.0 and rec["groups_with_signal"] == signal


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


def advantages_seen(tmp_path, monkeypatch, texts, *flags):
    """Run one grpo_step on scripted completions of TASK (G = len(texts)); return the tokenizer,
    the completions' ids, the step's record and the [rows, T] advantages policy_loss was given."""
    tok = tiny_countdown_checkpoint(tmp_path / "init")
    ids = [tok.encode(x).ids for x in texts]
    monkeypatch.setattr(train_rl, "generate", lambda *a, **k: ids)
    seen = []
    real = train_rl.policy_loss
    monkeypatch.setattr(train_rl, "policy_loss", lambda *a, **k: seen.append(a[3]) or real(*a, **k))
    model = Transformer.from_pretrained(tmp_path / "init")
    args = train_rl.get_args(["--init", str(tmp_path / "init"), "--group_size", str(len(texts)), "--beta", "0", *flags])
    opt = torch.optim.AdamW(model.parameters(), lr=0.0)
    rec = train_rl.grpo_step(model, None, opt, tok, [TASK], args, 0, torch.autocast("cpu", enabled=False))
    (adv,) = seen
    return tok, ids, rec, adv


NO_YES = ["\n65+18=83 [83 37]\n83-37=46 no\n</think>\n<answer>(65+18)-37</answer>",  # two wrong answers
          "\n65+18=84 [84 37]\n84-37=47 yes\n</think>\n<answer>(65+18)-37</answer>"]


def test_line_credit_lands_on_the_wrong_tokens(tmp_path, monkeypatch):
    """The tokens --line_credit marks decode to exactly the wrong characters; rows with a wrong line
    are trained on even when their group's rewards are all equal, and only their wrong tokens move."""
    tok, ids, rec, adv = advantages_seen(tmp_path, monkeypatch, NO_YES, "--line_credit", "0.5")
    wrong = train_rl.line_credit_tokens(tok, ids, NO_YES, [countdown.wrong_spans(x, TASK.target) for x in NO_YES])
    assert wrong[0] == [] and "".join(tok.decode([ids[1][k]]) for k in wrong[1]) == "84 yes"  # " y" "es"
    assert rec["groups_with_signal"] == 0.0  # both rewards 0.1
    assert adv.shape[0] == 1  # only the row with wrong lines
    assert sorted((adv[0] == -0.5).nonzero().squeeze(1).tolist()) == wrong[1]
    assert (adv[0] != 0).sum() == len(wrong[1])


def test_line_reward_lands_on_the_right_tokens(tmp_path, monkeypatch):
    """--line_reward adds to exactly the tokens of right results and true verdicts, in every row that
    has one, on top of the sequence's advantage (0 here: both rewards are 0.1)."""
    tok, ids, rec, adv = advantages_seen(tmp_path, monkeypatch, NO_YES, "--line_reward", "0.5")
    right = train_rl.line_credit_tokens(tok, ids, NO_YES, [countdown.right_spans(x, TASK.target) for x in NO_YES])
    assert [tok.decode([ids[0][k]]) for k in right[0]] == ["8", "3", "4", "6", " no\n"]
    assert "".join(tok.decode([ids[1][k]]) for k in right[1]) == "47"
    assert rec["groups_with_signal"] == 0.0 and rec["grad_norm"] > 0
    assert adv.shape[0] == 2
    for row in (0, 1):
        assert sorted((adv[row] == 0.5).nonzero().squeeze(1).tolist()) == right[row]
        assert (adv[row] != 0).sum() == len(right[row])


def test_greedy_in_group_puts_the_greedy_decode_first(tmp_path, monkeypatch):
    """With --greedy_in_group each group's first rollout comes from a temperature-0 call on that
    group's prompt, the other G-1 from the sampler; its accuracy is logged as greedy_accuracy."""
    tok = tiny_countdown_checkpoint(tmp_path / "init")
    tasks = [countdown.Task((65, 18, 37), 10), countdown.Task((3, 4, 5), 12)]
    right = ["\n65-18=47 [47 37]\n47-37=10 yes\n</think>\n<answer>(65-18)-37</answer>",
             "\n3+4=7 [7 5]\n7+5=12 yes\n</think>\n<answer>(3+4)+5</answer>"]
    wrong = "\n65+18=83 [83 37]\n83-37=46 no\n</think>\n<answer>(65+18)-37</answer>"
    calls = []

    def fake_generate(model, prompts, max_new_tokens, temperature=1.0, **k):
        calls.append((len(prompts), temperature))
        texts = [right[0], wrong] if temperature == 0 else [wrong] * len(prompts)
        return [tok.encode(x).ids for x in texts]

    monkeypatch.setattr(train_rl, "generate", fake_generate)
    model = Transformer.from_pretrained(tmp_path / "init")
    args = train_rl.get_args(["--init", str(tmp_path / "init"), "--group_size", "3", "--beta", "0", "--greedy_in_group"])
    opt = torch.optim.AdamW(model.parameters(), lr=0.0)
    rec = train_rl.grpo_step(model, None, opt, tok, tasks, args, 0, torch.autocast("cpu", enabled=False))
    assert calls == [(4, 1.0), (2, 0.0)]
    assert rec["greedy_accuracy"] == 0.5 and rec["accuracy"] == pytest.approx(1 / 6)
    assert rec["groups_with_signal"] == 0.5  # task 0: greedy right, samples wrong; task 1: all wrong


def test_outcome_weight_and_results_only_line_reward(tmp_path, monkeypatch):
    """--outcome_weight scales the group advantages (0: only the process credit is left);
    --line_reward_verdicts 0 credits right results only."""
    texts = ["\n65-18=47 [47 37]\n47-37=10 yes\n</think>\n<answer>(65-18)-37</answer>",  # right: reward 1
             "\n65+18=83 [83 37]\n83-37=46 no\n</think>\n<answer>(65+18)-37</answer>"]  # wrong: 0.1
    for weight in (1.0, 0.5, 0.0):
        tok, ids, _, adv = advantages_seen(tmp_path / str(weight), monkeypatch, texts, "--line_reward", "0.25",
                                           "--line_reward_verdicts", "0", "--outcome_weight", str(weight))
        results = train_rl.line_credit_tokens(tok, ids, texts, [countdown.right_spans(x, TASK.target, False) for x in texts])
        assert [tok.decode([ids[1][k]]) for k in results[1]] == ["8", "3", "4", "6"]
        base = 0.45 / (0.9 / 2**0.5 + 1e-6) * weight  # (1 - 0.55) / std([1, 0.1]), unbiased std
        for row, sign in ((0, 1), (1, -1)):
            want = torch.full((len(ids[row]),), sign * base)
            want[results[row]] += 0.25
            assert torch.allclose(adv[row, : len(ids[row])], want, atol=1e-5)


def test_branch_flips_the_least_certain_tokens_and_pushes_toward_the_winner(tmp_path, monkeypatch):
    """--branch K: the flips sit at the K smallest argmax - runner-up logit gaps of the greedy decode
    (checked against an unpadded forward), each puts the runner-up there, and a flip that wins
    gets +d on its token and -d on the greedy token at that one position (d = reward difference)."""
    tok = tiny_countdown_checkpoint(tmp_path / "init")
    wrong = "\n65+18=83 [83 37]\n83-37=46 no\n</think>\n<answer>(65+18)-37</answer>"  # reward 0.1
    greedy = tok.encode(wrong).ids
    fix, same = tok.encode("\n</think>\n<answer>(65-18)-37</answer>").ids, tok.encode("\n</think>\n<answer>(65+18)-37</answer>").ids
    calls = []

    def fake_generate(model, prompts, max_new_tokens, temperature=1.0, **k):
        calls.append((prompts, temperature))
        return [greedy] if len(calls) == 1 else [fix] + [same] * (len(prompts) - 1)

    monkeypatch.setattr(train_rl, "generate", fake_generate)
    seen = []
    real = train_rl.policy_loss
    monkeypatch.setattr(train_rl, "policy_loss", lambda *a, **k: seen.append((a[3], a[4])) or real(*a, **k))
    model = Transformer.from_pretrained(tmp_path / "init")
    args = train_rl.get_args(["--init", str(tmp_path / "init"), "--beta", "0", "--branch", "3"])
    opt = torch.optim.AdamW(model.parameters(), lr=0.0)
    rec = train_rl.branch_step(model, None, opt, tok, [TASK], args, 0, torch.autocast("cpu", enabled=False))

    (prompt,) = calls[0][0]
    with torch.no_grad():
        logits = model(torch.tensor([prompt + greedy]))[0, len(prompt) - 1 : -1].double()
    top = logits.topk(2, -1)
    gaps = (top.values[:, 0] - top.values[:, 1]).tolist()
    stops = set(train_rl.stop_ids_for(tok))
    want = sorted((g, t) for t, g in enumerate(gaps) if top.indices[t, 1].item() not in stops)[:3]
    branches, temp = calls[1]
    assert temp == 0.0 and calls[0][1] == 0.0
    assert [(p[len(prompt):-1], p[-1]) for p in branches] == [(greedy[:t], top.indices[t, 1].item()) for _, t in want]
    assert rec["branch_fix"] == 1.0 and rec["branch_break"] == 0.0 and rec["greedy_accuracy"] == 0.0
    (adv, mask), t = seen[0], want[0][1]
    assert adv.shape[0] == 2 and mask.sum() == 2  # the greedy row and the winning flip's row
    assert adv[0, t] == pytest.approx(-0.9) and adv[1, t] == pytest.approx(0.9) and mask[0, t] and mask[1, t]


def test_warmup_ramps_the_learning_rate(tmp_path):
    tiny_countdown_checkpoint(tmp_path / "init")
    train_rl.main(RL + ["--init", str(tmp_path / "init"), "--out", str(tmp_path / "w"), "--warmup", "4"])
    state = torch.load(tmp_path / "w" / "ckpt" / "train_state.pt", weights_only=False)
    assert state["optimizer"]["param_groups"][0]["lr"] == pytest.approx(1e-2 * 2 / 4)  # lr of step 1 of 4


def test_forking_keeps_the_advantage_on_the_highest_entropy_tokens_only(tmp_path, monkeypatch):
    """--forking 0.25: the policy gradient reaches only the quarter of the batch's tokens where the
    policy's entropy is highest; each keeps its sequence's advantage."""
    texts = ["\n65-18=47 [47 37]\n47-37=10 yes\n</think>\n<answer>(65-18)-37</answer>",  # right: reward 1
             "\n65+18=83 [83 37]\n83-37=46 no\n</think>\n<answer>(65+18)-37</answer>"]  # wrong: 0.1
    tok, ids, _, adv = advantages_seen(tmp_path, monkeypatch, texts, "--forking", "0.25")
    model = Transformer.from_pretrained(tmp_path / "init")
    prompt = train_rl.encode_ids(tok, countdown.TEMPLATES["compact"](TASK))
    ent = []
    with torch.no_grad():
        for c in ids:  # each row alone, no padding
            idx, valid, P = train_rl.sequences([prompt], [c])
            ent.append(train_rl.completion_logp(model, idx, valid, P, True)[1][0])
    cut = torch.quantile(torch.cat(ent), 0.75)
    base = 0.45 / (0.9 / 2**0.5 + 1e-6)  # (1 - 0.55) / std([1, 0.1])
    kept = 0
    for row, sign in ((0, 1), (1, -1)):
        want = torch.where(ent[row] >= cut, sign * base, 0.0)
        clear = (ent[row] - cut).abs() > 1e-5  # a token on the cut may fall either way with padding's rounding
        assert torch.allclose(adv[row, : len(ids[row])][clear], want[clear], atol=1e-5)
        kept += int((adv[row] != 0).sum())
    assert abs(kept - 0.25 * sum(map(len, ids))) <= 1

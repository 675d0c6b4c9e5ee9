"""
GRPO on Countdown: R1-Zero's recipe (a rule-based reward + group-relative policy optimisation).

    python train_rl.py                                   # tiny CPU run from the SFT checkpoint out/sft/ckpt
    python train_rl.py --preset qwen --init /path/to/Qwen2.5-3B --template base    # TinyZero, one GPU

One step: draw prompts -> sample G completions each (no grad, KV cache, temperature) -> score them
(countdown reward; pure accuracy logged apart) -> group advantages -> reference log-probs ->
ppo_epochs x (micro-batches of policy-loss gradients, one optimizer step) -> log, eval, save.

Design notes:
1. On-policy by default: one optimizer step per rollout batch, so the behaviour policy is the
   current one and old_logp is not computed (grpo.py's on-policy ratio). With ppo_epochs > 1 the
   first epoch's log-probs (taken before any update) are the behaviour log-probs of the later,
   clipped epochs: no extra forward pass.
2. Groups whose G rewards are all equal have zero advantage: they are dropped before the
   backward pass (DAPO's dynamic sampling, without resampling to refill the batch), which saves
   their compute and changes nothing but the KL term on them.
3. token-mean aggregation (DAPO) by default, with the normaliser counted over the whole batch,
   so micro-batching does not change the gradient. --agg picks GRPO's or Dr. GRPO's instead.
4. Prompt order and sampling seeds are functions of (seed, step), and the checkpoint holds the
   optimizer: a killed run resumed with --resume continues the same run.
5. The held-out set is fixed (countdown.heldout_tasks); evals are greedy accuracy and pass@k.
   Every metric goes to OUT/metrics.jsonl, and OUT/curves.png plots reward, accuracy, response
   length, reflection words, KL, entropy and clip fraction against steps.
6. Logits are computed only where they are needed (the completion positions) from the final
   hidden states, so the [tokens, vocab] tensor stays as small as it can be without a kernel.
7. Three process-reward probes read each line of the trace with a rule (countdown.wrong_spans,
   countdown.right_spans): --trace_penalty lowers the reward of a response with a wrong line;
   --line_credit lowers the advantage of just the wrong line's tokens (policy_loss takes [B, T]
   advantages); --line_reward raises the advantage of the tokens of each right result and true
   verdict (--line_reward_verdicts 0: results only; --outcome_weight 0 drops the outcome
   advantages, leaving the process credit alone). All are off by default: docs/rl_probes.md shows
   none raised greedy accuracy.
8. --greedy_in_group makes the first of each group's G rollouts the greedy decode (a second
   generate call at temperature 0), so the group's advantages compare the samples with what greedy
   evaluation will do, and the greedy sequence itself is trained on. It is off-policy for that one
   row (its ratio is taken as 1). A probe aimed at the held-out metric, which is greedy; off by default.
9. --branch K trains the greedy decode directly (branch_step): decode each prompt greedily, take
   its K least certain tokens (smallest logit gap between the argmax and the runner-up), put the
   runner-up there and decode greedily from it. Where that one flip changes the reward, the flip's
   token is pushed up and the greedy token down, at that position only, by the reward difference:
   a policy-improvement step for the greedy policy (if the flip wins, greedy should take it). It
   replaces the sampled groups; the loss is policy_loss's token-mean over the flipped positions,
   with the KL on the same positions. A probe; off by default.
10. --forking F keeps the advantage only on the fraction F of the batch's tokens where the policy's
   entropy is highest (Wang et al. 2025, "Beyond the 80/20 rule": RLVR's gains come from these
   forking tokens); the other tokens keep their KL term. It costs one more no-grad forward of the
   policy, for the entropies. A probe; off by default.
"""

import argparse
import itertools
import json
import math
import os
import random
import sys
import time

import torch

import countdown
from grpo import group_advantages, group_has_signal, policy_loss
from model import Transformer, load_tokenizer
from rewards import countdown_correct, countdown_reward, format_reward, overlong_penalty, reflection_count
from sample import encode_ids, eval_countdown, generate, stop_ids_for

PRESETS = {
    # the tiny from-scratch model on a laptop CPU, starting from train_sft.py's cold start
    "tiny": dict(init="out/sft/ckpt", out="out/rl", template="compact", rules="sos", n_numbers="3,4",
                 prompts_per_step=16, group_size=8, max_new_tokens=384, temperature=1.0, lr=3e-5, beta=0.04,
                 steps=300, micro_batch=64, eval_every=100, eval_tasks=500, pass_k=8, pass_k_tasks=100,
                 save_every=50, dtype="float32", grad_ckpt=False),
    # TinyZero with a local Qwen2.5 (0.5B/1.5B/3B) on one GPU: bf16 autocast, gradient checkpointing
    "qwen": dict(init=None, out="out/rl_qwen", template="base", rules="any", n_numbers="3,4",
                 prompts_per_step=32, group_size=8, max_new_tokens=1024, temperature=1.0, lr=1e-6, beta=0.001,
                 steps=300, micro_batch=8, eval_every=25, eval_tasks=200, pass_k=4, pass_k_tasks=50,
                 save_every=25, dtype="float32", grad_ckpt=True),
}


def get_args(argv=None):
    ap = argparse.ArgumentParser(description="GRPO on Countdown (R1-Zero recipe)")
    ap.add_argument("--preset", default="tiny", choices=sorted(PRESETS), help="defaults for the flags below")
    ap.add_argument("--init", help="checkpoint to start from (also the KL reference)")
    ap.add_argument("--out", help="output directory (checkpoint in OUT/ckpt)")
    ap.add_argument("--resume", action="store_true", help="continue from OUT/ckpt")
    ap.add_argument("--template", choices=sorted(countdown.TEMPLATES), help="prompt template")
    ap.add_argument("--rules", choices=["sos", "any"], help="Countdown task distribution")
    ap.add_argument("--n_numbers", help="task sizes to train on, e.g. 3,4")
    ap.add_argument("--steps", type=int)
    ap.add_argument("--pool", type=int, default=20_000, help="training tasks to draw prompts from")
    ap.add_argument("--prompts_per_step", type=int)
    ap.add_argument("--group_size", type=int, help="G completions per prompt")
    ap.add_argument("--max_new_tokens", type=int)
    ap.add_argument("--temperature", type=float)
    ap.add_argument("--top_p", type=float, default=1.0,
                    help="nucleus sampling for the rollouts only (the loss keeps the full distribution)")
    ap.add_argument("--lr", type=float)
    ap.add_argument("--warmup", type=int, default=0, help="linear learning-rate warmup over this many steps (0: none)")
    ap.add_argument("--beta", type=float, help="KL coefficient (0: no reference model)")
    ap.add_argument("--kl", default="k3", choices=["k1", "k2", "k3"])
    ap.add_argument("--eps_low", type=float, default=0.2)
    ap.add_argument("--eps_high", type=float, default=0.28, help="DAPO clip-higher")
    ap.add_argument("--adv", default="grpo", choices=["grpo", "dr_grpo"])
    ap.add_argument("--agg", default="token-mean", choices=["token-mean", "seq-mean-token-mean", "seq-mean-token-sum-norm"])
    ap.add_argument("--neg_weight", type=float, default=1.0,
                    help="factor on negative advantages (0: reinforce only the better-than-average samples)")
    ap.add_argument("--keep_equal", action="store_true", help="keep groups with equal rewards (DAPO drops them)")
    ap.add_argument("--format_score", type=float, default=0.1, help="reward of a wrong but well-formed answer (TinyZero: 0.1)")
    ap.add_argument("--trace_penalty", type=float, default=0.0,
                    help="subtract this from the reward of a response whose thinking has a wrong line (a process check)")
    ap.add_argument("--line_credit", type=float, default=0.0,
                    help="subtract this from the advantage of the tokens of each wrong line (a per-token process credit)")
    ap.add_argument("--line_reward", type=float, default=0.0,
                    help="add this to the advantage of the tokens of each right result and true verdict (positive process credit)")
    ap.add_argument("--line_reward_verdicts", type=int, default=1, choices=[0, 1],
                    help="0: --line_reward credits right results only, not the verdicts that hold")
    ap.add_argument("--outcome_weight", type=float, default=1.0,
                    help="factor on the outcome (group) advantages; 0 leaves only the process credit")
    ap.add_argument("--greedy_in_group", action="store_true",
                    help="make one of each group's G rollouts the greedy decode (a probe, design note 8)")
    ap.add_argument("--forking", type=float, default=0.0,
                    help="policy gradient only on this fraction of the batch's highest-entropy tokens (Wang et al. 2025; 0: all)")
    ap.add_argument("--branch", type=int, default=0,
                    help="replace the sampled groups by greedy branching at the K least certain tokens (a probe, design note 9)")
    ap.add_argument("--overlong", type=int, default=0, help="DAPO soft overlong penalty over this many tokens (0: off)")
    ap.add_argument("--ppo_epochs", type=int, default=1)
    ap.add_argument("--micro_batch", type=int, help="sequences per forward/backward")
    ap.add_argument("--clip_grad", type=float, default=1.0)
    ap.add_argument("--weight_decay", type=float, default=0.0)
    ap.add_argument("--eval_every", type=int)
    ap.add_argument("--eval_tasks", type=int, help="held-out tasks per size for greedy accuracy")
    ap.add_argument("--pass_k", type=int, help="samples per task for pass@k")
    ap.add_argument("--pass_k_tasks", type=int, help="held-out tasks per size for pass@k (0: skip)")
    ap.add_argument("--save_every", type=int)
    ap.add_argument("--stop_at", type=int, default=None, help="stop after this step, as if killed (tests resume)")
    ap.add_argument("--dtype", choices=["float32", "bfloat16"], help="weights' dtype (bf16 autocast is on with CUDA)")
    ap.add_argument("--grad_ckpt", type=int, choices=[0, 1], help="gradient checkpointing")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    pre, _ = ap.parse_known_args(argv)
    ap.set_defaults(**PRESETS[pre.preset])
    args = ap.parse_args(argv)
    args.n_numbers = tuple(int(n) for n in str(args.n_numbers).split(","))
    if args.init is None and not args.resume:
        ap.error("--init is required with this preset (a local checkpoint directory)")
    return args


# ------------------------------------------------------------------------------------- rollouts

def step_tasks(pool, step, n, seed):
    """The n tasks of this step: consecutive slices of a per-epoch permutation fixed by (seed, epoch)."""
    per_epoch = len(pool) // n
    epoch, i = divmod(step, per_epoch)
    perm = list(range(len(pool)))
    random.Random(seed * 1_000_003 + epoch).shuffle(perm)
    return [pool[j] for j in perm[i * n : (i + 1) * n]]


def sequences(prompts, completions, pad_id=0):
    """Left-padded prompts + right-padded completions -> idx (B, P+L), valid (B, P+L), P."""
    P, L = max(map(len, prompts)), max(1, max(map(len, completions)))
    idx = torch.full((len(prompts), P + L), pad_id, dtype=torch.long)
    valid = torch.zeros(len(prompts), P + L, dtype=torch.bool)
    for b, (p, c) in enumerate(zip(prompts, completions)):
        idx[b, P - len(p) : P], valid[b, P - len(p) : P] = torch.tensor(p), True
        if c:
            idx[b, P : P + len(c)], valid[b, P : P + len(c)] = torch.tensor(c), True
    return idx, valid, P


def completion_logits(model, idx, valid, P, temperature=1.0):
    """The logits (B, L, vocab) that predict each completion token, in fp32: the lm_head runs on the
    completion positions only."""
    h = model(idx[:, :-1], valid=valid[:, :-1], return_hidden=True)[:, P - 1 :]  # (B, L, dim)
    return model.lm_head(h).float() / temperature


def completion_logp(model, idx, valid, P, with_entropy=False, temperature=1.0):
    """log p(completion token | everything before it): (B, L), and the entropy per position if asked.

    The policy is the one that sampled: softmax(logits / temperature), so ratios, KL and entropy all
    describe the distribution the rollouts came from (as verl does)."""
    logp_all = torch.log_softmax(completion_logits(model, idx, valid, P, temperature), -1)
    logp = logp_all.gather(-1, idx[:, P:, None]).squeeze(-1)  # (B, L)
    if not with_entropy:
        return logp, None
    with torch.no_grad():
        entropy = -(logp_all.exp() * logp_all).sum(-1)
    return logp, entropy


# ------------------------------------------------------------------------------------- plotting

def plot(metrics_path, out_png):
    """Reward, accuracy, length, reflection words, KL, entropy and clip fraction against steps."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [json.loads(line) for line in open(metrics_path)]
    train = [r for r in rows if "reward" in r]
    evals = [r for r in rows if "eval_acc3" in r]
    panels = [("reward", "reward (shaped)"), ("accuracy", "train accuracy"), ("eval", "held-out greedy accuracy"),
              ("length", "response length (tokens)"), ("reflection", "reflection words / response"),
              ("kl", "KL to reference"), ("entropy", "entropy"), ("clip_frac", "clip fraction")]
    fig, axes = plt.subplots(2, 4, figsize=(16, 7))
    for ax, (key, title) in zip(axes.flat, panels):
        if key == "eval":
            for k in ("3", "4"):
                ax.plot([r["step"] for r in evals], [r[f"eval_acc{k}"] for r in evals], "o-", label=f"{k} numbers")
            ax.legend()
        else:  # raw values faintly, a 20-step moving average on top
            x, y = [r["step"] for r in train], [r.get(key, math.nan) for r in train]
            ax.plot(x, y, lw=0.6, alpha=0.35, color="C0")
            avg = [sum(y[max(0, i - 19) : i + 1]) / len(y[max(0, i - 19) : i + 1]) for i in range(len(y))]
            ax.plot(x, avg, lw=1.6, color="C0")
        ax.set_title(title)
        ax.set_xlabel("step")
    fig.tight_layout()
    fig.savefig(out_png, dpi=80)
    plt.close(fig)


def line_credit_tokens(tok, completions, texts, spans):
    """For each completion, the positions of the tokens that overlap its wrong spans
    (countdown.wrong_spans: a wrong result, a "yes" for a value that is not the target). The positions
    come from each token's decoded length; a completion whose tokens do not decode piece by piece to
    its text (a byte-level BPE splitting a character) gets none."""
    out = []
    for ids, text, sp in zip(completions, texts, spans):
        pieces = tok.decode_batch([[i] for i in ids], skip_special_tokens=False) if sp else []
        ends = list(itertools.accumulate(map(len, pieces)))
        if not sp or not ends or ends[-1] != len(text):
            out.append([])
            continue
        starts = [0] + ends[:-1]
        out.append([k for k, (s0, e0) in enumerate(zip(starts, ends)) if any(s0 < e and s < e0 for _, s, e in sp)])
    return out


def grpo_step(model, ref, opt, tok, tasks, args, step, autocast):
    """One GRPO step on these prompts: rollouts, rewards, advantages, update(s). Returns its metrics."""
    t0 = time.time()
    G, template = args.group_size, countdown.TEMPLATES[args.template]
    # 1) rollouts: G samples per prompt, no grad, KV cache
    prompts = [encode_ids(tok, template(t)) for t in tasks for _ in range(G)]
    model.eval()
    with autocast:
        sampled = [p for i, p in enumerate(prompts) if not (args.greedy_in_group and i % G == 0)]
        completions = generate(model, sampled, args.max_new_tokens, temperature=args.temperature, top_p=args.top_p,
                               stop_ids=stop_ids_for(tok), seed=args.seed * 1_000_003 + step)
        if args.greedy_in_group:  # the first rollout of each group is the greedy one
            greedy = generate(model, prompts[::G], args.max_new_tokens, temperature=0.0, stop_ids=stop_ids_for(tok))
            it = iter(completions)
            completions = [greedy[i // G] if i % G == 0 else next(it) for i in range(len(prompts))]
    t_gen = time.time() - t0
    # 2) rewards (shaped) and pure accuracy, kept apart
    texts = [tok.decode(c, skip_special_tokens=False) for c in completions]
    flat = [t for t in tasks for _ in range(G)]
    rewards = [countdown_reward(x, list(t.numbers), t.target, format_score=args.format_score) for x, t in zip(texts, flat)]
    correct = [countdown_correct(x, list(t.numbers), t.target) for x, t in zip(texts, flat)]
    spans = [countdown.wrong_spans(x, t.target) for x, t in zip(texts, flat)]  # the lines a rule finds wrong
    kinds = [{kind for kind, _, _ in s} for s in spans]
    if args.trace_penalty:
        rewards = [r - args.trace_penalty * bool(s) for r, s in zip(rewards, spans)]
    if args.overlong:
        rewards = [r + overlong_penalty(len(c), args.max_new_tokens, args.overlong) for r, c in zip(rewards, completions)]
    rewards = torch.tensor(rewards)
    adv = group_advantages(rewards, G, mode=args.adv, neg_weight=args.neg_weight) * args.outcome_weight
    signal = group_has_signal(rewards, G)  # (n_prompts,) False where all G rewards are equal
    keep = torch.ones(len(prompts), dtype=torch.bool) if args.keep_equal else signal.repeat_interleave(G)
    if args.line_credit:  # a wrong line carries signal even where the group has none
        wrong = line_credit_tokens(tok, completions, texts, spans)
        keep |= torch.tensor([bool(w) for w in wrong])
    if args.line_reward:  # so does a right one
        right = line_credit_tokens(tok, completions, texts, [countdown.right_spans(x, t.target, args.line_reward_verdicts)
                                                             for x, t in zip(texts, flat)])
        keep |= torch.tensor([bool(w) for w in right])
    rows = keep.nonzero().squeeze(1).tolist()
    rec = {"step": step, "reward": rewards.mean().item(), "accuracy": sum(correct) / len(correct),
           "format": sum(format_reward("<think>" + x) for x in texts) / len(texts),
           "length": sum(map(len, completions)) / len(completions),
           "reflection": sum(reflection_count(x) for x in texts) / len(texts),
           "slips": sum("slip" in k for k in kinds) / len(kinds),
           "false_yes": sum("false yes" in k for k in kinds) / len(kinds),
           "groups_with_signal": signal.float().mean().item(),
           "reward_std": rewards.view(-1, G).std(1).mean().item()}  # within-group spread: what GRPO learns from
    if args.greedy_in_group:
        rec["greedy_accuracy"] = sum(correct[::G]) / len(tasks)
    # 3) policy update on the groups that carry signal
    model.train()
    stats = []
    if rows:
        idx, valid, P = sequences([prompts[i] for i in rows], [completions[i] for i in rows])
        idx, valid = idx.to(args.device), valid.to(args.device)
        mask = valid[:, P:]
        a = adv[rows].to(args.device)
        if args.line_credit or args.line_reward:  # per-token advantages: the sequence's, -/+ the line credit
            a = a[:, None].repeat(1, mask.shape[1])
            for r, i in enumerate(rows):
                if args.line_credit:
                    a[r, wrong[i]] -= args.line_credit
                if args.line_reward:
                    a[r, right[i]] += args.line_reward
        n_tokens, n_seqs = mask.sum(), (mask.sum(1) > 0).sum()
        chunks = [slice(i, i + args.micro_batch) for i in range(0, len(rows), args.micro_batch)]
        if args.forking:  # only the forking tokens (the batch's top fraction by the policy's entropy) keep an advantage
            with torch.no_grad(), autocast:
                ent = torch.cat([completion_logp(model, idx[s], valid[s], P, True, args.temperature)[1] for s in chunks])
            cut = torch.quantile(ent[mask].float(), 1 - args.forking)
            a = torch.where(ent >= cut, a.reshape(len(rows), -1), 0.0)  # [B] or [B, T] advantages -> [B, T]
        ref_logp, old_logp = [None] * len(chunks), [None] * len(chunks)
        if ref is not None:
            with torch.no_grad(), autocast:
                for j, s in enumerate(chunks):
                    ref_logp[j] = completion_logp(ref, idx[s], valid[s], P, temperature=args.temperature)[0]
        for epoch in range(args.ppo_epochs):
            for j, s in enumerate(chunks):
                with autocast:
                    logp, ent = completion_logp(model, idx[s], valid[s], P, True, args.temperature)
                loss, m = policy_loss(logp, old_logp[j], ref_logp[j], a[s], mask[s], eps_low=args.eps_low,
                                      eps_high=args.eps_high, beta=args.beta, kl=args.kl, agg=args.agg,
                                      max_len=args.max_new_tokens, entropy=ent, n_tokens=n_tokens, n_seqs=n_seqs)
                if epoch == 0 and args.ppo_epochs > 1:  # the first epoch is on-policy: its log-probs are old_logp
                    old_logp[j] = logp.detach()
                if not torch.isfinite(loss):
                    raise FloatingPointError(f"non-finite loss at step {step}; stopping without saving")
                loss.backward()
                stats.append((int(mask[s].sum()), m))
            rec["grad_norm"] = torch.nn.utils.clip_grad_norm_(model.parameters(), args.clip_grad).item()
            opt.step()
            opt.zero_grad(set_to_none=True)
    n = sum(w for w, _ in stats)  # token-weighted means of the per-micro-batch metrics
    for key in ("kl", "entropy", "clip_frac_low", "clip_frac_high"):
        if n and key in stats[0][1]:
            rec[key] = sum(w * m[key] for w, m in stats) / n
    if "clip_frac_low" in rec:
        rec["clip_frac"] = rec["clip_frac_low"] + rec["clip_frac_high"]
    rec.update(time=time.time() - t0, time_gen=t_gen)
    return rec


def branch_step(model, ref, opt, tok, tasks, args, step, autocast):
    """One --branch step (design note 9): greedy decodes, one-token flips at the least certain
    positions, greedy continuations, and a push toward whichever of the two tokens earned more."""
    t0, K, stops = time.time(), args.branch, stop_ids_for(tok)
    prompts = [encode_ids(tok, countdown.TEMPLATES[args.template](t)) for t in tasks]
    model.eval()
    with torch.no_grad(), autocast:
        greedy = generate(model, prompts, args.max_new_tokens, temperature=0.0, stop_ids=stops)
        idx, valid, P = sequences(prompts, greedy)
        top = completion_logits(model, idx.to(args.device), valid.to(args.device), P).topk(2, -1)  # argmax, runner-up
        alts = top.indices[..., 1]
        gaps = (top.values[..., 0] - top.values[..., 1]).masked_fill(  # a stop token is never a flip
            torch.isin(alts, torch.tensor(stops, dtype=torch.long, device=alts.device)), math.inf)
        branches = []  # (row, position, runner-up token)
        for b, c in enumerate(greedy):
            gap = gaps[b, : len(c)]
            branches += [(b, t, alts[b, t].item()) for t in gap.argsort()[:K].tolist() if gap[t] < math.inf]
        tails = generate(model, [prompts[b] + greedy[b][:t] + [a] for b, t, a in branches], args.max_new_tokens,
                         temperature=0.0, stop_ids=stops)
    t_gen = time.time() - t0

    def reward(task, ids):
        return countdown_reward(tok.decode(ids[: args.max_new_tokens], skip_special_tokens=False), list(task.numbers),
                                task.target, format_score=args.format_score)

    r_greedy = [reward(task, c) for task, c in zip(tasks, greedy)]
    diff = [reward(tasks[b], greedy[b][:t] + [a] + tail) - r_greedy[b] for (b, t, a), tail in zip(branches, tails)]
    texts = [tok.decode(c, skip_special_tokens=False) for c in greedy]
    rec = {"step": step, "reward": sum(r_greedy) / len(tasks),
           "accuracy": sum(countdown_correct(x, list(t.numbers), t.target) for x, t in zip(texts, tasks)) / len(tasks),
           "length": sum(map(len, greedy)) / len(greedy),
           "reflection": sum(reflection_count(x) for x in texts) / len(texts),
           "branch_fix": sum(d > 0 for d in diff) / len(tasks), "branch_break": sum(d < 0 for d in diff) / len(tasks)}
    rec["greedy_accuracy"] = rec["accuracy"]
    # rows: the greedy decodes, then each flip that changed the reward, cut just after its flipped token
    signal = [(br, d) for br, d in zip(branches, diff) if d != 0]
    model.train()
    if signal:
        used = sorted({b for (b, _, _), _ in signal})  # greedy decodes with at least one such flip
        row = {b: i for i, b in enumerate(used)}
        rows_p = [prompts[b] for b in used] + [prompts[b] for (b, _, _), _ in signal]
        rows_c = [greedy[b] for b in used] + [greedy[b][:t] + [a] for (b, t, a), _ in signal]
        idx, valid, P = sequences(rows_p, rows_c)
        adv = torch.zeros(idx.shape[0], idx.shape[1] - P)
        mask = torch.zeros_like(adv, dtype=torch.bool)
        for r, ((b, t, _), d) in enumerate(signal, start=len(used)):
            adv[r, t], adv[row[b], t] = d, -d
            mask[r, t] = mask[row[b], t] = True
        idx, valid, adv, mask = idx.to(args.device), valid.to(args.device), adv.to(args.device), mask.to(args.device)
        with autocast:
            logp, ent = completion_logp(model, idx, valid, P, True)
            ref_logp = None
            if ref is not None:
                with torch.no_grad():
                    ref_logp = completion_logp(ref, idx, valid, P)[0]
        loss, m = policy_loss(logp, None, ref_logp, adv, mask, beta=args.beta, kl=args.kl, agg="token-mean",
                              entropy=ent)
        if not torch.isfinite(loss):
            raise FloatingPointError(f"non-finite loss at step {step}; stopping without saving")
        loss.backward()
        rec["grad_norm"] = torch.nn.utils.clip_grad_norm_(model.parameters(), args.clip_grad).item()
        opt.step()
        opt.zero_grad(set_to_none=True)
        rec.update(kl=m["kl"], entropy=m["entropy"])
    rec.update(time=time.time() - t0, time_gen=t_gen)
    return rec


# ----------------------------------------------------------------------------------------- main

def main(argv=None):
    args = get_args(argv)
    os.makedirs(args.out, exist_ok=True)
    ckpt = os.path.join(args.out, "ckpt")
    torch.manual_seed(args.seed)
    dtype = getattr(torch, args.dtype)
    model = Transformer.from_pretrained(ckpt if args.resume else args.init, dtype=dtype, device=args.device)
    tok = load_tokenizer(ckpt if args.resume else args.init)
    init = json.load(open(os.path.join(ckpt, "rl_init.json")))["init"] if args.resume else args.init
    ref = None
    if args.beta > 0:
        ref = Transformer.from_pretrained(init, dtype=dtype, device=args.device).eval()
        ref.requires_grad_(False)
    model.grad_ckpt = bool(args.grad_ckpt)
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, betas=(0.9, 0.99), weight_decay=args.weight_decay)
    step = 0
    if args.resume:
        state = torch.load(os.path.join(ckpt, "train_state.pt"), weights_only=False)
        opt.load_state_dict(state["optimizer"])
        step = state["step"]
        print(f"resumed from {ckpt} at step {step}")
    autocast = torch.autocast("cuda", dtype=torch.bfloat16, enabled=args.device.startswith("cuda"))
    pool = countdown.train_tasks(args.pool, args.seed + 1, args.n_numbers, args.rules)  # never a held-out task
    metrics_path = os.path.join(args.out, "metrics.jsonl")
    if not args.resume and os.path.exists(metrics_path):
        os.remove(metrics_path)

    def log(rec):
        with open(metrics_path, "a") as f:
            f.write(json.dumps(rec) + "\n")

    def evaluate():
        res = {"step": step}
        with autocast:
            for k in (3, 4):
                tasks = countdown.heldout_tasks(k, args.eval_tasks, args.rules)
                res[f"eval_acc{k}"], _, _ = eval_countdown(model, tok, tasks, args.template, args.max_new_tokens)
                if args.pass_k_tasks:
                    tasks = tasks[: args.pass_k_tasks]
                    _, res[f"pass@{args.pass_k}_{k}"], _ = eval_countdown(
                        model, tok, tasks, args.template, args.max_new_tokens, temperature=1.0,
                        n_samples=args.pass_k, seed=12345)
        print(f"eval @ step {step}: " + ", ".join(f"{k} {v:.1%}" for k, v in res.items() if k != "step"))
        log(res)
        return res

    def save():
        model.save_pretrained(ckpt, tokenizer=tok, train_state={"optimizer": opt.state_dict(), "step": step})
        with open(os.path.join(ckpt, "rl_init.json"), "w") as f:
            json.dump({"init": os.path.abspath(init)}, f)

    from tqdm import tqdm

    if step == 0:
        evaluate()
    bar = tqdm(total=args.steps, initial=step, desc="grpo", disable=None)
    while step < args.steps:
        for group in opt.param_groups:  # linear warmup, then constant
            group["lr"] = args.lr * min(1.0, (step + 1) / args.warmup) if args.warmup else args.lr
        rec = (branch_step if args.branch else grpo_step)(
            model, ref, opt, tok, step_tasks(pool, step, args.prompts_per_step, args.seed), args, step, autocast)
        step += 1
        log(rec)
        bar.update(1)
        bar.set_postfix(reward=f"{rec['reward']:.2f}", acc=f"{rec['accuracy']:.2f}", len=f"{rec['length']:.0f}")
        if step % args.eval_every == 0 or step == args.steps:
            evaluate()
            plot(metrics_path, os.path.join(args.out, "curves.png"))
        if step % args.save_every == 0 or step == args.steps or step == args.stop_at:
            save()
        if step == args.stop_at:
            print(f"stopping at step {step} as asked (--stop_at)")
            return None
    bar.close()
    evals = [json.loads(line) for line in open(metrics_path) if "eval_acc3" in line]
    first, last = evals[0], evals[-1]
    print(f"held-out greedy accuracy, step {first['step']} -> {last['step']}: "
          + ", ".join(f"{k} numbers {first[f'eval_acc{k}']:.1%} -> {last[f'eval_acc{k}']:.1%}" for k in (3, 4)))
    print(f"checkpoint in {ckpt}; metrics in {metrics_path}; curves in {os.path.join(args.out, 'curves.png')}")


if __name__ == "__main__":
    try:
        main()
    except (FileNotFoundError, ValueError, FloatingPointError) as e:
        sys.exit(f"error: {e}")

"""
GRPO on Countdown: R1-Zero's recipe (a rule-based reward + group-relative policy optimisation).

    python train_rl.py                                   # R1-Zero: tiny CPU run from the committed guessing base
    python train_rl.py --preset r1                       # R1's second stage: from out/sft_dfs/ckpt (its preset says how)
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
   Rows go to micro-batches longest first, each cut to its own longest completion: a few long
   rollouts no longer pad them all (docs/r1_zero.md measures what that saves).
4. Prompt order and sampling seeds are functions of (seed, step), and the checkpoint holds the
   optimizer and the KL reference's path and weights' sha256: a killed run resumed with --resume
   continues the same run, and refuses to if the reference directory now holds another model.
5. Evals (sample.heldout_eval) use the fixed held-out sets. Every metric goes to OUT/metrics.jsonl;
   report.py draws OUT/curves.png from it after each eval.
6. Under torchrun (parallel.py) --prompts_per_step stays the whole step: each rank samples a run of
   whole groups with the draws its rows get in one process (sample.py note 6), and n_tokens /
   n_seqs are summed over ranks, so N processes take one process's steps up to float rounding.

    torchrun --standalone --nproc_per_node=8 train_rl.py --preset qwen --init DIR    # --fsdp: shard it
"""

import json
import math
import os
import random
import time

import torch
from tqdm import tqdm

import checkpoint
import cli
import countdown
import parallel
from checkpoint import check_tokenizer, checkpoint_dir, load_tokenizer
from grpo import group_advantages, group_has_signal, policy_loss
from model import Transformer
from report import plot
from rewards import (SPURIOUS, countdown_correct, countdown_reward, format_reward, overlong_penalty, reflection_count,
                     spurious_reward)
from sample import encode_ids, generate, heldout_eval, pad, stop_ids_for, warn_unk

PRESETS = {
    # R1-Zero in miniature (the main job): GRPO straight from the tiny base of stage 0, which guesses
    # (committed; docs/r1_zero.md has the command that trains it)
    "zero": dict(init="checkpoints/countdown-base", out="out/zero", template="compact", rules="sos", n_numbers="3,4",
                 prompts_per_step=16, group_size=8, max_new_tokens=512, temperature=1.0, lr=1e-4, beta=0.04,
                 steps=150, micro_batch=8, eval_every=50, eval_tasks=500, pass_k=8, pass_k_tasks=100,
                 save_every=50, dtype="float32", grad_ckpt=False),
    # R1's second stage: GRPO from the base SFT'd on dfs search traces (stage 1's command: docs/r1_stage.md)
    "r1": dict(init="out/sft_dfs/ckpt", out="out/r1", template="compact", rules="sos", n_numbers="3,4,4,4",
               prompts_per_step=16, group_size=8, max_new_tokens=512, temperature=1.0, lr=1e-4, beta=0.04,
               format_score=0.0, steps=300, micro_batch=8, eval_every=150, eval_tasks=500, pass_k=8,
               pass_k_tasks=100, save_every=50, dtype="float32", grad_ckpt=False),
    # TinyZero with a local Qwen2.5 (0.5B/1.5B/3B) on one GPU: bf16 autocast, gradient checkpointing
    "qwen": dict(init=None, out="out/rl_qwen", template="base", rules="any", n_numbers="3,4",
                 prompts_per_step=32, group_size=8, max_new_tokens=1024, temperature=1.0, lr=1e-6, beta=0.001,
                 steps=300, micro_batch=8, eval_every=25, eval_tasks=200, pass_k=4, pass_k_tasks=50,
                 save_every=25, dtype="float32", grad_ckpt=True),
}


def get_args(argv=None):
    ap = cli.Parser("GRPO on Countdown (R1-Zero recipe)")
    ap.add_argument("--preset", default="zero", choices=sorted(PRESETS), help="defaults for the flags below")
    ap.add_argument("--init", help="checkpoint to start from (also the KL reference)")
    ap.add_argument("--out", help="output directory (checkpoint in OUT/ckpt)")
    ap.add_argument("--resume", action="store_true", help="continue the run in OUT")
    ap.add_argument("--overwrite", action="store_true", help="start over in an OUT that holds a run")
    ap.add_argument("--template", choices=sorted(countdown.TEMPLATES), help="prompt template")
    ap.add_argument("--rules", choices=["sos", "any"], help="Countdown task distribution")
    ap.add_argument("--n_numbers", type=cli.sizes, help="task sizes to train on, e.g. 3,4")
    ap.add_argument("--steps", type=cli.COUNT)
    ap.add_argument("--pool", type=cli.COUNT, default=20_000, help="training tasks to draw prompts from")
    ap.add_argument("--prompts_per_step", type=cli.COUNT)
    ap.add_argument("--group_size", type=cli.ranged(int, 2), help="G completions per prompt")
    ap.add_argument("--max_new_tokens", type=cli.COUNT)
    ap.add_argument("--temperature", type=cli.POSITIVE, help="of the rollouts, and of the policy the loss trains")
    ap.add_argument("--top_p", type=cli.TOP_P, default=1.0,
                    help="nucleus sampling for the rollouts only (the loss keeps the full distribution)")
    ap.add_argument("--lr", type=cli.POSITIVE)
    ap.add_argument("--warmup", type=cli.COUNT0, default=0, help="linear learning-rate warmup over this many steps (0: none)")
    ap.add_argument("--decay_to", type=cli.FRACTION, default=1.0, help="cosine lr decay to lr * this at the end (1: none)")
    ap.add_argument("--beta", type=cli.NONNEG, help="KL coefficient (0: no reference model)")
    ap.add_argument("--kl", default="k3", choices=["k1", "k2", "k3"])
    ap.add_argument("--eps_low", type=cli.ranged(float, 0, 1), default=0.2)
    ap.add_argument("--eps_high", type=cli.NONNEG, default=0.28, help="DAPO clip-higher")
    ap.add_argument("--adv", default="grpo", choices=["grpo", "dr_grpo"])
    ap.add_argument("--agg", default="token-mean", choices=["token-mean", "seq-mean-token-mean", "seq-mean-token-sum-norm"])
    ap.add_argument("--neg_weight", type=cli.NONNEG, default=1.0,
                    help="factor on negative advantages (0: reinforce only the better-than-average samples)")
    ap.add_argument("--keep_equal", action="store_true", help="keep groups with equal rewards (DAPO drops them)")
    ap.add_argument("--reward", default="countdown", choices=["countdown", *SPURIOUS], help="the rule or a spurious one")
    ap.add_argument("--format_score", type=cli.FRACTION, default=0.1, help="a wrong, well-formed answer's reward (TinyZero: 0.1)")
    ap.add_argument("--overlong", type=cli.COUNT0, default=0, help="DAPO soft overlong penalty over this many tokens (0: off)")
    ap.add_argument("--ppo_epochs", type=cli.COUNT, default=1)
    ap.add_argument("--micro_batch", type=cli.COUNT, help="sequences per forward/backward")
    ap.add_argument("--clip_grad", type=cli.POSITIVE, default=1.0)
    ap.add_argument("--weight_decay", type=cli.NONNEG, default=0.0)
    ap.add_argument("--eval_every", type=cli.COUNT)
    ap.add_argument("--eval_tasks", type=cli.ranged(int, 1, countdown.HELDOUT_MAX), help="held-out tasks per size, greedy")
    ap.add_argument("--pass_k", type=cli.COUNT, help="samples per task for pass@k")
    ap.add_argument("--pass_k_tasks", type=cli.COUNT0, help="of the eval tasks, how many get pass_k samples (0: none)")
    ap.add_argument("--save_every", type=cli.COUNT)
    ap.add_argument("--stop_at", type=cli.COUNT, default=None, help="stop after this step, as if killed (tests resume)")
    ap.add_argument("--dtype", choices=["float32", "bfloat16"], help="weights' dtype (bf16 autocast is on with CUDA)")
    ap.add_argument("--grad_ckpt", type=int, choices=[0, 1], help="gradient checkpointing")
    ap.add_argument("--seed", type=cli.COUNT0, default=0)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", type=cli.device)
    ap.add_argument("--fsdp", action="store_true", help="under torchrun: shard policy and reference with FSDP2")
    ap.add_argument("--dist_timeout", type=cli.POSITIVE, default=30.0, help="under torchrun: minutes to wait for a rank")
    pre, _ = ap.parse_known_args(argv)
    ap.set_defaults(**PRESETS[pre.preset])
    args = ap.parse_args(argv)
    if args.init is None and not args.resume:
        ap.error("--init is required with this preset (a local checkpoint directory)")
    if args.resume and args.overwrite:
        ap.error("--resume continues the run in OUT, --overwrite starts over: pick one")
    if args.pass_k_tasks > args.eval_tasks:
        ap.error(f"--pass_k_tasks {args.pass_k_tasks} is more than --eval_tasks {args.eval_tasks}")
    if args.pool < args.prompts_per_step:
        ap.error(f"--pool {args.pool} is smaller than --prompts_per_step {args.prompts_per_step}")
    if args.overlong >= args.max_new_tokens:
        ap.error(f"--overlong {args.overlong} must be below --max_new_tokens {args.max_new_tokens}")
    return args


# ------------------------------------------------------------------------------------- rollouts

def step_tasks(pool, step, n, seed):
    """The n tasks of this step: consecutive slices of a per-epoch permutation fixed by (seed, epoch)."""
    per_epoch = len(pool) // n
    epoch, i = divmod(step, per_epoch)
    perm = list(range(len(pool)))
    random.Random(seed * 1_000_003 + epoch).shuffle(perm)
    return [pool[j] for j in perm[i * n : (i + 1) * n]]


def sequences(prompts, completions, P=None, pad_id=0):
    """Prompts left-padded to P (default the longest) + right-padded completions -> idx (B, P+L), valid, P."""
    p, p_valid = pad(prompts, left=True, pad_id=pad_id, width=P)
    c, c_valid = pad(completions, pad_id=pad_id, width=max(1, max(map(len, completions))))
    return torch.cat([p, c], 1), torch.cat([p_valid, c_valid], 1), p.shape[1]


def completion_logp(model, idx, valid, P, with_entropy=False, temperature=1.0, load_mask=None):
    """log p(completion token | everything before it): (B, L), and the entropy per position if asked.

    The policy is the one that sampled: softmax(logits / temperature), so ratios, KL and entropy all
    describe the distribution the rollouts came from (as verl does). The lm_head runs on completion
    positions only, fused with the log-softmax (model.py note 5): no [tokens, vocab] logits in full."""
    B, L = idx.shape[0], idx.shape[1] - P
    where = torch.zeros(B, P + L - 1, dtype=torch.bool, device=idx.device)
    where[:, P - 1 :] = True  # the positions that predict completion tokens
    load_mask = None if load_mask is None else load_mask[:, :-1]  # MoE: the tokens that count as expert load
    out = model(idx[:, :-1], valid=valid[:, :-1], targets=idx[:, 1:], where=where, temperature=temperature,
                with_entropy=with_entropy, load_mask=load_mask)  # (B * L,), never the (B * L, vocab) logits
    if not with_entropy:
        return out.view(B, L), None
    logp, entropy = out
    return logp.view(B, L), entropy.detach().view(B, L)  # the entropy is a metric


def grpo_step(model, ref, opt, tok, tasks, args, step, autocast):
    """One GRPO step on these prompts: rollouts, rewards, advantages, log-probs, update(s), metrics."""
    t0 = time.time()
    G, template = args.group_size, countdown.TEMPLATES[args.template]
    lo, hi = parallel.split(len(tasks))  # this process's groups (all of them in one process; design note 6)
    n_all, tasks = len(tasks), tasks[lo:hi]
    # 1) rollouts: G samples per prompt, no grad, KV cache
    prompts = [encode_ids(tok, template(t)) for t in tasks for _ in range(G)]
    sampler = parallel.plain(model).eval()
    with autocast:
        completions = generate(sampler, prompts, args.max_new_tokens, temperature=args.temperature, top_p=args.top_p,
                               stop_ids=stop_ids_for(tok), seed=args.seed * 1_000_003 + step, row0=lo * G,
                               n_rows=n_all * G)
    t_gen = time.time() - t0
    # 2) rewards (shaped) and pure accuracy, kept apart
    texts = [tok.decode(c, skip_special_tokens=False) for c in completions]
    flat = [t for t in tasks for _ in range(G)]
    if args.reward == "countdown":
        rewards = [countdown_reward(x, list(t.numbers), t.target, format_score=args.format_score)
                   for x, t in zip(texts, flat)]
    else:  # the coins of the whole step's rows, this process's share of them (design note 6)
        rng = random.Random(args.seed * 1_000_003 + step)
        coins = [rng.random() for _ in range(n_all * G)][lo * G : hi * G]
        rewards = [spurious_reward(args.reward, x, list(t.numbers), t.target, c) for x, t, c in zip(texts, flat, coins)]
    correct = [countdown_correct(x, list(t.numbers), t.target) for x, t in zip(texts, flat)]
    if args.overlong:
        rewards = [r + overlong_penalty(len(c), args.max_new_tokens, args.overlong) for r, c in zip(rewards, completions)]
    rewards = torch.tensor(rewards)
    # 3) advantages; groups whose G rewards are all equal carry no signal and are dropped (design note 2)
    adv = group_advantages(rewards, G, mode=args.adv, neg_weight=args.neg_weight)
    signal = group_has_signal(rewards, G)  # (n_prompts,)
    keep = torch.ones(len(prompts), dtype=torch.bool) if args.keep_equal else signal.repeat_interleave(G)
    rows = sorted(keep.nonzero().squeeze(1).tolist(), key=lambda i: -len(completions[i]))  # longest first (note 3)
    # metrics of the whole step: sums over this process's rows and groups, then over all processes
    rec = {"step": step, **parallel.means({
        "reward": rewards.sum(), "accuracy": sum(correct), "format": sum(format_reward("<think>" + x) for x in texts),
        "length": sum(map(len, completions)), "reflection": sum(reflection_count(x) for x in texts)}, len(prompts)),
        **parallel.means({"groups_with_signal": signal.sum(),
                          "reward_std": rewards.view(-1, G).std(1).sum()}, len(tasks))}  # within-group spread
    model.train()
    # 4) micro-batches of the rows trained on, longest first, each cut to its own longest completion (note 3);
    # the loss normalisers count the whole batch (under torchrun, every process's share: parallel.py note 3)
    chunks = [rows[i : i + args.micro_batch] for i in range(0, len(rows), args.micro_batch)]
    n_tokens, n_seqs = sum(len(completions[i]) for i in rows), sum(len(completions[i]) > 0 for i in rows)
    n_tokens, n_seqs, chunks = parallel.share_micro_batches(n_tokens, n_seqs, chunks)
    P = max(len(prompts[i]) for i in rows or [0])
    mbs = []  # (idx, valid, mask, advantages) per micro-batch
    for chunk in chunks:
        ids = chunk or (rows or [0])[:1]  # an empty micro-batch (torchrun only): one row that counts no token
        idx, valid, _ = sequences([prompts[i] for i in ids], [completions[i] for i in ids], P)
        mask = valid[:, P:] & bool(chunk)
        mbs.append((idx.to(args.device), valid.to(args.device), mask.to(args.device), adv[ids].to(args.device)))
    stats = []
    if mbs:
        # 5) log-probs: the frozen reference's now; the behaviour policy's are the first epoch's (design note 1)
        ref_logp, old_logp = [None] * len(mbs), [None] * len(mbs)
        if ref is not None:
            with torch.no_grad(), autocast:
                ref_logp = [completion_logp(ref, x, v, P, temperature=args.temperature)[0] for x, v, _, _ in mbs]
        # 6) ppo_epochs x (micro-batches of gradients, one optimizer step)
        for epoch in range(args.ppo_epochs):
            for j, (x, v, mk, a_mb) in enumerate(mbs):
                parallel.sync_grads(model, j == len(mbs) - 1)
                with autocast:
                    # (MoE: an empty micro-batch's row is no load, so N processes balance as one does)
                    logp, ent = completion_logp(model, x, v, P, True, args.temperature, v & mk.any(1, keepdim=True))
                loss, m = policy_loss(logp, old_logp[j], ref_logp[j], a_mb, mk, eps_low=args.eps_low,
                                      eps_high=args.eps_high, beta=args.beta, kl=args.kl, agg=args.agg,
                                      max_len=args.max_new_tokens, entropy=ent, n_tokens=n_tokens, n_seqs=n_seqs)
                if epoch == 0 and args.ppo_epochs > 1:
                    old_logp[j] = logp.detach()
                if not torch.isfinite(loss):
                    raise FloatingPointError(f"non-finite loss at step {step}; stopping without saving")
                (loss * parallel.WORLD).backward()  # times W: DDP / FSDP average the processes' gradients
                stats.append((int(mk.sum()), m))
            rec["grad_norm"], moe = parallel.optimizer_step(model, opt, args.clip_grad, step)
            rec.update(moe)  # MoE: max/mean load and dead experts per layer ({} if dense)
    # 7) metrics: token-weighted means over the micro-batches (of all processes)
    n = sum(w for w, _ in stats)
    if mbs and n_tokens:
        keys = ("kl", "entropy", "clip_frac_low", "clip_frac_high")
        rec.update(parallel.means({k: sum(w * m[k] for w, m in stats if w) for k in keys}, n))
    if "clip_frac_low" in rec:
        rec["clip_frac"] = rec["clip_frac_low"] + rec["clip_frac_high"]
    rec.update(time=time.time() - t0, time_gen=t_gen)
    return rec


# ----------------------------------------------------------------------------------------- main

def main(argv=None):
    args = get_args(argv)
    args.device = parallel.setup(args.device, args.dist_timeout, args.fsdp)
    if args.prompts_per_step < parallel.WORLD:  # each process samples whole groups
        raise ValueError(f"--prompts_per_step {args.prompts_per_step} is fewer than the {parallel.WORLD} processes")
    parallel.from_rank0(lambda: cli.prepare_out(args.out, args.resume, args.overwrite))
    ckpt = os.path.join(args.out, "ckpt")
    torch.manual_seed(args.seed)
    dtype = getattr(torch, args.dtype)
    state = checkpoint.load_train_state(checkpoint_dir(ckpt)) if args.resume else None  # ckpt, or ckpt.old after a kill
    src = checkpoint_dir(ckpt) if args.resume else args.init
    model = Transformer.from_pretrained(src, dtype=dtype, device=args.device)
    tok = load_tokenizer(src)
    check_tokenizer(tok, model, src)
    # the KL reference: the run's --init, checked by its weights' digest on resume (design note 4)
    reference = state["reference"] if args.resume else {"init": os.path.abspath(args.init),
                                                         "sha256": checkpoint.weights_digest(args.init)}
    if args.resume and checkpoint.weights_digest(reference["init"]) != reference["sha256"]:
        raise ValueError(f"{reference['init']}: the run's KL reference has changed since it started (its weights' "
                         "sha256 differs); restore it, or start a new run")
    ref = None
    if args.beta > 0:
        ref = Transformer.from_pretrained(reference["init"], dtype=dtype, device=args.device).eval()
        ref = parallel.wrap(ref.requires_grad_(False), args.fsdp, frozen=True)
    model.grad_ckpt = bool(args.grad_ckpt)
    model = parallel.wrap(model, args.fsdp)
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, betas=(0.9, 0.99), weight_decay=args.weight_decay)
    step = 0
    if args.resume:
        parallel.load_optimizer(model, opt, state)
        step = state["step"]
        print(f"resumed from {src} at step {step}")
    autocast = torch.autocast("cuda", dtype=torch.bfloat16, enabled=args.device.startswith("cuda"))
    pool = countdown.train_tasks(args.pool, args.seed + 1, args.n_numbers, args.rules)  # never a held-out task
    warn_unk(tok, [encode_ids(tok, countdown.TEMPLATES[args.template](t)) for t in pool[:100]], f"the {args.template} template")
    metrics_path = os.path.join(args.out, "metrics.jsonl")
    log = parallel.metrics_log(metrics_path, args.resume,  # a resumed run keeps the rows before its checkpoint
                               lambda r: r["step"] < step or "reward" not in r and r["step"] <= step)

    def evaluate():  # every process evaluates the same (parallel.py note 4); rank 0 logs
        with autocast:
            res = {"step": step, **heldout_eval(parallel.plain(model), tok, args.eval_tasks, args.rules, args.template,
                                                args.max_new_tokens, n_samples=args.pass_k if args.pass_k_tasks else 0,
                                                sample_tasks=args.pass_k_tasks)}
        print(f"eval @ step {step}: " + ", ".join(f"{k} {v:.3g}" for k, v in res.items()
                                                  if k != "step" and not k.startswith("greedy_") and v is not None))
        log(res)

    if step == 0:
        evaluate()
    bar = tqdm(total=args.steps, initial=step, desc="grpo", disable=parallel.RANK > 0 or None)
    while step < args.steps:
        warm = min(1.0, (step + 1) / args.warmup) if args.warmup else 1.0  # linear warmup, then constant or cosine
        cosine = (1 + math.cos(math.pi * step / args.steps)) / 2
        for group in opt.param_groups:
            group["lr"] = args.lr * warm * (args.decay_to + (1 - args.decay_to) * cosine)
        rec = grpo_step(model, ref, opt, tok, step_tasks(pool, step, args.prompts_per_step, args.seed), args, step,
                        autocast)
        step += 1
        log(rec)
        bar.update(1)
        bar.set_postfix(reward=f"{rec['reward']:.2f}", acc=f"{rec['accuracy']:.2f}", len=f"{rec['length']:.0f}")
        if step % args.eval_every == 0 or step == args.steps:
            evaluate()
            if parallel.RANK == 0:
                plot(metrics_path, os.path.join(args.out, "curves.png"))
        if step % args.save_every == 0 or step == args.steps or step == args.stop_at:
            parallel.save(model, opt, ckpt, tok, step=step, reference=reference)
        if step == args.stop_at:
            print(f"stopping at step {step} as asked (--stop_at)")
            return None
    bar.close()
    if parallel.RANK:
        return None
    evals = [json.loads(line) for line in open(metrics_path) if "eval_acc3" in line]
    first, last = evals[0], evals[-1]
    print(f"held-out greedy accuracy, step {first['step']} -> {last['step']}: "
          + ", ".join(f"{k} numbers {first[f'eval_acc{k}']:.1%} -> {last[f'eval_acc{k}']:.1%}" for k in (3, 4)))
    print(f"checkpoint in {ckpt}; metrics in {metrics_path}; curves in {os.path.join(args.out, 'curves.png')}")


if __name__ == "__main__":
    cli.main(main)

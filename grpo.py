"""
GRPO: group-relative advantages, the clipped policy loss and its variants, KL estimators, metrics.

Notation: each prompt gets G completions; per token `logp` (current policy), `old_logp` (behaviour
policy that sampled the rollout), `ref_logp` (frozen reference), `mask` (1 on response tokens),
per sequence an advantage `adv`. Shapes: B = n_prompts * G sequences, T tokens.

Design notes:
1. Advantages. `grpo` is DeepSeekMath's outcome supervision: A = (r - mean_group) / (std_group + eps).
   std is the unbiased (n - 1) one, as verl (`torch.std`) and TRL (`.std(dim=1)`) compute it.
   `dr_grpo` (Dr. GRPO, Liu et al. 2025) drops the std: A = r - mean_group, because dividing by the
   std up-weights prompts that are nearly always right or nearly always wrong. `std="batch"` keeps
   the group mean but divides by the std of all rewards in the (local) batch, as in TRL's
   `scale_rewards="batch"` / Lite PPO. A group whose rewards are all equal carries no signal: its
   advantage is exactly 0 (forced, not left to (0 / (0 + eps)) rounding; G = 1 is such a group).
   `group_has_signal` finds those groups so a loop can drop them (DAPO dynamic sampling).
   `neg_weight` scales the negative advantages, as in Zhu et al. 2025's decomposition of RLVR into
   positive and negative sample reinforcement: 0 keeps only PSR (push up the better samples; their
   finding: pass@1 rises, pass@k at large k falls), 1 is plain GRPO.
2. Ratio and clip. ratio = exp(logp - old_logp), clipped to [1 - eps_low, 1 + eps_high]; DAPO's
   clip-higher is eps_low = 0.2, eps_high = 0.28. Per token loss -min(ratio * A, clip(ratio) * A).
   The min picks the clipped term only when A > 0 and ratio > 1 + eps_high, or A < 0 and
   ratio < 1 - eps_low; we write exactly that (strict inequalities), so a ratio sitting exactly on
   an edge counts as unclipped and gets the full gradient -A * ratio, the limit from inside the
   trust region. That does not depend on how torch splits the gradient of min/clamp at ties, and it
   is the rule the clip-fraction metrics use.
3. On-policy. With one update per rollout old_logp == logp.detach(), so pass old_logp=None:
   ratio = exp(logp - logp.detach()) has value 1 and gradient d logp, the loss is REINFORCE with a
   group baseline, clipping never fires, and the behaviour log-prob pass is saved.
4. KL to the reference is *added* to the loss, loss = pg + beta * kl, so minimising it pulls logp
   toward ref_logp. TinyZero's verl copy (dp_actor.py) did `policy_loss - kl_loss * kl_coef`, which
   pushes the policy away from the reference. Estimators (Schulman, "Approximating KL"), with
   d = ref_logp - logp on tokens sampled from the policy:
     k1 = -d                   unbiased value; its gradient is +1 per token whatever ref says, and
                               its expectation under the policy is 0: a metric, not a regulariser.
     k2 = d^2 / 2              gradient logp - ref: pulls toward ref from both sides.
     k3 = exp(d) - d - 1       (default, DeepSeekMath) >= 0, gradient 1 - exp(d): pulls toward ref.
   k3 is evaluated as expm1(d) - d so fp32 cancellation near d = 0 cannot make it negative. No
   clamp: verl clamps k3 to [-10, 10], which silently zeroes the pull on exactly the tokens that
   drifted farthest from the reference; lower beta instead.
5. Aggregation (how token losses become one scalar):
     seq-mean-token-mean      DeepSeekMath GRPO: mean over each sequence's tokens, then over sequences.
     token-mean               DAPO: sum over all tokens / number of tokens, so long responses are not
                              down-weighted per token.
     seq-mean-token-sum-norm  Dr. GRPO: per-sequence token sum / max_len (a constant), then mean over
                              sequences; no length bias from a per-sequence 1/|o_i|.
   Micro-batching: pass the global denominators (`n_tokens` for token-mean, `n_seqs` for the two
   seq-mean modes, summed over micro-batches and ranks) and the sum of the micro-batch losses equals
   the loss of the whole batch. A fully masked row contributes 0 and does not count as a sequence
   (no NaN); pass n_seqs as the number of rows with at least one valid token.
6. Masked positions are zeroed before any arithmetic, so padding holding -inf or NaN cannot leak
   into the loss or the gradient. Math runs in at least fp32.
7. This file is the maths and the PyTorch reference. With the Triton backend (r1_kernels.backend:
   on CUDA by default) the loss and its gradient come from one fused kernel
   (kernels/policy_loss.py), each aggregation written as a weight per row (`row_weights`); the
   metrics are still computed here, without gradient. tests/test_kernels.py checks the two against
   each other, and tests/test_train_rl.py a whole GRPO step.
"""

import torch

from r1_kernels import fused_policy_loss
from r1_kernels.backend import use_triton

AGGS = ("seq-mean-token-mean", "token-mean", "seq-mean-token-sum-norm")
KLS = ("k1", "k2", "k3")


def _group(rewards, group_size):
    """Reshape flat rewards [B] into [n_prompts, G], checking that G divides B."""
    rewards = torch.as_tensor(rewards)
    if not rewards.is_floating_point():
        rewards = rewards.float()
    if rewards.dim() != 1:
        raise ValueError(f"rewards must be 1D [B], got shape {tuple(rewards.shape)}")
    if group_size < 1 or rewards.numel() % group_size != 0:
        raise ValueError(f"rewards of length {rewards.numel()} cannot be split into groups of {group_size}")
    return rewards.view(-1, group_size)  # (P, G)


def group_has_signal(rewards, group_size):
    """DAPO dynamic sampling: which groups have at least two different rewards.

    Args: rewards [B] (B = n_prompts * group_size, rows of one prompt consecutive); group_size G.
    Returns: BoolTensor [n_prompts], False where every reward in the group is equal.
    """
    r = _group(rewards, group_size)  # (P, G)
    return (r != r[:, :1]).any(dim=1)


@torch.no_grad()
def group_advantages(rewards, group_size, mode="grpo", eps=1e-6, std="group", neg_weight=1.0):
    """Group-relative advantages (design note 1).

    Args:
        rewards: [B] float, B = n_prompts * group_size, rows i*G .. i*G+G-1 belong to prompt i.
        group_size: G.
        mode: "grpo" (r - mean) / (std + eps) or "dr_grpo" r - mean (std is then ignored).
        eps: added to the std.
        std: "group" (std within each group) or "batch" (std of all rewards in the batch).
        neg_weight: factor on the negative advantages (0: positive sample reinforcement only).
    Returns:
        adv [B], exactly 0 for groups whose rewards are all equal.
    """
    if mode not in ("grpo", "dr_grpo"):
        raise ValueError(f"mode must be 'grpo' or 'dr_grpo', got {mode!r}")
    if std not in ("group", "batch"):
        raise ValueError(f"std must be 'group' or 'batch', got {std!r}")
    r = _group(rewards, group_size)  # (P, G)
    adv = r - r.mean(dim=1, keepdim=True)
    if mode == "grpo":
        if std == "group":
            sd = r.std(dim=1, keepdim=True) if group_size > 1 else torch.ones_like(r[:, :1])
        else:
            sd = r.std() if r.numel() > 1 else torch.ones((), dtype=r.dtype)
        adv = adv / (sd + eps)
    no_signal = (r == r[:, :1]).all(dim=1, keepdim=True)  # (P, 1)
    adv = torch.where(no_signal, torch.zeros_like(adv), adv)
    if neg_weight != 1.0:
        adv = torch.where(adv < 0, adv * neg_weight, adv)
    return adv.reshape(-1)  # (B,)


def kl_penalty(logp, ref_logp, kind="k3"):
    """Per-token KL(policy || ref) estimate from sampled-token log-probs (design note 4).

    Args: logp, ref_logp: same shape; kind: "k1", "k2" or "k3".
    Returns: a tensor of that shape, differentiable w.r.t. logp.
    """
    d = ref_logp - logp
    if kind == "k1":
        return -d
    if kind == "k2":
        return 0.5 * d * d
    if kind == "k3":
        return torch.expm1(d) - d
    raise ValueError(f"kl kind must be one of {KLS}, got {kind!r}")


def _check(name, x, shape):
    if x is not None and tuple(x.shape) != tuple(shape):
        raise ValueError(f"{name} must have shape {tuple(shape)}, got {tuple(x.shape)}")


def _aggregate(x, m, agg, max_len, n_tokens, n_seqs):
    """Reduce a per-token matrix x [B, T] (zero where ~m) to a scalar (design note 5)."""
    if agg == "token-mean":
        n = m.sum() if n_tokens is None else n_tokens
        return x.sum() / torch.as_tensor(n, dtype=x.dtype, device=x.device).clamp(min=1)
    lens = m.sum(dim=1)  # (B,)
    if agg == "seq-mean-token-mean":
        per_seq = x.sum(dim=1) / lens.clamp(min=1).to(x.dtype)  # (B,)
    else:
        per_seq = x.sum(dim=1) / max_len  # (B,)
    n = (lens > 0).sum() if n_seqs is None else n_seqs
    return per_seq.sum() / torch.as_tensor(n, dtype=x.dtype, device=x.device).clamp(min=1)


def row_weights(mask, agg, max_len=None, n_tokens=None, n_seqs=None, dtype=torch.float32):
    """_aggregate as a weight per row: the loss is sum_b w_b * sum_t x_bt (design notes 5, 7). (B,)"""
    lens = mask.sum(1)  # (B,)
    if agg == "token-mean":
        n = lens.sum() if n_tokens is None else n_tokens
        return (1 / torch.as_tensor(n, dtype=dtype, device=mask.device).clamp(min=1)).expand(mask.shape[0])
    n = torch.as_tensor((lens > 0).sum() if n_seqs is None else n_seqs, dtype=dtype, device=mask.device).clamp(min=1)
    if agg == "seq-mean-token-mean":
        return 1 / (lens.clamp(min=1).to(dtype) * n)
    return (1 / (max_len * n)).expand(mask.shape[0])


def policy_loss(logp, old_logp, ref_logp, adv, mask, *, eps_low=0.2, eps_high=0.2, beta=0.0, kl="k3",
                agg="seq-mean-token-mean", max_len=None, entropy=None, n_tokens=None, n_seqs=None, backend="auto"):
    """Clipped GRPO policy loss with optional KL penalty.

    Args:
        logp: [B, T] log-probs of the sampled tokens under the current policy (requires grad).
        old_logp: [B, T] behaviour-policy log-probs, or None for on-policy (ratio 1, design note 3).
        ref_logp: [B, T] reference log-probs, or None (then beta must be 0).
        adv: [B] per-sequence advantages.
        mask: [B, T] bool or 0/1, True on tokens that count.
        eps_low, eps_high: clip range [1 - eps_low, 1 + eps_high].
        beta: KL coefficient; kl: "k1" | "k2" | "k3".
        agg: "seq-mean-token-mean" | "token-mean" | "seq-mean-token-sum-norm" (needs max_len).
        entropy: optional [B, T] per-token entropy, only reported.
        n_tokens: global valid-token count (token-mean); n_seqs: global sequence count (seq modes).
            Either is ignored by the aggregations that do not use it.
        backend: "auto" (r1_kernels.backend.BACKEND: the fused Triton kernel on CUDA), "triton", "torch".
    Returns:
        (loss, metrics): scalar loss = pg_loss + beta * kl_loss; metrics a dict of python floats.
    """
    if logp.dim() != 2:
        raise ValueError(f"logp must be [B, T], got shape {tuple(logp.shape)}")
    B, T = logp.shape
    for name, x in (("old_logp", old_logp), ("ref_logp", ref_logp), ("mask", mask), ("entropy", entropy)):
        _check(name, x, (B, T))
    _check("adv", adv, (B,))
    if agg not in AGGS:
        raise ValueError(f"agg must be one of {AGGS}, got {agg!r}")
    if kl not in KLS:
        raise ValueError(f"kl must be one of {KLS}, got {kl!r}")
    if agg == "seq-mean-token-sum-norm" and max_len is None:
        raise ValueError("agg='seq-mean-token-sum-norm' needs max_len (a constant, e.g. max response tokens)")
    if beta != 0 and ref_logp is None:
        raise ValueError(f"beta={beta} needs ref_logp; pass ref_logp or set beta=0")

    on_triton = use_triton(logp, backend)
    with torch.set_grad_enabled(torch.is_grad_enabled() and not on_triton):  # the kernel brings the gradient
        loss, metrics = _reference(logp, old_logp, ref_logp, adv, mask, eps_low, eps_high, beta, kl, agg, max_len,
                                   entropy, n_tokens, n_seqs)
    if on_triton:  # design note 7
        m = mask.bool()
        w = row_weights(m, agg, max_len, n_tokens, n_seqs)
        ref = ref_logp if beta != 0 else None
        loss = fused_policy_loss(logp, old_logp, ref, adv, m, w, eps_low, eps_high, beta, kl)
    return loss, metrics


def _reference(logp, old_logp, ref_logp, adv, mask, eps_low, eps_high, beta, kl, agg, max_len, entropy, n_tokens,
               n_seqs):
    """policy_loss in PyTorch: the reference, and the metrics of either backend."""
    dt = torch.promote_types(logp.dtype, torch.float32)
    m = mask.bool()  # (B, T)
    zero = torch.zeros((), dtype=dt, device=logp.device)
    logp = torch.where(m, logp.to(dt), zero)  # padding may hold -inf/NaN: zero it before any math
    old = logp.detach() if old_logp is None else torch.where(m, old_logp.detach().to(dt), zero)
    adv = adv.detach().to(dt)
    A = adv[:, None]  # (B, 1)

    ratio = torch.exp(logp - old)  # (B, T)
    lo, hi = 1.0 - eps_low, 1.0 + eps_high
    clip_low = m & (ratio < lo) & (A < 0)  # min() picks the clipped term: no gradient
    clip_high = m & (ratio > hi) & (A > 0)
    clipped = clip_low | clip_high
    pg = -A * torch.where(clipped, ratio.clamp(lo, hi).detach(), ratio)  # (B, T)
    pg = torch.where(m, pg, zero)
    pg_loss = _aggregate(pg, m, agg, max_len, n_tokens, n_seqs)

    kl_tok = None
    if ref_logp is not None:
        ref = torch.where(m, ref_logp.detach().to(dt), zero)
        kl_tok = torch.where(m, kl_penalty(logp, ref, kl), zero)  # (B, T)
    if beta != 0:
        kl_loss = _aggregate(kl_tok, m, agg, max_len, n_tokens, n_seqs)
        loss = pg_loss + beta * kl_loss
    else:
        kl_loss = _aggregate(kl_tok.detach(), m, agg, max_len, n_tokens, n_seqs) if kl_tok is not None else zero
        loss = pg_loss

    with torch.no_grad():
        n = m.sum().clamp(min=1).to(dt)
        r_valid = ratio[m]
        a_valid = adv[m.any(dim=1)]  # of the sequences that count
        metrics = {
            "pg_loss": pg_loss.item(),
            "kl_loss": float(kl_loss),
            "kl": (kl_tok.sum() / n).item() if kl_tok is not None else 0.0,
            "clip_frac_low": (clip_low.sum() / n).item(),
            "clip_frac_high": (clip_high.sum() / n).item(),
            "ratio_min": r_valid.min().item() if r_valid.numel() else 1.0,
            "ratio_max": r_valid.max().item() if r_valid.numel() else 1.0,
            "ratio_mean": r_valid.mean().item() if r_valid.numel() else 1.0,
            "adv_mean": a_valid.mean().item() if a_valid.numel() else 0.0,
            "adv_std": a_valid.std(correction=0).item() if a_valid.numel() else 0.0,
        }
        if entropy is not None:
            metrics["entropy"] = (torch.where(m, entropy.to(dt), zero).sum() / n).item()
    return loss, metrics

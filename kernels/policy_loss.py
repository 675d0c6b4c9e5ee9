"""
The GRPO policy loss fused per token: value and gradient of `grpo.policy_loss` in one pass.

    loss = grpo_loss(logp, old_logp, ref_logp, adv, mask, eps_high=0.28, beta=0.04, agg="token-mean",
                     n_tokens=n_tokens)                               # == grpo.policy_loss(...)[0]

Design notes:
1. Every aggregation in grpo.py (its design note 5) is a weighted sum of token losses, with a
   weight per row: token-mean 1 / n_tokens, seq-mean-token-mean 1 / (len_b * n_seqs),
   seq-mean-token-sum-norm 1 / (max_len * n_seqs). The (B,) weights come first, in PyTorch; then
   each token is independent: loss_bt = w_b * (pg_bt + beta * kl_bt), and since the loss is linear
   in the token losses the forward also writes d loss / d logp_bt, which the backward only scales.
2. Token math, as grpo.policy_loss: masked positions read as 0 before any arithmetic (padding may
   hold NaN); ratio = exp(logp - old_logp), 1 on-policy (old_logp None); the clipped term is picked
   only when A > 0 and ratio > 1 + eps_high, or A < 0 and ratio < 1 - eps_low (strict: a ratio on
   an edge keeps the gradient -A * ratio); KL with d = ref - logp: k1 = -d, k2 = d^2 / 2,
   k3 = expm1(d) - d, gradients 1, -d, -expm1(d). The kernel has no expm1 (nor does Triton's
   interpreter), so for |d| < 0.5 k3 is its Taylor series d^2/2! + ... + d^7/7!, which is positive,
   and exp(d) - 1 - d beyond.
3. `grpo_loss` returns the loss only; grpo.policy_loss remains the place for the metrics.
"""

from __future__ import annotations  # kernel annotations (tl.constexpr) stay strings without triton

import torch

try:
    import triton
    import triton.language as tl
except ImportError:  # no triton (macOS, Windows): the PyTorch path only
    triton = None

AGGS = ("seq-mean-token-mean", "token-mean", "seq-mean-token-sum-norm")
KLS = ("k1", "k2", "k3")
BLOCK = 1024  # tokens per program of the Triton kernel


def _jit(fn):
    """triton.jit where triton is installed; elsewhere the kernel stays a plain function, never called."""
    return fn if triton is None else triton.jit(fn)


def row_weights(mask, agg, max_len=None, n_tokens=None, n_seqs=None, dtype=torch.float32):
    """(B,) weight of each token of row b in the aggregated loss (design note 1)."""
    lens = mask.sum(1)  # (B,)
    if agg == "token-mean":
        n = lens.sum() if n_tokens is None else n_tokens
        return (1 / torch.as_tensor(n, dtype=dtype, device=mask.device).clamp(min=1)).expand(mask.shape[0])
    n = torch.as_tensor((lens > 0).sum() if n_seqs is None else n_seqs, dtype=dtype, device=mask.device).clamp(min=1)
    if agg == "seq-mean-token-mean":
        return 1 / (lens.clamp(min=1).to(dtype) * n)
    return (1 / (max_len * n)).expand(mask.shape[0])


# ------------------------------------------------------------------------ PyTorch path (reference)

def token_loss_torch(logp, old_logp, ref_logp, adv, mask, w, eps_low, eps_high, beta, kl):
    """Per-token weighted loss (B, T) and its gradient d loss / d logp (B, T) (design notes 1-2)."""
    zero = torch.zeros((), dtype=w.dtype, device=logp.device)
    lp = torch.where(mask, logp.to(w.dtype), zero)
    old = lp if old_logp is None else torch.where(mask, old_logp.to(w.dtype), zero)
    A = adv.to(w.dtype)[:, None]  # (B, 1)
    ratio = torch.exp(lp - old)
    lo, hi = 1.0 - eps_low, 1.0 + eps_high
    clipped = ((ratio < lo) & (A < 0)) | ((ratio > hi) & (A > 0))
    loss = -A * torch.where(clipped, ratio.clamp(lo, hi), ratio)
    grad = torch.where(clipped, zero, -A * ratio)
    if beta != 0:
        d = torch.where(mask, ref_logp.to(w.dtype), zero) - lp
        if kl == "k1":
            k, dk = -d, torch.ones_like(d)
        elif kl == "k2":
            k, dk = 0.5 * d * d, -d
        else:
            k, dk = torch.expm1(d) - d, -torch.expm1(d)
        loss, grad = loss + beta * k, grad + beta * dk
    w = w[:, None]
    return torch.where(mask, w * loss, zero), torch.where(mask, w * grad, zero)


# ------------------------------------------------------------------------------- Triton kernel

@_jit
def _k3(d):
    """expm1(d) - d, positive and accurate near 0 (design note 2)."""
    series = d * d * (0.5 + d * (1 / 6 + d * (1 / 24 + d * (1 / 120 + d * (1 / 720 + d * (1 / 5040))))))
    return tl.where(tl.abs(d) < 0.5, series, tl.exp(d) - 1 - d)


@_jit
def _token_loss_kernel(logp_ptr, old_ptr, ref_ptr, adv_ptr, w_ptr, mask_ptr, loss_ptr, grad_ptr, n, T,
                       lo, hi, beta, HAS_OLD: tl.constexpr, HAS_KL: tl.constexpr, KL: tl.constexpr,
                       BLOCK: tl.constexpr):
    """BLOCK tokens of the flattened (B, T) batch per program: token_loss_torch, element by element."""
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    inb = offs < n
    m = tl.load(mask_ptr + offs, mask=inb, other=0) != 0
    lp = tl.load(logp_ptr + offs, mask=m, other=0.0).to(tl.float32)  # masked slots read 0, never NaN
    old = lp
    if HAS_OLD:
        old = tl.load(old_ptr + offs, mask=m, other=0.0).to(tl.float32)
    A = tl.load(adv_ptr + offs // T, mask=inb, other=0.0).to(tl.float32)
    w = tl.load(w_ptr + offs // T, mask=inb, other=0.0)
    ratio = tl.exp(lp - old)
    clipped = ((ratio < lo) & (A < 0)) | ((ratio > hi) & (A > 0))
    loss = -A * tl.where(clipped, tl.minimum(tl.maximum(ratio, lo), hi), ratio)
    grad = tl.where(clipped, 0.0, -A * ratio)
    if HAS_KL:
        d = tl.load(ref_ptr + offs, mask=m, other=0.0).to(tl.float32) - lp
        if KL == "k1":
            loss += beta * -d
            grad += beta
        elif KL == "k2":
            loss += beta * 0.5 * d * d
            grad += beta * -d
        else:
            loss += beta * _k3(d)
            grad += beta * (1 - tl.exp(d))
    tl.store(loss_ptr + offs, tl.where(m, w * loss, 0.0), mask=inb)
    tl.store(grad_ptr + offs, tl.where(m, w * grad, 0.0), mask=inb)


def token_loss_triton(logp, old_logp, ref_logp, adv, mask, w, eps_low, eps_high, beta, kl):
    """token_loss_torch in one Triton kernel (fp32)."""
    B, T = logp.shape
    loss, grad = torch.empty(B, T, device=logp.device), torch.empty(B, T, device=logp.device)
    has_old = old_logp is not None
    logp, old_logp, ref_logp = [logp if x is None else x.contiguous() for x in (logp, old_logp, ref_logp)]
    grid = (triton.cdiv(B * T, BLOCK),)  # an absent old_logp / ref_logp is passed as logp, never read
    _token_loss_kernel[grid](logp, old_logp, ref_logp, adv.contiguous(), w.float().contiguous(),
                             mask.contiguous(), loss, grad, B * T, T, 1.0 - eps_low, 1.0 + eps_high, float(beta),
                             HAS_OLD=has_old, HAS_KL=beta != 0, KL=kl, BLOCK=BLOCK)
    return loss, grad


# ------------------------------------------------------------------------------------ autograd

class _GRPOLoss(torch.autograd.Function):
    @staticmethod
    def forward(ctx, logp, token_loss, token_grad):
        ctx.save_for_backward(token_grad)
        ctx.dtype = logp.dtype
        return token_loss.sum()

    @staticmethod
    def backward(ctx, g):
        (token_grad,) = ctx.saved_tensors
        return (g * token_grad).to(ctx.dtype), None, None


def grpo_loss(logp, old_logp, ref_logp, adv, mask, *, eps_low=0.2, eps_high=0.2, beta=0.0, kl="k3",
              agg="seq-mean-token-mean", max_len=None, n_tokens=None, n_seqs=None, backend="auto"):
    """grpo.policy_loss's loss (value and gradient), fused per token.

    Args: as grpo.policy_loss (logp, old_logp or None, ref_logp or None: (B, T); adv (B,); mask (B, T)),
        plus backend: "auto" (Triton on CUDA, else PyTorch), "triton" or "torch".
    Returns: the scalar loss pg_loss + beta * kl_loss, differentiable w.r.t. logp. The Triton kernel
        computes in fp32; the PyTorch path in fp32, or float64 for float64 inputs.
    """
    if logp.dim() != 2 or adv.shape != logp.shape[:1] or mask.shape != logp.shape:
        raise ValueError(f"need logp (B, T), adv (B,), mask (B, T), got {tuple(logp.shape)}, {tuple(adv.shape)}, "
                         f"{tuple(mask.shape)}")
    for name, x in (("old_logp", old_logp), ("ref_logp", ref_logp)):
        if x is not None and x.shape != logp.shape:
            raise ValueError(f"{name} must have shape {tuple(logp.shape)}, got {tuple(x.shape)}")
    if agg not in AGGS or kl not in KLS:
        raise ValueError(f"agg must be one of {AGGS} and kl one of {KLS}, got {agg!r}, {kl!r}")
    if agg == "seq-mean-token-sum-norm" and max_len is None:
        raise ValueError("agg='seq-mean-token-sum-norm' needs max_len")
    if beta != 0 and ref_logp is None:
        raise ValueError(f"beta={beta} needs ref_logp")
    if backend == "auto":
        backend = "triton" if logp.is_cuda and triton is not None else "torch"
    if backend not in ("triton", "torch"):
        raise ValueError(f"backend must be 'auto', 'triton' or 'torch', got {backend!r}")
    mask = mask.bool()
    dt = torch.float32 if backend == "triton" else torch.promote_types(logp.dtype, torch.float32)
    w = row_weights(mask, agg, max_len, n_tokens, n_seqs, dt)  # (B,)
    old_logp, ref_logp = [None if x is None else x.detach() for x in (old_logp, ref_logp)]
    token = token_loss_triton if backend == "triton" else token_loss_torch
    loss, grad = token(logp.detach(), old_logp, ref_logp, adv.detach(), mask, w, eps_low, eps_high, beta, kl)
    return _GRPOLoss.apply(logp, loss, grad)

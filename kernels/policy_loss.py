"""
The GRPO policy loss fused per token: one Triton kernel writes each token's weighted loss and its
gradient d loss / d logp. grpo.policy_loss, which holds the maths and the PyTorch reference, calls
it when the Triton backend is on (CUDA by default).

    loss = fused_policy_loss(logp, old_logp, ref_logp, adv, mask, w, eps_low, eps_high, beta, kl)

Design notes:
1. Every aggregation in grpo.py is a weighted sum of token losses with one weight per row
   (grpo.row_weights), and the loss is linear in the token losses, so the forward also writes
   d loss / d logp_bt and the backward only scales it: no (B, T) intermediates kept for autograd.
2. Token math as grpo.policy_loss (its notes 2-4): masked positions read as 0 before any
   arithmetic (padding may hold NaN); ratio = exp(logp - old_logp), 1 on-policy; the clipped term
   only when A > 0 and ratio > 1 + eps_high, or A < 0 and ratio < 1 - eps_low; KL with
   d = ref - logp: k1 = -d, k2 = d^2 / 2, k3 = expm1(d) - d, gradients 1, -d, -expm1(d). Triton has
   no expm1 (nor does its interpreter), so for |d| < 0.5 k3 is its Taylor series d^2/2! + ... +
   d^7/7!, which is positive, and exp(d) - 1 - d beyond.
"""

from __future__ import annotations  # kernel annotations (tl.constexpr) stay strings without triton

import torch

from r1_kernels.backend import jit, tl, triton

BLOCK = 1024  # tokens per program


@jit
def _k3(d):
    """expm1(d) - d, positive and accurate near 0 (design note 2)."""
    series = d * d * (0.5 + d * (1 / 6 + d * (1 / 24 + d * (1 / 120 + d * (1 / 720 + d * (1 / 5040))))))
    return tl.where(tl.abs(d) < 0.5, series, tl.exp(d) - 1 - d)


@jit
def _token_loss_kernel(logp_ptr, old_ptr, ref_ptr, adv_ptr, w_ptr, mask_ptr, loss_ptr, grad_ptr, n, T,
                       lo, hi, beta, HAS_OLD: tl.constexpr, HAS_KL: tl.constexpr, KL: tl.constexpr,
                       BLOCK: tl.constexpr):
    """BLOCK tokens of the flattened (B, T) batch per program: design note 2, element by element."""
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


class _FusedLoss(torch.autograd.Function):
    @staticmethod
    def forward(ctx, logp, old_logp, ref_logp, adv, mask, w, eps_low, eps_high, beta, kl):
        B, T = logp.shape
        loss, grad = torch.empty(B, T, device=logp.device), torch.empty(B, T, device=logp.device)
        lp = logp.detach().contiguous()
        old, ref = [lp if x is None else x.detach().contiguous() for x in (old_logp, ref_logp)]  # None: never read
        _token_loss_kernel[(triton.cdiv(B * T, BLOCK),)](
            lp, old, ref, adv.detach().float().contiguous(), w.float().contiguous(),
            mask.contiguous(), loss, grad, B * T, T, 1.0 - eps_low, 1.0 + eps_high, float(beta),
            HAS_OLD=old_logp is not None, HAS_KL=beta != 0, KL=kl, BLOCK=BLOCK)
        ctx.save_for_backward(grad)
        ctx.dtype = logp.dtype
        return loss.sum()

    @staticmethod
    def backward(ctx, g):
        (grad,) = ctx.saved_tensors
        return (g * grad).to(ctx.dtype), *[None] * 9


def fused_policy_loss(logp, old_logp, ref_logp, adv, mask, w, eps_low, eps_high, beta, kl):
    """sum over tokens of w_b * (pg_bt + beta * kl_bt), in fp32, differentiable w.r.t. logp (B, T);
    old_logp / ref_logp may be None (on-policy / no KL), mask is bool (B, T), w the row weights (B,)."""
    return _FusedLoss.apply(logp, old_logp, ref_logp, adv, mask, w, eps_low, eps_high, beta, kl)

"""
Log-probabilities of target tokens (and the entropy) without an fp32 [tokens, vocab] copy.

    logp, ent = token_logprobs(logits, targets, with_entropy=True)        # logits (N, V) -> (N,), (N,)
    logp = linear_token_logprobs(hidden, lm_head.weight, targets, temperature)   # hidden (N, d)

Design notes:
1. Why. `log_softmax(logits.float(), -1).gather(...)` keeps an fp32 (N, V) log-softmax for backward
   and its backward allocates two more (the scattered gradient and the log-softmax gradient): at
   Qwen's V = 151,936 each copy is 0.6 MB per token. Here the forward keeps only what the caller
   already holds (logits, targets) plus one number per row, the log-sum-exp, and the backward
   recomputes the softmax a chunk at a time and writes straight into the gradient, in the logits'
   dtype: the one (N, V) allocation is the gradient itself.
2. Gradients. d logp / dx = onehot(target) - p and d H / dx = -p * (logp + H), with p the softmax and
   H = -sum p logp, so grad = g * onehot - p * (g + g_ent * (logp + H)). The entropy is usually a
   metric (train_rl.py detaches it); its gradient is there for an entropy bonus, and is tested.
3. Online softmax (the Triton kernel and the linear form), over tiles of the vocabulary: a running
   max m, s = sum exp(x - m) and u = sum exp(x - m) * (x - m). When m rises to m_new the old sums
   rescale by c = exp(m - m_new): s <- c s, u <- c (u + (m - m_new) s). Then lse = m + log s and
   H = log s - u / s, which never subtracts two large numbers, so it stays accurate for large logits.
   m starts at a finite -1e30, not -inf, so the first rescale is 0 * finite = 0 rather than NaN.
4. Backends. `token_logprobs` has a Triton kernel (one program per row, vocab tiles of BLOCK_V,
   fp32 accumulation whatever the input dtype) and a chunked PyTorch path, its reference: CHUNK
   elements of rows at a time. "auto" is Triton on CUDA tensors, PyTorch otherwise. Both are
   deterministic (fixed order, no atomics), so CPU runs repeat bit for bit.
5. The linear form tiles the vocabulary, not the rows: each (N, tile) block of logits
   `hidden @ weight[v0:v1].T` is one large matmul, the weight is read once per pass, and the weight
   gradient's rows for the tile are written once, never accumulated. The backward recomputes the
   tile logits: 4 matmuls where the naive path does 3, the price of never holding (N, V) when the
   gradient with respect to logp is unknown in the forward (on one CPU thread in fp32, where the
   matmuls are most of the time, about 1.0-1.15x naive's time: README, Results 5). It is
   PyTorch only (no Triton): its work is the matmuls, and per tile the softmax statistics are a
   few elementwise ops. Under CUDA autocast (custom_fwd/custom_bwd) the matmuls run in bf16 as
   `lm_head(h)` would, the statistics in fp32.
"""

from __future__ import annotations  # kernel annotations (tl.constexpr) stay strings without triton

import torch

try:
    import triton
    import triton.language as tl
except ImportError:  # no triton (macOS, Windows): the PyTorch paths only
    triton = None

CHUNK = 1 << 21  # elements of logits per step of the PyTorch path (8 MB in fp32)
BLOCK_V = 4096  # vocabulary tile of the Triton kernels
TILE = 1 << 22  # elements of the (N, tile) logits block of the linear form (16 MB in fp32)


def _jit(fn):
    """triton.jit where triton is installed; elsewhere the kernel stays a plain function, never called."""
    return fn if triton is None else triton.jit(fn)


def _check_targets(targets, V):
    if targets.numel() and (int(targets.min()) < 0 or int(targets.max()) >= V):
        raise ValueError(f"targets must lie in [0, {V}), got [{int(targets.min())}, {int(targets.max())}]")


# ------------------------------------------------------------------------ PyTorch path (reference)

def _fwd_torch(logits, targets, with_entropy):
    """logp (N,), lse (N,), entropy (N,) or None: CHUNK elements of rows at a time, in fp32."""
    N, V = logits.shape
    logp, lse = logits.new_empty(N, dtype=torch.float32), logits.new_empty(N, dtype=torch.float32)
    ent = logits.new_empty(N, dtype=torch.float32) if with_entropy else None
    rows = max(1, CHUNK // V)
    for r in range(0, N, rows):
        x = logits[r : r + rows].float()  # (C, V)
        lse[r : r + rows] = torch.logsumexp(x, 1)
        logp[r : r + rows] = x.gather(1, targets[r : r + rows, None]).squeeze(1) - lse[r : r + rows]
        if with_entropy:
            lp = x - lse[r : r + rows, None]  # (C, V) log-softmax of these rows
            ent[r : r + rows] = -(lp.exp() * lp).sum(1)
    return logp, lse, ent


def _bwd_torch(logits, targets, lse, ent, g, g_ent):
    """grad (N, V) in the logits' dtype = g * onehot - p * (g + g_ent * (logp + H)), chunk by chunk."""
    N, V = logits.shape
    grad = torch.empty_like(logits)
    rows = max(1, CHUNK // V)
    for r in range(0, N, rows):
        lp = logits[r : r + rows].float() - lse[r : r + rows, None]  # (C, V) log-softmax
        coef = g[r : r + rows, None]
        if g_ent is not None:
            coef = coef + g_ent[r : r + rows, None] * (lp + ent[r : r + rows, None])
        d = lp.exp_().mul_(coef).neg_()  # -p * coef
        d.scatter_add_(1, targets[r : r + rows, None], g[r : r + rows, None])
        grad[r : r + rows] = d
    return grad


# ------------------------------------------------------------------------------ Triton kernels

@_jit
def _fwd_kernel(logits_ptr, targets_ptr, logp_ptr, lse_ptr, ent_ptr, V, stride,
                WITH_ENTROPY: tl.constexpr, BLOCK: tl.constexpr):
    """One program per row: online max / log-sum-exp (and entropy) over vocab tiles (design note 3)."""
    row = tl.program_id(0).to(tl.int64)
    x_row = logits_ptr + row * stride
    m, s, u = -1e30, 0.0, 0.0
    for v0 in range(0, V, BLOCK):
        cols = v0 + tl.arange(0, BLOCK)
        x = tl.load(x_row + cols, mask=cols < V, other=-float("inf")).to(tl.float32)
        m_new = tl.maximum(m, tl.max(x, 0))
        c = tl.exp(m - m_new)
        e = tl.exp(x - m_new)  # 0 past the end of the row
        if WITH_ENTROPY:
            y = tl.where(cols < V, x - m_new, 0.0)  # not -inf, so that e * y is 0 there, not NaN
            u = c * (u + (m - m_new) * s) + tl.sum(e * y, 0)
        s = c * s + tl.sum(e, 0)
        m = m_new
    lse = m + tl.log(s)
    x_t = tl.load(x_row + tl.load(targets_ptr + row)).to(tl.float32)
    tl.store(logp_ptr + row, x_t - lse)
    tl.store(lse_ptr + row, lse)
    if WITH_ENTROPY:
        tl.store(ent_ptr + row, tl.log(s) - u / s)


@_jit
def _bwd_kernel(logits_ptr, targets_ptr, lse_ptr, ent_ptr, g_ptr, g_ent_ptr, grad_ptr, V, stride, grad_stride,
                HAS_G_ENT: tl.constexpr, BLOCK: tl.constexpr):
    """One program per row: grad = g * onehot - p * (g + g_ent * (logp + H)), in the logits' dtype."""
    row = tl.program_id(0).to(tl.int64)
    lse, g, t = tl.load(lse_ptr + row), tl.load(g_ptr + row), tl.load(targets_ptr + row)
    if HAS_G_ENT:
        g_ent, H = tl.load(g_ent_ptr + row), tl.load(ent_ptr + row)
    for v0 in range(0, V, BLOCK):
        cols = v0 + tl.arange(0, BLOCK)
        x = tl.load(logits_ptr + row * stride + cols, mask=cols < V, other=0.0).to(tl.float32)
        lp = x - lse
        coef = g
        if HAS_G_ENT:
            coef = g + g_ent * (lp + H)
        d = tl.where(cols == t, g, 0.0) - tl.exp(lp) * coef
        tl.store(grad_ptr + row * grad_stride + cols, d.to(grad_ptr.dtype.element_ty), mask=cols < V)


def _block(V):
    return min(BLOCK_V, triton.next_power_of_2(V))


def _fwd_triton(logits, targets, with_entropy):
    N, V = logits.shape
    logp, lse = logits.new_empty(N, dtype=torch.float32), logits.new_empty(N, dtype=torch.float32)
    ent = logits.new_empty(N, dtype=torch.float32) if with_entropy else None
    _fwd_kernel[(N,)](logits, targets, logp, lse, ent if with_entropy else lse, V, logits.stride(0),
                      WITH_ENTROPY=with_entropy, BLOCK=_block(V))
    return logp, lse, ent


def _bwd_triton(logits, targets, lse, ent, g, g_ent):
    N, V = logits.shape
    grad = torch.empty_like(logits)
    has = g_ent is not None
    _bwd_kernel[(N,)](logits, targets, lse, ent if has else lse, g.contiguous(), g_ent.contiguous() if has else g,
                      grad, V, logits.stride(0), grad.stride(0), HAS_G_ENT=has, BLOCK=_block(V))
    return grad


# ------------------------------------------------------------------------------------ autograd

class _TokenLogprobs(torch.autograd.Function):
    @staticmethod
    def forward(ctx, logits, targets, with_entropy, backend):
        logp, lse, ent = (_fwd_triton if backend == "triton" else _fwd_torch)(logits, targets, with_entropy)
        ctx.save_for_backward(logits, targets, lse, ent)
        ctx.backend = backend
        ctx.set_materialize_grads(False)  # an unused entropy sends None: skip its term
        return (logp, ent) if with_entropy else logp

    @staticmethod
    def backward(ctx, g, g_ent=None):
        logits, targets, lse, ent = ctx.saved_tensors
        g = torch.zeros_like(lse) if g is None else g.float()
        g_ent = None if g_ent is None else g_ent.float()
        grad = (_bwd_triton if ctx.backend == "triton" else _bwd_torch)(logits, targets, lse, ent, g, g_ent)
        return grad, None, None, None


def token_logprobs(logits, targets, backend="auto", with_entropy=False):
    """log softmax(logits)[target] per row, without an fp32 (N, V) copy (design notes 1-4).

    Args:
        logits: (N, V), any float dtype; targets: (N,) int64 in [0, V).
        backend: "auto" (Triton on CUDA, else PyTorch), "triton" or "torch".
        with_entropy: also return the entropy of each row's softmax.
    Returns:
        logp (N,) fp32, differentiable w.r.t. logits (the gradient comes in the logits' dtype);
        with_entropy: (logp, entropy), both (N,) fp32 and differentiable.
    """
    if logits.dim() != 2 or targets.shape != logits.shape[:1]:
        raise ValueError(f"need logits (N, V) and targets (N,), got {tuple(logits.shape)} and {tuple(targets.shape)}")
    _check_targets(targets, logits.shape[1])
    if backend == "auto":
        backend = "triton" if logits.is_cuda and triton is not None else "torch"
    if backend not in ("triton", "torch"):
        raise ValueError(f"backend must be 'auto', 'triton' or 'torch', got {backend!r}")
    if backend == "triton" and logits.stride(1) != 1:
        logits = logits.contiguous()
    return _TokenLogprobs.apply(logits, targets.long().contiguous(), with_entropy, backend)


# -------------------------------------------------------------------------- the linear form

def _tile(hidden, weight, v0, width, temperature):
    """fp32 logits of vocabulary rows [v0, v0 + width): (N, width)."""
    x = (hidden @ weight[v0 : v0 + width].T).float()
    return x if temperature == 1.0 else x.div_(temperature)


def _hits(targets, v0, width):
    """Which rows have their target in this tile (N,), and its column there (N, 1) (clamped elsewhere)."""
    return (targets >= v0) & (targets < v0 + width), (targets - v0).clamp(0, width - 1)[:, None]


class _LinearTokenLogprobs(torch.autograd.Function):
    @staticmethod
    @torch.amp.custom_fwd(device_type="cuda")
    def forward(ctx, hidden, weight, targets, temperature, with_entropy, width):
        N = hidden.shape[0]
        m = torch.full((N,), -1e30, dtype=torch.float32, device=hidden.device)  # running max (design note 3)
        s, u, x_t = torch.zeros_like(m), torch.zeros_like(m), torch.zeros_like(m)
        for v0 in range(0, weight.shape[0], width):
            x = _tile(hidden, weight, v0, width, temperature)  # (N, width)
            hit, col = _hits(targets, v0, x.shape[1])
            x_t = torch.where(hit, x.gather(1, col).squeeze(1), x_t)  # the target's logit
            m_new = torch.maximum(m, x.amax(1))
            c = torch.exp(m - m_new)
            y = x.sub_(m_new[:, None])  # x - m_new
            e = y.exp() if with_entropy else y.exp_()
            if with_entropy:
                u = c * (u + (m - m_new) * s) + (e * y).sum(1)
            s = c * s + e.sum(1)
            m = m_new
        lse = m + s.log()
        ent = s.log() - u / s if with_entropy else None
        ctx.save_for_backward(hidden, weight, targets, lse, ent)
        ctx.temperature, ctx.width = temperature, width
        ctx.set_materialize_grads(False)
        logp = x_t - lse
        return (logp, ent) if with_entropy else logp

    @staticmethod
    @torch.amp.custom_bwd(device_type="cuda")
    def backward(ctx, g, g_ent=None):
        hidden, weight, targets, lse, ent = ctx.saved_tensors
        T, width = ctx.temperature, ctx.width
        g = torch.zeros_like(lse) if g is None else g.float()
        need_h, need_w = ctx.needs_input_grad[:2]
        grad_h = torch.zeros(hidden.shape, device=hidden.device) if need_h else None  # fp32 accumulator
        grad_w = torch.empty_like(weight) if need_w else None  # every row is written once
        for v0 in range(0, weight.shape[0], width):
            lp = _tile(hidden, weight, v0, width, T).sub_(lse[:, None])  # (N, width) log-softmax
            if g_ent is None:
                coef = g[:, None] / -T  # (N, 1)
            else:
                coef = (g[:, None] + g_ent.float()[:, None] * (lp + ent[:, None])).div_(-T)  # (N, width)
            d = lp.exp_().mul_(coef)  # -p * (g + g_ent * (logp + H)) / T
            hit, col = _hits(targets, v0, d.shape[1])
            d.scatter_add_(1, col, torch.where(hit, g / T, 0.0)[:, None])  # + g / T at the target
            d = d.to(weight.dtype)  # d loss / d (hidden @ weight.T)
            w = weight[v0 : v0 + d.shape[1]]
            if need_h:
                grad_h += d @ w
            if need_w:
                grad_w[v0 : v0 + d.shape[1]] = d.T @ hidden
        return (grad_h.to(hidden.dtype) if need_h else None), grad_w, None, None, None, None


def linear_token_logprobs(hidden, weight, targets, temperature=1.0, with_entropy=False):
    """log softmax(hidden @ weight.T / temperature)[target] per row; the (N, V) logits never exist.

    Args:
        hidden: (N, d) final hidden states; weight: (V, d), the lm_head (or tied embedding) matrix.
        targets: (N,) int64 in [0, V); temperature: the policy is softmax(logits / temperature).
        with_entropy: also return the entropy of each row's softmax.
    Returns:
        logp (N,) fp32, differentiable w.r.t. hidden and weight; with_entropy: (logp, entropy).
    """
    N, d = hidden.shape if hidden.dim() == 2 else (None, None)
    if N is None or weight.dim() != 2 or weight.shape[1] != d or targets.shape != (N,):
        raise ValueError(f"need hidden (N, d), weight (V, d), targets (N,), got {tuple(hidden.shape)}, "
                         f"{tuple(weight.shape)}, {tuple(targets.shape)}")
    _check_targets(targets, weight.shape[0])
    width = max(1, TILE // max(1, N))
    return _LinearTokenLogprobs.apply(hidden, weight, targets.long(), float(temperature), with_entropy, width)

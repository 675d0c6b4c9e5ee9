"""
Log-probabilities of target tokens (and the entropy) without an fp32 [tokens, vocab] copy.

    logp = linear_token_logprobs(hidden, lm_head.weight, targets, temperature)   # what training uses
    logp, ent = token_logprobs(logits, targets, with_entropy=True)               # from logits (N, V)

Design notes:
1. Why. `log_softmax(logits.float(), -1).gather(...)` keeps an fp32 (N, V) log-softmax for backward
   and its backward allocates two more (the scattered gradient and the log-softmax gradient); at
   Qwen's V = 151,936 each copy is 0.6 MB per token. Here the forward keeps only its inputs and a
   few numbers per row, and the backward recomputes the softmax a tile at a time and writes the
   gradient tile by tile, in the input's dtype.
2. Gradients. d logp / dx = onehot(target) - p and d H / dx = -p * (logp + H), with p the softmax and
   H = -sum p logp, so grad = g * onehot - p * (g + g_ent * (logp + H)), divided by the temperature
   for the logits before it. The entropy is usually a metric (train_rl.py detaches it); its
   gradient is there for an entropy bonus, and is tested.
3. Online softmax over tiles of the vocabulary: a running max m, s = sum exp(x - m) and
   u = sum exp(x - m) * (x - m). When m rises to m_new the old sums rescale by c = exp(m - m_new):
   s <- c s, u <- c (u + (m - m_new) s). Then lse = m + log s and H = log s - u / s, which never
   subtracts two large numbers. m starts at a finite -1e30, so the first rescale is 0, not NaN.
4. Both forms hand each tile of logits to the same two steps: `_stats` folds the tile into each
   row's running (m, s, u, target logit), `_grad` writes the tile's d loss / d logits. The linear
   form's tiles are columns (note 5); the logits form's are blocks of whole rows.
   Each is a Triton kernel (one program per row, BLOCK_V columns at a time, fp32 whatever the
   input's dtype) next to its PyTorch reference; backend.BACKEND picks, Triton on CUDA. Fixed
   order and no atomics: runs repeat bit for bit.
5. The linear form is what training runs (model.py note 5): each tile is one matmul
   `hidden @ weight[v0:v1].T`, so the (N, V) logits never exist, the weight is read once per pass,
   and each row of the weight's gradient is written once. The backward recomputes the tile: 4
   matmuls where the naive path does 3. That is why the kernel sits inside the lm_head rather than
   after it: at Qwen's vocabulary the bf16 logits of 8,192 tokens are 2.5 GB, and their gradient
   another 2.5 GB, where a tile is 16 MB (docs/kernels.md). Under CUDA autocast the matmuls run in
   bf16 as lm_head(h) would, the statistics in fp32.
"""

from __future__ import annotations  # kernel annotations (tl.constexpr) stay strings without triton

import torch

from r1_kernels.backend import jit, tl, triton, use_triton

BLOCK_V = 4096  # columns a Triton program reads at a time
TILE = 1 << 22  # elements of an (N, width) tile of logits (16 MB in fp32)


def _check_targets(targets, V):
    if targets.numel() and (int(targets.min()) < 0 or int(targets.max()) >= V):
        raise ValueError(f"targets must lie in [0, {V}), got [{int(targets.min())}, {int(targets.max())}]")


def _hits(targets, v0, width):
    """Which rows have their target in this tile (N,), and its column there (N, 1) (clamped elsewhere)."""
    return (targets >= v0) & (targets < v0 + width), (targets - v0).clamp(0, width - 1)[:, None]


# --------------------------------------------------------------- one tile: PyTorch references

def _stats_torch(x, targets, v0, state, temperature, with_entropy, scratch):
    """Fold the tile x (N, width) of logits of vocabulary [v0, v0 + width) into the rows' running
    state (m, s, u, x_t) (design note 3); scratch: x is a temporary the arithmetic may overwrite."""
    m, s, u, x_t = state
    x = x.float() if scratch else x.float().clone()
    x = x if temperature == 1.0 else x.div_(temperature)
    hit, col = _hits(targets, v0, x.shape[1])
    x_t = torch.where(hit, x.gather(1, col).squeeze(1), x_t)  # the target's logit
    m_new = torch.maximum(m, x.amax(1))
    c = torch.exp(m - m_new)
    y = x.sub_(m_new[:, None])
    e = y.exp() if with_entropy else y.exp_()
    if with_entropy:
        u = c * (u + (m - m_new) * s) + (e * y).sum(1)
    return m_new, c * s + e.sum(1), u, x_t


def _grad_torch(x, targets, v0, lse, ent, g, g_ent, temperature, dtype, scratch):
    """d loss / d x for the tile x (N, width) of logits (design note 2), in dtype (scratch: as _stats_torch)."""
    lp = x.float() if scratch else x.float().clone()
    lp = (lp if temperature == 1.0 else lp.div_(temperature)).sub_(lse[:, None])  # log-softmax
    if g_ent is None:
        coef = g[:, None] / -temperature  # (N, 1)
    else:
        coef = (g[:, None] + g_ent[:, None] * (lp + ent[:, None])).div_(-temperature)  # (N, width)
    d = lp.exp_().mul_(coef)  # -p * (g + g_ent * (logp + H)) / T
    hit, col = _hits(targets, v0, d.shape[1])
    d.scatter_add_(1, col, torch.where(hit, g / temperature, 0.0)[:, None])  # + g / T at the target
    return d.to(dtype)


# -------------------------------------------------------------------- one tile: Triton kernels

@jit
def _stats_kernel(x_ptr, stride, W, v0, targets_ptr, m_ptr, s_ptr, u_ptr, xt_ptr, temperature,
                  WITH_ENTROPY: tl.constexpr, BLOCK: tl.constexpr):
    """One program per row: _stats_torch, BLOCK columns at a time."""
    row = tl.program_id(0).to(tl.int64)
    x_row = x_ptr + row * stride
    m, s, u = tl.load(m_ptr + row), tl.load(s_ptr + row), tl.load(u_ptr + row)
    for c0 in range(0, W, BLOCK):
        cols = c0 + tl.arange(0, BLOCK)
        x = tl.load(x_row + cols, mask=cols < W, other=-float("inf")).to(tl.float32) / temperature
        m_new = tl.maximum(m, tl.max(x, 0))
        c = tl.exp(m - m_new)
        e = tl.exp(x - m_new)  # 0 past the end of the row
        if WITH_ENTROPY:
            y = tl.where(cols < W, x - m_new, 0.0)  # not -inf, so that e * y is 0 there, not NaN
            u = c * (u + (m - m_new) * s) + tl.sum(e * y, 0)
        s = c * s + tl.sum(e, 0)
        m = m_new
    tl.store(m_ptr + row, m)
    tl.store(s_ptr + row, s)
    tl.store(u_ptr + row, u)
    t = tl.load(targets_ptr + row) - v0
    x_t = tl.load(x_row + tl.minimum(tl.maximum(t, 0), W - 1)).to(tl.float32) / temperature
    tl.store(xt_ptr + row, tl.where((t >= 0) & (t < W), x_t, tl.load(xt_ptr + row)))


@jit
def _grad_kernel(x_ptr, stride, W, v0, targets_ptr, lse_ptr, ent_ptr, g_ptr, g_ent_ptr, d_ptr, d_stride, temperature,
                 HAS_G_ENT: tl.constexpr, BLOCK: tl.constexpr):
    """One program per row: _grad_torch, BLOCK columns at a time, written in d's dtype."""
    row = tl.program_id(0).to(tl.int64)
    lse, g, t = tl.load(lse_ptr + row), tl.load(g_ptr + row), tl.load(targets_ptr + row) - v0
    if HAS_G_ENT:
        g_ent, H = tl.load(g_ent_ptr + row), tl.load(ent_ptr + row)
    for c0 in range(0, W, BLOCK):
        cols = c0 + tl.arange(0, BLOCK)
        lp = tl.load(x_ptr + row * stride + cols, mask=cols < W, other=0.0).to(tl.float32) / temperature - lse
        coef = g
        if HAS_G_ENT:
            coef = g + g_ent * (lp + H)
        d = (tl.where(cols == t, g, 0.0) - tl.exp(lp) * coef) / temperature
        tl.store(d_ptr + row * d_stride + cols, d.to(d_ptr.dtype.element_ty), mask=cols < W)


def _stats(x, targets, v0, state, temperature, with_entropy, on_triton, scratch=False):
    if not on_triton:
        return _stats_torch(x, targets, v0, state, temperature, with_entropy, scratch)
    x = x if x.stride(1) == 1 else x.contiguous()
    _stats_kernel[(x.shape[0],)](x, x.stride(0), x.shape[1], v0, targets, *state, float(temperature),
                                 WITH_ENTROPY=with_entropy, BLOCK=min(BLOCK_V, triton.next_power_of_2(x.shape[1])))
    return state  # updated in place


def _grad(x, targets, v0, lse, ent, g, g_ent, temperature, dtype, on_triton, scratch=False):
    if not on_triton:
        return _grad_torch(x, targets, v0, lse, ent, g, g_ent, temperature, dtype, scratch)
    x = x if x.stride(1) == 1 else x.contiguous()
    d = torch.empty(x.shape, dtype=dtype, device=x.device)
    has = g_ent is not None
    _grad_kernel[(x.shape[0],)](x, x.stride(0), x.shape[1], v0, targets, lse, ent if has else lse, g.contiguous(),
                                g_ent.contiguous() if has else g, d, d.stride(0), float(temperature),
                                HAS_G_ENT=has, BLOCK=min(BLOCK_V, triton.next_power_of_2(x.shape[1])))
    return d


def _start(N, device):
    """The running state (m, s, u, x_t) before the first tile (design note 3)."""
    m = torch.full((N,), -1e30, dtype=torch.float32, device=device)
    return m, torch.zeros_like(m), torch.zeros_like(m), torch.zeros_like(m)


def _finish(state, with_entropy):
    """logp, lse, entropy (or None) from the running state after the last tile."""
    m, s, u, x_t = state
    lse = m + s.log()
    return x_t - lse, lse, (s.log() - u / s if with_entropy else None)


# ------------------------------------------------------------------------------------ autograd

class _TokenLogprobs(torch.autograd.Function):
    @staticmethod
    def forward(ctx, logits, targets, with_entropy, on_triton):
        N, V = logits.shape
        rows = N if on_triton else max(1, TILE // V)  # a kernel streams each row; torch takes blocks of whole rows
        logp, lse = logits.new_empty(N, dtype=torch.float32), logits.new_empty(N, dtype=torch.float32)
        ent = logits.new_empty(N, dtype=torch.float32) if with_entropy else None
        for r in range(0, N, rows):  # each block of rows is one tile: the whole vocabulary
            state = _stats(logits[r : r + rows], targets[r : r + rows], 0, _start(min(rows, N - r), logits.device),
                           1.0, with_entropy, on_triton)
            out = _finish(state, with_entropy)
            logp[r : r + rows], lse[r : r + rows] = out[0], out[1]
            if with_entropy:
                ent[r : r + rows] = out[2]
        ctx.save_for_backward(logits, targets, lse, ent)
        ctx.rows, ctx.on_triton = rows, on_triton
        ctx.set_materialize_grads(False)  # an unused entropy sends None: skip its term
        return (logp, ent) if with_entropy else logp

    @staticmethod
    def backward(ctx, g, g_ent=None):
        logits, targets, lse, ent = ctx.saved_tensors
        g = torch.zeros_like(lse) if g is None else g.float()
        g_ent = None if g_ent is None else g_ent.float()
        grad, k = torch.empty_like(logits), ctx.rows
        for r in range(0, logits.shape[0], k):
            grad[r : r + k] = _grad(logits[r : r + k], targets[r : r + k], 0, lse[r : r + k],
                                    None if ent is None else ent[r : r + k], g[r : r + k],
                                    None if g_ent is None else g_ent[r : r + k], 1.0, logits.dtype, ctx.on_triton)
        return grad, None, None, None


class _LinearTokenLogprobs(torch.autograd.Function):
    @staticmethod
    @torch.amp.custom_fwd(device_type="cuda")
    def forward(ctx, hidden, weight, targets, temperature, with_entropy, width, on_triton):
        state = _start(hidden.shape[0], hidden.device)
        for v0 in range(0, weight.shape[0], width):
            x = hidden @ weight[v0 : v0 + width].T  # (N, width), ours to overwrite
            state = _stats(x, targets, v0, state, temperature, with_entropy, on_triton, scratch=True)
        logp, lse, ent = _finish(state, with_entropy)
        ctx.save_for_backward(hidden, weight, targets, lse, ent)
        ctx.temperature, ctx.width, ctx.on_triton = temperature, width, on_triton
        ctx.set_materialize_grads(False)
        return (logp, ent) if with_entropy else logp

    @staticmethod
    @torch.amp.custom_bwd(device_type="cuda")
    def backward(ctx, g, g_ent=None):
        hidden, weight, targets, lse, ent = ctx.saved_tensors
        g = torch.zeros_like(lse) if g is None else g.float()
        g_ent = None if g_ent is None else g_ent.float()
        need_h, need_w = ctx.needs_input_grad[:2]
        grad_h = torch.zeros(hidden.shape, device=hidden.device) if need_h else None  # fp32 accumulator
        grad_w = torch.empty_like(weight) if need_w else None  # every row is written once
        for v0 in range(0, weight.shape[0], ctx.width):
            w = weight[v0 : v0 + ctx.width]
            d = _grad(hidden @ w.T, targets, v0, lse, ent, g, g_ent, ctx.temperature, weight.dtype, ctx.on_triton, True)
            if need_h:
                grad_h += d @ w
            if need_w:
                grad_w[v0 : v0 + d.shape[1]] = d.T @ hidden
        return (grad_h.to(hidden.dtype) if need_h else None), grad_w, None, None, None, None, None


def token_logprobs(logits, targets, backend="auto", with_entropy=False):
    """log softmax(logits)[target] per row, without an fp32 (N, V) copy (design notes 1-4).

    Args:
        logits: (N, V), any float dtype; targets: (N,) int64 in [0, V).
        backend: "auto" (backend.BACKEND: Triton on CUDA), "triton" or "torch".
        with_entropy: also return the entropy of each row's softmax.
    Returns:
        logp (N,) fp32, differentiable w.r.t. logits (the gradient comes in the logits' dtype);
        with_entropy: (logp, entropy), both (N,) fp32 and differentiable.
    """
    if logits.dim() != 2 or targets.shape != logits.shape[:1]:
        raise ValueError(f"need logits (N, V) and targets (N,), got {tuple(logits.shape)} and {tuple(targets.shape)}")
    _check_targets(targets, logits.shape[1])
    return _TokenLogprobs.apply(logits, targets.long().contiguous(), with_entropy, use_triton(logits, backend))


def linear_token_logprobs(hidden, weight, targets, temperature=1.0, with_entropy=False, backend="auto"):
    """log softmax(hidden @ weight.T / temperature)[target] per row; the (N, V) logits never exist.

    Args:
        hidden: (N, d) final hidden states; weight: (V, d), the lm_head (or tied embedding) matrix.
        targets: (N,) int64 in [0, V); temperature: the policy is softmax(logits / temperature).
        with_entropy: also return the entropy of each row's softmax.
        backend: "auto" (backend.BACKEND: Triton on CUDA), "triton" or "torch".
    Returns:
        logp (N,) fp32, differentiable w.r.t. hidden and weight; with_entropy: (logp, entropy).
    """
    N, d = hidden.shape if hidden.dim() == 2 else (None, None)
    if N is None or weight.dim() != 2 or weight.shape[1] != d or targets.shape != (N,):
        raise ValueError(f"need hidden (N, d), weight (V, d), targets (N,), got {tuple(hidden.shape)}, "
                         f"{tuple(weight.shape)}, {tuple(targets.shape)}")
    _check_targets(targets, weight.shape[0])
    width = max(1, TILE // max(1, N))
    return _LinearTokenLogprobs.apply(hidden, weight, targets.long().contiguous(), float(temperature), with_entropy,
                                      width, use_triton(hidden, backend))

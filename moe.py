"""
The feed-forward layers: the SwiGLU MLP (dense layers, and each expert) and DeepSeek-V3's MoE.

Design notes:
1. MoE is opt-in (`n_routed_experts` > 0) and DeepSeek-V3's: shared experts plus top_k routed
   ones, softmax or sigmoid scores, optional group-limited routing, the first `first_k_dense`
   layers dense. Balancing is auxiliary-loss-free: a per-expert bias, a buffer, shifts which experts
   are selected and is moved after each optimizer step by `gamma * sign(mean_load - load)`
   (parallel.optimizer_step); the gate weights come from the unbiased scores. An optional
   sequence-wise auxiliary loss joins the backward pass through the layer's output (AddAuxLoss).
   Qwen2-MoE's sigmoid-gated shared expert and Qwen3-MoE's layer rules load from transformers'
   checkpoints with their logits. A dense config builds exactly the modules, and draws exactly the
   random numbers, it did before MoE existed.
2. Dispatch sorts (token, expert) pairs by expert and runs each expert once on its slice, as
   DeepSeek-V3's inference code does; a Python loop over experts, never over tokens.
"""

import torch
import torch.nn as nn
import torch.nn.functional as F


class MLP(nn.Module):
    """SwiGLU: down(silu(gate(x)) * up(x)), gate and up as one matmul, output rows [gate | up]."""

    def __init__(self, dim, inter_dim):
        super().__init__()
        self.gate_up_proj = nn.Linear(dim, 2 * inter_dim, bias=False)
        self.down_proj = nn.Linear(inter_dim, dim, bias=False)

    def forward(self, x):
        gate, up = self.gate_up_proj(x).chunk(2, dim=-1)
        return self.down_proj(F.silu(gate) * up)


class Gate(nn.Module):
    """The router: scores every routed expert for every token and picks top_k of them.

    Selection ranks `score + bias` (the bias is auxiliary-loss-free balancing's, a buffer moved by
    `Transformer.update_expert_bias`, never by gradients); the gate weights are the unbiased scores of the chosen
    experts, so balancing changes which experts a token visits, not how much each one counts.
    """

    def __init__(self, cfg):
        super().__init__()
        self.cfg = cfg
        self.weight = nn.Parameter(torch.empty(cfg.n_routed_experts, cfg.dim))
        self.register_buffer("e_score_correction_bias", torch.zeros(cfg.n_routed_experts))  # fp32 (DeepSeek-V3's name)

    def forward(self, x):
        """
        Args:
            x: (N, dim) tokens.
        Returns:
            weights (N, top_k) in x's dtype, indices (N, top_k) of the chosen experts, and the
            unbiased scores (N, n_routed_experts) fp32 (for the auxiliary loss).
        """
        cfg = self.cfg
        logits = F.linear(x, self.weight)  # (N, E), scored in fp32 (or fp64) as transformers does
        logits = logits.to(torch.promote_types(logits.dtype, torch.float32))
        scores = logits.softmax(-1) if cfg.score_func == "softmax" else logits.sigmoid()
        biased = scores + self.e_score_correction_bias
        if cfg.n_groups > 1:  # group-limited routing: keep the topk_groups groups with the best top-2 sums
            groups = biased.view(len(x), cfg.n_groups, -1)  # (N, G, E / G)
            group_scores = groups.topk(min(2, groups.shape[-1]), dim=-1)[0].sum(-1)  # (N, G)
            keep = group_scores.topk(cfg.topk_groups, dim=-1)[1]  # (N, topk_groups)
            mask = torch.ones_like(group_scores, dtype=torch.bool).scatter_(1, keep, False)  # True: dropped group
            biased = groups.masked_fill(mask[..., None], float("-inf")).flatten(1)
        indices = biased.topk(cfg.top_k, dim=-1)[1]  # (N, top_k)
        weights = scores.gather(1, indices)
        if cfg.norm_topk_prob:
            weights = weights / weights.sum(-1, keepdim=True)
        return (weights * cfg.routed_scaling_factor).to(x.dtype), indices, scores


class AddAuxLoss(torch.autograd.Function):
    """y = x in the forward; the backward also sends gradient 1 into `loss`. The auxiliary loss so
    joins whatever loss is backpropagated through the layer's output, and the training scripts need
    not know it exists (as DeepSeek-V2's HF code does it)."""

    @staticmethod
    def forward(ctx, x, loss):
        ctx.loss_dtype = loss.dtype
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad):
        return grad, grad.new_ones((), dtype=ctx.loss_dtype)


class Recompute:
    """While gradient checkpointing recomputes a block in the backward pass: its MoE layer has
    counted these tokens in the forward already."""

    active = False

    def __enter__(self):
        Recompute.active = True

    def __exit__(self, *exc):
        Recompute.active = False


class MoE(nn.Module):
    """DeepSeek-V3's MoE feed-forward: shared experts on every token plus top_k routed experts.

    Dispatch: the (token, expert) pairs are sorted by expert and each expert runs once on its slice,
    then the weighted outputs are summed back per token (index_add). No loop over tokens.
    Training forwards (train mode, gradients on) count the tokens each expert received in `load`
    (padding excluded); Transformer.update_expert_bias turns the counts into the balancing step.
    """

    def __init__(self, cfg):
        super().__init__()
        self.cfg = cfg
        self.gate = Gate(cfg)
        self.experts = nn.ModuleList(MLP(cfg.dim, cfg.moe_inter_dim) for _ in range(cfg.n_routed_experts))
        if cfg.shared_inter_dim:
            self.shared_experts = MLP(cfg.dim, cfg.shared_inter_dim)
        if cfg.shared_expert_gate:
            self.shared_expert_gate = nn.Linear(cfg.dim, 1, bias=False)
        self.load = None  # (E,) int64 tokens routed since the last update; a plain tensor, not a buffer

    def forward(self, x, valid=None):
        """
        Args:
            x: (B, T, dim).
            valid: (B, T) bool, False for padding (None: all real); padding does not count as load.
        Returns:
            (B, T, dim).
        """
        B, T, D = x.shape
        E, K = self.cfg.n_routed_experts, self.cfg.top_k
        x = x.reshape(-1, D)  # (N, D)
        weights, indices, scores = self.gate(x)  # (N, K), (N, K), (N, E)
        flat = indices.flatten()  # (N * K,) the expert of each (token, slot) pair
        order = flat.argsort(stable=True)  # pairs sorted by expert
        counts = torch.bincount(flat, minlength=E).tolist()  # pairs per expert
        tokens = order // K  # the token of each sorted pair
        xs = x[tokens]  # (N * K, D)
        outs = [expert(part) for expert, part in zip(self.experts, xs.split(counts)) if len(part)]  # once each
        ys = torch.cat(outs) * weights.flatten()[order, None]  # (N * K, D)
        y = torch.zeros_like(x).index_add_(0, tokens, ys)
        if torch.is_grad_enabled():  # an expert with no tokens still gets a (zero) gradient, as DDP needs
            idle = [p for expert, n in zip(self.experts, counts) if not n for p in expert.parameters()]
            if idle:
                y = y + 0 * sum(p.sum() for p in idle)
        if self.cfg.shared_inter_dim:
            shared = self.shared_experts(x)
            if self.cfg.shared_expert_gate:
                shared = torch.sigmoid(self.shared_expert_gate(x)) * shared
            y = y + shared
        real = None if valid is None else valid.reshape(-1)  # (N,)
        if self.training and torch.is_grad_enabled():
            if not Recompute.active:
                pairs = flat if real is None else indices[real].flatten()
                load = torch.bincount(pairs, minlength=E)
                self.load = load if self.load is None else self.load + load
            if self.cfg.aux_loss_alpha > 0:  # (recomputed too: the backward needs its saved tensors)
                y = AddAuxLoss.apply(y, self.aux_loss(scores, indices, real, B, T))
        return y.view(B, T, D)

    def aux_loss(self, scores, indices, real, B, T):
        """DeepSeek-V3's sequence-wise balance loss, alpha * sum_i f_i * P_i averaged over sequences:
        f_i = E / (K * T) * (tokens of the sequence routed to i), P_i = mean over its tokens of the
        scores normalised to sum to 1. Padding takes no part."""
        E, K = self.cfg.n_routed_experts, self.cfg.top_k
        m = torch.ones(B * T, device=scores.device) if real is None else real.float()
        m = m.view(B, T, 1)
        n = m.sum(1).clamp(min=1)  # (B, 1) real tokens per sequence
        chosen = torch.zeros_like(scores).scatter_(1, indices, 1.0).view(B, T, E)
        f = (chosen * m).sum(1) * E / (K * n)  # (B, E)
        p = ((scores / scores.sum(-1, keepdim=True)).view(B, T, E) * m).sum(1) / n  # (B, E)
        return self.cfg.aux_loss_alpha * (f * p).sum(1).mean()

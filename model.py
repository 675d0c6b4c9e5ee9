"""
The r1-mini transformer: a decoder, dense or MoE, that loads and saves Hugging Face checkpoints.

Design notes:
1. One architecture covers Qwen2, Llama and Qwen3: RMSNorm, RoPE, grouped-query attention, SwiGLU.
   The differences are three flags: `qkv_bias` (Qwen2), `o_bias` (Llama/Qwen3 `attention_bias`),
   `qk_norm` (Qwen3). Numerics follow transformers' reference code line for line (RMSNorm in fp32
   then cast back then times weight; half-split RoPE with cos/sin computed in fp32; causal SDPA),
   so logits agree with theirs to float rounding.
2. Module names are the Hugging Face ones (`o_proj`, `down_proj`, `input_layernorm`, ...), so a
   checkpoint key is just "model." + our key (`lm_head.weight` excepted), with one exception: q, k
   and v are one matmul (`qkv_proj`), and so are gate and up (`gate_up_proj`), because a decode
   step is a few dozen small matmuls and one of the summed width costs less than two or three.
   Loading concatenates HF's parts, saving splits them back (checkpoint.py, which also keeps
   loading and saving atomic and refuses anything that would give a silently wrong model).
3. Padding and caching share one mechanism: a boolean `valid` mask over token slots. Positions are
   counted over valid slots only, so left padding, ragged batches and rolled-back tokens (budget
   forcing) all get the positions a lone, unpadded sequence would get. The KV cache is preallocated
   once and filled in place, keys transposed (`[layers, B, n_kv_heads, head_dim, max_len]`), so that
   a decode step's scores are one batched matmul over contiguous blocks, which CPUs run far faster
   than against `(max_len, head_dim)` keys at decode shapes (docs/sampling.md measures it).
4. The feed-forward layers, the dense MLP and the MoE with its balancing, are moe.py's.
5. The training losses need log p(target) at some positions, not logits. `forward(..., targets=,
   where=)` returns them through linear_token_logprobs (kernels/), so the lm_head runs inside forward:
   under DDP or FSDP (parallel.py) forward is the one call the wrapper sees, and FSDP gathers a
   module's weights only for its own forward.
6. Sampling decodes with `Decoder`, not forward. One token per row is a few dozen small matmuls,
   and its cost is the number of PyTorch calls around them (on CPU a small call costs several
   times more in a decode loop than alone: the weights evict the caches between calls;
   docs/sampling.md). Decoder is forward's arithmetic in fewer calls: no module calls, mask and
   positions read from the cache, RoPE by one roll, residual adds inside the projections'
   matmuls. On CPU it multiplies by (in, out) copies of the weights, made per generate call so
   that they never outlive an update. tests/test_model.py checks it against forward for every
   architecture here.
"""

import contextlib
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F
import torch.utils.checkpoint

import checkpoint
from moe import MLP, Gate, MoE, Recompute
from r1_kernels import linear_token_logprobs  # kernels/logprobs.py (r1_kernels.py: why the two names)
from checkpoint import load_tokenizer  # noqa: F401 (the public API: from model import load_tokenizer)


@dataclass
class ModelConfig:
    vocab_size: int = 1024
    dim: int = 256
    n_layers: int = 4
    n_heads: int = 8
    n_kv_heads: int = 2
    head_dim: int = 0  # 0 means dim // n_heads
    inter_dim: int = 688  # SwiGLU hidden width
    norm_eps: float = 1e-6
    rope_theta: float = 10000.0
    max_seq_len: int = 2048
    qkv_bias: bool = True  # Qwen2
    o_bias: bool = False  # Llama / Qwen3 `attention_bias` also puts a bias on o_proj
    qk_norm: bool = False  # Qwen3
    tie_embeddings: bool = True
    # moe (DeepSeek-V3 style; n_routed_experts = 0: every layer dense)
    n_routed_experts: int = 0
    n_shared_experts: int = 0  # always-on experts, run as one SwiGLU of width shared_inter_dim
    top_k: int = 2  # routed experts per token
    moe_inter_dim: int = 0  # width of one routed expert (0: inter_dim)
    shared_inter_dim: int = 0  # width of the shared experts together (0: n_shared_experts * moe_inter_dim)
    shared_expert_gate: bool = False  # qwen2_moe: the shared output is scaled by sigmoid(w . x)
    score_func: str = "softmax"  # router scores: "softmax" (Qwen) or "sigmoid" (DeepSeek-V3)
    norm_topk_prob: bool = True  # normalise the top_k gate weights to sum to 1
    routed_scaling_factor: float = 1.0  # gate weights are multiplied by this
    n_groups: int = 1  # group-limited routing: experts form n_groups groups, a token picks from topk_groups
    topk_groups: int = 1
    first_k_dense: int = 0  # the first layers stay dense (DeepSeek-V3 first_k_dense_replace)
    moe_every: int = 1  # MoE at layers i with (i + 1) % moe_every == 0 (Qwen decoder_sparse_step)
    dense_layers: tuple = ()  # layers that stay dense whatever the rules above (Qwen mlp_only_layers)
    bias_update_speed: float = 1e-3  # gamma of auxiliary-loss-free balancing (0: off)
    aux_loss_alpha: float = 0.0  # sequence-wise auxiliary balance loss (0: off)

    def is_moe(self, layer):
        return (self.n_routed_experts > 0 and layer >= self.first_k_dense and (layer + 1) % self.moe_every == 0
                and layer not in self.dense_layers)

    def __post_init__(self):
        for name in ("vocab_size", "dim", "n_layers", "n_heads", "n_kv_heads", "inter_dim", "max_seq_len"):
            v = getattr(self, name)
            if type(v) is not int or v < 1:
                raise ValueError(f"{name} must be a positive integer, got {v!r}")
        if self.head_dim == 0:
            self.head_dim = self.dim // self.n_heads
        if type(self.head_dim) is not int or self.head_dim < 2 or self.head_dim % 2:
            raise ValueError(f"head_dim must be a positive even integer (RoPE rotates pairs), got {self.head_dim!r}")
        for name in ("norm_eps", "rope_theta"):
            v = getattr(self, name)
            if type(v) not in (int, float) or not 0 < v < float("inf"):
                raise ValueError(f"{name} must be a positive number, got {v!r}")
        if self.n_heads % self.n_kv_heads:
            raise ValueError(f"n_heads={self.n_heads} is not a multiple of n_kv_heads={self.n_kv_heads}")
        self.dense_layers = tuple(self.dense_layers)
        if self.n_routed_experts:
            self.moe_inter_dim = self.moe_inter_dim or self.inter_dim
            self.shared_inter_dim = self.shared_inter_dim or self.n_shared_experts * self.moe_inter_dim
            if not 1 <= self.top_k <= self.n_routed_experts:
                raise ValueError(f"top_k={self.top_k} must be between 1 and n_routed_experts={self.n_routed_experts}")
            if self.score_func not in ("softmax", "sigmoid"):
                raise ValueError(f"score_func must be 'softmax' or 'sigmoid', got {self.score_func!r}")
            if self.n_routed_experts % self.n_groups or not 1 <= self.topk_groups <= self.n_groups:
                raise ValueError(f"n_groups={self.n_groups} must divide n_routed_experts={self.n_routed_experts}, "
                                 f"and topk_groups={self.topk_groups} be between 1 and n_groups")
            if self.top_k > self.topk_groups * self.n_routed_experts // self.n_groups:
                raise ValueError(f"top_k={self.top_k} is more than the experts in topk_groups={self.topk_groups} groups")


def rms_norm(x, weight, eps):
    """weight * x / rms(x), computed in fp32 and cast back before the weight, as transformers does."""
    y = x.float()  # x itself when it is fp32
    y = y * y.pow(2).mean(-1, keepdim=True).add_(eps).rsqrt_()  # in place where autograd allows: fewer allocations
    return weight * (y if y.dtype == x.dtype else y.to(x.dtype))


class RMSNorm(nn.Module):
    def __init__(self, dim, eps):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x):
        return rms_norm(x, self.weight, self.eps)


def rope_tables(max_len, head_dim, theta, device, dtype):
    """cos/sin for positions 0..max_len-1 -> two (max_len, head_dim) tables, computed in fp32.

    The sin table carries rotate_half's sign (its first half negated), so apply_rope needs no
    negation: x2 * -s is exactly -x2 * s, bit for bit transformers' result."""
    inv_freq = 1.0 / theta ** (torch.arange(0, head_dim, 2, device=device).float() / head_dim)
    freqs = torch.arange(max_len, device=device).float()[:, None] * inv_freq  # (max_len, hd/2)
    emb = torch.cat([freqs, freqs], dim=-1)  # half-split layout, not interleaved
    sign = torch.cat([-torch.ones_like(inv_freq), torch.ones_like(inv_freq)])
    return emb.cos().to(dtype), (emb.sin() * sign).to(dtype)


def apply_rope(x, cos, sin):
    """x * cos + rotate_half(x) * sin, rotate_half(x) = [-x2, x1]: a roll by half, the minus inside sin."""
    return x * cos + x.roll(x.shape[-1] // 2, -1) * sin


class KVCache:
    """Preallocated keys `[layers, B, n_kv_heads, head_dim, max_len]` (transposed: design note 3) and
    values `[layers, B, n_kv_heads, max_len, head_dim]`, filled in place one step at a time, for
    `batch_size` rows of which `rows` are in use (all by default). All rows share the slot counter
    `len`; `valid[b, s]` says whether slot s of row b holds a real token (False for left padding and
    for tokens rolled back by budget forcing) and `n_valid[b]` counts them: the position the row's
    next token gets."""

    def __init__(self, cfg, batch_size, max_len, device=None, dtype=torch.float32, rows=None):
        shape = (cfg.n_layers, batch_size, cfg.n_kv_heads)
        self.k_buf = torch.zeros(*shape, cfg.head_dim, max_len, device=device, dtype=dtype)
        self.v_buf = torch.zeros(*shape, max_len, cfg.head_dim, device=device, dtype=dtype)
        rows = batch_size if rows is None else rows
        self.k, self.v = self.k_buf[:, :rows], self.v_buf[:, :rows]  # the rows in use
        self.valid = torch.zeros(rows, max_len, dtype=torch.bool, device=device)
        self.n_valid = torch.zeros(rows, dtype=torch.long, device=device)
        self.len = 0

    def select_rows(self, rows):
        """Keep these rows, in this order (rows: LongTensor, repeats allowed, at most batch_size): drops
        finished rows so later steps skip them, or copies a prompt's prefilled row to each of its
        samples. Only the `len` slots written so far are copied, within the memory allocated at the
        start (on CPU, touching fresh pages of a large buffer costs more than the copy itself)."""
        n, s = len(rows), self.len
        k, v = self.k[:, rows, ..., :s], self.v[:, rows, :, :s]  # gathered copies, so rows may overlap
        self.k, self.v = self.k_buf[:, :n], self.v_buf[:, :n]
        self.k[..., :s], self.v[:, :, :, :s] = k, v
        self.valid, self.n_valid = self.valid[rows], self.n_valid[rows]


class Attention(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.cfg = cfg
        hd = cfg.head_dim
        # q, k and v as one matmul, output rows [q | k | v] (design note 2)
        self.qkv_proj = nn.Linear(cfg.dim, (cfg.n_heads + 2 * cfg.n_kv_heads) * hd, bias=cfg.qkv_bias)
        self.o_proj = nn.Linear(cfg.n_heads * hd, cfg.dim, bias=cfg.o_bias)
        if cfg.qk_norm:
            self.q_norm = RMSNorm(hd, cfg.norm_eps)
            self.k_norm = RMSNorm(hd, cfg.norm_eps)

    @staticmethod
    def mask(cfg, key_valid, start, T, dtype):
        """The additive mask (B, 1, rep * T, S) of T queries at slots start.. over S = start + T keys,
        key_valid (B, S) of them real: a query sees earlier real slots, and always itself (a pad row
        never softmaxes over nothing); rep copies, as forward folds the heads of a kv head into T."""
        qs = torch.arange(start, start + T, device=key_valid.device)[:, None]  # query slots
        ks = torch.arange(start + T, device=key_valid.device)[None, :]  # key slots
        allowed = ((ks <= qs) & key_valid[:, None, None, :]) | (ks == qs)  # (B, 1, T, S)
        allowed = allowed.repeat(1, 1, cfg.n_heads // cfg.n_kv_heads, 1)
        return torch.zeros(allowed.shape, dtype=dtype, device=key_valid.device).masked_fill_(~allowed, float("-inf"))

    def forward(self, x, cos, sin, mask, cache=None, layer=0):
        B, T, _ = x.shape
        hd, nh, nkv = self.cfg.head_dim, self.cfg.n_heads, self.cfg.n_kv_heads
        qkv = self.qkv_proj(x).view(B, T, nh + 2 * nkv, hd)
        qk, v = qkv[:, :, : nh + nkv], qkv[:, :, nh + nkv :]  # (B, T, heads, hd)
        if self.cfg.qk_norm:
            qk = torch.cat([self.q_norm(qk[:, :, :nh]), self.k_norm(qk[:, :, nh:])], dim=2)
        qk = apply_rope(qk.transpose(1, 2), cos, sin)  # q and k rotated in one call
        q, k, v = qk[:, :nh], qk[:, nh:], v.transpose(1, 2)  # (B, heads, T, hd)
        if cache is not None:  # write this step's keys/values, attend over everything so far
            s = cache.len
            cache.k[layer, ..., s : s + T] = k.transpose(-1, -2)
            cache.v[layer, :, :, s : s + T] = v
            k, v = cache.k[layer, ..., : s + T].transpose(-1, -2), cache.v[layer, :, :, : s + T]
        rep = nh // nkv
        if mask is None:
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)
        else:  # fold the query heads that share a kv head into the query axis: one attention per kv head
            # (faster than enable_gqa on CPU: docs/sampling.md; Attention.mask repeated the mask to match)
            y = F.scaled_dot_product_attention(q.reshape(B, nkv, rep * T, hd), k, v, attn_mask=mask)
        return self.o_proj(y.reshape(B, nh, T, hd).transpose(1, 2).reshape(B, T, nh * hd))


class Block(nn.Module):
    def __init__(self, cfg, layer=0):
        super().__init__()
        self.input_layernorm = RMSNorm(cfg.dim, cfg.norm_eps)
        self.self_attn = Attention(cfg)
        self.post_attention_layernorm = RMSNorm(cfg.dim, cfg.norm_eps)
        self.mlp = MoE(cfg) if cfg.is_moe(layer) else MLP(cfg.dim, cfg.inter_dim)

    def forward(self, x, cos, sin, mask, cache=None, layer=0, load_mask=None):
        x = x + self.self_attn(self.input_layernorm(x), cos, sin, mask, cache, layer)
        h = self.post_attention_layernorm(x)
        return x + (self.mlp(h, load_mask) if isinstance(self.mlp, MoE) else self.mlp(h))


class Transformer(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.cfg = cfg
        self.embed_tokens = nn.Embedding(cfg.vocab_size, cfg.dim)
        self.layers = nn.ModuleList(Block(cfg, i) for i in range(cfg.n_layers))
        self.norm = RMSNorm(cfg.dim, cfg.norm_eps)
        self.lm_head = nn.Linear(cfg.dim, cfg.vocab_size, bias=False)
        if cfg.tie_embeddings:
            self.lm_head.weight = self.embed_tokens.weight
        self.hf_config = {}  # the config.json we were loaded from, kept so saving preserves its extra fields
        self.rope = None  # (cos, sin) tables, built on first use on the weights' device and dtype
        self.grad_ckpt = False  # gradient checkpointing per block: trade compute for activation memory
        self.apply(self._init_weights)

    def _init_weights(self, m):
        if isinstance(m, (nn.Linear, nn.Embedding)):
            nn.init.normal_(m.weight, std=0.02)
        if isinstance(m, nn.Linear) and m.bias is not None:
            nn.init.zeros_(m.bias)
        if isinstance(m, Gate):
            nn.init.normal_(m.weight, std=0.02)

    def new_cache(self, batch_size, max_len, rows=None):
        p = self.embed_tokens.weight
        return KVCache(self.cfg, batch_size, max_len, device=p.device, dtype=p.dtype, rows=rows)

    @torch.no_grad()
    def update_expert_bias(self, reduce=None):
        """Auxiliary-loss-free balancing (DeepSeek-V3), once after each optimizer step: each MoE layer's
        bias moves by gamma * sign(mean_load - load), the load being the tokens training forwards routed
        to each expert since the last call (reduce sums it over processes: parallel.summed). Returns the
        log fields, max/mean load and dead experts per MoE layer; {} for a dense model."""
        layers = [m for m in self.modules() if isinstance(m, MoE) and m.load is not None]
        if not layers:
            return {}
        load = torch.stack([m.load for m in layers])  # (MoE layers, experts)
        load = (load if reduce is None else reduce(load)).float()
        for m, n in zip(layers, load):
            bias = m.gate.e_score_correction_bias
            bias += m.cfg.bias_update_speed * torch.sign(n.mean() - n).to(bias.device)
            m.load = None
        load = load.cpu()
        return {"moe_max_over_mean": [round((x.max() / x.mean().clamp(min=1e-9)).item(), 3) for x in load],
                "moe_dead_experts": [int((x == 0).sum()) for x in load]}

    def rope_tables(self):
        """The (cos, sin) tables for every position, built on first use on the weights' device and dtype."""
        w = self.embed_tokens.weight
        if self.rope is None or self.rope[0].device != w.device or self.rope[0].dtype != w.dtype:
            self.rope = rope_tables(self.cfg.max_seq_len, self.cfg.head_dim, self.cfg.rope_theta, w.device, w.dtype)
        return self.rope

    def decoder(self):
        """The decode step sampling runs, one token per row against a KVCache (Decoder). Build one per
        generate call: on CPU it holds copies of the weights, so it must not outlive an update."""
        return Decoder(self)

    def forward(self, idx, valid=None, targets=None, where=None, temperature=1.0, with_entropy=False, load_mask=None):
        """Two call shapes, both through the body (hidden, whose arguments idx, valid, load_mask are):

            logits = model(idx, valid)                      # (B, T, vocab) in the model's dtype
            logp = model(idx, valid, targets=, where=)      # training: (n,) fp32 (design note 5)

        targets, where: (B, T) next-token ids and a bool mask of the positions to score; the result is
        log softmax(logits / temperature)[targets] at the n positions of `where`, row-major (with_entropy:
        (log-probs, entropies)), the lm_head fused with the log-softmax.
        """
        h = self.hidden(idx, valid, load_mask=load_mask)
        if targets is None:
            return self.lm_head(h)
        return linear_token_logprobs(h[where], self.lm_head.weight, targets[where], temperature, with_entropy)

    def hidden(self, idx, valid=None, cache=None, load_mask=None):
        """The body: the final normed hidden states (B, T, dim).

        Args:
            idx: (B, T) token ids.
            valid: (B, T) bool, False for padding slots (None: all real). Pad slots get garbage
                outputs that callers ignore; they never influence real tokens.
            cache: a KVCache to continue (sampling's prefill); idx then fills slots [cache.len, cache.len + T).
            load_mask: (B, T) bool, the tokens that count toward MoE expert load (None: valid, or all).
        """
        B, T = idx.shape
        if valid is None and cache is None:
            if T > self.cfg.max_seq_len:
                raise ValueError(f"sequence of {T} tokens is longer than max_seq_len={self.cfg.max_seq_len}")
            positions, mask = torch.arange(T, device=idx.device).expand(B, T), None  # plain causal
        else:
            if valid is None:
                valid = torch.ones(B, T, dtype=torch.bool, device=idx.device)
            start = 0 if cache is None else cache.len
            prev = 0 if cache is None else cache.n_valid[:, None]
            positions = (prev + valid.long().cumsum(1) - 1).clamp(min=0)  # (B, T)
            if int(positions.max()) >= self.cfg.max_seq_len:
                raise ValueError(f"sequence longer than max_seq_len={self.cfg.max_seq_len}")
            key_valid = valid
            if cache is not None:
                if start + T > cache.v.shape[3]:
                    raise ValueError(f"KV cache of {cache.v.shape[3]} slots is full")
                cache.valid[:, start : start + T] = valid
                cache.n_valid += valid.sum(1)
                key_valid = cache.valid[:, : start + T]
            mask = Attention.mask(self.cfg, key_valid, start, T, self.embed_tokens.weight.dtype)  # once, for all layers
        cos, sin = (table[positions][:, None] for table in self.rope_tables())  # (B, 1, T, hd)
        x = self.embed_tokens(idx)
        load_mask = valid if load_mask is None else load_mask
        for i, block in enumerate(self.layers):
            if self.grad_ckpt and self.training and torch.is_grad_enabled():  # recompute activations in backward
                # (in the recompute, MoE layers do not count their load a second time: Recompute)
                x = torch.utils.checkpoint.checkpoint(block, x, cos, sin, mask, None, 0, load_mask, use_reentrant=False,
                                                      context_fn=lambda: (contextlib.nullcontext(), Recompute()))
            else:
                x = block(x, cos, sin, mask, cache, i, load_mask)
        if cache is not None:
            cache.len += T
        return self.norm(x)

    # ----------------------------------------------------------------------------- checkpoints

    @classmethod
    def from_pretrained(cls, path, dtype=None, device=None):
        """Load a local Hugging Face directory (qwen2, llama, qwen3, qwen2_moe, qwen3_moe) or one of our
        own checkpoints (checkpoint.py). dtype None keeps the dtype the tensors were stored in."""
        return checkpoint.load(cls, ModelConfig, path, dtype, device)

    def save_pretrained(self, path, tokenizer=None, train_state=None, state_dict=None):
        """Write config.json + model.safetensors (+ tokenizer.json, + train_state.pt), atomically, in HF names.

        train_state: anything torch.save takes (optimizer, step, RNG), kept in the same directory so
        weights and the state to resume them can never come from two different saves.
        state_dict: the weights to write, when this module holds only a shard of them (FSDP: the full
            state dict gathered by parallel.save); None writes this module's own.
        """
        checkpoint.save(self, path, tokenizer, train_state, state_dict)


class Decoder:
    """The decode step (design note 6): `lm_head(hidden(tok[:, None], valid, cache))` for one query
    per row, the query heads sharing a kv head as the rows of one batched matmul against the cache's
    transposed keys. On CPU the projections multiply by (in, out) copies of the weights made here
    (MKL's transposed-weight GEMM is slower at a few rows), elsewhere by views of the model's own.

        decode = model.decoder()              # per generate call
        logits = decode(tok, valid, cache)    # tok (B,), valid (B,) -> logits (B, vocab)
    """

    def __init__(self, model):
        self.model, self.cfg = model, model.cfg
        w = model.embed_tokens.weight
        copy = w.device.type == "cpu"  # (in, out) copies: one more copy of the projections while sampling
        lay = lambda lin: lin.weight.t().contiguous() if copy else lin.weight.t()  # noqa: E731
        self.layers = []
        for blk in model.layers:
            att, mlp = blk.self_attn, blk.mlp
            dense = not isinstance(mlp, MoE)
            self.layers.append(dict(
                ln1=blk.input_layernorm.weight, w_qkv=lay(att.qkv_proj), b_qkv=att.qkv_proj.bias,
                q_norm=att.q_norm if self.cfg.qk_norm else None, k_norm=att.k_norm if self.cfg.qk_norm else None,
                w_o=lay(att.o_proj), b_o=att.o_proj.bias, ln2=blk.post_attention_layernorm.weight,
                w_gate_up=lay(mlp.gate_up_proj) if dense else None, w_down=lay(mlp.down_proj) if dense else None,
                moe=None if dense else mlp))
        self.w_lm = lay(model.lm_head)
        self.cos, self.sin = (table[:, None] for table in model.rope_tables())  # (max_seq_len, 1, hd)
        self.fp32 = w.dtype == torch.float32

    @torch.no_grad()
    def __call__(self, tok, valid, cache):
        """Feed tok (B,) at the cache's next slot; valid (B,) is False for rows that have finished
        (their outputs are garbage; they are compacted away). Returns the next-token logits (B, vocab)."""
        cfg = self.cfg
        hd, nh, nkv, eps = cfg.head_dim, cfg.n_heads, cfg.n_kv_heads, cfg.norm_eps
        B, s = len(tok), cache.len
        if s >= cache.v.shape[3]:
            raise ValueError(f"KV cache of {cache.v.shape[3]} slots is full")
        pos = cache.n_valid  # (B,) this token's position (generate keeps it below max_seq_len)
        cache.valid[:, s] = valid
        cache.n_valid = pos + valid
        x = self.model.embed_tokens.weight[tok]  # (B, dim)
        mask = torch.where(cache.valid[:, None, : s + 1], 0.0, float("-inf")).to(x.dtype)  # (B, 1, S) additive
        mask = mask.repeat_interleave(nkv, 0)  # (B * n_kv, 1, S): one row per kv head (the batch of baddbmm)
        cos, sin = self.cos[pos], self.sin[pos]  # (B, 1, hd)
        keys = cache.k[..., : s + 1].flatten(1, 2).unbind(0)  # per layer (B * n_kv, hd, S), views
        values = cache.v[:, :, :, : s + 1].flatten(1, 2).unbind(0)  # per layer (B * n_kv, S, hd)
        new_k, new_v = cache.k[..., s].unbind(0), cache.v[:, :, :, s].unbind(0)  # per layer (B, n_kv, hd), slot s
        for w, k_all, v_all, k_slot, v_slot in zip(self.layers, keys, values, new_k, new_v):
            h = rms_norm(x, w["ln1"], eps)
            qkv = (h @ w["w_qkv"] if w["b_qkv"] is None else torch.addmm(w["b_qkv"], h, w["w_qkv"])).view(B, -1, hd)
            q, k, v = qkv.split([nh, nkv, nkv], 1)  # (B, heads, hd)
            if w["q_norm"] is not None:
                q, k = w["q_norm"](q), w["k_norm"](k)
            q = apply_rope(q, cos, sin)  # contiguous (B, n_heads, hd)
            k_slot.copy_(apply_rope(k, cos, sin))
            v_slot.copy_(v)
            att = torch.baddbmm(mask, q.view(B * nkv, nh // nkv, hd), k_all, alpha=hd**-0.5)  # (B * n_kv, rep, S)
            att = att.softmax(-1) if self.fp32 else att.float().softmax(-1).to(x.dtype)
            y = torch.bmm(att, v_all).view(B, nh * hd)
            x = torch.addmm(x, y, w["w_o"]) if w["b_o"] is None else torch.addmm(x + w["b_o"], y, w["w_o"])
            h = rms_norm(x, w["ln2"], eps)
            if w["moe"] is not None:
                x = x + w["moe"](h[:, None], valid[:, None])[:, 0]
            else:
                gate, up = (h @ w["w_gate_up"]).chunk(2, -1)
                x = torch.addmm(x, F.silu(gate) * up, w["w_down"])
        cache.len += 1
        return rms_norm(x, self.model.norm.weight, eps) @ self.w_lm


def n_params(model):
    return sum(p.numel() for p in model.parameters())


def n_active_params(model):
    """Parameters one token runs through: an MoE layer's routed experts count top_k times, not E."""
    n = n_params(model)
    for m in model.modules():
        if isinstance(m, MoE):
            n -= sum(p.numel() for p in m.experts.parameters()) * (1 - m.cfg.top_k / m.cfg.n_routed_experts)
    return int(n)



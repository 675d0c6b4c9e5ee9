"""
The r1-mini transformer: a dense decoder that loads and saves Hugging Face checkpoints.

Design notes:
1. One architecture covers Qwen2, Llama and Qwen3: RMSNorm, RoPE, grouped-query attention, SwiGLU.
   The differences are three flags: `qkv_bias` (Qwen2), `o_bias` (Llama/Qwen3 `attention_bias`),
   `qk_norm` (Qwen3). Numerics follow transformers' reference code line for line (RMSNorm in fp32
   then cast back then times weight; half-split RoPE with cos/sin computed in fp32; causal SDPA),
   so logits agree with theirs to float rounding.
2. Module names are the Hugging Face ones (`q_proj`, `gate_proj`, `input_layernorm`, ...), so a
   checkpoint key is just "model." + our key (`lm_head.weight` excepted): no renaming table.
3. Padding and caching share one mechanism: a boolean `valid` mask over token slots. Positions are
   counted over valid slots only, so left padding, ragged batches and rolled-back tokens (budget
   forcing) all get the positions a lone, unpadded sequence would get. The KV cache is preallocated
   once (`[layers, B, n_kv_heads, max_len, head_dim]`) and filled in place.
4. Loading never guesses: an unknown `model_type`, an unsupported feature (rope scaling, sliding
   window, MLP bias), a missing, unexpected or mis-shaped tensor is a one-line error, never a
   silently random model. Nothing here downloads anything.
5. Saving survives a kill at any instant: write into PATH.tmp, move PATH aside to PATH.old, move
   PATH.tmp to PATH, delete PATH.old. A kill between the two moves leaves PATH.old complete and no
   PATH, and loading falls back to it (`checkpoint_dir`); PATH.tmp is never read.
6. Loading refuses what would silently give a wrong model: weights that are not finite, a file that
   is not what its name says (a config that is not a JSON object, a truncated safetensors).
7. The training losses need log p(target) at some positions, not logits. `forward(..., targets=,
   where=)` returns them through kernels.linear_token_logprobs, so the lm_head runs inside forward:
   under DDP or FSDP (parallel.py) forward is the one call the wrapper sees, and FSDP gathers a
   module's weights only for its own forward.
"""

import json
import os
import shutil
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F
import torch.utils.checkpoint

import kernels


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


class RMSNorm(nn.Module):
    def __init__(self, dim, eps):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x):
        dtype = x.dtype
        x = x.float()
        x = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * x.to(dtype)


def rope_tables(max_len, head_dim, theta, device, dtype):
    """cos/sin for positions 0..max_len-1 -> two (max_len, head_dim) tables, computed in fp32."""
    inv_freq = 1.0 / theta ** (torch.arange(0, head_dim, 2, device=device).float() / head_dim)
    freqs = torch.arange(max_len, device=device).float()[:, None] * inv_freq  # (max_len, hd/2)
    emb = torch.cat([freqs, freqs], dim=-1)  # half-split layout, not interleaved
    return emb.cos().to(dtype), emb.sin().to(dtype)


def apply_rope(x, cos, sin):
    x1, x2 = x.chunk(2, dim=-1)
    return x * cos + torch.cat([-x2, x1], dim=-1) * sin


class KVCache:
    """Preallocated keys and values for every layer, filled in place one step at a time.

    All rows share the slot counter `len`; `valid[b, s]` says whether slot s of row b holds a real
    token (False for left padding and for tokens rolled back by budget forcing) and `n_valid[b]`
    counts them, which is the position the row's next token gets.
    """

    def __init__(self, cfg, batch_size, max_len, device=None, dtype=torch.float32):
        shape = (cfg.n_layers, batch_size, cfg.n_kv_heads, max_len, cfg.head_dim)
        self.k = torch.zeros(shape, device=device, dtype=dtype)
        self.v = torch.zeros(shape, device=device, dtype=dtype)
        self.valid = torch.zeros(batch_size, max_len, dtype=torch.bool, device=device)
        self.n_valid = torch.zeros(batch_size, dtype=torch.long, device=device)
        self.len = 0

    def keep_rows(self, rows):
        """Drop finished rows (rows: LongTensor of the rows to keep) so later steps skip them."""
        self.k, self.v = self.k[:, rows], self.v[:, rows]
        self.valid, self.n_valid = self.valid[rows], self.n_valid[rows]


class Attention(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.cfg = cfg
        hd = cfg.head_dim
        self.q_proj = nn.Linear(cfg.dim, cfg.n_heads * hd, bias=cfg.qkv_bias)
        self.k_proj = nn.Linear(cfg.dim, cfg.n_kv_heads * hd, bias=cfg.qkv_bias)
        self.v_proj = nn.Linear(cfg.dim, cfg.n_kv_heads * hd, bias=cfg.qkv_bias)
        self.o_proj = nn.Linear(cfg.n_heads * hd, cfg.dim, bias=cfg.o_bias)
        if cfg.qk_norm:
            self.q_norm = RMSNorm(hd, cfg.norm_eps)
            self.k_norm = RMSNorm(hd, cfg.norm_eps)

    def forward(self, x, cos, sin, mask, cache=None, layer=0):
        B, T, _ = x.shape
        hd = self.cfg.head_dim
        q = self.q_proj(x).view(B, T, -1, hd)  # (B, T, n_heads, hd)
        k = self.k_proj(x).view(B, T, -1, hd)  # (B, T, n_kv, hd)
        v = self.v_proj(x).view(B, T, -1, hd)
        if self.cfg.qk_norm:
            q, k = self.q_norm(q), self.k_norm(k)
        q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)  # (B, heads, T, hd)
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        if cache is not None:  # write this step's keys/values, attend over everything so far
            s = cache.len
            cache.k[layer, :, :, s : s + T] = k
            cache.v[layer, :, :, s : s + T] = v
            k, v = cache.k[layer, :, :, : s + T], cache.v[layer, :, :, : s + T]
        if mask is None:
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)
        else:  # fold the query heads that share a kv head into the query axis: one attention per kv head
            rep = self.cfg.n_heads // self.cfg.n_kv_heads  # (about 2x faster than enable_gqa when decoding on CPU;
            # the caller repeated the mask rep times along the query axis)
            y = F.scaled_dot_product_attention(q.reshape(B, -1, rep * T, hd), k, v, attn_mask=mask)
        return self.o_proj(y.reshape(B, -1, T, hd).transpose(1, 2).reshape(B, T, -1))


class MLP(nn.Module):
    """SwiGLU: down(silu(gate(x)) * up(x))."""

    def __init__(self, dim, inter_dim):
        super().__init__()
        self.gate_proj = nn.Linear(dim, inter_dim, bias=False)
        self.up_proj = nn.Linear(dim, inter_dim, bias=False)
        self.down_proj = nn.Linear(inter_dim, dim, bias=False)

    def forward(self, x):
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class Block(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.input_layernorm = RMSNorm(cfg.dim, cfg.norm_eps)
        self.self_attn = Attention(cfg)
        self.post_attention_layernorm = RMSNorm(cfg.dim, cfg.norm_eps)
        self.mlp = MLP(cfg.dim, cfg.inter_dim)  # the MoE layers will slot in here

    def forward(self, x, cos, sin, mask, cache=None, layer=0):
        x = x + self.self_attn(self.input_layernorm(x), cos, sin, mask, cache, layer)
        return x + self.mlp(self.post_attention_layernorm(x))


class Transformer(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.cfg = cfg
        self.embed_tokens = nn.Embedding(cfg.vocab_size, cfg.dim)
        self.layers = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layers))
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

    def new_cache(self, batch_size, max_len):
        p = self.embed_tokens.weight
        return KVCache(self.cfg, batch_size, max_len, device=p.device, dtype=p.dtype)

    def forward(self, idx, valid=None, cache=None, return_hidden=False, targets=None, where=None, temperature=1.0,
                with_entropy=False):
        """Run the decoder.

        Args:
            idx: (B, T) token ids.
            valid: (B, T) bool, False for padding slots (None: all real). Pad slots get garbage
                outputs that callers ignore; they never influence real tokens.
            cache: a KVCache to continue; idx then fills slots [cache.len, cache.len + T).
            return_hidden: return the final normed hidden states (B, T, dim) instead of logits.
            targets, where: (B, T) next-token ids and a bool mask of the positions to score: return
                log softmax(logits / temperature)[targets] at those positions instead of logits (design note 7).
        Returns:
            logits (B, T, vocab) in the model's dtype, or hidden states, or log-probs (n,) fp32 for the
            n positions of `where` in row-major order (with_entropy: (log-probs, entropies)).
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
            if cache is not None:
                if start + T > cache.k.shape[3]:
                    raise ValueError(f"KV cache of {cache.k.shape[3]} slots is full")
                cache.valid[:, start : start + T] = valid
                cache.n_valid += valid.sum(1)
                key_valid = cache.valid[:, : start + T]
            else:
                key_valid = valid
            qs = torch.arange(start, start + T, device=idx.device)[:, None]  # query slots
            ks = torch.arange(start + T, device=idx.device)[None, :]  # key slots
            # a query sees earlier valid slots, and always itself (so pad rows never softmax over nothing)
            mask = ((ks <= qs) & key_valid[:, None, None, :]) | (ks == qs)  # (B, 1, T, S)
            mask = mask.repeat(1, 1, self.cfg.n_heads // self.cfg.n_kv_heads, 1)  # (B, 1, rep*T, S), see Attention
        w = self.embed_tokens.weight
        if self.rope is None or self.rope[0].device != w.device or self.rope[0].dtype != w.dtype:
            self.rope = rope_tables(self.cfg.max_seq_len, self.cfg.head_dim, self.cfg.rope_theta, w.device, w.dtype)
        cos, sin = self.rope[0][positions][:, None], self.rope[1][positions][:, None]  # (B, 1, T, hd)
        x = self.embed_tokens(idx)
        for i, block in enumerate(self.layers):
            if self.grad_ckpt and self.training and torch.is_grad_enabled():  # recompute activations in backward
                x = torch.utils.checkpoint.checkpoint(block, x, cos, sin, mask, use_reentrant=False)
            else:
                x = block(x, cos, sin, mask, cache, i)
        if cache is not None:
            cache.len += T
        x = self.norm(x)
        if targets is not None:  # lm_head fused with the log-softmax: the (n, vocab) logits never exist in full
            return kernels.linear_token_logprobs(x[where], self.lm_head.weight, targets[where], temperature,
                                                 with_entropy)
        return x if return_hidden else self.lm_head(x)

    # ----------------------------------------------------------------------------- checkpoints

    @classmethod
    def from_pretrained(cls, path, dtype=None, device=None):
        """Load a local Hugging Face directory (qwen2, llama, qwen3) or one of our own checkpoints.

        dtype None keeps the dtype the tensors were stored in.
        """
        path = checkpoint_dir(path)
        hf = read_hf_config(path)
        cfg = config_from_hf(hf, path)
        tensors = read_safetensors(path)
        with torch.device("meta"):
            model = cls(cfg)
        expected = {hf_key(k): v for k, v in model.state_dict().items()}
        if cfg.tie_embeddings:
            expected.pop("lm_head.weight")
            tensors.pop("lm_head.weight", None)  # some tied checkpoints store it anyway
        tensors = {k: v for k, v in tensors.items() if not k.endswith("rotary_emb.inv_freq")}
        missing = sorted(set(expected) - set(tensors))
        unexpected = sorted(set(tensors) - set(expected))
        if missing:
            raise ValueError(f"{path}: checkpoint is missing {len(missing)} tensors, e.g. {missing[:3]}")
        if unexpected:
            raise ValueError(f"{path}: checkpoint has {len(unexpected)} unexpected tensors, e.g. {unexpected[:3]}")
        for k, v in expected.items():
            if tensors[k].shape != v.shape:
                raise ValueError(f"{path}: tensor {k} has shape {tuple(tensors[k].shape)}, expected {tuple(v.shape)}")
            if tensors[k].is_floating_point() and not torch.isfinite(tensors[k]).all():
                raise ValueError(f"{path}: tensor {k} holds NaN or infinite values; refusing a broken checkpoint")
        state = {}
        for k, t in tensors.items():
            t = t.to(device=device, dtype=dtype if dtype is not None else t.dtype)
            state[k[len("model.") :] if k.startswith("model.") else k] = t
        model.load_state_dict(state, strict=False, assign=True)
        if cfg.tie_embeddings:
            model.lm_head.weight = model.embed_tokens.weight
        model.hf_config = hf
        return model.eval()

    def save_pretrained(self, path, tokenizer=None, train_state=None, state_dict=None):
        """Write config.json + model.safetensors (+ tokenizer.json, + train_state.pt), atomically, in HF names.

        train_state: anything torch.save takes (optimizer, step, RNG), kept in the same directory so
        weights and the state to resume them can never come from two different saves.
        state_dict: the weights to write, when this module holds only a shard of them (FSDP: the full
            state dict gathered by parallel.save); None writes this module's own.
        """
        from safetensors.torch import save_file

        path = os.path.abspath(path)
        tmp, old = path + ".tmp", path + ".old"
        shutil.rmtree(tmp, ignore_errors=True)
        os.makedirs(tmp)
        state = self.state_dict() if state_dict is None else state_dict
        state = {hf_key(k): v.detach().contiguous().cpu() for k, v in state.items()}
        if self.cfg.tie_embeddings:
            state.pop("lm_head.weight", None)
        save_file(state, os.path.join(tmp, "model.safetensors"), metadata={"format": "pt"})
        dtype = str(self.embed_tokens.weight.dtype).replace("torch.", "")
        with open(os.path.join(tmp, "config.json"), "w") as f:
            json.dump(config_to_hf(self.cfg, self.hf_config, dtype), f, indent=2)
        if tokenizer is not None:
            tokenizer.save(os.path.join(tmp, "tokenizer.json"))
        if train_state is not None:
            torch.save(train_state, os.path.join(tmp, "train_state.pt"))
        if os.path.exists(path):  # keep the old checkpoint until the new one is in place
            shutil.rmtree(old, ignore_errors=True)
            os.rename(path, old)
        os.rename(tmp, path)
        shutil.rmtree(old, ignore_errors=True)


def hf_key(key):
    """Our state-dict key -> Hugging Face key."""
    return key if key.startswith("lm_head.") else "model." + key


# --------------------------------------------------------------------------------- HF config I/O

SUPPORTED = ("qwen2", "llama", "qwen3")


def checkpoint_dir(path):
    """The local checkpoint directory for path: path itself, or path.old when a save was killed
    between its two moves (design note 5). An error says what to do when there is none."""
    path = str(path)
    if os.path.isdir(path):
        return path
    if not os.path.exists(path) and os.path.isdir(path + ".old"):
        return path + ".old"
    if os.path.exists(path):
        raise NotADirectoryError(f"{path}: not a directory (a checkpoint is a directory with config.json)")
    if not os.path.exists(path) and path.count("/") == 1 and not path.startswith((".", "/", "~")):
        raise FileNotFoundError(
            f"{path}: no such directory; it looks like a Hugging Face hub id, and r1-mini never downloads: "
            f"download the checkpoint first (e.g. `hf download {path} --local-dir DIR`) and pass DIR"
        )
    raise FileNotFoundError(f"{path}: no such checkpoint directory")


def read_hf_config(path):
    path = checkpoint_dir(path)
    f = os.path.join(path, "config.json")
    if not os.path.isfile(f):
        raise FileNotFoundError(f"{path}: no config.json in this directory")
    try:
        with open(f, encoding="utf-8") as fh:
            hf = json.load(fh)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{f}: not valid JSON ({e})") from None
    if not isinstance(hf, dict):
        raise ValueError(f"{f}: expected a JSON object, got {type(hf).__name__}")
    return hf


def config_from_hf(hf, path=""):
    mt = hf.get("model_type")
    if mt not in SUPPORTED:
        raise ValueError(f"{path}: unsupported model_type {mt!r}; supported: {', '.join(SUPPORTED)}")
    rope = hf.get("rope_parameters") or {}
    scaling = hf.get("rope_scaling") or {}
    rope_type = rope.get("rope_type", scaling.get("rope_type", scaling.get("type", "default")))
    if rope_type != "default":
        raise ValueError(f"{path}: rope scaling {rope_type!r} is not supported")
    if hf.get("use_sliding_window") or (mt != "qwen2" and hf.get("sliding_window")):
        raise ValueError(f"{path}: sliding-window attention is not supported")
    if hf.get("mlp_bias"):
        raise ValueError(f"{path}: mlp_bias=true is not supported")
    if hf.get("hidden_act", "silu") != "silu":
        raise ValueError(f"{path}: hidden_act {hf['hidden_act']!r} is not supported (only silu)")
    try:
        bias = bool(hf.get("attention_bias", False))
        return ModelConfig(
            vocab_size=hf["vocab_size"],
            dim=hf["hidden_size"],
            n_layers=hf["num_hidden_layers"],
            n_heads=hf["num_attention_heads"],
            n_kv_heads=hf.get("num_key_value_heads") or hf["num_attention_heads"],
            head_dim=hf.get("head_dim") or 0,
            inter_dim=hf["intermediate_size"],
            norm_eps=hf.get("rms_norm_eps", 1e-6),
            rope_theta=rope.get("rope_theta", hf.get("rope_theta", 10000.0)),
            max_seq_len=hf.get("max_position_embeddings", 2048),
            qkv_bias=True if mt == "qwen2" else bias,
            o_bias=False if mt == "qwen2" else bias,
            qk_norm=mt == "qwen3",
            tie_embeddings=hf.get("tie_word_embeddings", mt != "llama"),
        )
    except KeyError as e:
        raise ValueError(f"{path}: config.json lacks {e.args[0]!r}") from None
    except (TypeError, ValueError) as e:
        raise ValueError(f"{path}: config.json: {e}") from None


def config_to_hf(cfg, base, dtype):
    """A config.json transformers loads: our fields on top of the one we were loaded from, if any."""
    if cfg.qk_norm:
        mt = "qwen3"
    elif cfg.qkv_bias and not cfg.o_bias:
        mt = "qwen2"
    elif cfg.qkv_bias == cfg.o_bias:
        mt = "llama"
    else:
        raise ValueError("no HF architecture has o_proj bias without qkv bias")
    if cfg.qk_norm and cfg.qkv_bias != cfg.o_bias:
        raise ValueError("qwen3 puts a bias on all of q, k, v, o or none")
    arch = {"qwen2": "Qwen2ForCausalLM", "llama": "LlamaForCausalLM", "qwen3": "Qwen3ForCausalLM"}[mt]
    hf = {k: v for k, v in base.items() if k not in ("rope_scaling", "rope_parameters", "torch_dtype")}
    hf.update(
        architectures=[arch],
        model_type=mt,
        vocab_size=cfg.vocab_size,
        hidden_size=cfg.dim,
        num_hidden_layers=cfg.n_layers,
        num_attention_heads=cfg.n_heads,
        num_key_value_heads=cfg.n_kv_heads,
        head_dim=cfg.head_dim,
        intermediate_size=cfg.inter_dim,
        rms_norm_eps=cfg.norm_eps,
        rope_theta=cfg.rope_theta,
        rope_parameters={"rope_type": "default", "rope_theta": cfg.rope_theta},
        max_position_embeddings=cfg.max_seq_len,
        tie_word_embeddings=cfg.tie_embeddings,
        hidden_act="silu",
        dtype=dtype,
    )
    if mt != "qwen2":
        hf["attention_bias"] = cfg.qkv_bias
    else:
        hf.update(use_sliding_window=False, sliding_window=None)
    return hf


def read_safetensors(path):
    """All tensors of a single-file or sharded safetensors checkpoint, by name."""
    from safetensors.torch import load_file

    single = os.path.join(path, "model.safetensors")
    index = os.path.join(path, "model.safetensors.index.json")
    if os.path.isfile(single):
        files = [single]
    elif os.path.isfile(index):
        try:
            with open(index, encoding="utf-8") as f:
                files = sorted({os.path.join(path, v) for v in json.load(f)["weight_map"].values()})
        except (ValueError, KeyError, TypeError, AttributeError) as e:
            raise ValueError(f"{index}: not a safetensors index ({type(e).__name__}: {e})") from None
        for f in files:
            if not os.path.isfile(f):
                raise FileNotFoundError(f"{path}: shard {os.path.basename(f)} named in the index is missing")
    else:
        raise FileNotFoundError(f"{path}: no model.safetensors or model.safetensors.index.json")
    tensors = {}
    for f in files:
        try:
            tensors.update(load_file(f))
        except Exception as e:  # safetensors raises its own SafetensorError: truncated, corrupt, not safetensors
            raise ValueError(f"{f}: not a readable safetensors file ({e})") from None
    return tensors


def load_tokenizer(path):
    """The `tokenizers.Tokenizer` stored as path/tokenizer.json."""
    from tokenizers import Tokenizer

    f = os.path.join(checkpoint_dir(path), "tokenizer.json")
    if not os.path.isfile(f):
        raise FileNotFoundError(f"{path}: no tokenizer.json in this directory")
    try:
        return Tokenizer.from_file(f)
    except Exception as e:  # tokenizers raises a bare Exception for a file it cannot parse
        raise ValueError(f"{f}: not a readable tokenizer ({' '.join(str(e).split())})") from None


def check_tokenizer(tok, model, path=""):
    """The tokenizer's ids must all be rows of the model's embedding (a larger vocabulary would index
    past it); a model may have more rows than the tokenizer has tokens (Qwen pads to 151,936)."""
    n = tok.get_vocab_size(with_added_tokens=True)
    if n > model.cfg.vocab_size:
        raise ValueError(f"{path}: the tokenizer has {n} tokens, more than the model's vocabulary of "
                         f"{model.cfg.vocab_size}: they do not belong together")


def n_params(model):
    return sum(p.numel() for p in model.parameters())


if __name__ == "__main__":
    m = Transformer(ModelConfig())
    print(m.cfg, f"{n_params(m) / 1e6:.2f}M parameters", sep="\n")
    print(m(torch.randint(0, m.cfg.vocab_size, (2, 16))).shape)

"""
Checkpoints: Hugging Face directories in, Hugging Face directories out (model.py's from_pretrained
and save_pretrained are these functions).

Design notes:
1. Module names are the Hugging Face ones (`o_proj`, `down_proj`, `input_layernorm`, ...), so a
   checkpoint key is just "model." + our key (`lm_head.weight` excepted). The two fused projections
   (model.py design note 2) are the exception: our `qkv_proj` is HF's `q_proj`, `k_proj`, `v_proj`
   stacked along the output rows, our `gate_up_proj` is `gate_proj` then `up_proj` (`split_fused`);
   loading concatenates, saving splits, so files on disk always hold HF's names. MoE blocks use
   DeepSeek-V3's names (`mlp.gate.weight`, `mlp.gate.e_score_correction_bias`, `mlp.experts.N.*`,
   `mlp.shared_experts.*`); Qwen2-MoE's `mlp.shared_expert.*` (with its `shared_expert_gate`) is
   renamed on the way in and out.
2. Experts are stored either one tensor per expert (`mlp.experts.N.gate_proj.weight`, what
   transformers 5.23's save_pretrained writes for Qwen2/Qwen3-MoE) or fused 3-D
   (`mlp.experts.gate_up_proj` (E, 2 * I, D), gate rows first, and `mlp.experts.down_proj`
   (E, D, I), the layout of transformers 5.x modules in memory). Both load; we write per-expert.
3. MoE settings Qwen's config.json has no field for (sigmoid scores, groups, scaling, balancing) are
   written under DeepSeek-V3's names (`scoring_func`, `n_group`, `topk_group`,
   `routed_scaling_factor`, `n_shared_experts`, `first_k_dense_replace`) and read back from any
   model_type; every layer that stays dense is also listed in `mlp_only_layers`, which is how
   transformers learns of `first_k_dense`. transformers loads such a checkpoint with our
   logits when its routing is Qwen's (softmax, one group, scaling 1, zero bias).
4. Loading never guesses: an unknown `model_type`, an unsupported feature (rope scaling, sliding
   window, MLP bias, DeepSeek's MLA attention), a missing, unexpected or mis-shaped tensor is a
   one-line error, never a silently random model. Nothing here downloads anything. The one
   exception to "missing is an error" is the routers' balancing bias, which Qwen checkpoints lack:
   it starts at zero.
5. Saving survives a kill at any instant: write into PATH.tmp, move PATH aside to PATH.old, move
   PATH.tmp to PATH, delete PATH.old. A kill between the two moves leaves PATH.old complete and no
   PATH, and loading falls back to it (`checkpoint_dir`); PATH.tmp is never read.
6. Loading refuses what would silently give a wrong model: weights that are not finite, a file that
   is not what its name says (a config that is not a JSON object, a truncated safetensors).
"""

import json
import os
import shutil

import torch

def load(cls, config_cls, path, dtype=None, device=None):
    """A `cls` (Transformer) built from a `config_cls` (ModelConfig) with the weights of a local Hugging
    Face directory or one of our own checkpoints. dtype None keeps the dtype the tensors were stored in
    (the routers' balancing bias stays fp32 whatever dtype: its steps of gamma would vanish in bf16)."""
    path = checkpoint_dir(path)
    hf = read_hf_config(path)
    cfg = config_from_hf(hf, config_cls, path)
    tensors = experts_from_hf(read_safetensors(path))
    with torch.device("meta"):
        model = cls(cfg)
    expected = {hf_key(part): t for k, v in model.state_dict().items() for part, t in split_fused(k, v, cfg)}
    if cfg.tie_embeddings:
        expected.pop("lm_head.weight")
        tensors.pop("lm_head.weight", None)  # some tied checkpoints store it anyway
    tensors = {k: v for k, v in tensors.items() if not k.endswith("rotary_emb.inv_freq")}
    for k, v in expected.items():  # Qwen routers have no balancing bias: theirs starts at zero
        if k.endswith("e_score_correction_bias") and k not in tensors:
            tensors[k] = torch.zeros(v.shape)
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
        keep = dtype is None or k.endswith("e_score_correction_bias")
        t = t.to(device=device, dtype=t.dtype if keep else dtype)
        state[k[len("model.") :] if k.startswith("model.") else k] = t
    model.load_state_dict(join_fused(state, model.state_dict(), cfg), strict=False, assign=True)
    if cfg.tie_embeddings:
        model.lm_head.weight = model.embed_tokens.weight
    model.hf_config = hf
    return model.eval()


def save(model, path, tokenizer=None, train_state=None, state_dict=None):
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
    state = model.state_dict() if state_dict is None else state_dict
    state = {hf_key(part): t.detach().contiguous().cpu() for k, v in state.items()
             for part, t in split_fused(k, v, model.cfg)}
    if model.cfg.tie_embeddings:
        state.pop("lm_head.weight", None)
    dtype = str(model.embed_tokens.weight.dtype).replace("torch.", "")
    hf = config_to_hf(model.cfg, model.hf_config, dtype)
    # a zero balancing bias is left out: Qwen checkpoints have none, and a missing one loads as zero (note 4)
    state = {k: v for k, v in state.items() if not (k.endswith("e_score_correction_bias") and not v.any())}
    if hf["model_type"] == "qwen2_moe":  # Qwen2-MoE's one shared expert
        state = {k.replace(".mlp.shared_experts.", ".mlp.shared_expert."): v for k, v in state.items()}
    save_file(state, os.path.join(tmp, "model.safetensors"), metadata={"format": "pt"})
    with open(os.path.join(tmp, "config.json"), "w") as f:
        json.dump(hf, f, indent=2)
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


FUSED = {"qkv_proj": ("q_proj", "k_proj", "v_proj"), "gate_up_proj": ("gate_proj", "up_proj")}


def split_fused(key, t, cfg):
    """One of our tensors -> [(key, tensor)] in HF's layout: a fused projection's weight or bias
    split into views of its parts (design note 1), anything else as it is."""
    prefix, name, leaf = ("." + key).rsplit(".", 2)  # e.g. ".layers.0.self_attn", "qkv_proj", "weight"
    if name not in FUSED:
        return [(key, t)]
    kv = cfg.n_kv_heads * cfg.head_dim
    sizes = [cfg.n_heads * cfg.head_dim, kv, kv] if name == "qkv_proj" else [len(t) // 2] * 2
    return [(f"{prefix}.{part}.{leaf}"[1:], piece) for part, piece in zip(FUSED[name], t.split(sizes))]


def join_fused(state, ours, cfg):
    """Tensors under our keys but with HF's q/k/v and gate/up parts -> each of `ours` (a state dict)
    fused projections concatenated from its parts, in place."""
    for k, v in ours.items():
        parts = [part for part, _ in split_fused(k, v, cfg)]
        if parts != [k]:
            state[k] = torch.cat([state.pop(part) for part in parts])
    return state


def experts_from_hf(tensors):
    """Checkpoint tensors with HF MoE names -> ours (design notes 1, 2): fused 3-D experts split into
    one tensor per expert, Qwen2-MoE's `shared_expert.` renamed `shared_experts.`."""
    out = {}
    for k, t in tensors.items():
        if k.endswith(".mlp.experts.gate_up_proj") and t.dim() == 3:  # (E, 2 * I, D): gate rows, then up rows
            pre, inter = k[: -len("gate_up_proj")], t.shape[1] // 2
            for e in range(t.shape[0]):
                out[f"{pre}{e}.gate_proj.weight"] = t[e, :inter].clone()
                out[f"{pre}{e}.up_proj.weight"] = t[e, inter:].clone()
        elif k.endswith(".mlp.experts.down_proj") and t.dim() == 3:  # (E, D, I)
            pre = k[: -len("down_proj")]
            for e in range(t.shape[0]):
                out[f"{pre}{e}.down_proj.weight"] = t[e].clone()
        else:
            out[k.replace(".mlp.shared_expert.", ".mlp.shared_experts.")] = t
    return out


# --------------------------------------------------------------------------------- HF config I/O

SUPPORTED = ("qwen2", "llama", "qwen3", "qwen2_moe", "qwen3_moe")


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


def config_from_hf(hf, config_cls, path=""):
    """A config_cls (ModelConfig) from a config.json's fields, refusing what r1-mini does not implement."""
    mt = hf.get("model_type")
    if mt in ("deepseek_v2", "deepseek_v3"):
        raise ValueError(f"{path}: {mt} attention is MLA, which r1-mini does not implement (its MoE blocks' "
                         "tensor names and config fields are read)")
    if mt not in SUPPORTED:
        raise ValueError(f"{path}: unsupported model_type {mt!r}; supported: {', '.join(SUPPORTED)}")
    rope = hf.get("rope_parameters") or {}
    scaling = hf.get("rope_scaling") or {}
    rope_type = rope.get("rope_type", scaling.get("rope_type", scaling.get("type", "default")))
    if rope_type != "default":
        raise ValueError(f"{path}: rope scaling {rope_type!r} is not supported")
    if hf.get("use_sliding_window") or (mt not in ("qwen2", "qwen2_moe") and hf.get("sliding_window")):
        raise ValueError(f"{path}: sliding-window attention is not supported")
    if hf.get("mlp_bias"):
        raise ValueError(f"{path}: mlp_bias=true is not supported")
    if hf.get("hidden_act", "silu") != "silu":
        raise ValueError(f"{path}: hidden_act {hf['hidden_act']!r} is not supported (only silu)")
    try:
        bias = bool(hf.get("attention_bias", False))
        qwen2 = mt in ("qwen2", "qwen2_moe")
        return config_cls(**moe_config_from_hf(hf, mt),
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
            qkv_bias=bool(hf.get("qkv_bias", True)) if qwen2 else bias,
            o_bias=False if qwen2 else bias,
            qk_norm=mt in ("qwen3", "qwen3_moe"),
            tie_embeddings=hf.get("tie_word_embeddings", mt != "llama"),
        )
    except KeyError as e:
        raise ValueError(f"{path}: config.json lacks {e.args[0]!r}") from None
    except (TypeError, ValueError) as e:
        raise ValueError(f"{path}: config.json: {e}") from None


def moe_config_from_hf(hf, mt):
    """ModelConfig's MoE fields from a config.json: Qwen's names, DeepSeek-V3's for the rest (note 3)."""
    n_experts = hf.get("n_routed_experts") or hf.get("num_experts") or hf.get("num_local_experts") or 0
    if not n_experts:
        return {}
    inter = hf["moe_intermediate_size"]
    shared = hf.get("shared_expert_intermediate_size") or 0  # Qwen2-MoE: one shared expert this wide
    n_shared = hf.get("n_shared_experts", 1 if shared else 0)
    first_k, every = hf.get("first_k_dense_replace", 0), hf.get("decoder_sparse_step", 1)
    return dict(
        n_routed_experts=n_experts,
        top_k=hf["num_experts_per_tok"],
        moe_inter_dim=inter,
        n_shared_experts=n_shared,
        shared_inter_dim=shared or n_shared * inter,
        shared_expert_gate=hf.get("shared_expert_gate", mt == "qwen2_moe" and bool(n_shared)),
        score_func=hf.get("scoring_func") or ("sigmoid" if mt == "deepseek_v3" else "softmax"),
        norm_topk_prob=hf.get("norm_topk_prob", False),
        routed_scaling_factor=hf.get("routed_scaling_factor", 1.0),
        n_groups=hf.get("n_group") or 1,
        topk_groups=hf.get("topk_group") or 1,
        first_k_dense=first_k,
        moe_every=every,
        # our saves list every dense layer in mlp_only_layers (for transformers): keep only those the rules miss
        dense_layers=tuple(i for i in hf.get("mlp_only_layers") or () if i >= first_k and (i + 1) % every == 0),
        bias_update_speed=hf.get("bias_update_speed", 1e-3),
        aux_loss_alpha=hf.get("aux_loss_alpha", 0.0),
    )


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
    if cfg.n_routed_experts:
        if mt == "llama":
            raise ValueError("an MoE model is saved as qwen2_moe (qkv bias) or qwen3_moe (qk norm); this one has neither")
        mt += "_moe"
    arch = {"qwen2": "Qwen2ForCausalLM", "llama": "LlamaForCausalLM", "qwen3": "Qwen3ForCausalLM",
            "qwen2_moe": "Qwen2MoeForCausalLM", "qwen3_moe": "Qwen3MoeForCausalLM"}[mt]
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
    if mt in ("qwen2", "qwen2_moe"):
        hf.update(use_sliding_window=False, sliding_window=None)
    else:
        hf["attention_bias"] = cfg.qkv_bias
    if mt == "qwen2_moe":
        hf["qkv_bias"] = cfg.qkv_bias
    if cfg.n_routed_experts:
        hf.update({"num_experts" if mt == "qwen2_moe" else "num_local_experts": cfg.n_routed_experts},
                  num_experts_per_tok=cfg.top_k,
                  moe_intermediate_size=cfg.moe_inter_dim,
                  shared_expert_intermediate_size=cfg.shared_inter_dim,
                  n_shared_experts=cfg.n_shared_experts,
                  shared_expert_gate=cfg.shared_expert_gate,
                  norm_topk_prob=cfg.norm_topk_prob,
                  decoder_sparse_step=cfg.moe_every,
                  mlp_only_layers=[i for i in range(cfg.n_layers) if not cfg.is_moe(i)],
                  first_k_dense_replace=cfg.first_k_dense,
                  scoring_func=cfg.score_func,
                  routed_scaling_factor=cfg.routed_scaling_factor,
                  n_group=cfg.n_groups,
                  topk_group=cfg.topk_groups,
                  bias_update_speed=cfg.bias_update_speed,
                  aux_loss_alpha=cfg.aux_loss_alpha)
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


# --------------------------------------------------------------------------- a run's other files

def load_train_state(ckpt_dir):
    """OUT/ckpt/train_state.pt (optimizer, step, ...), with an error naming the file if it is not one."""
    f = os.path.join(ckpt_dir, "train_state.pt")
    if not os.path.isfile(f):
        raise FileNotFoundError(f"{f}: missing; {ckpt_dir} is a model, not a run that can resume")
    try:
        return torch.load(f, weights_only=False)
    except Exception as e:  # a truncated or foreign file
        raise ValueError(f"{f}: not a readable training state ({type(e).__name__}: {e})") from None


def weights_digest(path):
    """sha256 of a checkpoint's weight files (safetensors, in name order): a run's identity for its
    KL reference, so a resumed run can tell if the directory it names now holds another model."""
    import hashlib

    path = checkpoint_dir(path)
    files = sorted(f for f in os.listdir(path) if f.endswith(".safetensors"))
    if not files:
        raise FileNotFoundError(f"{path}: no safetensors weights to identify the KL reference by")
    h = hashlib.sha256()
    for name in files:
        with open(os.path.join(path, name), "rb") as f:
            for block in iter(lambda: f.read(1 << 24), b""):
                h.update(block)
    return h.hexdigest()


def write_jsonl(path, records):
    """One JSON object a line, written atomically (design note 5): a reader never sees half a file."""
    tmp = os.fspath(path) + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        f.writelines(json.dumps(r) + "\n" for r in records)
    os.replace(tmp, path)


def trim_jsonl(path, keep):
    """Keep only the rows of a metrics file for which keep(row) holds (a resumed run drops what its
    killed predecessor logged past the checkpoint)."""
    if os.path.exists(path):
        with open(path, encoding="utf-8") as f:
            write_jsonl(path, [r for r in (json.loads(x) for x in f if x.strip()) if keep(r)])

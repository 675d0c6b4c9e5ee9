"""model.py against transformers' own Qwen2 / Llama / Qwen3 on tiny random checkpoints they saved."""

import json
import os

import pytest
import torch

from model import ModelConfig, Transformer, load_tokenizer

transformers = pytest.importorskip("transformers")

TINY = dict(vocab_size=97, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
            num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128)


def hf_model(kind, **kw):
    torch.manual_seed(0)
    if kind == "qwen2":
        cfg = transformers.Qwen2Config(**TINY, rope_theta=1e4, tie_word_embeddings=True, **kw)
        m = transformers.Qwen2ForCausalLM(cfg)
    elif kind == "llama":
        cfg = transformers.LlamaConfig(**TINY, rope_theta=5e5, tie_word_embeddings=False, **kw)
        m = transformers.LlamaForCausalLM(cfg)
    else:
        cfg = transformers.Qwen3Config(**TINY, head_dim=24, rope_theta=1e6, tie_word_embeddings=True, **kw)
        m = transformers.Qwen3ForCausalLM(cfg)
    # random (not zero) biases and norm weights so a mix-up of any of them shows in the logits
    with torch.no_grad():
        for name, p in m.named_parameters():
            if "bias" in name or "norm" in name:
                p.copy_(torch.randn_like(p) * 0.5 + (1.0 if "norm" in name else 0.0))
    return m.eval()


def hf_logits(m, idx):
    with torch.no_grad():
        return m(idx).logits


@pytest.mark.parametrize("kind", ["qwen2", "llama", "qwen3"])
def test_logits_match_transformers(kind, tmp_path):
    ref = hf_model(kind)
    ref.save_pretrained(tmp_path)
    ours = Transformer.from_pretrained(tmp_path)
    idx = torch.randint(0, TINY["vocab_size"], (3, 40))
    with torch.no_grad():
        diff = (ours(idx) - hf_logits(ref, idx)).abs().max().item()
    assert diff <= 1e-4


def test_llama_attention_bias_matches_transformers(tmp_path):
    ref = hf_model("llama", attention_bias=True)
    ref.save_pretrained(tmp_path)
    ours = Transformer.from_pretrained(tmp_path)
    assert ours.cfg.qkv_bias and ours.cfg.o_bias
    idx = torch.randint(0, TINY["vocab_size"], (2, 17))
    with torch.no_grad():
        assert (ours(idx) - hf_logits(ref, idx)).abs().max().item() <= 1e-4


def test_sharded_checkpoint_loads(tmp_path):
    ref = hf_model("qwen2")
    ref.save_pretrained(tmp_path, max_shard_size="20KB")
    assert os.path.exists(tmp_path / "model.safetensors.index.json")
    ours = Transformer.from_pretrained(tmp_path)
    idx = torch.randint(0, TINY["vocab_size"], (2, 9))
    with torch.no_grad():
        assert (ours(idx) - hf_logits(ref, idx)).abs().max().item() <= 1e-4


@pytest.mark.parametrize("cfg", [
    ModelConfig(vocab_size=97, dim=64, n_layers=2, n_heads=4, n_kv_heads=2, inter_dim=96),
    ModelConfig(vocab_size=97, dim=64, n_layers=2, n_heads=4, n_kv_heads=1, inter_dim=96,
                qkv_bias=False, tie_embeddings=False),
    ModelConfig(vocab_size=97, dim=64, n_layers=2, n_heads=4, n_kv_heads=2, head_dim=24, inter_dim=96,
                qkv_bias=False, qk_norm=True),
], ids=["qwen2", "llama", "qwen3"])
def test_save_pretrained_loads_in_transformers_with_same_logits(cfg, tmp_path):
    torch.manual_seed(0)
    ours = Transformer(cfg).eval()
    with torch.no_grad():  # non-trivial norms and biases
        for name, p in ours.named_parameters():
            if "bias" in name or "norm" in name:
                p.add_(torch.randn_like(p) * 0.3)
    ours.save_pretrained(tmp_path)
    ref = transformers.AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    idx = torch.randint(0, cfg.vocab_size, (2, 21))
    with torch.no_grad():
        assert (ours(idx) - hf_logits(ref, idx)).abs().max().item() <= 1e-4
    again = Transformer.from_pretrained(tmp_path)
    with torch.no_grad():
        assert torch.equal(again(idx), ours(idx))


def test_fused_projections_are_written_as_hf_parts(tmp_path):
    """q/k/v (one qkv_proj) and gate/up (one gate_up_proj) are HF's parts stacked along the output
    rows, in HF's order: the file holds the parts, never our fused names, and reloads bit for bit."""
    from safetensors.torch import load_file
    torch.manual_seed(0)
    cfg = ModelConfig(vocab_size=97, dim=64, n_layers=2, n_heads=4, n_kv_heads=2, head_dim=24, inter_dim=96)
    ours = Transformer(cfg)
    ours.save_pretrained(tmp_path)
    file = load_file(tmp_path / "model.safetensors")
    assert not any("qkv_proj" in k or "gate_up_proj" in k for k in file)
    attn, mlp = ours.layers[1].self_attn.qkv_proj, ours.layers[1].mlp.gate_up_proj
    for leaf, fused in (("weight", attn.weight), ("bias", attn.bias)):
        q, k, v = (file[f"model.layers.1.self_attn.{p}_proj.{leaf}"] for p in "qkv")
        assert (len(q), len(k), len(v)) == (4 * 24, 2 * 24, 2 * 24)
        assert torch.equal(torch.cat([q, k, v]), fused.detach())
    gate, up = file["model.layers.1.mlp.gate_proj.weight"], file["model.layers.1.mlp.up_proj.weight"]
    assert gate.shape == up.shape == (96, 64) and torch.equal(torch.cat([gate, up]), mlp.weight.detach())
    again = Transformer.from_pretrained(tmp_path)
    assert all(torch.equal(a, b) for a, b in zip(again.state_dict().values(), ours.state_dict().values()))


def test_from_pretrained_casts_dtype(tmp_path):
    hf_model("qwen2").save_pretrained(tmp_path)
    m = Transformer.from_pretrained(tmp_path, dtype=torch.bfloat16)
    assert m.embed_tokens.weight.dtype == torch.bfloat16
    assert m.lm_head.weight is m.embed_tokens.weight  # still tied
    assert m(torch.zeros(1, 3, dtype=torch.long)).dtype == torch.bfloat16


def test_left_padding_gives_unpadded_logits():
    torch.manual_seed(0)
    m = Transformer(ModelConfig(vocab_size=50, dim=32, n_layers=2, n_heads=4, n_kv_heads=2, inter_dim=64)).eval()
    a = torch.randint(0, 50, (1, 7))
    padded = torch.cat([torch.zeros(1, 3, dtype=torch.long), a], 1)
    valid = torch.tensor([[False] * 3 + [True] * 7])
    with torch.no_grad():
        diff = (m(padded, valid=valid)[:, 3:] - m(a)).abs().max().item()
    assert diff <= 1e-5


def test_kv_cached_decoding_equals_full_forward():
    torch.manual_seed(0)
    cfg = ModelConfig(vocab_size=50, dim=32, n_layers=3, n_heads=4, n_kv_heads=2, inter_dim=64, qk_norm=True)
    m = Transformer(cfg).eval()
    idx = torch.randint(0, 50, (2, 12))
    with torch.no_grad():
        full = m(idx)
        cache = m.new_cache(2, 16)
        steps = [m.lm_head(m.hidden(idx[:, :5], cache=cache))]  # prefill, then one token at a time
        steps += [m.lm_head(m.hidden(idx[:, t : t + 1], cache=cache)) for t in range(5, 12)]
    assert (torch.cat(steps, 1) - full).abs().max().item() <= 1e-5


@pytest.mark.parametrize("kw", [
    dict(),
    dict(qkv_bias=False, o_bias=True, tie_embeddings=False),
    dict(qkv_bias=False, qk_norm=True, head_dim=12),
    dict(n_routed_experts=4, top_k=2, n_shared_experts=1, first_k_dense=1),
], ids=["qwen2", "llama-attention-bias", "qwen3", "moe"])
def test_decoder_steps_equal_the_full_forward(kw):
    """model.Decoder (what generate decodes with) against one forward over the whole sequence: left
    padding, and a slot fed as not valid mid-sequence (a finished row, or a rolled-back token), which
    later steps must skip as forward does."""
    torch.manual_seed(0)
    m = Transformer(ModelConfig(vocab_size=50, dim=32, n_layers=3, n_heads=4, n_kv_heads=2, inter_dim=64, **kw)).eval()
    with torch.no_grad():  # random biases and norm weights, so that a mix-up of any of them shows
        for name, p in m.named_parameters():
            if "bias" in name or "norm" in name:
                p.copy_(torch.randn_like(p) * 0.5 + (1.0 if "norm" in name else 0.0))
    idx = torch.randint(0, 50, (3, 12))
    valid = torch.ones(3, 12, dtype=torch.bool)
    valid[0, :3] = False  # left padding
    valid[1, 7] = False  # skipped at step 7
    with torch.no_grad():
        full = m(idx, valid=valid)
        cache, decode = m.new_cache(3, 16), m.decoder()
        steps = [m.lm_head(m.hidden(idx[:, :5], valid[:, :5], cache)[:, -1])]
        steps += [decode(idx[:, t], valid[:, t], cache) for t in range(5, 12)]
    got, want = torch.stack(steps, 1), full[:, 4:]
    real = valid[:, 4:]  # a slot fed as not valid has no output to compare
    assert (got - want)[real].abs().max().item() <= 1e-5
    assert cache.len == 12 and cache.n_valid.tolist() == valid.sum(1).tolist()


def test_tokenizer_round_trips(tmp_path):
    from tokenizers import Tokenizer, models, pre_tokenizers
    tok = Tokenizer(models.WordLevel({"[UNK]": 0, "a": 1, "b": 2}, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    Transformer(ModelConfig(vocab_size=3, dim=16, n_layers=1, n_heads=2, n_kv_heads=1, inter_dim=32)).save_pretrained(tmp_path, tok)
    assert load_tokenizer(tmp_path).encode("a b a").ids == [1, 2, 1]


# ------------------------------------------------------------------------------------ bad input

def test_missing_directory_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such checkpoint directory"):
        Transformer.from_pretrained(tmp_path / "nope")


def test_hub_id_says_download_first():
    with pytest.raises(FileNotFoundError, match="download the checkpoint first"):
        Transformer.from_pretrained("Qwen/Qwen2.5-0.5B")


def test_unknown_model_type_names_the_supported_ones(tmp_path):
    hf_model("qwen2").save_pretrained(tmp_path)
    cfg = json.loads((tmp_path / "config.json").read_text())
    cfg["model_type"] = "gpt2"
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match="unsupported model_type 'gpt2'; supported: qwen2, llama, qwen3"):
        Transformer.from_pretrained(tmp_path)


def _rewrite_tensors(path, edit):
    from safetensors.torch import load_file, save_file
    t = load_file(path / "model.safetensors")
    edit(t)
    save_file(t, path / "model.safetensors")


def test_missing_tensor_is_named(tmp_path):
    hf_model("qwen2").save_pretrained(tmp_path)
    _rewrite_tensors(tmp_path, lambda t: t.pop("model.layers.1.mlp.up_proj.weight"))
    with pytest.raises(ValueError, match="missing 1 tensors.*layers.1.mlp.up_proj.weight"):
        Transformer.from_pretrained(tmp_path)


def test_misshaped_tensor_is_named(tmp_path):
    hf_model("qwen2").save_pretrained(tmp_path)
    _rewrite_tensors(tmp_path, lambda t: t.update({"model.norm.weight": torch.ones(65)}))
    with pytest.raises(ValueError, match=r"model.norm.weight has shape \(65,\), expected \(64,\)"):
        Transformer.from_pretrained(tmp_path)


def test_untied_checkpoint_without_lm_head_is_an_error(tmp_path):
    hf_model("llama").save_pretrained(tmp_path)
    _rewrite_tensors(tmp_path, lambda t: t.pop("lm_head.weight"))
    with pytest.raises(ValueError, match="lm_head.weight"):
        Transformer.from_pretrained(tmp_path)


def test_unsupported_rope_scaling_is_an_error(tmp_path):
    hf_model("llama").save_pretrained(tmp_path)
    cfg = json.loads((tmp_path / "config.json").read_text())
    cfg["rope_parameters"] = {"rope_type": "yarn", "rope_theta": 1e4, "factor": 4.0}
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match="rope scaling 'yarn'"):
        Transformer.from_pretrained(tmp_path)


def test_sequence_longer_than_context_is_an_error():
    m = Transformer(ModelConfig(vocab_size=10, dim=16, n_layers=1, n_heads=2, n_kv_heads=1, inter_dim=32, max_seq_len=8))
    with pytest.raises(ValueError, match="max_seq_len=8"):
        m(torch.zeros(1, 9, dtype=torch.long))


def test_save_replaces_old_checkpoint_atomically(tmp_path):
    cfg = ModelConfig(vocab_size=10, dim=16, n_layers=1, n_heads=2, n_kv_heads=1, inter_dim=32)
    a, b = Transformer(cfg), Transformer(cfg)
    a.save_pretrained(tmp_path / "ck")
    b.save_pretrained(tmp_path / "ck")
    assert sorted(os.listdir(tmp_path)) == ["ck"]  # no temporary or backup left behind
    loaded = Transformer.from_pretrained(tmp_path / "ck")
    assert torch.equal(loaded.embed_tokens.weight, b.embed_tokens.weight)

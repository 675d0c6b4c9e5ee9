"""MoE layers (model.py): against a per-token reference, balancing, padding, DDP-safe gradients, and
qwen2_moe / qwen3_moe checkpoints against transformers' own models."""

import json

import pytest
import torch

from model import ModelConfig, Transformer
from moe import MoE

MOE = dict(vocab_size=53, dim=32, n_layers=2, n_heads=4, n_kv_heads=2, inter_dim=48, n_routed_experts=8, top_k=2,
           moe_inter_dim=16)


def moe_layer(**kw):
    torch.manual_seed(0)
    layer = MoE(ModelConfig(**{**MOE, **kw})).double()
    with torch.no_grad():
        for p in layer.parameters():
            p.copy_(torch.randn_like(p) * 0.3)
        layer.gate.e_score_correction_bias.copy_(torch.randn(layer.cfg.n_routed_experts) * 0.05)
    return layer


def reference(layer, x):
    """Every token on its own: its scores, its groups, its top_k by score + bias, the weighted sum of
    those experts' outputs (weights from the unbiased scores) plus the shared experts'."""
    cfg, out = layer.cfg, []
    E, G = cfg.n_routed_experts, cfg.n_groups
    for t in x:
        logits = layer.gate.weight @ t
        s = logits.softmax(-1) if cfg.score_func == "softmax" else logits.sigmoid()
        b = (s + layer.gate.e_score_correction_bias).tolist()
        allowed = range(E)
        if G > 1:
            size = E // G
            group_score = [sum(sorted(b[g * size : (g + 1) * size], reverse=True)[:2]) for g in range(G)]
            groups = sorted(range(G), key=lambda g: -group_score[g])[: cfg.topk_groups]
            allowed = [e for e in range(E) if e // size in groups]
        chosen = sorted(allowed, key=lambda e: -b[e])[: cfg.top_k]
        w = s[chosen]
        if cfg.norm_topk_prob:
            w = w / w.sum()
        w = w * cfg.routed_scaling_factor
        y = sum(w[j] * layer.experts[e](t[None])[0] for j, e in enumerate(chosen))
        if cfg.shared_inter_dim:
            shared = layer.shared_experts(t[None])[0]
            if cfg.shared_expert_gate:
                shared = torch.sigmoid(layer.shared_expert_gate(t[None])[0]) * shared
            y = y + shared
        out.append(y)
    return torch.stack(out)


@pytest.mark.parametrize("kw", [
    dict(score_func="softmax", norm_topk_prob=False),
    dict(score_func="softmax", n_shared_experts=1, shared_expert_gate=True),  # qwen2_moe
    dict(score_func="sigmoid", n_shared_experts=2, routed_scaling_factor=2.5),  # DeepSeek-V3
    dict(score_func="softmax", n_groups=4, topk_groups=2, top_k=3),
    dict(score_func="sigmoid", n_shared_experts=1, n_groups=4, topk_groups=2, routed_scaling_factor=2.5),
], ids=["softmax", "softmax-shared-gate", "sigmoid-shared", "softmax-groups", "sigmoid-groups"])
def test_moe_equals_per_token_reference(kw):
    layer = moe_layer(**kw)
    x = torch.randn(3, 20, 32, dtype=torch.float64)
    with torch.no_grad():
        y = layer(x)
        ref = reference(layer, x.view(-1, 32)).view(3, 20, 32)
    assert (y - ref).abs().max().item() <= 1e-6


def test_group_limits_change_the_selection():
    """The group test above would pass with no group logic at all if the limits never bit."""
    free, grouped = moe_layer(score_func="sigmoid"), moe_layer(score_func="sigmoid", n_groups=4, topk_groups=1)
    x = torch.randn(50, 32, dtype=torch.float64)
    with torch.no_grad():
        a, b = free.gate(x)[1], grouped.gate(x)[1]
    assert not torch.equal(a.sort(1)[0], b.sort(1)[0])
    assert ((b // 2).amin(1) == (b // 2).amax(1)).all()  # with one group of 2 allowed, both picks share it


def test_every_expert_gets_a_gradient_even_without_tokens():
    """DDP (without find_unused_parameters) needs a gradient for every parameter on every rank."""
    layer = moe_layer(score_func="sigmoid")
    with torch.no_grad():
        layer.gate.e_score_correction_bias.copy_(torch.tensor([9.0, 9.0] + [0.0] * 6))  # all tokens to 0 and 1
    layer(torch.randn(2, 5, 32, dtype=torch.float64)).sum().backward()
    assert all(p.grad is not None for p in layer.parameters())
    assert layer.experts[5].gate_up_proj.weight.grad.abs().sum() == 0


def test_padding_does_not_count_toward_load():
    layer = moe_layer().train()
    valid = torch.tensor([[True] * 7 + [False] * 3, [False] * 4 + [True] * 6])
    layer(torch.randn(2, 10, 32, dtype=torch.float64), valid).sum().backward()
    assert layer.load.sum().item() == 13 * layer.cfg.top_k
    with torch.no_grad():  # inference forwards (sampling, reference log-probs) count nothing
        layer(torch.randn(2, 10, 32, dtype=torch.float64))
    assert layer.load.sum().item() == 13 * layer.cfg.top_k


def test_bias_balances_load_while_gate_weights_stay_unbiased():
    """A router that sends most tokens to experts 0 and 1: the bias updates alone (no gradient step)
    bring max/mean load under 1.5 within 300 steps, and the gate weights remain the unbiased scores
    of the selected experts."""
    torch.manual_seed(0)
    cfg = ModelConfig(**{**MOE, "score_func": "sigmoid", "bias_update_speed": 0.005})
    model = Transformer(cfg)  # update_expert_bias walks its MoE layers
    layer, D = model.layers[0].mlp.train(), cfg.dim
    lean = torch.randn(D)
    with torch.no_grad():
        layer.gate.weight.normal_(0, 0.3)
        layer.gate.weight[:2] += 0.3 * lean  # experts 0 and 1 score high on tokens that lean this way
    data = lambda n: torch.randn(n, D) + 0.5 * lean  # ... and they all do

    def max_over_mean():
        with torch.no_grad():
            counts = torch.bincount(layer.gate(data(8192))[1].flatten(), minlength=8).float()
        return (counts.max() / counts.mean()).item()

    before = max_over_mean()
    for _ in range(300):
        layer(data(1024)[None])  # a training forward counts the load
        model.update_expert_bias()  # what parallel.optimizer_step runs after the step
    after = max_over_mean()
    assert before > 3 and after < 1.5, (before, after)
    x = data(512)
    with torch.no_grad():
        weights, indices, _ = layer.gate(x)
        scores = (x @ layer.gate.weight.T).sigmoid()
    assert (indices.sort(1)[0] != scores.topk(2)[1].sort(1)[0]).any(1).float().mean() > 0.3  # the bias re-routes
    unbiased = scores.gather(1, indices)
    assert torch.allclose(weights, unbiased / unbiased.sum(1, keepdim=True), atol=1e-6)


def test_sequence_aux_loss_joins_the_backward():
    """With aux_loss_alpha, backward through the output also back-propagates alpha * sum_i f_i P_i."""
    layer = moe_layer(score_func="sigmoid", aux_loss_alpha=0.1).train()
    x = torch.randn(2, 6, 32, dtype=torch.float64)
    layer(x).sum().backward()
    got = layer.gate.weight.grad.clone()
    layer.zero_grad()
    y = layer.eval()(x)  # no aux loss in eval
    weights, indices, scores = layer.gate(x.view(-1, 32))
    aux = layer.aux_loss(scores, indices, None, 2, 6)
    (y.sum() + aux).backward()
    assert torch.allclose(got, layer.gate.weight.grad, atol=1e-12)
    assert aux.item() > 0


def test_dense_and_moe_layers_where_the_config_says():
    cfg = ModelConfig(**{**MOE, "n_layers": 6, "first_k_dense": 1, "moe_every": 2, "dense_layers": (5,)})
    m = Transformer(cfg)
    assert [isinstance(b.mlp, MoE) for b in m.layers] == [False, True, False, True, False, False]
    assert not any(isinstance(b.mlp, MoE) for b in Transformer(ModelConfig(vocab_size=53, dim=32)).layers)


def test_moe_kv_cached_decoding_equals_full_forward():
    torch.manual_seed(0)
    m = Transformer(ModelConfig(**MOE, n_shared_experts=1)).eval()
    idx = torch.randint(0, 53, (2, 12))
    with torch.no_grad():
        full = m(idx)
        cache = m.new_cache(2, 16)
        steps = [m.lm_head(m.hidden(idx[:, :5], cache=cache))]
        steps += [m.lm_head(m.hidden(idx[:, t : t + 1], cache=cache)) for t in range(5, 12)]
    assert (torch.cat(steps, 1) - full).abs().max().item() <= 1e-5


def test_our_moe_checkpoint_round_trips_exactly(tmp_path):
    cfg = ModelConfig(**MOE, n_shared_experts=1, score_func="sigmoid", n_groups=2, topk_groups=1,
                      routed_scaling_factor=2.0, first_k_dense=1)
    torch.manual_seed(0)
    m = Transformer(cfg).eval()
    m.layers[1].mlp.gate.e_score_correction_bias.normal_()
    m.save_pretrained(tmp_path)
    again = Transformer.from_pretrained(tmp_path)
    idx = torch.randint(0, 53, (2, 9))
    assert again.cfg == m.cfg
    with torch.no_grad():
        assert torch.equal(again(idx), m(idx))


# ------------------------------------------------------------------------- against transformers

transformers = pytest.importorskip("transformers")

TINY = dict(vocab_size=97, hidden_size=64, intermediate_size=96, num_attention_heads=4, num_key_value_heads=2,
            max_position_embeddings=128, moe_intermediate_size=32, num_experts_per_tok=2)


def hf_moe(kind):
    torch.manual_seed(0)
    if kind == "qwen2_moe":  # a shared expert with its sigmoid gate; layer 0 dense
        cfg = transformers.Qwen2MoeConfig(**TINY, num_hidden_layers=2, num_experts=6, shared_expert_intermediate_size=40,
                                          mlp_only_layers=[0], norm_topk_prob=False, tie_word_embeddings=True)
        m = transformers.Qwen2MoeForCausalLM(cfg)
    else:  # normalised top-k; MoE every 2nd layer, layer 3 dense anyway: only layer 1 is MoE
        cfg = transformers.Qwen3MoeConfig(**TINY, num_hidden_layers=4, num_experts=6, decoder_sparse_step=2,
                                          mlp_only_layers=[3], norm_topk_prob=True, head_dim=24)
        m = transformers.Qwen3MoeForCausalLM(cfg)
    with torch.no_grad():  # non-trivial routers, norms and biases
        for name, p in m.named_parameters():
            if "bias" in name or "norm" in name:
                p.copy_(torch.randn_like(p) * 0.5 + (1.0 if "norm" in name else 0.0))
            elif "gate.weight" in name or "shared_expert_gate" in name:
                p.copy_(torch.randn_like(p))
    return m.eval()


def save_fused(m, path):
    """The fused 3-D layout (mlp.experts.gate_up_proj, mlp.experts.down_proj): transformers 5.x's
    modules hold it in memory, and newer checkpoints are written that way."""
    from safetensors.torch import save_file
    m.config.save_pretrained(path)
    state = {k: v.contiguous() for k, v in m.state_dict().items()}
    if m.config.tie_word_embeddings:
        state.pop("lm_head.weight")
    assert any(k.endswith("mlp.experts.gate_up_proj") for k in state)
    save_file(state, str(path / "model.safetensors"))


@pytest.mark.parametrize("layout", ["per_expert", "fused"])
@pytest.mark.parametrize("kind", ["qwen2_moe", "qwen3_moe"])
def test_hf_moe_checkpoint_logits_match_transformers(kind, layout, tmp_path):
    ref = hf_moe(kind)
    if layout == "per_expert":
        ref.save_pretrained(tmp_path)  # what transformers 5.23 writes: one tensor per expert
        from safetensors.torch import load_file
        assert "model.layers.1.mlp.experts.0.gate_proj.weight" in load_file(tmp_path / "model.safetensors")
    else:
        save_fused(ref, tmp_path)
    ours = Transformer.from_pretrained(tmp_path)
    moe_layers = [i for i, b in enumerate(ours.layers) if isinstance(b.mlp, MoE)]
    assert moe_layers == [1]  # qwen2_moe: mlp_only_layers=[0]; qwen3_moe: decoder_sparse_step=2, mlp_only_layers=[3]
    idx = torch.randint(0, TINY["vocab_size"], (3, 30))
    with torch.no_grad():
        assert (ours(idx) - ref(idx).logits).abs().max().item() <= 1e-4


@pytest.mark.parametrize("kind", ["qwen2_moe", "qwen3_moe"])
def test_moe_save_pretrained_loads_in_transformers_with_same_logits(kind, tmp_path):
    hf_moe(kind).save_pretrained(tmp_path / "a")
    ours = Transformer.from_pretrained(tmp_path / "a")
    ours.save_pretrained(tmp_path / "b")
    ref, info = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "b", output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"], info
    ref.eval()
    assert type(ref).__name__ == {"qwen2_moe": "Qwen2MoeForCausalLM", "qwen3_moe": "Qwen3MoeForCausalLM"}[kind]
    idx = torch.randint(0, TINY["vocab_size"], (2, 21))
    with torch.no_grad():
        assert (ours(idx) - ref(idx).logits).abs().max().item() <= 1e-4


def test_from_scratch_moe_saves_as_qwen2_moe_that_transformers_loads(tmp_path):
    """Our own model (softmax routing, shared expert with its gate, first layer dense) is served by HF."""
    torch.manual_seed(0)
    cfg = ModelConfig(**{**MOE, "vocab_size": 97, "dim": 64, "n_heads": 4}, n_shared_experts=1,
                      shared_expert_gate=True, norm_topk_prob=False, first_k_dense=1)
    ours = Transformer(cfg).eval()
    ours.save_pretrained(tmp_path)
    ref, info = transformers.AutoModelForCausalLM.from_pretrained(tmp_path, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"], info
    ref.eval()
    idx = torch.randint(0, 97, (2, 15))
    with torch.no_grad():
        assert (ours(idx) - ref(idx).logits).abs().max().item() <= 1e-4


def test_moe_layer_equals_transformers_deepseek_v3_moe():
    """DeepSeek-V3's routing (sigmoid, bias for selection only, groups of experts, normalised and
    scaled weights, shared experts), layer against layer: their module's tensors (fused experts) go
    through our checkpoint naming. (Whole DeepSeek-V3 checkpoints need MLA, which we lack.)"""
    from checkpoint import experts_from_hf, join_fused, moe_config_from_hf
    from transformers.models.deepseek_v3.modeling_deepseek_v3 import DeepseekV3MoE
    hf = transformers.DeepseekV3Config(hidden_size=32, intermediate_size=48, moe_intermediate_size=16,
                                       n_routed_experts=8, num_experts_per_tok=3, n_group=4, topk_group=2,
                                       n_shared_experts=2, routed_scaling_factor=2.5, norm_topk_prob=True)
    torch.manual_seed(0)
    ref = DeepseekV3MoE(hf).eval()
    with torch.no_grad():
        for p in ref.parameters():
            p.copy_(torch.randn_like(p) * 0.3)
        ref.gate.e_score_correction_bias.copy_(torch.randn(8) * 0.1)
    cfg = ModelConfig(**{**MOE, **moe_config_from_hf(hf.to_dict(), "deepseek_v3"), "dim": 32})
    assert (cfg.score_func, cfg.n_groups, cfg.topk_groups, cfg.shared_inter_dim) == ("sigmoid", 4, 2, 32)
    ours = MoE(cfg).eval()
    state = experts_from_hf({"model.layers.0.mlp." + k: v for k, v in ref.state_dict().items()})
    ours.load_state_dict(join_fused({k[len("model.layers.0.mlp."):]: v for k, v in state.items()}, ours.state_dict(), cfg))
    x = torch.randn(2, 25, 32)
    with torch.no_grad():
        assert (ours(x) - ref(x)).abs().max().item() <= 1e-5


def test_deepseek_v3_says_mla_is_not_supported(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "deepseek_v3"}))
    with pytest.raises(ValueError, match="MLA"):
        Transformer.from_pretrained(tmp_path)


@pytest.mark.parametrize("aux_loss_alpha", [0.0, 0.01])
def test_gradient_checkpointing_counts_each_load_once(aux_loss_alpha):
    """The recompute in the backward pass routes the same tokens again; it must not count them again."""
    torch.manual_seed(0)
    m = Transformer(ModelConfig(**MOE, aux_loss_alpha=aux_loss_alpha)).train()
    idx = torch.randint(0, 53, (2, 10))
    m(idx).sum().backward()
    plain = [b.mlp.load.clone() for b in m.layers]
    grads = [p.grad.clone() for p in m.parameters()]
    m.zero_grad()
    for b in m.layers:
        b.mlp.load = None
    m.grad_ckpt = True
    m(idx).sum().backward()
    assert all(torch.equal(b.mlp.load, p) for b, p in zip(m.layers, plain))
    assert all(torch.allclose(p.grad, g, atol=1e-6) for p, g in zip(m.parameters(), grads))

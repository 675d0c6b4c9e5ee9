"""kernels/: token log-probs, entropy and the fused GRPO loss against float64 references.

Both backends run here: the Triton kernels through Triton's interpreter on CPU tensors (conftest.py
sets TRITON_INTERPRET=1 without a GPU), in fp32 at small shapes. The references are independent
float64 math: log_softmax with autograd gradients, and grpo.policy_loss's PyTorch path in float64
(itself tested against hand-derived float64 loops in test_grpo.py). Tolerances: values 1e-5,
gradients atol 2e-5, rtol 1e-3.
"""

import math
import os
import pathlib
import subprocess
import sys
import types

import pytest
import torch

import r1_kernels as kernels  # the kernels/ folder (r1_kernels.py: why the import name differs)
from grpo import policy_loss
from r1_kernels import backend, logprobs

DEV = "cuda" if torch.cuda.is_available() else "cpu"  # the Triton backend's device
no_triton = pytest.mark.skipif(backend.triton is None and sys.platform != "linux", reason="triton is Linux-only")
BACKENDS = ["torch", pytest.param("triton", marks=no_triton)]
GRAD = dict(atol=2e-5, rtol=1e-3)


@pytest.fixture
def small_tiles(monkeypatch):
    """Tiles far smaller than the defaults, so test shapes cross many of them with a ragged last one."""
    monkeypatch.setattr(logprobs, "BLOCK_V", 64)  # a Triton program's columns: V = 300 is 4 blocks and 44
    monkeypatch.setattr(logprobs, "TILE", 7 * 64)  # PyTorch path and linear form, N = 7: vocab tiles of 64


def make_logits(case, N=7, V=300, seed=0):
    g = torch.Generator().manual_seed(seed)
    logits = 3 * torch.randn(N, V, generator=g)
    targets = torch.randint(0, V, (N,), generator=g)
    if case == "peaked":  # nearly one-hot rows: the target is the spike (logp ~ 0) or far below it (~ -40)
        spike = torch.randint(0, V, (N,), generator=g)
        spike[::2] = targets[::2]
        logits[torch.arange(N), spike] += 40
    if case == "offset":  # large logits: lse and the entropy must not lose digits to them
        logits += 30
    targets[0] = V - 1  # a target in the ragged last tile
    return logits, targets


def reference(logits, targets):
    """float64 log p(target) and entropy."""
    lp = torch.log_softmax(logits.double(), -1)
    return lp.gather(1, targets[:, None]).squeeze(1), -(lp.exp() * lp).sum(1)


def dev(backend, *xs):
    """The inputs on the Triton backend's device (None stays None)."""
    return [x.to(DEV) if backend == "triton" and x is not None else x for x in xs]


# ------------------------------------------------------------------------------ token_logprobs

@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("case,N,V", [("random", 7, 300), ("peaked", 7, 300), ("offset", 7, 300),
                                      ("random", 1, 300), ("random", 4, 5)])
def test_token_logprobs_and_entropy_match_float64(small_tiles, backend, case, N, V):
    logits, targets = make_logits(case, N, V)
    g, g_ent = torch.randn(N), torch.randn(N)
    x = logits.clone().requires_grad_(True)
    xd, td = dev(backend, x, targets)
    logp, ent = kernels.token_logprobs(xd, td, backend=backend, with_entropy=True)
    assert logp.dtype == ent.dtype == torch.float32 and logp.shape == (N,)
    ((logp.cpu() * g).sum() + (ent.cpu() * g_ent).sum()).backward()
    x64 = logits.double().requires_grad_(True)
    want, want_ent = reference(x64, targets)
    ((want * g).sum() + (want_ent * g_ent).sum()).backward()
    torch.testing.assert_close(logp.cpu().double(), want.detach(), atol=1e-5, rtol=0)
    torch.testing.assert_close(ent.cpu().double(), want_ent.detach(), atol=1e-5, rtol=0)
    torch.testing.assert_close(x.grad.double(), x64.grad, **GRAD)


@pytest.mark.parametrize("backend", BACKENDS)
def test_token_logprobs_gradient_is_onehot_minus_softmax(small_tiles, backend):
    logits, targets = make_logits("peaked")
    g = torch.randn(7)
    x = logits.clone().requires_grad_(True)
    xd, td = dev(backend, x, targets)
    logp = kernels.token_logprobs(xd, td, backend=backend)
    (logp.cpu() * g).sum().backward()
    p = torch.softmax(logits.double(), -1)
    want = g.double()[:, None] * (torch.nn.functional.one_hot(targets, 300).double() - p)
    torch.testing.assert_close(x.grad.double(), want, **GRAD)


def test_bf16_logits_are_accumulated_in_fp32_and_get_a_bf16_gradient():
    logits, targets = make_logits("random")
    x = logits.bfloat16().requires_grad_(True)
    logp = kernels.token_logprobs(x, targets, backend="torch")  # the interpreter mishandles bf16: PyTorch path
    logp.sum().backward()
    x64 = x.detach().double().requires_grad_(True)
    want = reference(x64, targets)[0]
    want.sum().backward()
    assert logp.dtype == torch.float32 and x.grad.dtype == torch.bfloat16
    torch.testing.assert_close(logp.double(), want.detach(), atol=1e-5, rtol=0)  # exact math on the bf16 values
    torch.testing.assert_close(x.grad, x64.grad.bfloat16())


@pytest.mark.parametrize("backend", BACKENDS)
def test_token_logprobs_keep_only_the_logits_and_one_number_per_row_for_backward(backend):
    logits, targets = make_logits("random")
    x, t = dev(backend, logits.requires_grad_(True), targets)
    logp, _ = kernels.token_logprobs(x, t, backend=backend, with_entropy=True)
    saved = [s for s in logp.grad_fn.saved_tensors if s is not None]
    big = [s for s in saved if s.numel() > 7]
    assert len(big) == 1 and big[0].data_ptr() == x.data_ptr()  # the caller's logits, not a copy


def test_auto_backend_is_triton_for_cuda_tensors_only(monkeypatch):
    cuda, cpu = types.SimpleNamespace(is_cuda=True), torch.zeros(1)
    assert backend.use_triton(cuda) == (backend.triton is not None) and not backend.use_triton(cpu)
    monkeypatch.setattr(backend, "BACKEND", "torch")
    assert not backend.use_triton(cuda)
    with pytest.raises(ValueError, match="backend"):
        backend.use_triton(cpu, "cuda")


@pytest.mark.parametrize("forced", ["torch", pytest.param("triton", marks=no_triton)])
def test_the_model_computes_its_training_logprobs_on_the_backend_in_force(monkeypatch, forced):
    """What backend.BACKEND says is what training runs: the model's fused log-probs go through the
    Triton kernels when it says triton (on CUDA by default) and never touch the PyTorch tile code."""
    from model import ModelConfig, Transformer

    monkeypatch.setattr(backend, "BACKEND", forced)
    calls = []
    for name in ("_stats_torch", "_grad_torch"):
        real = getattr(logprobs, name)
        monkeypatch.setattr(logprobs, name, lambda *a, real=real, name=name: calls.append(name) or real(*a))
    torch.manual_seed(0)
    m = Transformer(ModelConfig(vocab_size=50, dim=16, n_layers=1, n_heads=2, n_kv_heads=1, inter_dim=32))
    idx = torch.randint(0, 50, (2, 9))
    logp = m(idx[:, :-1], targets=idx[:, 1:], where=torch.ones(2, 8, dtype=torch.bool))
    logp.sum().backward()
    assert (calls == []) == (forced == "triton") and logp.shape == (16,)


def test_out_of_range_targets_and_bad_shapes_raise():
    logits, targets = make_logits("random")
    with pytest.raises(ValueError, match=r"\[0, 300\)"):
        kernels.token_logprobs(logits, targets + 300)
    with pytest.raises(ValueError, match=r"\[0, 300\)"):
        kernels.linear_token_logprobs(torch.randn(7, 4), torch.randn(300, 4), targets - 300)
    with pytest.raises(ValueError, match="logits"):
        kernels.token_logprobs(logits[None], targets)
    with pytest.raises(ValueError, match="backend"):
        kernels.token_logprobs(logits, targets, backend="cuda")


# ----------------------------------------------------------------------- linear_token_logprobs

def make_linear(N=7, V=300, d=16, seed=0, peaked=False):
    g = torch.Generator().manual_seed(seed)
    hidden, weight = torch.randn(N, d, generator=g), 0.5 * torch.randn(V, d, generator=g)  # logits of std ~ 2
    targets = torch.randint(0, V, (N,), generator=g)
    targets[0] = V - 1
    if peaked:  # the targets of rows 0, 2, ...: a weight row along the hidden state, logit ~ 16, p ~ 1
        weight[targets[::2]] = 4 * hidden[::2] / hidden[::2].norm(dim=1, keepdim=True)
    return hidden, weight, targets


@pytest.mark.parametrize("N", [7, 1])
@pytest.mark.parametrize("peaked,temperature", [(False, 1.0), (False, 0.6), (False, 0.25), (True, 1.0), (True, 0.6)])
def test_linear_token_logprobs_and_gradients_match_float64(small_tiles, N, peaked, temperature):
    hidden, weight, targets = make_linear(N, peaked=peaked)
    g, g_ent = torch.randn(N), torch.randn(N)
    h, w = hidden.clone().requires_grad_(True), weight.clone().requires_grad_(True)
    logp, ent = kernels.linear_token_logprobs(h, w, targets, temperature, with_entropy=True)
    ((logp * g).sum() + (ent * g_ent).sum()).backward()
    h64, w64 = hidden.double().requires_grad_(True), weight.double().requires_grad_(True)
    want, want_ent = reference(h64 @ w64.T / temperature, targets)
    ((want * g).sum() + (want_ent * g_ent).sum()).backward()
    assert logp.dtype == torch.float32
    torch.testing.assert_close(logp.double(), want.detach(), atol=1e-5, rtol=0)
    torch.testing.assert_close(ent.double(), want_ent.detach(), atol=1e-5, rtol=0)
    torch.testing.assert_close(h.grad.double(), h64.grad, **GRAD)
    torch.testing.assert_close(w.grad.double(), w64.grad, **GRAD)


def test_linear_form_with_tied_embeddings_accumulates_both_gradients(small_tiles):
    hidden, weight, targets = make_linear()
    ids = torch.randint(0, 300, (7,), generator=torch.Generator().manual_seed(1))
    mix = torch.randn(16, 16, generator=torch.Generator().manual_seed(2)) / 4

    def loss(emb, linear):  # embedding lookup -> a layer -> the same matrix as lm_head
        h = torch.tanh(emb[ids] @ mix.to(emb.dtype)) * 3
        return linear(h, emb).sum()

    w = weight.clone().requires_grad_(True)
    loss(w, lambda h, e: kernels.linear_token_logprobs(h, e, targets)).backward()
    w64 = weight.double().requires_grad_(True)
    loss(w64, lambda h, e: reference(h @ e.T, targets)[0]).backward()
    torch.testing.assert_close(w.grad.double(), w64.grad, **GRAD)


def test_linear_form_with_a_frozen_weight_gives_the_hidden_gradient_only(small_tiles):
    hidden, weight, targets = make_linear()
    h = hidden.clone().requires_grad_(True)
    kernels.linear_token_logprobs(h, weight, targets).sum().backward()
    h64 = hidden.double().requires_grad_(True)
    reference(h64 @ weight.double().T, targets)[0].sum().backward()
    assert weight.grad is None
    torch.testing.assert_close(h.grad.double(), h64.grad, **GRAD)


def test_linear_form_keeps_only_its_inputs_and_row_stats_for_backward(small_tiles):
    hidden, weight, targets = make_linear()
    h, w = hidden.requires_grad_(True), weight.requires_grad_(True)
    logp, _ = kernels.linear_token_logprobs(h, w, targets, with_entropy=True)
    saved = [s for s in logp.grad_fn.saved_tensors if s is not None]
    assert {s.data_ptr() for s in saved if s.numel() > 7} == {h.data_ptr(), w.data_ptr()}


def test_linear_form_repeats_bit_for_bit():
    hidden, weight, targets = make_linear(N=64, V=1000, d=32)

    def run():
        h, w = hidden.clone().requires_grad_(True), weight.clone().requires_grad_(True)
        logp, ent = kernels.linear_token_logprobs(h, w, targets, 0.7, with_entropy=True)
        (logp.sum() + ent.sum()).backward()
        return logp, ent, h.grad, w.grad

    assert all(torch.equal(a, b) for a, b in zip(run(), run()))


# ----------------------------------------------------------------------------- the policy loss

AGGS = ["seq-mean-token-mean", "token-mean", "seq-mean-token-sum-norm"]


def make_batch(B=6, T=7, seed=0, masked_row=None):
    """Ratios spread beyond the clip range on both sides, right-padded masks (as test_grpo.py)."""
    g = torch.Generator().manual_seed(seed)
    logp = -3 * torch.rand(B, T, generator=g)
    old = logp + 0.3 * torch.randn(B, T, generator=g)
    ref = logp + 0.5 * torch.randn(B, T, generator=g)
    adv = torch.randn(B, generator=g)
    mask = torch.arange(T)[None, :] < torch.randint(1, T + 1, (B,), generator=g)[:, None]
    if masked_row is not None:
        mask[masked_row] = False
    return logp, old, ref, adv, mask


def both(backend, logp, old, ref, adv, mask, **kw):
    """(loss, d loss / d logp) from policy_loss on this backend (fp32) and from its PyTorch path in float64."""
    x = logp.clone().requires_grad_(True)
    loss = policy_loss(*dev(backend, x, old, ref, adv, mask), backend=backend, **kw)[0]
    loss.backward()
    x64 = logp.double().requires_grad_(True)
    old64, ref64 = [None if t is None else t.double() for t in (old, ref)]
    want = policy_loss(x64, old64, ref64, adv.double(), mask, backend="torch", **kw)[0]
    want.backward()
    return loss.cpu(), x.grad, want, x64.grad


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("agg", AGGS)
@pytest.mark.parametrize("beta,kl", [(0.0, "k3"), (0.04, "k1"), (0.04, "k2"), (0.04, "k3")])
@pytest.mark.parametrize("on_policy", [False, True])
def test_policy_loss_matches_its_float64_reference(backend, agg, beta, kl, on_policy):
    logp, old, ref, adv, mask = make_batch(seed=1)
    kw = dict(eps_low=0.2, eps_high=0.28, beta=beta, kl=kl, agg=agg, max_len=9)
    if not on_policy:  # the batch exercises both sides of the clip
        m = policy_loss(logp, old, ref, adv, mask, **kw)[1]
        assert m["clip_frac_low"] > 0 and m["clip_frac_high"] > 0
    loss, grad, want, want_grad = both(backend, logp, None if on_policy else old, ref, adv, mask, **kw)
    assert loss.dtype == torch.float32
    assert loss.item() == pytest.approx(want.item(), abs=1e-5)
    torch.testing.assert_close(grad.double(), want_grad, **GRAD)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("agg", AGGS)
def test_a_fully_masked_row_contributes_nothing(backend, agg):
    logp, old, ref, adv, mask = make_batch(seed=2, masked_row=3)
    loss, grad, want, want_grad = both(backend, logp, old, ref, adv, mask, beta=0.04, agg=agg, max_len=9)
    assert loss.item() == pytest.approx(want.item(), abs=1e-5)
    torch.testing.assert_close(grad.double(), want_grad, **GRAD)
    assert torch.equal(grad[3], torch.zeros(7))
    no_rows = policy_loss(*dev(backend, logp, old, ref, adv, torch.zeros_like(mask)), beta=0.04, agg=agg, max_len=9,
                          backend=backend)[0]
    assert no_rows.item() == 0.0


@pytest.mark.parametrize("backend", BACKENDS)
def test_garbage_in_masked_positions_changes_nothing(backend):
    logp, old, ref, adv, mask = make_batch(seed=4)
    dirty = [x.clone() for x in (logp, old, ref)]
    for x, v in zip(dirty, (-math.inf, math.nan, math.inf)):
        x[~mask] = v
    runs = []
    for a, b, c in ((logp, old, ref), dirty):
        x = a.clone().requires_grad_(True)
        loss = policy_loss(*dev(backend, x, b, c, adv, mask), beta=0.04, backend=backend)[0]
        loss.backward()
        runs.append((loss.item(), x.grad))
    assert runs[0][0] == runs[1][0] and torch.equal(runs[0][1], runs[1][1])


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("eps_low,eps_high", [(0.0, 0.28), (0.2, 0.0), (0.0, 0.0)])
def test_ratio_exactly_on_a_clip_edge_keeps_the_full_gradient(backend, eps_low, eps_high):
    # old == logp: ratio = exp(0) = 1 exactly in any exp, and with eps = 0 that is the edge itself.
    # A > 0 at 1 + eps_high and A < 0 at 1 - eps_low would be clipped by a non-strict comparison.
    logp = torch.tensor([[-1.0], [-2.0], [-0.5], [-0.7]])
    adv = torch.tensor([1.0, -1.0, 0.5, -0.5])
    kw = dict(eps_low=eps_low, eps_high=eps_high, agg="token-mean")
    loss, grad, want, want_grad = both(backend, logp, logp.clone(), None, adv, torch.ones(4, 1, dtype=torch.bool), **kw)
    torch.testing.assert_close(grad[:, 0], -adv / 4)  # -A * ratio / n_tokens on every token: none clipped
    torch.testing.assert_close(grad.double(), want_grad, **GRAD)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("agg", AGGS)
def test_micro_batch_losses_with_global_counts_sum_to_the_batch_loss(backend, agg):
    logp, old, ref, adv, mask = make_batch(seed=5)
    kw = dict(beta=0.04, agg=agg, max_len=9, backend=backend)
    whole = policy_loss(*dev(backend, logp, old, ref, adv, mask), **kw)[0]
    counts = dict(n_tokens=mask.sum(), n_seqs=(mask.sum(1) > 0).sum())
    parts = sum(policy_loss(*dev(backend, logp[s], old[s], ref[s], adv[s], mask[s]), **counts, **kw)[0]
                for s in (slice(0, 2), slice(2, 6)))
    assert parts.item() == pytest.approx(whole.item(), abs=1e-6)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("kl", ["k1", "k2", "k3"])
def test_token_kl_and_its_gradient_match_float64_per_token(backend, kl):
    # d = ref - logp from 1e-6 to 3 on both sides: the kernel's k3 switches from a series to exp at |d| = 0.5
    d64 = torch.tensor([1e-6, -1e-4, 1e-3, -0.05, 0.3, -0.49, 0.49, 0.51, -0.51, 1.0, -2.0, 3.0], dtype=torch.float64)
    want = {"k1": (-d64, torch.ones_like(d64)), "k2": (d64 * d64 / 2, -d64),
            "k3": (torch.expm1(d64) - d64, -torch.expm1(d64))}[kl]
    for i, d in enumerate(d64.float().tolist()):  # one token per call, so the loss is that token's KL
        x = torch.full((1, 1), -1.5, requires_grad=True)
        ref = torch.full((1, 1), -1.5 + d)
        loss = policy_loss(*dev(backend, x, None, ref, torch.zeros(1), torch.ones(1, 1, dtype=torch.bool)), beta=1.0,
                           kl=kl, agg="token-mean", backend=backend)[0]
        loss.backward()
        dd = torch.tensor(-1.5 + d).double() + 1.5  # the d the float32 inputs hold
        assert loss.item() == pytest.approx({"k1": -dd, "k2": dd * dd / 2, "k3": torch.expm1(dd) - dd}[kl].item(),
                                            abs=1e-7, rel=1e-5)
        assert x.grad.item() == pytest.approx(want[1][i].item(), abs=2e-5, rel=1e-3)
        if kl == "k3":
            assert loss.item() >= 0


# ------------------------------------------------------------------------------------ the package

SIDE_BY_SIDE = """
import importlib.metadata, os, sys, tempfile
import torch
import r1_kernels                                   # ours: the kernels/ folder
import transformers
import transformers.integrations.hub_kernels        # imports Hugging Face's `kernels` where installed
from model import Transformer
import kernels                                      # whatever `kernels` is now: never our folder
assert not hasattr(kernels, "linear_token_logprobs") and getattr(kernels, "__file__", None) != os.path.abspath("kernels")
try:
    importlib.metadata.version("kernels")
    hub = True
except importlib.metadata.PackageNotFoundError:
    hub = False
assert transformers.utils.import_utils.is_kernels_available() in ((True, False) if hub else (False,))
tiny = dict(vocab_size=97, hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=2, max_position_embeddings=64)
for ref in (transformers.LlamaForCausalLM(transformers.LlamaConfig(**tiny, tie_word_embeddings=False)),
            transformers.Qwen3ForCausalLM(transformers.Qwen3Config(**tiny, head_dim=24, tie_word_embeddings=True))):
    path = tempfile.mkdtemp()
    ref.eval().save_pretrained(path)
    ours = Transformer.from_pretrained(path)
    idx = torch.randint(0, 97, (2, 11))
    with torch.no_grad():
        want = ref(idx).logits
        assert (ours(idx) - want).abs().max() <= 1e-4
        where = torch.ones(2, 10, dtype=torch.bool)
        logp = ours(idx[:, :-1], targets=idx[:, 1:], where=where)   # through r1_kernels.linear_token_logprobs
        ref_logp = want[:, :-1].log_softmax(-1).gather(-1, idx[:, 1:, None])[..., 0]
        assert (logp - ref_logp.flatten()).abs().max() <= 1e-4
print("side by side:", "hub kernels", importlib.metadata.version("kernels") if hub else "absent")
"""


def test_our_kernels_and_transformers_work_in_one_process_started_from_the_repository_root():
    """`kernels` is also Hugging Face's kernel-hub library, which transformers imports: from the repository
    root our folder must not take its name (r1_kernels.py), or transformers fails to build a model."""
    pytest.importorskip("transformers")
    root = pathlib.Path(__file__).resolve().parents[1]
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}  # the repository root only as a script's is
    run = subprocess.run([sys.executable, "-c", SIDE_BY_SIDE], cwd=root, env=env, capture_output=True, text=True,
                         timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "side by side:" in run.stdout

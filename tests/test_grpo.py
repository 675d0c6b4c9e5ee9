"""Tests for grpo.py: advantages, KL estimators, the clipped policy loss and its aggregations.

The policy loss is checked against `reference`, written from the papers as plain float64 Python loops
with hand-derived gradients (no autograd), deliberately unlike the vectorised implementation.
"""

import math
import re

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from grpo import group_advantages, group_has_signal, kl_penalty, policy_loss

AGGS = ["seq-mean-token-mean", "token-mean", "seq-mean-token-sum-norm"]
MAX_LEN = 9


# ---------------------------------------------------------------------------------------------
# float64 reference, from the papers
# ---------------------------------------------------------------------------------------------

def reference(logp, old, ref, adv, mask, eps_low, eps_high, beta, kl, agg, max_len):
    """PPO/GRPO objective per token, aggregated as in DeepSeekMath / DAPO / Dr. GRPO.

    All inputs are nested Python lists (old/ref may be None). Returns (loss, grad, stats) with
    grad[i][t] = d loss / d logp[i][t]. Token loss: -min(r A, clip(r) A) + beta * k(logp, ref).
    The gradient goes through r A unless the clipped term is *strictly* smaller (ties: unclipped).
    """
    B, T = len(logp), len(logp[0])
    lens = [sum(1 for t in range(T) if mask[i][t]) for i in range(B)]
    n_tok = sum(lens)
    n_seq = sum(1 for n in lens if n > 0)
    loss, grad = 0.0, [[0.0] * T for _ in range(B)]
    n_low = n_high = 0
    kl_sum = 0.0
    ratios = []
    for i in range(B):
        for t in range(T):
            if not mask[i][t]:
                continue
            A = adv[i]
            r = 1.0 if old is None else math.exp(logp[i][t] - old[i][t])
            ratios.append(r)
            r_clip = min(max(r, 1.0 - eps_low), 1.0 + eps_high)
            if r_clip * A < r * A:  # the min picks the clipped term: constant, no gradient
                obj, dobj = r_clip * A, 0.0
                if r < 1.0 - eps_low:
                    n_low += 1
                else:
                    n_high += 1
            else:  # d(r A)/d logp = r A
                obj, dobj = r * A, r * A
            k, dk = 0.0, 0.0
            if ref is not None:
                d = ref[i][t] - logp[i][t]
                if kl == "k1":
                    k, dk = -d, 1.0
                elif kl == "k2":
                    k, dk = 0.5 * d * d, -d
                else:
                    k, dk = math.exp(d) - d - 1.0, 1.0 - math.exp(d)
                kl_sum += k
            if agg == "seq-mean-token-mean":
                w = 1.0 / (lens[i] * n_seq)
            elif agg == "token-mean":
                w = 1.0 / n_tok
            else:
                w = 1.0 / (max_len * n_seq)
            loss += w * (-obj + beta * k)
            grad[i][t] = w * (-dobj + beta * dk)
    stats = dict(clip_frac_low=n_low / n_tok, clip_frac_high=n_high / n_tok, kl=kl_sum / n_tok,
                 ratio_min=min(ratios), ratio_max=max(ratios))
    return loss, grad, stats


def make_batch(B=6, T=7, seed=0, masked_row=None):
    """Random float64 batch; ratios spread beyond the clip range; right-padded masks."""
    g = torch.Generator().manual_seed(seed)
    logp = -3 * torch.rand(B, T, generator=g, dtype=torch.float64)
    old = logp + 0.3 * torch.randn(B, T, generator=g, dtype=torch.float64)
    ref = logp + 0.5 * torch.randn(B, T, generator=g, dtype=torch.float64)
    adv = torch.randn(B, generator=g, dtype=torch.float64)
    lens = torch.randint(1, T + 1, (B,), generator=g)
    mask = torch.arange(T)[None, :] < lens[:, None]
    if masked_row is not None:
        mask[masked_row] = False
    # round to fp32 once, so reference and implementation see identical numbers
    return [x.float().double() for x in (logp, old, ref, adv)] + [mask]


def run_impl(logp64, old64, ref64, adv64, mask, dtype=torch.float32, **kw):
    logp = logp64.to(dtype).requires_grad_(True)
    cast = lambda x: None if x is None else x.to(dtype)  # noqa: E731
    loss, metrics = policy_loss(logp, cast(old64), cast(ref64), adv64.to(dtype), mask, **kw)
    loss.backward()
    return loss, logp.grad, metrics


def tolist(x):
    return None if x is None else x.tolist()


# ---------------------------------------------------------------------------------------------
# group_advantages / group_has_signal
# ---------------------------------------------------------------------------------------------

def test_grpo_advantages_hand_computed():
    # group [1,0,0,1]: mean .5, unbiased var 4*.25/3 = 1/3 -> A = +-.5 / sqrt(1/3) = +-sqrt(3)/2
    # group [0,0,0,1]: mean .25, unbiased var (3*.0625 + .5625)/3 = .25 -> std .5 -> A = -.5, 1.5
    adv = group_advantages(torch.tensor([1.0, 0, 0, 1, 0, 0, 0, 1]), 4, eps=0.0)
    h = math.sqrt(3) / 2
    torch.testing.assert_close(adv, torch.tensor([h, -h, -h, h, -0.5, -0.5, -0.5, 1.5]))


def test_grpo_advantages_add_eps_to_std():
    adv = group_advantages(torch.tensor([0.0, 0, 0, 1]), 4, eps=0.5)
    torch.testing.assert_close(adv, torch.tensor([-0.25, -0.25, -0.25, 0.75]))  # / (0.5 + 0.5)


def test_dr_grpo_advantages_are_centred_not_scaled():
    adv = group_advantages(torch.tensor([1.0, 0, 0, 1, 0, 0, 0, 1]), 4, mode="dr_grpo")
    torch.testing.assert_close(adv, torch.tensor([0.5, -0.5, -0.5, 0.5, -0.25, -0.25, -0.25, 0.75]))


@pytest.mark.parametrize("mode", ["grpo", "dr_grpo"])
def test_neg_weight_scales_only_negative_advantages(mode):
    r = torch.tensor([1.0, 0, 0, 1, 0, 0, 0, 1])
    full = group_advantages(r, 4, mode=mode)
    for w in (0.0, 0.1):  # dr_grpo group 2: [-.25, -.25, -.25, .75] -> [-.25 w, -.25 w, -.25 w, .75]
        adv = group_advantages(r, 4, mode=mode, neg_weight=w)
        torch.testing.assert_close(adv, torch.where(full < 0, w * full, full))
    torch.testing.assert_close(group_advantages(r, 4, mode="dr_grpo", neg_weight=0.0),
                               torch.tensor([0.5, 0, 0, 0.5, 0, 0, 0, 0.75]))


def test_batch_std_divides_group_centred_rewards_by_std_of_whole_batch():
    # rewards [1,0 | 1,1]: group means .5, 1; batch std (unbiased) of [1,0,1,1] = .5
    adv = group_advantages(torch.tensor([1.0, 0.0, 1.0, 1.0]), 2, std="batch", eps=0.0)
    torch.testing.assert_close(adv, torch.tensor([1.0, -1.0, 0.0, 0.0]))


@pytest.mark.parametrize("mode,std", [("grpo", "group"), ("grpo", "batch"), ("dr_grpo", "group")])
def test_equal_reward_groups_get_exactly_zero_advantage(mode, std):
    # fp32 mean of [0.9, 0.9, 0.9] is off by one ulp: unguarded, (r - mean) / (std + eps) gives 0.056
    r = torch.tensor([0.9, 0.9, 0.9, 1.0, 1.0, 1.0, 0.3, 0.7, 0.2])
    adv = group_advantages(r, 3, mode=mode, std=std)
    assert torch.equal(adv[:6], torch.zeros(6))
    assert (adv[6:] != 0).all()


def test_group_size_one_gives_zero_advantage_not_nan():
    for mode in ("grpo", "dr_grpo"):
        assert torch.equal(group_advantages(torch.tensor([0.0, 1.0, 0.5]), 1, mode=mode), torch.zeros(3))


def test_rewards_not_divisible_by_group_size_raise():
    with pytest.raises(ValueError, match="groups of 4"):
        group_advantages(torch.zeros(6), 4)
    with pytest.raises(ValueError, match="groups of 4"):
        group_has_signal(torch.zeros(6), 4)


def test_group_has_signal_is_false_for_equal_reward_groups():
    mask = group_has_signal(torch.tensor([1.0, 1.0, 0.0, 1.0, 2.0, 2.0]), 2)
    assert mask.tolist() == [False, True, False]


# ---------------------------------------------------------------------------------------------
# KL estimators
# ---------------------------------------------------------------------------------------------

def test_kl_estimator_values():
    logp, ref = torch.tensor([-1.0]), torch.tensor([-2.0])  # d = ref - logp = -1
    assert kl_penalty(logp, ref, "k1").item() == pytest.approx(1.0)
    assert kl_penalty(logp, ref, "k2").item() == pytest.approx(0.5)
    assert kl_penalty(logp, ref, "k3").item() == pytest.approx(math.exp(-1.0))  # e^-1 + 1 - 1


def test_k3_is_nonnegative_for_nearly_equal_logprobs_in_fp32():
    logp = torch.tensor([-1e-6, 1e-6, -3e-7, 0.0])
    assert (kl_penalty(logp, torch.zeros(4), "k3") >= 0).all()


def _kl_step(logp0, ref0, kind):
    """One SGD step on beta * kl alone (adv = 0), through policy_loss; returns the new logp."""
    logp = torch.tensor([[logp0]], requires_grad=True)
    loss, _ = policy_loss(logp, None, torch.tensor([[ref0]]), torch.zeros(1), torch.ones(1, 1, dtype=torch.bool),
                          beta=0.04, kl=kind)
    loss.backward()
    return (logp - 1.0 * logp.grad).item()


@pytest.mark.parametrize("kind", ["k2", "k3"])
def test_kl_penalty_pulls_logp_toward_ref_from_both_sides(kind):
    ref = -1.0
    for start in (-0.5, -2.0):  # above and below the reference
        new = _kl_step(start, ref, kind)
        assert abs(new - ref) < abs(start - ref)


def test_k1_gradient_pushes_logp_down_whatever_the_reference():
    # k1 = logp - ref: its gradient is +1, so it lowers logp even when logp is already below ref
    assert _kl_step(-2.0, -1.0, "k1") == pytest.approx(-2.04)
    assert _kl_step(-0.5, -1.0, "k1") == pytest.approx(-0.54)


def test_k3_is_not_clamped_far_from_reference():
    # verl clamps k3 at 10, which kills this gradient; we keep it: d/dlogp = beta * (1 - e^5)
    logp = torch.tensor([[-6.0]], requires_grad=True)
    loss, m = policy_loss(logp, None, torch.tensor([[-1.0]]), torch.zeros(1), torch.ones(1, 1), beta=0.04)
    loss.backward()
    assert m["kl"] == pytest.approx(math.exp(5) - 6, rel=1e-6)
    assert logp.grad.item() == pytest.approx(0.04 * (1 - math.exp(5)), rel=1e-6)


# ---------------------------------------------------------------------------------------------
# policy_loss against the float64 reference
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("agg", AGGS)
@pytest.mark.parametrize("eps_high", [0.2, 0.28])
@pytest.mark.parametrize("beta,kl", [(0.0, "k3"), (0.04, "k1"), (0.04, "k2"), (0.04, "k3")])
@pytest.mark.parametrize("on_policy", [False, True])
def test_policy_loss_matches_float64_reference(agg, eps_high, beta, kl, on_policy):
    logp, old, ref, adv, mask = make_batch(seed=1)
    old = None if on_policy else old
    kw = dict(eps_low=0.2, eps_high=eps_high, beta=beta, kl=kl, agg=agg, max_len=MAX_LEN)
    want, want_grad, stats = reference(tolist(logp), tolist(old), tolist(ref), adv.tolist(), mask.tolist(), **kw)
    loss, grad, m = run_impl(logp, old, ref, adv, mask, **kw)
    assert loss.dtype == torch.float32
    assert loss.item() == pytest.approx(want, abs=1e-5)
    torch.testing.assert_close(grad.double(), torch.tensor(want_grad, dtype=torch.float64), atol=1e-5, rtol=0)
    for key in ("clip_frac_low", "clip_frac_high", "kl", "ratio_min", "ratio_max"):
        assert m[key] == pytest.approx(stats[key], abs=1e-5), key
    assert m["pg_loss"] + beta * m["kl_loss"] == pytest.approx(loss.item(), abs=1e-6)


def test_reference_batch_exercises_both_clip_sides():
    logp, old, ref, adv, mask = make_batch(seed=1)
    _, _, stats = reference(logp.tolist(), old.tolist(), ref.tolist(), adv.tolist(), mask.tolist(),
                            0.2, 0.2, 0.0, "k3", "token-mean", MAX_LEN)
    assert stats["clip_frac_low"] > 0 and stats["clip_frac_high"] > 0


def test_hand_computed_two_sequences():
    # seq 0: A = +1,  mask [1,1,0], ratios [1, 1.5, -]   -> token losses -1, -min(1.5, 1.2) = -1.2
    # seq 1: A = -.5, mask [1,1,1], ratios [1, .5, 1.5]  -> .5, -min(-.25, -.4) = .4, -min(-.75, -.6) = .75
    # seq-mean-token-mean: (-2.2/2 + 1.65/3) / 2 = (-1.1 + .55) / 2 = -.275
    # grads (unclipped tokens only, -A r / (len * 2)): seq0 t0 -1/4; seq1 t0 .5/6, t2 .75/6
    old = torch.tensor([[-1.0, -2.0, -1.0], [-0.5, -1.0, -2.0]])
    logp = (old.double() + torch.tensor([[1.0, 1.5, 1.0], [1.0, 0.5, 1.5]]).double().log()).float()
    logp.requires_grad_(True)
    adv, mask = torch.tensor([1.0, -0.5]), torch.tensor([[1, 1, 0], [1, 1, 1]])
    loss, m = policy_loss(logp, old, None, adv, mask)
    loss.backward()
    assert loss.item() == pytest.approx(-0.275, abs=1e-6)
    torch.testing.assert_close(logp.grad, torch.tensor([[-0.25, 0.0, 0.0], [0.5 / 6, 0.0, 0.125]]))
    assert m["clip_frac_low"] == pytest.approx(0.2) and m["clip_frac_high"] == pytest.approx(0.2)
    assert m["ratio_min"] == pytest.approx(0.5) and m["ratio_max"] == pytest.approx(1.5)
    # token-mean: (-1 - 1.2 + .5 + .4 + .75) / 5 = -.11; Dr. GRPO, max_len 4: (-2.2/4 + 1.65/4) / 2
    assert policy_loss(logp, old, None, adv, mask, agg="token-mean")[0].item() == pytest.approx(-0.11, abs=1e-6)
    drgrpo = policy_loss(logp, old, None, adv, mask, agg="seq-mean-token-sum-norm", max_len=4)[0]
    assert drgrpo.item() == pytest.approx(-0.06875, abs=1e-6)


# ---------------------------------------------------------------------------------------------
# clip edges
# ---------------------------------------------------------------------------------------------

EDGES = [(0.2, 0.2), (0.2, 0.28)]


@pytest.mark.parametrize("eps_low,eps_high", EDGES)
def test_ratio_exactly_on_clip_edge_gets_full_gradient_fp32(eps_low, eps_high):
    # old_logp = 0 makes exp(log(1 +- eps)) round back to exactly the fp32 bound
    bounds = [1 + eps_high, 1 - eps_low, 1 + eps_high, 1 - eps_low]
    adv = torch.tensor([1.0, -1.0, -1.0, 1.0])  # the two clip-active sides, then the two free sides
    logp = torch.tensor([[math.log(b)] for b in bounds], dtype=torch.float64).float().requires_grad_(True)
    old = torch.zeros(4, 1)
    ratio = torch.exp(logp.detach() - old)[:, 0]
    assert torch.equal(ratio, torch.tensor(bounds, dtype=torch.float32))  # exactly on the edges
    loss, m = policy_loss(logp, old, None, adv, torch.ones(4, 1), eps_low=eps_low, eps_high=eps_high,
                          agg="token-mean")
    loss.backward()
    torch.testing.assert_close(logp.grad[:, 0], -adv * ratio / 4)
    assert m["clip_frac_low"] == 0 and m["clip_frac_high"] == 0


@pytest.mark.parametrize("eps_low,eps_high", EDGES)
@pytest.mark.parametrize("agg", AGGS)
def test_ratio_exactly_on_clip_edge_matches_reference_fp64(eps_low, eps_high, agg):
    olds = [-0.5, -1.0, -1.5, -0.25]  # values for which exp((old + log b) - old) == b in float64
    bounds = [1 + eps_high, 1 - eps_low]
    old = torch.tensor([[o] * 2 for o in olds], dtype=torch.float64)
    logp = old + torch.tensor(bounds, dtype=torch.float64).log()
    assert torch.equal(torch.exp(logp - old), torch.tensor([bounds] * 4, dtype=torch.float64))
    adv = torch.tensor([1.0, -1.0, 0.5, -0.5], dtype=torch.float64)
    mask = torch.ones(4, 2, dtype=torch.bool)
    kw = dict(eps_low=eps_low, eps_high=eps_high, beta=0.0, kl="k3", agg=agg, max_len=MAX_LEN)
    want, want_grad, _ = reference(logp.tolist(), old.tolist(), None, adv.tolist(), mask.tolist(), **kw)
    loss, grad, _ = run_impl(logp, old, None, adv, mask, dtype=torch.float64, **kw)
    assert loss.item() == pytest.approx(want, abs=1e-12)
    torch.testing.assert_close(grad, torch.tensor(want_grad, dtype=torch.float64), atol=1e-12, rtol=0)
    assert (grad != 0).all()  # every token sits on an edge, none is treated as clipped


# ---------------------------------------------------------------------------------------------
# masks, on-policy, micro-batching
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("agg", AGGS)
def test_fully_masked_row_contributes_nothing_and_is_not_counted(agg):
    logp, old, ref, adv, mask = make_batch(seed=2, masked_row=3)
    kw = dict(beta=0.04, agg=agg, max_len=MAX_LEN)
    loss, grad, _ = run_impl(logp, old, ref, adv, mask, **kw)
    keep = [0, 1, 2, 4, 5]
    loss_wo, grad_wo, _ = run_impl(logp[keep], old[keep], ref[keep], adv[keep], mask[keep], **kw)
    assert torch.isfinite(loss) and loss.item() == pytest.approx(loss_wo.item(), abs=1e-6)
    assert torch.equal(grad[3], torch.zeros(7))
    torch.testing.assert_close(grad[keep], grad_wo)


@pytest.mark.parametrize("agg", AGGS)
def test_all_rows_masked_gives_zero_loss_not_nan(agg):
    logp, old, ref, adv, mask = make_batch(seed=3)
    loss, grad, m = run_impl(logp, old, ref, adv, torch.zeros_like(mask), beta=0.04, agg=agg, max_len=MAX_LEN)
    assert loss.item() == 0.0 and torch.equal(grad, torch.zeros_like(grad))
    assert all(math.isfinite(v) for v in m.values())


def test_garbage_in_masked_positions_does_not_leak():
    logp, old, ref, adv, mask = make_batch(seed=4)
    clean = run_impl(logp, old, ref, adv, mask, beta=0.04)
    dirty = [x.clone() for x in (logp, old, ref)]
    for x, v in zip(dirty, (-math.inf, math.nan, math.inf)):
        x[~mask] = v
    loss, grad, _ = run_impl(*dirty, adv, mask, beta=0.04)
    assert loss.item() == clean[0].item()
    assert torch.equal(grad, clean[1])


def test_float_mask_equals_bool_mask():
    logp, old, ref, adv, mask = make_batch(seed=5)
    a = run_impl(logp, old, ref, adv, mask, beta=0.04, agg="token-mean")
    b = run_impl(logp, old, ref, adv, mask.float(), beta=0.04, agg="token-mean")
    assert a[0].item() == b[0].item() and torch.equal(a[1], b[1])


def test_on_policy_is_reinforce_with_ratio_one():
    logp, _, _, adv, mask = make_batch(seed=6)
    loss, grad, m = run_impl(logp, None, None, adv, mask, agg="token-mean")
    n = mask.sum()
    torch.testing.assert_close(loss.double(), -(adv[:, None] * mask).sum() / n, atol=1e-6, rtol=0)
    torch.testing.assert_close(grad.double(), -(adv[:, None] * mask) / n, atol=1e-7, rtol=0)
    assert m["ratio_min"] == m["ratio_max"] == 1.0 and m["clip_frac_low"] == m["clip_frac_high"] == 0.0


def _micro_batched(agg, splits, seed):
    logp, old, ref, adv, mask = make_batch(B=8, seed=seed, masked_row=5)
    kw = dict(beta=0.04, eps_high=0.28, agg=agg, max_len=MAX_LEN)
    whole, whole_grad, _ = run_impl(logp, old, ref, adv, mask, **kw)
    n_tokens, n_seqs = int(mask.sum()), int(mask.any(dim=1).sum())
    total, grads, start = 0.0, [], 0
    for size in splits:
        s = slice(start, start + size)
        loss, grad, _ = run_impl(logp[s], old[s], ref[s], adv[s], mask[s], n_tokens=n_tokens, n_seqs=n_seqs, **kw)
        total, start = total + loss.item(), start + size
        grads.append(grad)
    return whole.item(), total, whole_grad, torch.cat(grads)


@pytest.mark.parametrize("agg", AGGS)
def test_micro_batch_losses_sum_to_whole_batch_loss_with_global_counts(agg):
    whole, total, whole_grad, grad = _micro_batched(agg, [3, 1, 4], seed=7)
    assert total == pytest.approx(whole, abs=1e-6)
    torch.testing.assert_close(grad, whole_grad, atol=1e-6, rtol=0)


@settings(max_examples=25, deadline=None)
@given(st.lists(st.integers(1, 4), min_size=1, max_size=8).filter(lambda s: sum(s) <= 8), st.integers(0, 10**6))
def test_token_mean_is_invariant_to_any_micro_batch_split(sizes, seed):
    sizes = sizes + [8 - sum(sizes)] if sum(sizes) < 8 else sizes
    whole, total, whole_grad, grad = _micro_batched("token-mean", sizes, seed)
    assert total == pytest.approx(whole, abs=1e-6)
    torch.testing.assert_close(grad, whole_grad, atol=1e-6, rtol=0)


# ---------------------------------------------------------------------------------------------
# metrics and bad input
# ---------------------------------------------------------------------------------------------

def test_metrics_entropy_and_advantage_stats_over_valid_tokens():
    logp = torch.zeros(3, 2, requires_grad=True)
    mask = torch.tensor([[1, 1], [1, 0], [0, 0]])
    entropy = torch.tensor([[1.0, 2.0], [3.0, 100.0], [100.0, 100.0]])
    _, m = policy_loss(logp, None, None, torch.tensor([1.0, -1.0, 50.0]), mask, entropy=entropy)
    assert m["entropy"] == pytest.approx(2.0)  # (1 + 2 + 3) / 3
    assert m["adv_mean"] == pytest.approx(0.0) and m["adv_std"] == pytest.approx(1.0)  # row 2 has no tokens
    assert m["kl"] == 0.0 and m["kl_loss"] == 0.0 and "entropy" in m


def test_kl_metric_is_reported_even_when_beta_is_zero():
    logp, old, ref, adv, mask = make_batch(seed=8)
    _, _, m = run_impl(logp, old, ref, adv, mask, beta=0.0, kl="k2")
    want = (0.5 * (ref - logp) ** 2 * mask).sum() / mask.sum()
    assert m["kl"] == pytest.approx(want.item(), abs=1e-6) and m["kl_loss"] > 0


def test_beta_without_reference_raises():
    with pytest.raises(ValueError, match="ref_logp"):
        policy_loss(torch.zeros(2, 3), None, None, torch.zeros(2), torch.ones(2, 3), beta=0.04)


def test_dr_grpo_aggregation_without_max_len_raises():
    with pytest.raises(ValueError, match="max_len"):
        policy_loss(torch.zeros(2, 3), None, None, torch.zeros(2), torch.ones(2, 3), agg="seq-mean-token-sum-norm")


@pytest.mark.parametrize("name,bad", [("old_logp", (2, 4)), ("ref_logp", (3, 3)), ("mask", (2,)), ("adv", (3,)),
                                      ("adv", (2, 4))])
def test_wrong_shape_raises_naming_the_argument_and_shape(name, bad):
    args = dict(logp=torch.zeros(2, 3), old_logp=torch.zeros(2, 3), ref_logp=torch.zeros(2, 3),
                adv=torch.zeros(2), mask=torch.ones(2, 3))
    args[name] = torch.zeros(bad)
    with pytest.raises(ValueError, match=rf"{name} must have shape .*got {re.escape(str(bad))}"):
        policy_loss(**args)


def test_unknown_aggregation_and_kl_kind_raise():
    args = (torch.zeros(2, 3), None, None, torch.zeros(2), torch.ones(2, 3))
    with pytest.raises(ValueError, match="agg"):
        policy_loss(*args, agg="seq-sum")
    with pytest.raises(ValueError, match="kl"):
        policy_loss(*args, kl="k4")

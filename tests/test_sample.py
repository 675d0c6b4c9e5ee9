"""sample.py: batched KV-cached generation is exact, reproducible, and budget forcing does what s1 says."""

import torch

from model import ModelConfig, Transformer
from sample import generate, sample_next

CFG = ModelConfig(vocab_size=64, dim=64, n_layers=2, n_heads=4, n_kv_heads=2, inter_dim=128, max_seq_len=256,
                  tie_embeddings=False)


def tiny_model(seed=0):
    torch.manual_seed(seed)
    m = Transformer(CFG).eval()
    with torch.no_grad():  # 1/sqrt(fan_in) weights: sharper logits than the 0.02 init, varied greedy paths
        for name, p in m.named_parameters():
            if p.dim() == 2:
                p.normal_(0, 1.0 if "embed" in name else p.shape[1] ** -0.5)
    return m


def ragged_prompts(seed=1):
    g = torch.Generator().manual_seed(seed)
    return [torch.randint(1, 64, (n,), generator=g).tolist() for n in (5, 17, 1, 11, 30)]


def test_greedy_ragged_batch_equals_each_prompt_alone():
    m, prompts = tiny_model(), ragged_prompts()
    batch = generate(m, prompts, max_new_tokens=24, temperature=0)
    alone = [generate(m, [p], max_new_tokens=24, temperature=0)[0] for p in prompts]
    assert batch == alone
    assert len({tuple(o) for o in batch}) > 1  # the rows really differ


def test_sampling_after_an_optimizer_step_uses_the_updated_weights():
    """On CPU the decode step multiplies by (in, out) copies of the weights (model.Decoder), made per
    generate call: after an update, generate samples exactly what a fresh model holding the updated
    weights samples."""
    m, prompts = tiny_model(), ragged_prompts()
    m.lm_head.weight.requires_grad_(True)
    before = generate(m, prompts, max_new_tokens=16, temperature=1.0, seed=3)
    opt = torch.optim.SGD(m.parameters(), lr=0.5)
    m(torch.tensor([prompts[1]])).logsumexp(-1).mean().backward()
    opt.step()
    fresh = Transformer(CFG).eval()
    fresh.load_state_dict(m.state_dict())
    for kw in (dict(temperature=0), dict(temperature=1.0, seed=3)):
        assert generate(m, prompts, max_new_tokens=16, **kw) == generate(fresh, prompts, max_new_tokens=16, **kw)
    assert generate(m, prompts, max_new_tokens=16, temperature=1.0, seed=3) != before  # the update mattered


def test_greedy_with_stops_equals_alone_and_rows_stop_at_their_stop_id():
    m, prompts = tiny_model(), ragged_prompts()
    free = generate(m, prompts, max_new_tokens=24, temperature=0)
    stop = free[1][3]  # row 1 stops after 4 tokens; others whenever they hit it, so the batch shrinks
    batch = generate(m, prompts, max_new_tokens=24, temperature=0, stop_ids=[stop])
    alone = [generate(m, [p], max_new_tokens=24, temperature=0, stop_ids=[stop])[0] for p in prompts]
    assert batch == alone
    assert batch[1] == free[1][:4]
    for o in batch:
        assert stop not in o[:-1] and (o[-1] == stop or len(o) == 24)


def test_greedy_matches_step_by_step_argmax_of_full_forward():
    m = tiny_model()
    prompt = ragged_prompts()[3]
    out = generate(m, [prompt], max_new_tokens=16, temperature=0)[0]
    seq = list(prompt)
    with torch.no_grad():
        for t in out:
            assert m(torch.tensor([seq]))[0, -1].argmax().item() == t
            seq.append(t)


def test_seed_makes_sampling_reproducible():
    m, prompts = tiny_model(), ragged_prompts()
    a = generate(m, prompts, max_new_tokens=20, temperature=1.0, seed=7)
    b = generate(m, prompts, max_new_tokens=20, temperature=1.0, seed=7)
    c = generate(m, prompts, max_new_tokens=20, temperature=1.0, seed=8)
    assert a == b and a != c


def test_context_limit_stops_rows():
    m = tiny_model()
    out = generate(m, [[1] * 250], max_new_tokens=100, temperature=0)
    assert len(out[0]) == 6  # 256-token context


def test_prompt_longer_than_context_is_an_error():
    import pytest
    with pytest.raises(ValueError, match="does not fit the model's context of 256 tokens"):
        generate(tiny_model(), [[1] * 300], max_new_tokens=4)


def test_top_k_one_and_tiny_top_p_are_greedy():
    logits = torch.randn(100, 50)
    g = torch.Generator().manual_seed(0)
    assert torch.equal(sample_next(logits, 1.0, top_k=1, generator=g), logits.argmax(-1))
    assert torch.equal(sample_next(logits, 1.0, top_p=1e-6, generator=g), logits.argmax(-1))


def test_top_k_and_top_p_sample_the_renormalised_distribution():
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]])).expand(40000, 4)
    g = torch.Generator().manual_seed(0)
    freq_k = torch.bincount(sample_next(logits, 1.0, top_k=2, generator=g), minlength=4) / 40000
    assert torch.allclose(freq_k, torch.tensor([0.625, 0.375, 0, 0]), atol=0.01)
    # top_p=0.7: 0.5 alone is short of 0.7, 0.5+0.3 reaches it -> keep the first two
    freq_p = torch.bincount(sample_next(logits, 1.0, top_p=0.7, generator=g), minlength=4) / 40000
    assert torch.allclose(freq_p, torch.tensor([0.625, 0.375, 0, 0]), atol=0.01)
    freq_t = torch.bincount(sample_next(logits, 2.0, generator=g), minlength=4) / 40000
    p = torch.tensor([0.5, 0.3, 0.15, 0.05]).sqrt()
    assert torch.allclose(freq_t, p / p.sum(), atol=0.01)


# ----------------------------------------------------------------------------------- budget forcing

class Scripted(Transformer):
    """Real cache mechanics, scripted logits: the next token is script(last fed token). The prefill
    (hidden) and every decode step (decoder) run a real model on the cache, then return the script's
    logits; lm_head passes the prefill's through."""

    def __init__(self, script):
        torch.manual_seed(0)
        super().__init__(CFG)
        self.real = Transformer(CFG)
        self.script, self.fed = script, []
        self.lm_head = torch.nn.Identity()

    def scripted(self, tokens):
        logits = torch.zeros(len(tokens), CFG.vocab_size)
        for b, t in enumerate(tokens.tolist()):
            logits[b, self.script(t)] = 10.0
        return logits

    def hidden(self, idx, valid=None, cache=None):
        self.real.hidden(idx, valid, cache)
        self.fed.append(cache.n_valid.clone())
        return self.scripted(idx[:, -1])[:, None]

    def decoder(self):
        step = self.real.decoder()

        def decode(tok, valid, cache):
            step(tok, valid, cache)
            self.fed.append(cache.n_valid.clone())
            return self.scripted(tok)
        return decode


def test_min_think_replaces_an_early_single_token_delimiter_with_wait():
    m = Scripted(lambda t: 2 if t == 9 else 9)  # always closes the thinking at once; then stops
    out = generate(m, [[1, 1]], max_new_tokens=20, temperature=0, stop_ids=[2],
                   think_end=[9], min_think=3, wait_ids=[7])
    assert out == [[7, 7, 7, 9, 2]]


def test_min_think_rolls_back_a_multi_token_delimiter():
    m = Scripted(lambda t: {8: 9, 9: 2}.get(t, 8))  # "8 9" closes the thinking
    out = generate(m, [[1, 1]], max_new_tokens=20, temperature=0, stop_ids=[2],
                   think_end=[8, 9], min_think=3, wait_ids=[7, 6])
    assert out == [[7, 6, 7, 6, 8, 9, 2]]
    # positions count only kept tokens: the rolled-back 8s are not in n_valid
    assert [int(n) for n in m.fed[-1]] == [2 + len(out[0]) - 1]


def test_n_waits_extends_the_thinking_that_many_times_then_lets_it_close():
    m = Scripted(lambda t: 2 if t == 9 else 9)  # closes the thinking at once, every time; then stops
    out = generate(m, [[1, 1]], max_new_tokens=20, temperature=0, stop_ids=[2], think_end=[9], n_waits=3, wait_ids=[7])
    assert out == [[7, 7, 7, 9, 2]]  # three times "Wait" in place of the delimiter, then it closes


def test_max_think_forces_the_delimiter_and_answer_prefix():
    m = Scripted(lambda t: 2 if t == 3 else 5)  # never closes the thinking on its own
    out = generate(m, [[1]], max_new_tokens=20, temperature=0, stop_ids=[2],
                   think_end=[8, 9], max_think=4, answer_prefix=[3])
    assert out == [[5, 5, 5, 5, 8, 9, 3, 2]]


def test_rollback_leaves_the_model_state_of_the_clean_sequence():
    """After a rolled-back delimiter, greedy tokens are the argmax of a full forward on what was kept."""
    real = tiny_model()

    class Closes(Transformer):  # the real model, except that its 2nd and 3rd decode steps say "60 61"
        calls = 0

        def decoder(self):
            step = real.decoder()

            def decode(tok, valid, cache):
                logits = step(tok, valid, cache)
                Closes.calls += 1
                if Closes.calls in (2, 3):
                    logits[:] = 0
                    logits[:, 60 if Closes.calls == 2 else 61] = 100
                return logits
            return decode

    m = Closes(CFG)
    m.load_state_dict(real.state_dict())
    prompt = ragged_prompts()[1]
    out = generate(m, [prompt], max_new_tokens=12, temperature=0, think_end=[60, 61], min_think=8, wait_ids=[33])
    assert out[0][2] == 33 and 60 not in out[0]  # the delimiter is gone, "Wait" in its place
    seq = list(prompt) + out[0][:3]
    with torch.no_grad():
        for t in out[0][3:]:
            assert real(torch.tensor([seq]))[0, -1].argmax().item() == t
            seq.append(t)


def test_finished_rows_are_compacted_away_without_changing_any_row(monkeypatch):
    import model
    kept = []
    select_rows = model.KVCache.select_rows
    monkeypatch.setattr(model.KVCache, "select_rows", lambda self, rows: kept.append(len(rows)) or select_rows(self, rows))
    m = tiny_model()
    g = torch.Generator().manual_seed(3)
    prompts = [torch.randint(1, 64, (int(n),), generator=g).tolist() for n in torch.randint(1, 20, (12,), generator=g)]
    free = generate(m, prompts, max_new_tokens=24, temperature=0)
    stop = max(range(64), key=lambda t: sum(t in o for o in free))  # the token most rows emit
    batch = generate(m, prompts, max_new_tokens=24, temperature=0, stop_ids=[stop])
    assert kept and kept[0] < 12  # the batch did shrink
    assert batch == [generate(m, [p], max_new_tokens=24, temperature=0, stop_ids=[stop])[0] for p in prompts]


def test_prefix_sharing_prefills_each_group_once_and_gives_each_row_its_own_tokens(monkeypatch):
    """sample.py note 7: GRPO's G copies of a prompt are prefilled once (the cache starts with one
    row per run of equal neighbours), and every row gets the tokens it gets when sampled alone with
    its own draws (row0 / n_rows, note 6): greedy, T=1, top-p, with a stop id."""
    import model
    rows = []
    new_cache = model.Transformer.new_cache
    monkeypatch.setattr(model.Transformer, "new_cache",
                        lambda self, b, n, rows_in_use: rows.append(rows_in_use) or new_cache(self, b, n, rows_in_use))
    m, distinct = tiny_model(), ragged_prompts()[:3]
    prompts = [p for p in distinct for _ in range(4)] + [distinct[0]]  # runs of 4, 4, 4, then one more
    stop = generate(m, [distinct[1]], max_new_tokens=24, temperature=0)[0][5]
    for kw in (dict(temperature=0), dict(temperature=1.0, seed=3), dict(temperature=0.8, top_p=0.9, seed=4),
               dict(temperature=1.0, seed=5, stop_ids=[stop])):
        rows.clear()
        batch = generate(m, prompts, max_new_tokens=24, **kw)
        assert rows == [4]  # 13 rows, 4 runs
        alone = [generate(m, [p], max_new_tokens=24, row0=r, n_rows=len(prompts), **kw)[0]
                 for r, p in enumerate(prompts)]
        assert batch == alone
        if kw["temperature"] > 0:
            assert len({tuple(o) for o in batch[:4]}) > 1  # the copies of a prompt sample different tokens

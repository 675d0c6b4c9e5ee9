"""
Sampling throughput: r1-mini's generate, transformers' generate and the matmul floor, in one run.

Both samplers sample (temperature 1, no top-k/top-p) 128 new tokens for each of 32 prompts of 32
tokens, fp32, on this machine's CPU, with no stop token, so both produce exactly B * 128 tokens.
The model is a random tiny Qwen2 of bench_grpo.py's shapes: "bench" (dim 256, vocab 1024) or
"tiny", the 0.8M model the Countdown runs train (dim 128, vocab 121).

The floor is the same decode reduced to its matrix multiplies, with the model's weights and a KV
cache of the real shape: a prefill of the prompts, then one step per new token, each running per
layer q/k/v as one matmul, scores and weighted values over the cache so far, o, gate/up as one
matmul and down, then lm_head on the last position. No norms, RoPE, softmax, cache writes or
sampling. Each multiply runs in the faster of two layouts, measured first on this machine at its
own shape: the weight as `nn.Linear` stores it, `(out, in)`, through `F.linear` (MKL's
transposed-weight GEMM), or a contiguous `(in, out)` copy; the attention against keys stored
`(S, head_dim)` per head or transposed `(head_dim, S)`. The table of both layouts is printed.
A sampler made of the same fp32 matmuls cannot beat the floor, so "ours at N% of the floor" says
how much is left to win on any machine; a ratio to transformers alone cannot.

Each runs once to warm up, then `--repeats` timed runs, interleaved so background load hits all
three alike; the best run counts.

    python bench_sample.py            # --threads 1 on a busy machine
"""

import argparse
import os
import tempfile
import time

import torch
import torch.nn.functional as F

from bench_grpo import SHAPES
from model import ModelConfig, Transformer
from sample import generate


def best_times(fns, repeats):
    """Best wall time of each function, runs interleaved so background load hits all alike."""
    for fn in fns:
        fn()  # warm-up
    times = [[] for _ in fns]
    for _ in range(repeats):
        for fn, ts in zip(fns, times):
            t0 = time.perf_counter()
            fn()
            ts.append(time.perf_counter() - t0)
    return [min(ts) for ts in times]


def per_call(fn, n=200):
    """Median seconds of one call of fn (a microbenchmark: warm caches)."""
    for _ in range(10):
        fn()
    ts = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
    return sorted(ts)[n // 2]


def faster_layouts(model, batch, prompt_len, new_tokens):
    """For each weight matrix and each row count the decode multiplies it at (the prefill's
    batch * prompt_len, the steps' batch), the faster layout; and for the attention the faster key
    layout at the middle of the decode. Returns (weights, keys_transposed, table lines)."""
    cfg, lines = model.cfg, []
    names = {"qkv": lambda b: b.self_attn.qkv_proj, "o": lambda b: b.self_attn.o_proj,
             "gate_up": lambda b: b.mlp.gate_up_proj, "down": lambda b: b.mlp.down_proj}
    choice = {}  # (name, rows) -> True for the (in, out) copy
    for name, get in [*names.items(), ("lm_head", None)]:
        w = model.lm_head.weight if get is None else get(model.layers[0]).weight
        for rows in (batch * prompt_len, batch):
            if name == "lm_head" and rows != batch:
                continue  # the prefill's lm_head runs on the last position only
            x = torch.randn(rows, w.shape[1])
            w_t = w.t().contiguous()
            t_lin, t_copy = per_call(lambda: F.linear(x, w)), per_call(lambda: x @ w_t)
            choice[name, rows] = t_copy < t_lin
            lines.append(f"  {name:8s} {rows:5d} rows x {w.shape[1]:4d} -> {w.shape[0]:4d}: "
                         f"F.linear {t_lin * 1e6:7.1f} us, (in, out) copy {t_copy * 1e6:7.1f} us ({t_lin / t_copy:.2f}x)")

    def laid_out(w, rows, name):
        return w.t().contiguous() if choice[name, rows] else w.t()  # either way x @ it; the view runs F.linear's GEMM

    weights = {rows: [(laid_out(get(b).weight, rows, n) for n, get in names.items()) for b in model.layers]
               for rows in (batch * prompt_len, batch)}
    weights = {rows: [tuple(ws) for ws in layers] for rows, layers in weights.items()}
    lm_head = laid_out(model.lm_head.weight, batch, "lm_head")
    kv, hd, rep, S = cfg.n_kv_heads, cfg.head_dim, cfg.n_heads // cfg.n_kv_heads, prompt_len + new_tokens // 2
    q, k = torch.randn(batch * kv, rep, hd), torch.randn(batch * kv, S, hd)
    k_t = k.transpose(1, 2).contiguous()
    t_k, t_kt = per_call(lambda: torch.bmm(q, k.transpose(1, 2))), per_call(lambda: torch.bmm(q, k_t))
    lines.append(f"  scores   {batch * kv:5d} x ({rep} x {hd}) @ ({hd} x {S}): keys (S, hd) {t_k * 1e6:7.1f} us, "
                 f"transposed (hd, S) {t_kt * 1e6:7.1f} us ({t_k / t_kt:.2f}x)")
    return weights, lm_head, t_kt < t_k, lines


@torch.no_grad()
def matmul_floor(model, batch, prompt_len, new_tokens, weights, lm_head, keys_transposed):
    """The matmuls alone of sampling new_tokens after a prompt_len prefill, batch rows, each in its
    faster layout (docstring above)."""
    cfg, hd, kv = model.cfg, model.cfg.head_dim, model.cfg.n_kv_heads
    rep, S_max = cfg.n_heads // kv, prompt_len + new_tokens
    k = torch.randn(cfg.n_layers, batch * kv, *((hd, S_max) if keys_transposed else (S_max, hd)))  # full cache
    v = torch.randn(cfg.n_layers, batch * kv, S_max, hd)
    prompt, token = torch.randn(batch * prompt_len, cfg.dim), torch.randn(batch, cfg.dim)

    def forward(x, S, layers):  # x (B * T, dim) whose last position is cache slot S - 1
        T = x.shape[0] // batch
        for i, (w_qkv, w_o, w_gate_up, w_down) in enumerate(layers):
            q = (x @ w_qkv)[:, : cfg.n_heads * hd].reshape(batch, T, kv, rep, hd).transpose(1, 2)
            keys = k[i, :, :, :S] if keys_transposed else k[i, :, :S].transpose(1, 2)
            att = torch.bmm(q.reshape(batch * kv, T * rep, hd), keys)  # (B * kv, T * rep, S)
            y = torch.bmm(att, v[i, :, :S]).view(batch, kv, T, rep, hd).transpose(1, 2).reshape(batch * T, -1)
            x = ((y @ w_o) @ w_gate_up)[:, : cfg.inter_dim] @ w_down
        return x.view(batch, T, -1)[:, -1] @ lm_head

    def run():
        forward(prompt, prompt_len, weights[batch * prompt_len])
        for step in range(new_tokens):
            forward(token, prompt_len + step + 1, weights[batch])

    return run


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[1])
    ap.add_argument("--shape", default="bench", choices=sorted(SHAPES), help="model shape (bench_grpo.py's)")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--prompt_len", type=int, default=32)
    ap.add_argument("--new_tokens", type=int, default=128)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = ap.parse_args()
    if min(args.batch, args.prompt_len, args.new_tokens, args.repeats) < 1 or args.threads < 0:
        ap.error("--batch, --prompt_len, --new_tokens and --repeats must be positive, --threads non-negative")
    if args.threads:
        torch.set_num_threads(args.threads)
    import transformers

    torch.manual_seed(0)
    V, dim, n_layers, n_heads, n_kv_heads, inter_dim = SHAPES[args.shape]
    cfg = ModelConfig(vocab_size=V, dim=dim, n_layers=n_layers, n_heads=n_heads, n_kv_heads=n_kv_heads,
                      inter_dim=inter_dim, max_seq_len=max(512, args.prompt_len + args.new_tokens))
    ours = Transformer(cfg).eval()
    with tempfile.TemporaryDirectory() as d:
        ours.save_pretrained(d)
        theirs = transformers.AutoModelForCausalLM.from_pretrained(d, dtype=torch.float32).eval()
    prompts = torch.randint(1, cfg.vocab_size, (args.batch, args.prompt_len))
    B, N = args.batch, args.new_tokens

    def run_ours():
        outs = generate(ours, prompts.tolist(), max_new_tokens=N, temperature=1.0, seed=0)
        assert sum(map(len, outs)) == B * N

    def run_theirs():
        with torch.no_grad():
            out = theirs.generate(prompts, attention_mask=torch.ones_like(prompts), do_sample=True, temperature=1.0,
                                  top_k=0, top_p=1.0, max_new_tokens=N, min_new_tokens=N, pad_token_id=0)
        assert out.shape == (B, args.prompt_len + N)

    load = os.getloadavg()[0]
    weights, lm_head, keys_transposed, table = faster_layouts(ours, B, args.prompt_len, N)
    floor = matmul_floor(ours, B, args.prompt_len, N, weights, lm_head, keys_transposed)
    t_ours, t_theirs, t_floor = best_times([run_ours, run_theirs, floor], args.repeats)
    print(f"tiny Qwen2 ({args.shape}: dim {dim}, {n_layers} layers, {n_heads} heads, {n_kv_heads} kv heads, "
          f"vocab {V}), fp32, {torch.get_num_threads()} threads; "
          f"load average {load:.2f} on {os.cpu_count()} cores before the run")
    print("each multiply in both layouts (median of 200 calls, warm caches); the floor takes the faster:")
    print("\n".join(table))
    print(f"batch {B}, prompt {args.prompt_len}, {N} new tokens, sampling; best of {args.repeats}, interleaved")
    print(f"r1-mini generate:      {B * N / t_ours:8.0f} tokens/s  ({t_ours:.3f} s)")
    print(f"transformers generate: {B * N / t_theirs:8.0f} tokens/s  ({t_theirs:.3f} s)")
    print(f"matmul floor:          {B * N / t_floor:8.0f} tokens/s  ({t_floor:.3f} s)")
    print(f"ours / transformers: {t_theirs / t_ours:.2f}x; ours at {t_floor / t_ours:.0%} of the floor, "
          f"transformers at {t_floor / t_theirs:.0%}")


if __name__ == "__main__":
    main()

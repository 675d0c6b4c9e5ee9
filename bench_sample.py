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
sampling. A sampler made of the same fp32 matmuls cannot beat it, so "ours at N% of the floor"
says how much is left to win on any machine; a ratio to transformers alone cannot.

Each runs once to warm up, then `--repeats` timed runs, interleaved so background load hits all
three alike; the best run counts.

    python bench_sample.py            # --threads 1 on a busy machine
"""

import argparse
import os
import tempfile
import time

import torch

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


@torch.no_grad()
def matmul_floor(model, batch, prompt_len, new_tokens):
    """The matmuls alone of sampling new_tokens after a prompt_len prefill, batch rows (docstring above)."""
    cfg, hd, kv = model.cfg, model.cfg.head_dim, model.cfg.n_kv_heads
    rep = cfg.n_heads // kv
    weights = [(b.self_attn.qkv_proj.weight.t(), b.self_attn.o_proj.weight.t(), b.mlp.gate_up_proj.weight.t(),
                b.mlp.down_proj.weight.t()) for b in model.layers]
    k = torch.randn(cfg.n_layers, batch, kv, prompt_len + new_tokens, hd)  # the cache's shape when full
    v = torch.randn_like(k)
    prompt, token = torch.randn(batch, prompt_len, cfg.dim), torch.randn(batch, 1, cfg.dim)
    lm_head = model.lm_head.weight.t()

    def forward(x, S):  # x (B, T, dim) whose last position is cache slot S - 1
        T = x.shape[1]
        for i, (w_qkv, w_o, w_gate_up, w_down) in enumerate(weights):
            q = (x @ w_qkv)[..., : cfg.n_heads * hd].view(batch, T, kv, rep, hd).permute(0, 2, 3, 1, 4)
            att = q.reshape(batch, kv, rep * T, hd) @ k[i, :, :, :S].transpose(-1, -2)  # (B, kv, rep T, S)
            y = (att @ v[i, :, :, :S]).view(batch, kv, rep, T, hd).permute(0, 3, 1, 2, 4).reshape(batch, T, -1)
            x = ((y @ w_o) @ w_gate_up)[..., : cfg.inter_dim] @ w_down
        return x[:, -1] @ lm_head

    def run():
        forward(prompt, prompt_len)
        for step in range(new_tokens):
            forward(token, prompt_len + step + 1)

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
    if args.threads:
        torch.set_num_threads(args.threads)
    import transformers

    torch.manual_seed(0)
    V, dim, n_layers, n_heads, n_kv_heads, inter_dim = SHAPES[args.shape]
    cfg = ModelConfig(vocab_size=V, dim=dim, n_layers=n_layers, n_heads=n_heads, n_kv_heads=n_kv_heads,
                      inter_dim=inter_dim, max_seq_len=512)
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
    t_ours, t_theirs, t_floor = best_times([run_ours, run_theirs, matmul_floor(ours, B, args.prompt_len, N)],
                                           args.repeats)
    print(f"tiny Qwen2 ({args.shape}: dim {dim}, {n_layers} layers, {n_heads} heads, {n_kv_heads} kv heads, "
          f"vocab {V}), fp32, {torch.get_num_threads()} threads; "
          f"load average {load:.2f} on {os.cpu_count()} cores before the run")
    print(f"batch {B}, prompt {args.prompt_len}, {N} new tokens, sampling; best of {args.repeats}, interleaved")
    print(f"r1-mini generate:      {B * N / t_ours:8.0f} tokens/s  ({t_ours:.3f} s)")
    print(f"transformers generate: {B * N / t_theirs:8.0f} tokens/s  ({t_theirs:.3f} s)")
    print(f"matmul floor:          {B * N / t_floor:8.0f} tokens/s  ({t_floor:.3f} s)")
    print(f"ours / transformers: {t_theirs / t_ours:.2f}x; ours at {t_floor / t_ours:.0%} of the floor, "
          f"transformers at {t_floor / t_theirs:.0%}")


if __name__ == "__main__":
    main()

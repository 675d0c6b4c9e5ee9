"""
The MoE layer against a dense SwiGLU with the same active parameters: forward + backward time on CPU.

    OMP_NUM_THREADS=1 python3 bench_moe.py          # 4096 tokens; --tokens, --reps to change

Active parameters match: a token runs through top_k routed experts of width moe_inter_dim plus the
shared experts, so the dense SwiGLU has width (top_k + n_shared_experts) * moe_inter_dim. The MoE
pays for routing, the sort and gather of (token, expert) pairs, the weighted scatter back, and
one small matrix multiply per expert instead of one large one. The goal is at most 2x the dense
time. The first shape is the tiny Countdown model's (train_sft.py --moe), the second a wider one.
"""

import argparse
import time

import torch

from model import ModelConfig
from moe import MLP, MoE

SHAPES = [  # (dim, n_routed_experts, top_k, moe_inter_dim, n_shared_experts)
    (128, 8, 2, 128, 1),
    (512, 16, 2, 256, 1),
]


def bench(layer, x, reps):
    """Median seconds of one forward + backward."""
    times = []
    for i in range(reps + 2):  # two warm-up runs
        x.grad = None
        t0 = time.perf_counter()
        layer(x).square().mean().backward()
        if i >= 2:
            times.append(time.perf_counter() - t0)
    return sorted(times)[len(times) // 2]


def main():
    ap = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    ap.add_argument("--tokens", type=int, default=4096)
    ap.add_argument("--reps", type=int, default=20)
    args = ap.parse_args()
    print(f"{args.tokens} tokens, fp32, forward + backward, {torch.get_num_threads()} thread(s), median of {args.reps}")
    for dim, E, k, inter, shared in SHAPES:
        torch.manual_seed(0)
        cfg = ModelConfig(dim=dim, n_routed_experts=E, top_k=k, moe_inter_dim=inter, n_shared_experts=shared,
                          score_func="sigmoid")
        moe = MoE(cfg).train()
        for p in moe.parameters():
            torch.nn.init.normal_(p, std=0.02)
        dense = MLP(dim, (k + shared) * inter)
        x = torch.randn(1, args.tokens, dim, requires_grad=True)
        t_moe, t_dense = bench(moe, x, args.reps), bench(dense, x, args.reps)
        print(f"dim {dim}, {E} experts of {inter}, top {k} + {shared} shared  |  MoE {t_moe * 1e3:7.2f} ms  |  "
              f"dense SwiGLU {(k + shared) * inter} {t_dense * 1e3:7.2f} ms  |  MoE / dense {t_moe / t_dense:.2f}x")


if __name__ == "__main__":
    main()

"""
Token log-probs at Qwen's vocabulary: peak memory and time of forward + backward, naive vs kernels/.

    OMP_NUM_THREADS=1 python3 bench_kernels.py                 # N=2048, V=151936, d=896, fp32 (about 6 GB of RAM)
    OMP_NUM_THREADS=1 python3 bench_kernels.py --N 256 --V 32768  # a quick look

Cases: forward, then the backward of sum(g * logp) for a fixed random g (N,).
    from logits (N, V), requiring grad:
        naive          torch.log_softmax(logits.float(), -1).gather(-1, targets[:, None])
        torch          kernels.token_logprobs(logits, targets, backend="torch")
        triton         kernels.token_logprobs(logits, targets, backend="triton")               CUDA only
        liger          liger_kernel's LigerCrossEntropyLoss, reduction="sum" (so g = -1)       CUDA, if installed
    fused linear, from hidden (N, d) and weight (V, d), both requiring grad:
        naive-linear   torch.log_softmax((hidden @ weight.T).float(), -1).gather(...)
        linear         kernels.linear_token_logprobs(hidden, weight, targets)
        liger-linear   LigerFusedLinearCrossEntropyLoss, reduction="sum"                       CUDA, if installed
The CUDA rows (and bf16, --dtypes) have not been run by this script's author: no GPU was at hand.

How memory is measured. Each case runs in a fresh subprocess, which builds its inputs, then records
the memory in use and runs forward + backward once. CPU: Linux's high-water mark of resident
memory (VmHWM in /proc/self/status), reset to the current resident size just before the run by
writing 5 to /proc/self/clear_refs; PyTorch's CPU allocator hands large blocks back to the OS when
they are freed, so resident memory follows the live tensors, and the mark sees every page ever
touched, temporaries inside ATen ops included (which tracemalloc cannot see). CUDA:
torch.cuda.max_memory_allocated after a reset. "peak" is that maximum minus the memory in use
before the run: the gradients are part of it, as outputs every method must produce ((N, V) for the
logits, (V, d) + (N, d) for the linear form); "peak - grads" takes their size off.

Time: wall time of forward + backward, the best of 1 + --repeats runs (the gradients are freed
between runs, so each run allocates as the first did). Run with nothing else on the machine.
"""

import argparse
import json
import os
import re
import subprocess
import sys
import time

import torch

import r1_kernels as kernels  # kernels/ (r1_kernels.py says why the import name differs)

LOGITS = ["naive", "torch", "triton", "liger"]
LINEAR = ["naive-linear", "linear", "liger-linear"]


def get_args(argv=None):
    ap = argparse.ArgumentParser(description="token log-probs: naive vs kernels/, peak memory and time")
    ap.add_argument("--N", type=int, default=2048, help="tokens")
    ap.add_argument("--V", type=int, default=151936, help="vocabulary (Qwen2.5: 151936)")
    ap.add_argument("--d", type=int, default=896, help="hidden width of the linear form (Qwen2.5-0.5B: 896)")
    ap.add_argument("--dtypes", default=None, help="comma-separated; default float32, and bfloat16 on CUDA")
    ap.add_argument("--cases", default=",".join(LOGITS + LINEAR), help="comma-separated subset of the cases")
    ap.add_argument("--repeats", type=int, default=1, help="timed runs after the measured one")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)  # "case,dtype": run one case, print JSON
    return ap.parse_args(argv)


def available(case, device):
    if case in ("triton", "liger", "liger-linear") and device != "cuda":
        return False
    if case.startswith("liger"):
        try:
            import liger_kernel  # noqa: F401  (installed?)
        except ImportError:
            return False
    return True


def make_step(case, args, dtype):
    """Inputs for this case and a function that runs forward + backward on them; the grads' size in bytes."""
    g = torch.Generator().manual_seed(0)
    targets = torch.randint(0, args.V, (args.N,), generator=g).to(args.device)
    up = torch.randn(args.N, generator=g).to(args.device)  # d loss / d logp
    if case in LOGITS:
        x = torch.randn(args.N, args.V, generator=g).to(args.device, dtype).requires_grad_(True)
        leaves = [x]
    else:
        h = torch.randn(args.N, args.d, generator=g).to(args.device, dtype).requires_grad_(True)
        w = (0.05 * torch.randn(args.V, args.d, generator=g)).to(args.device, dtype).requires_grad_(True)
        leaves = [h, w]

    def forward():
        if case == "naive":
            return torch.log_softmax(x.float(), -1).gather(-1, targets[:, None]).squeeze(-1)
        if case == "naive-linear":
            return torch.log_softmax((h @ w.T).float(), -1).gather(-1, targets[:, None]).squeeze(-1)
        if case == "linear":
            return kernels.linear_token_logprobs(h, w, targets)
        if case == "liger":  # the sum of -logp: g = -1 on every token
            from liger_kernel.transformers import LigerCrossEntropyLoss

            return LigerCrossEntropyLoss(reduction="sum")(x, targets)
        if case == "liger-linear":
            from liger_kernel.transformers import LigerFusedLinearCrossEntropyLoss

            return LigerFusedLinearCrossEntropyLoss(reduction="sum")(w, h, targets)
        return kernels.token_logprobs(x, targets, backend=case)

    def step():
        out = forward()
        (out * up).sum().backward() if out.dim() else out.backward()

    return step, leaves, sum(x.numel() * x.element_size() for x in leaves)


def memory_in_use(device):
    if device == "cuda":
        return torch.cuda.memory_allocated()
    return int(re.search(r"VmRSS:\s+(\d+) kB", open("/proc/self/status").read()).group(1)) * 1024


def reset_peak(device):
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    else:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # VmHWM := VmRSS


def peak(device):
    if device == "cuda":
        return torch.cuda.max_memory_allocated()
    return int(re.search(r"VmHWM:\s+(\d+) kB", open("/proc/self/status").read()).group(1)) * 1024


def child(args):
    """Run one case in this fresh process and print its numbers as one JSON line."""
    case, dtype = args.child.split(",")
    small = argparse.Namespace(**{**vars(args), "N": 8, "V": 1000, "d": 16})
    make_step(case, small, getattr(torch, dtype))[0]()  # warm-up: first-use costs (code pages, lazy init) go here
    step, leaves, grad_bytes = make_step(case, args, getattr(torch, dtype))
    sync = torch.cuda.synchronize if args.device == "cuda" else (lambda: None)
    times = []
    for i in range(1 + args.repeats):
        for x in leaves:
            x.grad = None
        sync()
        if i == 0:
            base = memory_in_use(args.device)
            reset_peak(args.device)
        t0 = time.perf_counter()
        step()
        sync()
        times.append(time.perf_counter() - t0)
        if i == 0:
            top = peak(args.device) - base
    print(json.dumps({"peak": top, "grads": grad_bytes, "time": min(times)}))


def main(argv=None):
    args = get_args(argv)
    if args.child:
        return child(args)
    dtypes = (args.dtypes or ("float32,bfloat16" if args.device == "cuda" else "float32")).split(",")
    dev = torch.cuda.get_device_name() if args.device == "cuda" else f"CPU, {torch.get_num_threads()} thread(s)"
    print(f"N={args.N} V={args.V} d={args.d} on {dev}, torch {torch.__version__}; forward + backward, "
          f"best of {1 + args.repeats}")
    cases = [c for c in args.cases.split(",") if available(c, args.device)]
    hdr = f"{'case':<14}{'dtype':<10}{'peak MB':>10}{'x naive':>9}{'grads MB':>10}{'peak - grads':>14}{'x naive':>9}" \
          f"{'time s':>9}{'x naive':>9}"
    print(hdr)
    for dtype in dtypes:
        naive = {}
        for case in cases:
            cmd = [sys.executable, os.path.abspath(__file__), "--child", f"{case},{dtype}", "--N", str(args.N),
                   "--V", str(args.V), "--d", str(args.d), "--repeats", str(args.repeats), "--device", args.device]
            out = subprocess.run(cmd, capture_output=True, text=True)
            if out.returncode:
                print(f"{case:<14}{dtype:<10}failed: {out.stderr.strip().splitlines()[-1]}")
                continue
            r = json.loads(out.stdout.strip().splitlines()[-1])
            if case.startswith("naive"):
                naive = r
            r["rest"] = r["peak"] - r["grads"]
            ratio = {k: f"{r[k] / naive[k]:>9.{3 if k == 'rest' else 2}f}" if naive else f"{'':>9}"
                     for k in ("peak", "rest", "time")}
            print(f"{case:<14}{dtype:<10}{r['peak'] / 2**20:>10.0f}{ratio['peak']}{r['grads'] / 2**20:>10.0f}"
                  f"{r['rest'] / 2**20:>14.0f}{ratio['rest']}{r['time']:>9.2f}{ratio['time']}")


if __name__ == "__main__":
    main()

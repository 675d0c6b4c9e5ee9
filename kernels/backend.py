"""Which implementation runs: BACKEND is "auto" (the Triton kernels for CUDA tensors when triton
imports, their PyTorch references otherwise), "triton" or "torch". Tests set "triton" to run the
kernels through Triton's interpreter on CPU (TRITON_INTERPRET=1, set by tests/conftest.py)."""

try:
    import triton
    import triton.language as tl
except ImportError:  # no triton (macOS, Windows): the PyTorch paths only
    triton, tl = None, None

BACKEND = "auto"


def jit(fn):
    """triton.jit where triton is installed; elsewhere the kernel stays a plain function, never called."""
    return fn if triton is None else triton.jit(fn)


def use_triton(x, backend="auto"):
    """Whether tensor x goes through the Triton kernel: backend, or BACKEND when backend is "auto"."""
    backend = BACKEND if backend == "auto" else backend
    if backend not in ("auto", "triton", "torch"):
        raise ValueError(f"backend must be 'auto', 'triton' or 'torch', got {backend!r}")
    if backend == "triton" and triton is None:
        raise ValueError("backend 'triton' needs the triton package (Linux)")
    return backend == "triton" or (backend == "auto" and x.is_cuda and triton is not None)

"""Without a GPU, Triton kernels run on CPU tensors through Triton's interpreter. It is read when a
kernel is defined (`import r1_kernels`), so it is set here, before any test module imports anything."""

import os

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

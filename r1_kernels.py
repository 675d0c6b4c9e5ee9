"""The kernels/ folder, imported as `r1_kernels`: fused log-prob, entropy and GRPO loss, Triton on CUDA.

    from r1_kernels import token_logprobs, linear_token_logprobs, fused_policy_loss
    from r1_kernels import backend     # backend.BACKEND: "auto" (Triton on CUDA), "triton" or "torch"

Design note: why the folder and the import name differ. `kernels` is also the import name of
Hugging Face's kernel-hub library, which transformers >= 5 requires and imports. A package kernels/
at the repository root would come first on sys.path for every script started here, transformers
would import ours and fail, and our model and a transformers model could not share a process. So
kernels/ has no __init__.py (the installed library keeps the name) and this module is the package:
`__path__` is where Python looks for a package's submodules, so `r1_kernels.logprobs` is
kernels/logprobs.py.
"""

import os

__path__ = [os.path.join(os.path.dirname(os.path.abspath(__file__)), "kernels")]

from r1_kernels.logprobs import linear_token_logprobs, token_logprobs  # noqa: E402 (needs __path__)
from r1_kernels.policy_loss import fused_policy_loss  # noqa: E402

__all__ = ["token_logprobs", "linear_token_logprobs", "fused_policy_loss"]

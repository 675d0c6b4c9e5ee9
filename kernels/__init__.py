"""Fused log-prob, entropy and GRPO loss: Triton kernels on CUDA, each next to its PyTorch reference.

No side effects and no __version__ here: `import transformers` probes for a package named `kernels`
(Hugging Face's kernel hub) and imports ours when the repository root is on sys.path.
"""

from kernels.logprobs import linear_token_logprobs, token_logprobs
from kernels.policy_loss import grpo_loss

__all__ = ["token_logprobs", "linear_token_logprobs", "grpo_loss"]

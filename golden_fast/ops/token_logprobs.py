"""token_logprobs(hidden, weight, targets, bias=None, softcap=None, chunk_size=None) -> (logprob, argmax)

Log-probabilities and greedy predictions of given target tokens, straight from the
final hidden states and the output-embedding (lm_head) weight, without ever holding
the full row of logits:

    z_v     = h . W_v (+ b_v)                      logits, float32, v in the vocabulary
    z_v     = cap * tanh(z_v / cap)                when `softcap` is set (Gemma-2)
    logprob = z_target - logsumexp_v z_v
    argmax  = argmax_v z_v                         ties: the lowest token id (torch.argmax's rule)

Shapes: hidden (N, d) -- one row per *scored position*, already gathered (the caller
keeps only the positions that predict a target token); weight (V, d) like
`nn.Linear.weight`; bias (V,) or None; targets (N,) int64. Returns logprob (N,)
float32 and argmax (N,) int64.

Contract:
- Logits are computed in float32 whatever the dtype of `hidden` and `weight` (bf16
  inputs are upcast chunk by chunk), so scores never depend on the model's storage dtype.
- Peak extra memory is O(N * chunk_size) float32, never O(N * V): Gemma-3's vocabulary
  is 262,144, so a float32 [B, T, V] log-softmax of a modest batch is gigabytes.
- The result is independent of `chunk_size` up to float rounding of the logsumexp
  (the per-chunk maxima and argmaxes are exact; ties keep the lower id).
- The target's logit is read from the same chunk matmul that gives the argmax, so a
  target that is the argmax has logprob exactly equal to -logsumexp + max.

The torch reference is this chunked computation itself; kernels/token_logprobs.py is the fused
Triton kernel ("triton", CUDA: online logsumexp over vocabulary tiles, no logits in memory).
Why: no (N, V) logits ever reach memory, and 16-bit inputs use the tensor cores; float32 inputs
gain little, since without TF32 they get no tensor cores. Measurements: bench/README.md,
"Op-level measurements quoted from the ops' design notes".

Import it as `from golden_fast.ops.token_logprobs import token_logprobs` (or
`golden_fast.ops.get_op("token_logprobs")`): this module has the op's name, so once it is
imported, the attribute `golden_fast.ops.token_logprobs` is the module, not the op.
"""

from __future__ import annotations

import torch

from golden_fast.ops import declare

__all__ = ["DEFAULT_CHUNK_SIZE", "check_token_logprobs_args", "token_logprobs", "token_logprobs_torch"]

# 16,384 columns x a few hundred scored positions x 4 bytes is a few MiB per chunk:
# large enough that the matmul is efficient, small enough to be negligible next to weights.
DEFAULT_CHUNK_SIZE = 16384

token_logprobs = declare("token_logprobs")


def check_token_logprobs_args(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    targets: torch.Tensor,
    bias: torch.Tensor | None = None,
    chunk_size: int | None = None,
) -> int:
    """Validate per the contract (shared by every backend) and return the chunk size; raises ValueError.

    Reads the targets' range, so on a GPU it waits for them (one small device-to-host copy).
    """
    if hidden.dim() != 2 or weight.dim() != 2 or hidden.shape[1] != weight.shape[1]:
        raise ValueError(
            f"expected hidden (N, d) and weight (V, d), got {tuple(hidden.shape)}, {tuple(weight.shape)}"
        )
    if targets.shape != hidden.shape[:1]:
        raise ValueError(f"targets must be (N,) = ({hidden.shape[0]},), got {tuple(targets.shape)}")
    N, V = hidden.shape[0], weight.shape[0]
    if bias is not None and tuple(bias.shape) != (V,):
        raise ValueError(f"bias must be (V,) = ({V},), got {tuple(bias.shape)}")
    if N and (int(targets.min()) < 0 or int(targets.max()) >= V):
        raise ValueError(
            f"target ids must lie in [0, {V}), got range [{int(targets.min())}, {int(targets.max())}]"
        )
    C = int(chunk_size or DEFAULT_CHUNK_SIZE)
    if C <= 0:
        raise ValueError(f"chunk_size must be positive, got {C}")
    return C


@token_logprobs.reference
def token_logprobs_torch(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    targets: torch.Tensor,
    bias: torch.Tensor | None = None,
    softcap: float | None = None,
    chunk_size: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    C = check_token_logprobs_args(hidden, weight, targets, bias, chunk_size)
    N, V = hidden.shape[0], weight.shape[0]
    h = hidden.float()  # (N, d)
    targets = targets.long()
    target_logit = torch.empty(N, dtype=torch.float32, device=h.device)
    lse, best_val, best_idx = [], [], []
    for lo in range(0, V, C):
        hi = min(lo + C, V)
        z = h @ weight[lo:hi].float().T  # (N, C)
        if bias is not None:
            z += bias[lo:hi].float()
        if softcap:
            z = torch.tanh(z / softcap).mul_(softcap)
        lse.append(torch.logsumexp(z, dim=-1))  # (N,)
        val, idx = z.max(dim=-1)  # first maximum within the chunk
        best_val.append(val)
        best_idx.append(idx + lo)
        inside = (targets >= lo) & (targets < hi)
        if bool(inside.any()):
            rows = inside.nonzero(as_tuple=True)[0]
            target_logit[rows] = z[rows, targets[rows] - lo]
    logprob = target_logit - torch.logsumexp(torch.stack(lse, dim=-1), dim=-1)
    # argmax over chunk maxima returns the first (lowest) chunk on ties: the global first maximum
    which = torch.stack(best_val, dim=-1).argmax(dim=-1, keepdim=True)  # (N, 1)
    argmax = torch.stack(best_idx, dim=-1).gather(-1, which).squeeze(-1)
    return logprob, argmax

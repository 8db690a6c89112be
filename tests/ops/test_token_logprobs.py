"""token_logprobs against its contract (golden_fast/ops/token_logprobs.py), for every backend.

Truth: the full float64 logits row, log-softmax and argmax, computed here in one piece (what
the op exists to avoid), so every chunking is checked against the unchunked definition.
"""

from __future__ import annotations

import pytest
import torch
from _reference_check import assert_close_to_reference

# the module shares the op's name, so `golden_fast.ops.token_logprobs` is the module: import the op from it
from golden_fast.ops.token_logprobs import token_logprobs


def _truth(h, w, t, bias=None, softcap=None):
    z = h.double() @ w.double().T  # (N, V)
    if bias is not None:
        z = z + bias.double()
    if softcap:
        z = softcap * torch.tanh(z / softcap)
    return z.log_softmax(-1).gather(-1, t[:, None]).squeeze(-1), z.argmax(-1)


def _inputs(N, V, d, dtype=torch.float32, seed=0, device="cpu"):
    g = torch.Generator().manual_seed(seed)
    h = torch.randn(N, d, generator=g)
    w = torch.randn(V, d, generator=g) / d**0.5 * 4  # logits of a few units: a peaked softmax
    t = torch.randint(0, V, (N,), generator=g)
    return h.to(device, dtype), w.to(device, dtype), t.to(device)


# (N, V, d, chunk): chunk dividing V, not dividing it, of 1, equal to V, above V; N = 1 and N = 0
CASES = [
    (17, 300, 16, 64),
    (17, 301, 16, 64),
    (5, 50, 8, 1),
    (9, 128, 32, 128),
    (9, 100, 8, 4096),
    (1, 33, 4, 7),
]


@pytest.mark.op_backends("token_logprobs")
@pytest.mark.parametrize("N, V, d, chunk", CASES)
@pytest.mark.parametrize("softcap", [None, 3.0])
def test_matches_full_logits(backend, backend_device, N, V, d, chunk, softcap):
    h, w, t = _inputs(N, V, d, device=backend_device)
    bias = torch.randn(V, generator=torch.Generator().manual_seed(1)).to(backend_device)
    truth_lp, truth_am = _truth(h, w, t, bias, softcap)
    base_lp, _ = token_logprobs.reference(h, w, t, bias=bias, softcap=softcap, chunk_size=V)  # one chunk
    lp, am = token_logprobs(h, w, t, bias=bias, softcap=softcap, chunk_size=chunk, backend=backend)
    assert lp.dtype == torch.float32 and am.dtype == torch.int64 and lp.shape == am.shape == (N,)
    assert_close_to_reference(lp.double(), truth_lp, base_lp.double(), atol=1e-5)
    # argmax is exact: random logits here have no near-ties (margin checked to be sure)
    z = h.double() @ w.double().T + bias.double()
    top2 = z.topk(2, -1).values
    assert bool(((top2[:, 0] - top2[:, 1]) > 1e-4).all())
    assert torch.equal(am.cpu(), truth_am.cpu())


@pytest.mark.op_backends("token_logprobs")
def test_empty_batch(backend, backend_device):
    h, w, t = _inputs(0, 40, 8, device=backend_device)
    lp, am = token_logprobs(h, w, t, chunk_size=16, backend=backend)
    assert lp.shape == am.shape == (0,)


@pytest.mark.op_backends("token_logprobs")
def test_ties_go_to_lowest_id_across_chunks(backend, backend_device):
    # rows 3, 10 and 29 of the weight are equal: equal top logits in three different chunks
    h, w, t = _inputs(6, 40, 8, device=backend_device)
    w[10] = w[3]
    w[29] = w[3]
    h[:] = w[3] * 10  # every row's top logit is token 3 (and its copies)
    lp, am = token_logprobs(h, w, t, chunk_size=8, backend=backend)
    assert am.tolist() == [3] * 6
    full = (h.double() @ w.double().T).argmax(-1)  # torch's own rule: first maximum
    assert am.tolist() == full.tolist()


@pytest.mark.op_backends("token_logprobs")
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_low_precision_inputs_score_in_float32(backend, backend_device, dtype):
    h, w, t = _inputs(11, 200, 16, dtype=dtype, device=backend_device)
    # truth from the same (rounded) 16-bit values: the op upcasts, it does not round logits to 16 bits
    truth_lp, truth_am = _truth(h.float(), w.float(), t)
    lp, am = token_logprobs(h, w, t, chunk_size=64, backend=backend)
    assert lp.dtype == torch.float32
    assert torch.allclose(lp.double(), truth_lp, atol=1e-5)
    assert torch.equal(am.cpu(), truth_am.cpu())


def test_target_is_argmax_gives_consistent_logprob():
    # the target logit comes from the same matmul as the max: logprob == max - logsumexp exactly
    h, w, _ = _inputs(7, 90, 8)
    _, am = token_logprobs.reference(h, w, torch.zeros(7, dtype=torch.long), chunk_size=32)
    lp, am2 = token_logprobs.reference(h, w, am, chunk_size=32)
    assert torch.equal(am, am2)
    z = torch.cat([h @ w[lo : lo + 32].T for lo in range(0, 90, 32)], dim=-1)
    lse = torch.logsumexp(
        torch.stack([torch.logsumexp(z[:, lo : lo + 32], -1) for lo in range(0, 90, 32)], -1), -1
    )
    assert torch.equal(lp, z.max(-1).values - lse)


def test_chunking_never_holds_full_logits(monkeypatch):
    # every matmul the reference does is at most (N, chunk) wide
    widths = []
    real_matmul = torch.Tensor.__matmul__

    def spy(a, b):
        out = real_matmul(a, b)
        widths.append(out.shape[-1])
        return out

    monkeypatch.setattr(torch.Tensor, "__matmul__", spy)
    h, w, t = _inputs(5, 1000, 8)
    token_logprobs.reference(h, w, t, chunk_size=128)
    assert widths and max(widths) <= 128


@pytest.mark.parametrize(
    "bad",
    [
        lambda h, w, t: (h, w, t + 1000),  # target out of the vocabulary
        lambda h, w, t: (h, w, t[:-1]),  # one target short
        lambda h, w, t: (h, w[:, :-1], t),  # width mismatch
        lambda h, w, t: (h[None], w, t),  # 3-D hidden
    ],
)
def test_bad_inputs_raise(bad):
    h, w, t = _inputs(4, 30, 8)
    with pytest.raises(ValueError):
        token_logprobs.reference(*bad(h, w, t))
    with pytest.raises(ValueError):
        token_logprobs.reference(h, w, t, chunk_size=-1)

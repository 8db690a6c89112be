"""Batched scoring's head: `token_logprobs` (vocabulary chunks of 16,384, logits never held whole,
golden_fast/ops/token_logprobs.py) against the full-logits route most codebases take and
score_spans(route="full-logits") keeps as its baseline: logits (N, V) float32, log_softmax, gather
and argmax. Random hidden states and head weights of real shapes, float32 (the CPU's dtype):
SmolLM2-135M (V = 49,152, d = 576, 128 scored positions) and Gemma-3-270M (V = 262,144, d = 640,
32 positions). bench/bench_scoring.py times whole evaluations on the real model and their peak RSS.

Correctness before timing: the two routes' log-probabilities agree to 1e-4 and their argmaxes
exactly. Peak tensor memory of each route is measured once, untimed (bench_lga_memory.LiveTensors):
on the CPU the chunked route's gain is memory (O(N x chunk) instead of O(N x V)), its time is
the same matmul.

    pytest bench/test_bench_token_logprobs.py --benchmark-enable
"""

from __future__ import annotations

import pytest
import torch
from bench_lga_memory import LiveTensors
from conftest import measure

from golden_fast.ops import get_op
from golden_fast.ops.token_logprobs import token_logprobs

SHAPES = {"smollm2-135m": (128, 576, 49152), "gemma3-270m": (32, 640, 262144)}  # (N, d, V)


def full_logits(hidden, weight, targets):
    logp = (hidden @ weight.T).log_softmax(-1)  # (N, V) twice: the logits and their log-softmax
    return logp.gather(1, targets[:, None]).squeeze(1), logp.argmax(-1)


@pytest.fixture(scope="module", params=list(SHAPES))
def case(request):
    N, d, V = SHAPES[request.param]
    g = torch.Generator().manual_seed(0)
    hidden = torch.randn(N, d, generator=g)
    weight = torch.randn(V, d, generator=g) * d**-0.5  # logits of unit scale, as a trained head's
    targets = torch.randint(0, V, (N,), generator=g)
    args = (hidden, weight, targets)
    backend = get_op("token_logprobs").choose("cpu")
    peaks, outs = {}, {}
    with torch.no_grad():
        for route, fn in (("full", full_logits), ("chunked", lambda *a: token_logprobs(*a, backend=backend))):
            with LiveTensors() as live:
                outs[route] = fn(*args)
            peaks[route] = live.peak
    (lp_f, am_f), (lp_c, am_c) = outs["full"], outs["chunked"]
    err = (lp_f - lp_c).abs().max().item()
    assert err < 1e-4 and torch.equal(am_f, am_c), f"routes disagree (max |dlogprob| {err:.2e}): not timing them"
    return request.param, args, backend, peaks, err


@pytest.mark.parametrize("route", ["full", "chunked"])
def test_token_logprobs(benchmark, case, route):
    model, (hidden, weight, targets), backend, peaks, err = case
    N, d = hidden.shape
    V = weight.shape[0]
    benchmark.group = f"scoring head: {model} vocabulary V={V}, d={d}, N={N} positions, float32"
    info = {"peak_tensor_bytes": peaks[route], "max_abs_logprob_diff": err}
    with torch.no_grad():
        if route == "full":
            info["candidate"] = "full logits (N, V) + log_softmax + gather/argmax"
            measure(benchmark, lambda: full_logits(hidden, weight, targets), role="baseline", **info)
        else:
            info["candidate"] = f"token_logprobs, vocabulary chunks of 16,384 (backend {backend})"
            fn = lambda: token_logprobs(hidden, weight, targets, backend=backend)  # noqa: E731
            measure(benchmark, fn, role="candidate", **info)

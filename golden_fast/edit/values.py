"""The v* / z optimisation: find, per request, a vector delta that, added at one
site at the subject's last token in every context template, makes the model predict
target_new; KL on "{subject} is a" keeps the subject's other properties. It minimises

    (1/T) sum_templates NLL(target_new) + kl_factor * KL(p_0 || p_delta) + v_weight_decay * ||delta||² / ||v_0||²

with Adam, projecting delta into ||delta|| <= clamp_norm_factor * ||v_0|| after each step
(v_0: the site's value on the bare prompt, unedited); v* = v_0 + delta. See FORMULAS.md,
section "Targets v* and z", which also lists where this differs from the anchors' code.

Speed by design. delta enters at the subject's last token s at layer l. In a causal
model no token before s, and no layer below l at any token, depends on delta. So:
  1. the tokens before s ("prefix") run once, through every layer, into a KV cache;
  2. the tokens from s on ("suffix") run once through layers < l, recording the residual
     stream entering block l;
  3. each optimisation step runs only the suffix tokens, only through blocks l and above,
     reading the cached prefix keys/values.
The anchors recompute every token of every layer at every step; `prefix_reuse=False`
does exactly that on the same batch, for the benchmark and the equivalence test.

Under torchrun, a batch editor's targets (`shard=True`) are split across the ranks of a collective
edit (`common.collective`): each rank optimises its strided share and every rank gets all of them,
in request order (the same values on every rank, each made by one rank).

Many requests are optimised in one batched loop (one delta row each): Adam works
element-wise, so a joint loop equals separate loops; a request that reaches the stopping
NLL is frozen (its row restored after each step) while the others go on.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import time
from collections.abc import Iterator, Sequence

import torch

from golden_fast import distributed
from golden_fast.hooks import capture, layers_from, patch
from golden_fast.models import get_adapter
from golden_fast.models.placement import execution_device
from golden_fast.tokens import fill, subject_last_token, target_span

from .common import EditError, collective, shared_work
from .context import with_prompt
from .target_cache import CachedTarget, active_target_cache, request_key, settings_key, weights_fingerprint

KL_PROMPT = "{} is a"


@dataclasses.dataclass
class _Rows:
    prefix: list[list[int]]
    suffix: list[list[int]]
    owner: list[int]  # request index (within the group) of each row
    is_kl: list[bool]
    pred_cols: list[list[int]]  # suffix columns whose logits predict the target tokens
    pred_ids: list[list[int]]
    bare: list[int]  # per request: its bare-prompt row (template "{}")


def _build_rows(tok, requests: Sequence, templates: Sequence[str], kl: bool) -> _Rows:
    rows = _Rows([], [], [], [], [], [], [])
    for r, req in enumerate(requests):
        if not req.target_new:
            raise EditError(f"{req.ref}: no target_new to edit towards")
        for t_i, t in enumerate(templates):
            tmpl = with_prompt(t, req.template)
            ids_p, s = subject_last_token(tok, tmpl, req.subject)
            text, _ = fill(tmpl, req.subject)
            span = target_span(tok, text, req.target_new)
            if s >= span.start or span.ids[: s + 1] != ids_p[: s + 1]:
                raise EditError(f"{req.ref}: the subject's last token is not before the target in {text!r}")
            seq = span.ids[: span.end - 1]  # the last target token is predicted, never read
            if t_i == 0:
                rows.bare.append(len(rows.prefix))
            rows.prefix.append(seq[:s])
            rows.suffix.append(seq[s:])
            rows.owner.append(r)
            rows.is_kl.append(False)
            rows.pred_cols.append([j - 1 - s for j in range(span.start, span.end)])
            rows.pred_ids.append(span.ids[span.start : span.end])
        if kl:
            ids_k, s_k = subject_last_token(tok, KL_PROMPT, req.subject)
            rows.prefix.append(ids_k[:s_k])
            rows.suffix.append(ids_k[s_k:])
            rows.owner.append(r)
            rows.is_kl.append(True)
            rows.pred_cols.append([0])  # ROME reads the distribution at the subject's last token
            rows.pred_ids.append([])
    return rows


def _layout(tok, rows: _Rows, device) -> dict:
    """Left-padded prefixes (width P) followed by right-padded suffixes (width S)."""
    n = len(rows.prefix)
    P = max(len(p) for p in rows.prefix)
    S = max(len(s) for s in rows.suffix)
    pad = tok.pad_token_id if tok.pad_token_id is not None else 0
    ids = torch.full((n, P + S), pad, dtype=torch.long)
    mask = torch.zeros((n, P + S), dtype=torch.long)
    pos = torch.zeros((n, P + S), dtype=torch.long)
    for i, (p, s) in enumerate(zip(rows.prefix, rows.suffix)):
        if p:
            ids[i, P - len(p) : P] = torch.tensor(p)
            mask[i, P - len(p) : P] = 1
            pos[i, P - len(p) : P] = torch.arange(len(p))
        ids[i, P : P + len(s)] = torch.tensor(s)
        mask[i, P : P + len(s)] = 1
        pos[i, P : P + len(s)] = torch.arange(len(p), len(p) + len(s))
    # pad columns get the next position so no row has a decreasing position id sequence
    return {"ids": ids.to(device), "mask": mask.to(device), "pos": pos.to(device), "P": P, "S": S}


@dataclasses.dataclass
class TargetResult:
    delta: torch.Tensor  # (n, d) float32: the optimised deltas
    init: torch.Tensor  # (n, d) float64: the site's value at the subject, bare prompt, unedited
    loss_curves: list[list[float]]
    nll_final: list[float]
    # where the time went (seconds, summed over groups): the unedited pass that every route pays
    # once (prefix cache, initial values) and the optimisation loop (forward + backward per step)
    setup_seconds: float = 0.0
    loop_seconds: float = 0.0
    # served by a target cache (target_cache.py): how many, and what they cost when first optimised
    reused_seconds: float = 0.0
    n_reused: int = 0


def _log_probs_at(adapter, hidden: torch.Tensor, rows_idx: torch.Tensor, cols_idx: torch.Tensor) -> torch.Tensor:
    """log-softmax of the logits at the given (row, col) positions only: (P, V) float32."""
    h = hidden[rows_idx, cols_idx]
    logits = adapter.lm_head()(h).float()
    cap = adapter.logit_softcap
    if cap:
        logits = cap * torch.tanh(logits / cap)
    return torch.log_softmax(logits, dim=-1)


@contextlib.contextmanager
def frozen_weights(model) -> Iterator[None]:
    """Turn off weight gradients for the duration: only delta is optimised, and a backward
    into every weight (the embedding and head included) would cost more than the forward."""
    flags = [(p, p.requires_grad) for p in model.parameters()]
    for p, _ in flags:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)


def optimise_targets(
    model,
    tok,
    requests: Sequence,
    layer: int,
    site: str,
    templates: Sequence[str],
    hparams,
    prefix_reuse: bool | None = None,
    group_size: int = 16,
    shard: bool = False,
) -> TargetResult:
    """Optimise one delta per request at `site` of `layer` ("mlp.down.out" for ROME's v*,
    "out" for MEMIT's z). Returns deltas and initial values; v* = init + delta.

    Inside `target_cache.reuse_targets()`, requests already optimised on these weights with these
    settings are served from the cache and only the others are optimised.

    shard: in a collective edit (every rank calls this with the same requests), the requests to
    optimise (those missing from any rank's cache) are split across the ranks and gathered back;
    every rank's cache gets all of them, so every rank uses the same targets."""
    reuse = hparams.prefix_reuse if prefix_reuse is None else prefix_reuse
    run = _optimise_shared if shard and collective() else _optimise
    cache = active_target_cache()
    if cache is None:
        return run(model, tok, list(requests), layer, site, templates, hparams, reuse, group_size)
    base = (weights_fingerprint(model),) + settings_key(layer, site, templates, hparams, reuse)
    keys = [base + request_key(r) for r in requests]
    entries = [cache.get(k) for k in keys]
    missing = [i for i, e in enumerate(entries) if e is None]
    if run is _optimise_shared:
        # rank-local edits fill each rank's own cache: what any rank lacks is optimised for all
        lacking = {i for part in distributed.all_gather_objects(missing) for i in part}
        missing = sorted(lacking)
        entries = [None if i in lacking else e for i, e in enumerate(entries)]
    reused_seconds = sum(e.seconds for e in entries if e is not None)
    cache.hits += len(requests) - len(missing)
    cache.misses += len(missing)
    # one group at a time into the cache (the same groups `_optimise` makes), so that an autosaving
    # cache keeps the finished groups of a long optimisation; the ranks of a collective share one call
    step = len(missing) if run is _optimise_shared else group_size
    setup = loop = 0.0
    for lo in range(0, len(missing), max(step, 1)):
        part = missing[lo:lo + step]
        fresh = run(model, tok, [requests[i] for i in part], layer, site, templates, hparams, reuse, group_size)
        setup, loop = setup + fresh.setup_seconds, loop + fresh.loop_seconds
        per = (fresh.setup_seconds + fresh.loop_seconds) / len(part)
        for j, i in enumerate(part):
            entries[i] = CachedTarget(fresh.delta[j].clone(), fresh.init[j].clone(), list(fresh.loss_curves[j]),
                                fresh.nll_final[j], per)
            cache.put(keys[i], entries[i])
        cache.checkpoint()
    return TargetResult(
        torch.stack([e.delta for e in entries]),
        torch.stack([e.init for e in entries]),
        [list(e.loss_curve) for e in entries],
        [e.nll_final for e in entries],
        setup,
        loop,
        reused_seconds,
        len(requests) - len(missing),
    )


def _optimise(model, tok, requests, layer, site, templates, hparams, reuse, group_size) -> TargetResult:
    with frozen_weights(model):
        results = [
            _optimise_group(model, tok, requests[i : i + group_size], layer, site, templates, hparams, reuse)
            for i in range(0, len(requests), group_size)
        ]
    return TargetResult(
        torch.cat([r.delta for r in results]),
        torch.cat([r.init for r in results]),
        [c for r in results for c in r.loss_curves],
        [x for r in results for x in r.nll_final],
        sum(r.setup_seconds for r in results),
        sum(r.loop_seconds for r in results),
    )


def _optimise_shared(model, tok, requests, layer, site, templates, hparams, reuse, group_size) -> TargetResult:
    """`_optimise` over the ranks: each its strided share, every rank all results in request order.

    Times are the slowest rank's (the wall time of the phase)."""
    times = {"setup": 0.0, "loop": 0.0}

    def work(mine: list[int]) -> list[tuple]:
        res = _optimise(model, tok, [requests[i] for i in mine], layer, site, templates, hparams, reuse, group_size)
        times.update(setup=res.setup_seconds, loop=res.loop_seconds)
        return [(res.delta[j].cpu(), res.init[j].cpu(), res.loss_curves[j], res.nll_final[j]) for j in range(len(mine))]

    every = shared_work(len(requests), work)
    slowest = distributed.all_gather_objects((times["setup"], times["loop"]))
    device = execution_device(model)
    return TargetResult(
        torch.stack([r[0] for r in every]).to(device),
        torch.stack([r[1] for r in every]).to(device),
        [list(r[2]) for r in every],
        [r[3] for r in every],
        max(t[0] for t in slowest),
        max(t[1] for t in slowest),
    )


def _optimise_group(model, tok, requests, layer, site, templates, hparams, prefix_reuse) -> TargetResult:
    t_start = time.perf_counter()
    adapter = get_adapter(model)
    if hparams.v_loss_layer not in (None, adapter.n_layers - 1):
        raise ValueError(
            f"v_loss_layer={hparams.v_loss_layer}: only the last layer ({adapter.n_layers - 1}) is supported"
        )
    device = execution_device(model)
    use_kl = hparams.kl_factor > 0
    rows = _build_rows(tok, requests, templates, kl=use_kl)
    lay = _layout(tok, rows, device)
    P, n_req, n_rows = lay["P"], len(requests), len(rows.prefix)
    site_name = f"layers.{layer}.{site}"
    owner = torch.tensor(rows.owner, device=device)
    all_rows = torch.arange(n_rows, device=device)
    at_s = torch.full((n_rows,), P, device=device)  # column of each row's subject last token

    # (row, col) pairs whose logits are read: target predictions and KL positions
    pr, pc, pid, pown, kl_r, kl_c = [], [], [], [], [], []
    for i in range(n_rows):
        if rows.is_kl[i]:
            kl_r.append(i)
            kl_c.append(P + rows.pred_cols[i][0])
        else:
            for c, t in zip(rows.pred_cols[i], rows.pred_ids[i]):
                pr.append(i)
                pc.append(P + c)
                pid.append(t)
                pown.append(i)
    pr_t, pc_t = torch.tensor(pr, device=device), torch.tensor(pc, device=device)
    pid_t, prow_t = torch.tensor(pid, device=device), torch.tensor(pown, device=device)
    n_tok_row = torch.zeros(n_rows, device=device).index_add_(0, prow_t, torch.ones(len(pr), device=device))
    rw_rows = torch.tensor([i for i in range(n_rows) if not rows.is_kl[i]], device=device)
    n_tmpl = len(templates)
    kl_r_t, kl_c_t = torch.tensor(kl_r, device=device), torch.tensor(kl_c, device=device)

    body = adapter.body()
    with torch.no_grad():
        # the unedited pass: initial values at the site, the residual entering `layer`,
        # and (fast path) the prefix KV cache
        cache = None
        if prefix_reuse and P > 0:
            out = body(input_ids=lay["ids"][:, :P], attention_mask=lay["mask"][:, :P],
                       position_ids=lay["pos"][:, :P], use_cache=True)
            cache = out.cache
            for lyr in cache.layers:  # all-pad prefix rows: keep masked slots finite
                lyr.keys.nan_to_num_(0.0)
                lyr.values.nan_to_num_(0.0)
            run_ids, run_pos = lay["ids"][:, P:], lay["pos"][:, P:]
            run_cache = copy.deepcopy(cache)
        else:
            run_ids, run_pos, run_cache = lay["ids"], lay["pos"], None
        with capture(adapter, [site_name, f"layers.{layer}.in"]) as cap:
            body(input_ids=run_ids, attention_mask=lay["mask"], position_ids=run_pos,
                 cache=run_cache, use_cache=run_cache is not None)
        col0 = 0 if cache is not None else P
        init64 = cap[site_name][torch.tensor(rows.bare, device=device), col0].to(torch.float64)  # (n_req, d)
        init = init64.float()
        h_in = cap[f"layers.{layer}.in"]  # residual entering `layer` (suffix columns when cached)
        del cap

    t_loop = time.perf_counter()
    delta = torch.zeros(n_req, init.shape[1], device=device, requires_grad=True)
    opt = torch.optim.Adam([delta], lr=hparams.v_lr)
    frozen = torch.zeros(n_req, dtype=torch.bool, device=device)
    max_norm = hparams.clamp_norm_factor * init.norm(dim=1)  # (n_req,)
    init_sq = init.pow(2).sum(1).clamp_min(1e-12)
    kl_init = None
    curves: list[list[float]] = [[] for _ in range(n_req)]
    nll_last = [float("nan")] * n_req
    row_req = owner  # request of each row (KL rows included)
    pred_req = owner[prow_t]  # request of each predicted token
    kl_req = owner[kl_r_t] if use_kl else None
    for _step in range(hparams.v_num_grad_steps):
        opt.zero_grad(set_to_none=True)
        # rows of frozen requests are dropped from the step (compaction): in a batch, requests
        # that reached the stopping NLL cost nothing more while the others go on
        act = None if not bool(frozen.any()) else (~frozen[row_req]).nonzero().squeeze(1)
        n_act = n_rows if act is None else int(act.numel())
        pick = (lambda t: t) if act is None else (lambda t, a=act: t.index_select(0, a))
        remap = all_rows if act is None else torch.full((n_rows,), -1, device=device).index_put_(
            (act,), torch.arange(n_act, device=device))
        if cache is not None:
            step_cache = copy.deepcopy(cache)
            if act is not None:
                step_cache.batch_select_indices(act)
            with layers_from(adapter, layer) as top, patch(adapter, site_name, torch.arange(n_act, device=device),
                                                            torch.zeros(n_act, dtype=torch.long, device=device),
                                                            pick(delta[owner])):
                hidden = top(inputs_embeds=pick(h_in), attention_mask=pick(lay["mask"]), position_ids=pick(run_pos),
                             cache=step_cache, use_cache=True).last_hidden_state
            cols_shift = P  # hidden holds suffix columns only
        else:
            with patch(adapter, site_name, torch.arange(n_act, device=device), pick(at_s), pick(delta[owner])):
                hidden = body(input_ids=pick(lay["ids"]), attention_mask=pick(lay["mask"]),
                              position_ids=pick(lay["pos"])).last_hidden_state
            cols_shift = 0
        live = ~frozen[pred_req]  # predicted tokens of active requests
        lp = _log_probs_at(adapter, hidden, remap[pr_t[live]], pc_t[live] - cols_shift)
        tok_nll = torch.zeros(len(pr), device=device).masked_scatter(
            live, -lp.gather(1, pid_t[live][:, None]).squeeze(1))  # (n_pred,), 0 for frozen requests
        row_nll = torch.zeros(n_rows, device=device).index_add(0, prow_t, tok_nll) / n_tok_row.clamp_min(1)
        req_nll = torch.zeros(n_req, device=device).index_add(0, owner[rw_rows], row_nll[rw_rows]) / n_tmpl
        loss_req = req_nll + hparams.v_weight_decay * delta.pow(2).sum(1) / init_sq
        if use_kl:
            live_kl = ~frozen[kl_req]
            kl_lp = _log_probs_at(adapter, hidden, remap[kl_r_t[live_kl]], kl_c_t[live_kl] - cols_shift)
            if kl_init is None:  # the first step: nothing frozen yet, every request's row present
                kl_init = kl_lp.detach()
            # KL(p_orig || p_edit), per active request
            ref = kl_init[live_kl]
            kl = torch.zeros(n_req, device=device).masked_scatter(live_kl, (ref.exp() * (ref - kl_lp)).sum(1))
            loss_req = loss_req + hparams.kl_factor * kl
        if not torch.isfinite(loss_req).all():
            bad = [requests[i].ref for i in range(n_req) if not torch.isfinite(loss_req[i])]
            raise EditError(f"{', '.join(bad)}: non-finite loss in the v*/z optimisation")
        for i in range(n_req):
            if not frozen[i]:
                curves[i].append(float(loss_req[i].detach()))
                nll_last[i] = float(req_nll[i].detach())
        frozen |= req_nll.detach() < hparams.nll_stop
        if bool(frozen.all()) or _step == hparams.v_num_grad_steps - 1:
            break
        keep = delta.detach()[frozen].clone()
        loss_req[~frozen].sum().backward()
        opt.step()
        with torch.no_grad():
            delta[frozen] = keep
            # project into the ball ||delta|| <= clamp_norm_factor * ||init||
            norm = delta.norm(dim=1)
            scale = torch.where(norm > max_norm, max_norm / norm.clamp_min(1e-12), torch.ones_like(norm))
            delta.mul_(scale[:, None])
    return TargetResult(delta.detach().float(), init64, curves, nll_last,
                        t_loop - t_start, time.perf_counter() - t_loop)

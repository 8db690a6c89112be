"""The planner (golden_fast/plan): shipped configs give the published parameter counts, the load
stage of a tiny model equals the real model to the byte, the activation formulas equal autograd's
saved tensors, --devices parsing, the fits / offload / no decisions and the CLI."""

from __future__ import annotations

import json

import pytest
import torch

from golden_fast.plan import (
    Assumptions,
    architecture,
    build_meta_model,
    parse_budget,
    parse_devices,
    parse_size,
    plan_model,
    resolve_config,
)
from golden_fast.plan.memory import a_key, a_tok

# ---- shipped configs -------------------------------------------------------------------------

PUBLISHED = {
    # name: (parameters, layers, d, m, heads, kv heads, vocab)
    "gpt2-xl": (1_557_611_200, 48, 1600, 6400, 25, 25, 50257),  # tied embeddings
    "llama-2-7b": (6_738_415_616, 32, 4096, 11008, 32, 32, 32000),
    # the text model (Gemma3ForCausalLM, tied embeddings): the published "12B" also counts the vision tower
    "gemma-3-12b": (11_766_034_176, 48, 3840, 15360, 16, 8, 262208),
}


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_preset_parameter_counts(name):
    n, L, d, m, h, h_kv, V = PUBLISHED[name]
    rc = resolve_config(name)
    assert rc.source.endswith(f"presets/configs/{name}.json")
    a = architecture(name, rc.config)
    assert a.n_params == n
    assert (a.n_layers, a.d, a.m, a.n_heads, a.n_kv_heads, a.vocab) == (L, d, m, h, h_kv, V)


def test_gemma_3_12b_shape():
    a = architecture("gemma-3-12b", resolve_config("gemma-3-12b").config)
    assert a.head_dim == 256 and a.qk_norm and a.norms_per_layer == 4 and a.gated and a.tied_embeddings
    assert a.model_class == "Gemma3ForCausalLM"


def test_unknown_model():
    with pytest.raises(FileNotFoundError, match="no config for"):
        resolve_config("no-such-model-anywhere")


def test_zoo_model_not_fetched(monkeypatch, tmp_path):
    monkeypatch.setenv("GOLDEN_FAST_HOME", str(tmp_path))
    with pytest.raises(FileNotFoundError, match="models fetch smollm2-135m"):
        resolve_config("smollm2-135m")


def test_config_json_path(tmp_path):
    from golden_fast.models import build_tiny

    model, _ = build_tiny("tiny-llama")
    model.config.save_pretrained(tmp_path)
    p = plan_model(str(tmp_path / "config.json"), devices=["cpu:1GB"], dtypes=["float32"], stages=["load"])
    assert p.arch.n_params == sum(x.numel() for x in model.parameters())


# ---- the load stage against a real model -----------------------------------------------------


@pytest.mark.parametrize("name", ["tiny-llama", "tiny-gpt2", "tiny-gemma3"])
def test_tiny_load_stage_exact(name):
    from golden_fast.models import load_model

    model, _ = load_model(name)
    p = plan_model(name, devices=["cpu:1GB"], stages=["load"])
    n = sum(x.numel() for x in model.parameters())
    assert p.arch.n_params == n
    f32 = p.stage("load", "float32")
    assert f32.weights_bytes == sum(x.numel() * x.element_size() for x in model.parameters()) == 4 * n
    assert f32.buffers_bytes == sum(b.numel() * b.element_size() for b in model.buffers())
    assert p.stage("load", "bfloat16").weights_bytes == 2 * n
    assert f32.memory.device_bytes == 0 and f32.placements[0].verdict == "fits"


# ---- the per-token activation formulas against autograd ----------------------------------------


def _saved_bytes_per_layer(model, B: int, T: int, pad: int) -> dict[int, int]:
    """Bytes autograd saves in each decoder block (weights frozen, padded batch), distinct storages,
    weights and buffers excluded: what LGA's backward keeps."""
    params = {id(p.untyped_storage()) for p in model.parameters()} | {id(b.untyped_storage()) for b in model.buffers()}
    from golden_fast.models import get_adapter

    ad = get_adapter(model)
    where, seen, per = [None], {}, {}
    hooks = []
    for i in range(ad.n_layers):
        hooks.append(ad.block(i).register_forward_pre_hook(lambda m, a, i=i: where.__setitem__(0, i)))
        hooks.append(ad.block(i).register_forward_hook(lambda m, a, o: where.__setitem__(0, None)))

    keep = []

    def pack(t):
        st = t.untyped_storage()
        key = id(st)
        if where[0] is not None and key not in params and key not in seen:
            seen[key] = True
            keep.append(st)  # keep it alive so ids stay unique
            per[where[0]] = per.get(where[0], 0) + st.nbytes()
        return t

    ids = torch.randint(5, 100, (B, T))
    mask = torch.ones(B, T, dtype=torch.long)
    mask[0, :pad] = 0
    flags = [p.requires_grad for p in model.parameters()]
    try:
        for p in model.parameters():
            p.requires_grad_(False)
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            x = ad.embeddings()(ids).detach().requires_grad_(True)
            model(inputs_embeds=x, attention_mask=mask, use_cache=False)
    finally:
        for h in hooks:
            h.remove()
        for p, f in zip(model.parameters(), flags):
            p.requires_grad_(f)
    return per


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("name", ["tiny-llama", "tiny-gpt2", "tiny-gemma3"])
def test_activation_formula_matches_autograd(name, dtype):
    from golden_fast.models import build_tiny

    model, _ = build_tiny(name, dtype=dtype)
    a = architecture(name, model.config, build_meta_model(model.config))
    B, T = 4, 16
    per = _saved_bytes_per_layer(model, B, T, pad=3)
    e = torch.finfo(dtype).bits // 8
    planned = B * T * (a_tok(a, e) + a_key(a, e) + T * e)
    for layer, got in per.items():
        # left out on purpose: per-layer constants, not per token: Gemma's float32 norm scales (4 d + 2 d_h)
        # and RoPE tables (cos, sin: T d_h each, float32)
        slack = 4 * (4 * a.d + 2 * a.head_dim) + 2 * 4 * T * a.head_dim
        assert planned <= got <= planned + slack, (layer, got, planned)


# ---- --devices -------------------------------------------------------------------------------


def test_parse_size_units():
    assert parse_size("24GB") == 24 * 10**9
    assert parse_size("80GiB") == 80 * 2**30
    assert parse_size("1.5 TB") == 1_500_000_000_000
    assert parse_size("512") == 512
    for bad in ("", "GB", "24XB", "-1GB", "0GB"):
        with pytest.raises(ValueError):
            parse_size(bad)


def test_parse_devices():
    b = parse_budget("1x80GB")
    assert b.gpus == [80 * 10**9] and b.cpu is None
    b = parse_budget("2x24GB")
    assert b.gpus == [24 * 10**9] * 2 and b.max_memory() == {0: 24 * 10**9, 1: 24 * 10**9}
    b = parse_budget("cpu:24GB")
    assert b.gpus == [] and b.cpu == 24 * 10**9 and b.max_memory() == {"cpu": 24 * 10**9}
    b = parse_budget("1x24GB+cpu:64GB")
    assert b.max_memory() == {0: 24 * 10**9, "cpu": 64 * 10**9}
    assert parse_budget("80GB").gpus == [80 * 10**9]
    assert [x.spec for x in parse_devices(["1x80GB", "2x24GB", "cpu:24GB"])] == ["1x80GB", "2x24GB", "cpu:24GB"]
    for bad in ("x24GB", "cpu:2x8GB", "cpu:8GB+cpu:8GB", "1x", "", "0x24GB"):
        with pytest.raises(ValueError):
            parse_budget(bad)


# ---- fits / offload / no ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def llama7b():
    return plan_model("llama-2-7b", devices=["1x80GB", "1x8GB", "1x8GB+cpu:64GB", "cpu:8GB", "1x1GB"],
                      dtypes=["bfloat16"], stages=["load", "lga", "emmet"])


def _placement(plan, stage, budget):
    sp = plan.stage(stage, "bfloat16")
    return next(p for p in sp.placements if p.budget == budget)


def test_fits(llama7b):
    for stage in ("load", "lga", "emmet"):
        pl = _placement(llama7b, stage, "1x80GB")
        assert pl.verdict == "fits" and set(pl.per_device) == {"0"}
    sp = llama7b.stage("lga", "bfloat16")
    m = sp.memory
    assert sp.total_bytes == sp.weights_bytes + sp.buffers_bytes + m.device_bytes + m.host_bytes + m.process_bytes


def test_small_budget_offloads_layers(llama7b):
    # 13.5 GB of bfloat16 weights, 8 GB of GPU: the rest of the layers go to disk, or to CPU RAM when given
    pl = _placement(llama7b, "load", "1x8GB")
    assert pl.verdict == "offload"
    on_disk = [k for k, v in pl.device_map.items() if v == "disk"]
    assert any(k.startswith("model.layers.") for k in on_disk)
    assert 0 < pl.per_device["0"] <= 8 * 10**9
    pl = _placement(llama7b, "load", "1x8GB+cpu:64GB")
    assert pl.verdict == "offload" and "disk" not in pl.per_device
    assert any(v == "cpu" and k.startswith("model.layers.") for k, v in pl.device_map.items())
    pl = _placement(llama7b, "load", "cpu:8GB")  # RAM only: what does not fit goes to disk
    assert pl.verdict == "offload" and pl.per_device["cpu"] <= 8 * 10**9 and pl.per_device["disk"] > 0


def test_working_memory_leaves_less_room(llama7b):
    # the same 8 GB GPU holds fewer weights while LGA runs than at load
    load = _placement(llama7b, "load", "1x8GB").per_device["0"]
    lga = _placement(llama7b, "lga", "1x8GB")
    assert lga.per_device["0"] < load
    assert lga.max_memory["0"] == 8 * 10**9 - llama7b.stage("lga", "bfloat16").memory.device_bytes


def test_does_not_fit(llama7b):
    # EMMET's 1000-fact working memory (float64 C of five 11008-wide layers...) exceeds 1 GB by itself
    pl = _placement(llama7b, "emmet", "1x1GB")
    assert pl.verdict == "no" and pl.device_map is None and "exceeds" in pl.reason


def test_tiny_fits_and_not():
    p = plan_model("tiny-llama", devices=["1x1GB", "1x1MB"], dtypes=["float32"], stages=["lga"])
    verdicts = [pl.verdict for pl in p.stage("lga").placements]
    assert verdicts == ["fits", "no"]


# ---- assumptions -----------------------------------------------------------------------------


def test_assumptions_from_preset_and_overrides():
    p = plan_model("gpt2-xl", devices=["1x80GB"], dtypes=["float32"], stages=["r-rome", "emmet"])
    a = p.assumptions
    assert a.layer == 17 and a.emmet_layers == (13, 14, 15, 16, 17)  # golden_fast/presets/gpt2-xl.yaml
    assert a.templates == ((5, 10), (10, 10))  # ROMEConfig's default (the preset names none)
    assert p.stage("r-rome").memory.notes["rows"] == 22
    more = plan_model("gpt2-xl", devices=["1x80GB"], dtypes=["float32"], stages=["emmet"],
                      assumptions=Assumptions(emmet_facts=10_000))
    assert more.stage("emmet").memory.device_bytes > p.stage("emmet").memory.device_bytes
    with pytest.raises(ValueError, match="out of range"):
        plan_model("gpt2-xl", devices=["1x80GB"], stages=["r-rome"], assumptions=Assumptions(layer=48))
    with pytest.raises(ValueError, match="after_subject"):
        Assumptions(prompt_tokens=3, after_subject=5)


def test_bfloat16_needs_less_than_float32():
    p = plan_model("tiny-gemma3", devices=["1x1GB"])
    for stage in ("load", "lga", "r-rome"):
        assert p.stage(stage, "bfloat16").total_bytes < p.stage(stage, "float32").total_bytes


# ---- CLI -------------------------------------------------------------------------------------


def test_cli_table(capsys):
    from golden_fast.cli import main

    assert main(["plan", "--model", "tiny-llama", "--devices", "1x1GB", "cpu:1MB", "1x1GB+cpu:2GB"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("tiny-llama: LlamaForCausalLM") and "parameters: 237,632" in out
    header = next(line for line in out.splitlines() if line.startswith("stage"))
    for col in ("dtype", "weights", "working", "host", "total", "1x1GB", "cpu:1MB", "1x1GB+cpu:2GB"):
        assert col in header
    for title in ("load (weights)", "LGA, one batch of facts", "statistics, one layer", "one R-ROME edit",
                  "EMMET batch of N facts"):
        assert sum(title in line for line in out.splitlines()) == 2  # float32 and bfloat16 rows
    assert "working-memory terms" in out


def test_cli_json(capsys):
    from golden_fast.cli import main

    argv = ["plan", "--model", "gpt2-xl", "--devices", "1x2GB", "--dtypes", "bfloat16", "--stages", "load,lga",
            "--lga-batch", "4", "--json"]
    assert main(argv) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["parameters"] == 1_557_611_200
    assert data["assumptions"]["lga_batch"] == 4
    assert [(s["stage"], s["dtype"]) for s in data["stages"]] == [("load", "bfloat16"), ("lga", "bfloat16")]
    load = data["stages"][0]
    assert load["weights_bytes"] == 2 * 1_557_611_200
    pl = load["placements"][0]
    assert pl["budget"] == "1x2GB" and pl["verdict"] == "offload"
    assert "disk" in pl["device_map"].values()


def test_cli_bad_devices(capsys):
    from golden_fast.cli import main

    assert main(["plan", "--model", "tiny-llama", "--devices", "2xlots"]) == 2
    assert "bad size" in capsys.readouterr().err


def test_mom2_off_drops_the_m_by_m_terms():
    on = plan_model("gpt2-xl", devices=["1x80GB"], dtypes=["float32"], stages=["r-rome"])
    off = plan_model("gpt2-xl", devices=["1x80GB"], dtypes=["float32"], stages=["r-rome"],
                     assumptions=Assumptions(mom2_adjustment=False))
    m_on, m_off = on.stage("r-rome").memory, off.stage("r-rome").memory
    assert m_off.device["C_load_peak"] == 0 and m_on.device["C_load_peak"] == 28 * 6400**2
    v = sum(x for k, x in m_off.device.items() if k.startswith("v*_"))
    assert m_off.device_bytes == m_off.device["W_float64"] + v
    assert m_on.device_bytes == m_on.device["W_float64"] + max(v + 16 * 6400**2, 28 * 6400**2)

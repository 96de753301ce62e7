"""Presets, the HuggingFace importer and spec errors; golden sizes with the arithmetic written out."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

import jaxsim as js
from jaxsim.presets import MODEL_FIELDS, describe_model, list_presets

DATA = Path(__file__).parent / "data"


def params(name: str) -> tuple[float, float]:
    m = js.load_model(name)
    return float(js.total_params(m)), float(js.active_params(m))


def test_deepseek_v3_sizes() -> None:
    total, active = params("deepseek-v3")
    # MLA per layer: q_a 7168·1536 + q_b 1536·128·192 + kv_a 7168·576 + kv_b 512·128·256 + o 128·128·7168
    mla = 7168 * 1536 + 1536 * 128 * 192 + 7168 * 576 + 512 * 128 * 256 + 128 * 128 * 7168
    expert = 3 * 7168 * 2048
    by_hand = (61 * mla + 3 * 3 * 7168 * 18432 + 58 * (256 * expert + expert + 7168 * 256) + 2 * 129280 * 7168)
    assert total == pytest.approx(by_hand, rel=1e-6)
    assert abs(total / 671e9 - 1) < 0.01
    assert abs(active / 37e9 - 1) < 0.02


def test_deepseek_v3_kv_bytes_per_token() -> None:
    m = js.load_model("deepseek-v3")
    # MLA caches the 512-dim latent plus the 64-dim RoPE key per layer: (512 + 64) × 61 = 35,136 elements.
    assert float(js.kv_bytes_per_token(m, 1.0)) == 35_136
    assert float(js.kv_bytes_per_token(m, 2.0)) == 70_272


def test_other_model_sizes() -> None:
    qt, qa = params("qwen3-235b-a22b")
    assert abs(qt / 235e9 - 1) < 0.01 and abs(qa / 22e9 - 1) < 0.03
    gt, ga = params("gpt-oss-120b")
    assert abs(gt / 117e9 - 1) < 0.01 and abs(ga / 5.1e9 - 1) < 0.02
    lt, _ = params("llama-3.1-70b")
    # 80 × (Q,O 2·8192² + K,V 2·8192·1024 + FFN 3·8192·28672) + 2 · 128256 · 8192
    assert lt == pytest.approx(80 * (2 * 8192**2 + 2 * 8192 * 1024 + 3 * 8192 * 28672) + 2 * 128256 * 8192, rel=1e-6)
    assert abs(lt / 70.6e9 - 1) < 0.01


def test_gqa_kv_bytes_per_token() -> None:
    # Llama-3.1-70B: 80 layers × 8 KV heads × (128 K + 128 V) × 2 bytes = 327,680 B in BF16.
    assert float(js.kv_bytes_per_token(js.load_model("llama-3.1-70b"), 2.0)) == 80 * 8 * 256 * 2


def test_dsa_indexer_cache_counted() -> None:
    # V3.2 adds an FP8 indexer key of 128 dims + a 4-byte scale per token and layer: 61 × 132 B.
    v3 = float(js.kv_bytes_per_token(js.load_model("deepseek-v3"), 1.0))
    v32 = float(js.kv_bytes_per_token(js.load_model("deepseek-v3.2"), 1.0))
    assert v32 - v3 == 61 * 132


@pytest.mark.parametrize("name", list_presets("models"))
def test_importer_agrees_with_presets(name: str) -> None:
    preset = js.load_model(name)
    imported = js.model_from_hf_config(DATA / f"{name}.config.json")
    assert imported.attention == preset.attention
    for field in MODEL_FIELDS:
        assert float(getattr(imported, field)) == float(getattr(preset, field)), field


def test_aliases_and_aiconfigurator_names() -> None:
    assert js.load_model("deepseek-ai/DeepSeek-R1").name == "deepseek-v3"
    assert js.load_model("Qwen/Qwen3-235B-A22B").name == "qwen3-235b-a22b"
    assert js.load_hardware("h200_sxm").name == "h200-sxm"
    assert js.load_hardware("GB200").name == "gb200-nvl72"


def test_hardware_units_converted() -> None:
    hw = js.load_hardware("h100-sxm")
    assert float(hw.hbm_bytes) == pytest.approx(80e9)
    assert float(hw.hbm_bytes_per_s) == pytest.approx(3.35e12)
    assert float(hw.scale_out_bytes_per_s) == pytest.approx(400e9 / 8)
    # H100 has no FP4 tensor cores: FP4 weights run at the FP8 rate.
    assert float(hw.fp4_flop_per_s) == float(hw.fp8_flop_per_s)
    assert float(js.load_hardware("b200").fp4_flop_per_s) == pytest.approx(2 * float(js.load_hardware("b200").fp8_flop_per_s))


def test_every_hardware_efficiency_is_a_fraction() -> None:
    for name in list_presets("hardware"):
        eff = js.load_hardware(name).eff
        for field in eff.__dataclass_fields__:
            if field.endswith("_frac"):
                assert 0 < float(getattr(eff, field)) <= 1


def test_workloads_and_slos() -> None:
    w = js.load_workload("agentic-coding")
    assert (float(w.prefix_tokens), float(w.input_tokens), float(w.output_tokens)) == (524288, 256, 8192)
    s = js.load_slo("chat")
    assert float(s.ttft_s) == pytest.approx(0.05) and float(s.tpot_s) == pytest.approx(0.015)


def test_describe_model_has_derived_fields() -> None:
    info = describe_model(js.load_model("deepseek-v3"))
    assert info["kv_bytes_per_token"] == {"bf16": 70272, "fp8": 35136}
    assert abs(info["total_params"] / 671e9 - 1) < 0.01
    json.dumps(info)  # plain JSON types only


# ---- errors at the boundary ----


def test_unknown_names_list_known_ones() -> None:
    with pytest.raises(js.SpecError, match="unknown model 'gpt-5'.*deepseek-v3"):
        js.load_model("gpt-5")
    with pytest.raises(js.SpecError, match="unknown system.*h200-sxm"):
        js.load_hardware("tpu-v9")


def test_malformed_toml(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("name = 'x'\n[architecture\nn_layers = 3\n")
    with pytest.raises(js.SpecError, match="malformed TOML"):
        js.load_model(str(bad))


def _model_toml(tmp_path: Path, body: str) -> str:
    f = tmp_path / "m.toml"
    f.write_text('name = "m"\nattention = "gqa"\n[architecture]\n' + body)
    return str(f)


def test_missing_field(tmp_path: Path) -> None:
    path = _model_toml(tmp_path, "n_layers = 2\nhidden = 64\nvocab = 10\nn_heads = 4\nhead_dim = 16\n")
    with pytest.raises(js.SpecError, match="missing required field.*n_kv_heads"):
        js.load_model(path)


def test_negative_and_unknown_fields(tmp_path: Path) -> None:
    base = "hidden = 64\nvocab = 10\nn_heads = 4\nn_kv_heads = 2\nhead_dim = 16\nv_head_dim = 16\n"
    with pytest.raises(js.SpecError, match="'n_layers' must be ≥ 0"):
        js.load_model(_model_toml(tmp_path, base + "n_layers = -2\n"))
    with pytest.raises(js.SpecError, match="unknown field.*n_layer\\b"):
        js.load_model(_model_toml(tmp_path, base + "n_layer = 2\n"))
    with pytest.raises(js.SpecError, match="dense model needs dense_intermediate"):
        js.load_model(_model_toml(tmp_path, base + "n_layers = 2\nn_dense_layers = 2\n"))


def test_malformed_hf_config(tmp_path: Path) -> None:
    f = tmp_path / "config.json"
    f.write_text(json.dumps({"hidden_size": 64}))
    with pytest.raises(js.SpecError, match="missing 'num_hidden_layers'"):
        js.model_from_hf_config(f)


def test_parallelism_errors(ds3: js.Model) -> None:
    with pytest.raises(js.SpecError, match="tp = 3 does not divide .* 128 attention heads"):
        js.check_deployment(ds3, js.Deployment(tp=3, ep=3))
    with pytest.raises(js.SpecError, match="moe_ep = 3 does not divide .* 256 routed experts"):
        js.check_deployment(ds3, js.Deployment(tp=1, dp=3, ep=3))
    with pytest.raises(js.SpecError, match="tp × dp = 8 must equal moe_ep × moe_tp = 4"):
        js.check_deployment(ds3, js.Deployment(tp=8, ep=4))
    with pytest.raises(js.SpecError, match="whole number"):
        js.check_deployment(ds3, js.Deployment(tp=0.5))
    js.check_deployment(ds3, js.Deployment(tp=1, dp=8, ep=8))  # a real DeepSeek layout passes


def test_workload_errors(ds3: js.Model) -> None:
    with pytest.raises(js.SpecError, match="input length must be"):
        js.make_workload(-5, 10)
    with pytest.raises(js.SpecError, match="exceeds deepseek-v3's context"):
        js.make_workload(200_000, 1000, model=ds3)
    assert math.isclose(float(js.make_workload(100, 10, 5, model=ds3).prefix_tokens), 5)


def test_importer_rejects_layer_types_it_cannot_model(tmp_path: Path) -> None:
    cfg = json.loads((DATA / "qwen3-32b.config.json").read_text())
    cfg["layer_types"] = ["linear_attention", "linear_attention", "linear_attention", "full_attention"] * 16
    f = tmp_path / "config.json"
    f.write_text(json.dumps(cfg))
    with pytest.raises(js.SpecError, match="linear_attention .* not modelled"):
        js.model_from_hf_config(f)

"""Calibration: the importer of AIConfigurator-layout tables, jaxsim's kernel CSV, the fit, and the roofline floor.

None of these needs the optional `calibrate` extra: the importer reads synthetic tables in the database's
layout under `tests/data/aic_tiny/`, the fit runs on synthetic data drawn from known parameters.
"""

from __future__ import annotations

import math
import tomllib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

import jaxsim as js
from jaxsim import calibrate as C
from jaxsim.calibrate import fit as FT
from jaxsim.calibrate import tables as T
from jaxsim.cli import app
from jaxsim.cost import kernels
from jaxsim.presets import SpecError, specs_dir

DATA = Path(__file__).parent / "data"
AIC = DATA / "aic_tiny"
SHIPPED = ("h100-sxm", "h200-sxm", "b200", "gb200-nvl72")


# ---- importer ----


def test_aic_import_maps_columns_units_and_filters() -> None:
    df = T.load_aic("h200-sxm", "trtllm", AIC)  # project name → the database's h200_sxm folder
    by_op = df.groupby("op").size().to_dict()
    # 4 GEMM rows in the largest table, per-tensor FP8 dropped because block-scaled FP8 is there;
    # MoE: balanced gated rows only, one per shape (the NVFP4 shape measured with two kernels keeps the faster);
    # generation attention: the 32-query-heads-per-KV-head row dropped;
    # NCCL all-reduce replaced by the framework's custom all-reduce.
    assert by_op == {"gemm": 3, "moe": 2, "generation_attention": 1, "context_attention": 1, "generation_mla": 1,
                     "all_gather": 1, "all_to_all": 1, "all_reduce": 1}
    gemm = df[df.op == "gemm"].sort_values("m")
    assert list(gemm.dtype) == ["bf16", "fp8", "bf16"]
    assert gemm.source.str.contains("9.9.0").all()
    gen = df[df.op == "generation_attention"].iloc[0]
    assert (gen.batch, gen.seq_len, gen.prefix, gen.heads, gen.kv_heads, gen.kv_dtype) == (16, 1, 4095, 8, 1, "fp8")
    ctx = df[df.op == "context_attention"].iloc[0]
    assert (ctx["window"], ctx["dtype"], ctx["prefix"]) == (128, "fp8", 0)
    # message_size counts elements: 1 Mi half elements = 2 MiB, 1 Mi int8 elements = 1 MiB.
    assert df[df.op == "all_gather"].bytes.item() == 2 * 1048576
    assert df[df.op == "all_to_all"].bytes.item() == 1048576
    ar = df[df.op == "all_reduce"].iloc[0]
    assert ar.bytes == 2 * 65536 and "custom_allreduce" in ar.source
    moe = df[df.op == "moe"].set_index("dtype")
    assert moe.latency_ms.to_dict() == pytest.approx({"fp8": 0.1, "fp4": 0.03})
    assert df[df.op == "moe"].source.str.endswith("moe_perf.parquet").all()  # the table, for provenance


def test_aic_import_errors_name_the_fix() -> None:
    with pytest.raises(SpecError, match="no sglang kernel tables.*--framework"):
        T.load_aic("h200-sxm", "sglang", AIC)
    with pytest.raises(SpecError, match="no measured kernel tables for system 'b200'.*known: h200_sxm"):
        T.load_aic("b200", "trtllm", AIC)
    with pytest.raises(SpecError, match="unknown framework"):
        T.load_aic("h200-sxm", "tensorrt", AIC)


def test_heldout_split_is_fixed_and_per_table() -> None:
    df = pd.DataFrame({"op": ["gemm"] * 100 + ["moe"] * 50, "source": ["a"] * 100 + ["b"] * 50})
    mask = T.heldout_mask(df)
    assert mask[:100].sum() == 20 and mask[100:].sum() == 10
    assert np.array_equal(mask, T.heldout_mask(df.copy()))
    assert not np.array_equal(mask, T.heldout_mask(df, seed=1))


# ---- own CSV format ----


def test_kernel_csv_reads(tmp_path: Path) -> None:
    df = T.read_csv(DATA / "kernels_tiny.csv")
    assert len(df) == 9 and set(df.op) <= set(T.OPS)
    assert df.loc[df.op == "moe", "tokens"].item() == 256
    T.write_csv(df, tmp_path / "round.csv")
    again = T.read_csv(tmp_path / "round.csv")
    pd.testing.assert_frame_equal(again, df)


@pytest.mark.parametrize(("edit", "message"), [
    (lambda d: d.assign(op=d.op.replace("gemm", "matmul")), "unknown op.*matmul"),
    (lambda d: d.drop(columns=["latency_ms"]), "missing column.*latency_ms"),
    (lambda d: d.assign(latency_ms=-1.0), "latency_ms must be a number > 0"),
    (lambda d: d.assign(m=np.nan), r"\(gemm\) needs column m > 0"),
    (lambda d: d.assign(dtype="int4"), "unknown dtype value"),
    (lambda d: d.assign(speed=1.0), "unknown column.*speed"),
])
def test_malformed_kernel_csv_is_a_clear_error(tmp_path: Path, edit, message: str) -> None:
    df = pd.read_csv(DATA / "kernels_tiny.csv", comment="#")
    path = tmp_path / "bad.csv"
    edit(df).to_csv(path, index=False)
    with pytest.raises(SpecError, match=message):
        T.read_csv(path)


# ---- kernel formulas with the calibrated terms (hand-computed) ----


def test_gemm_latency_terms_hand_computed() -> None:
    hw = js.load_hardware("h200-sxm", calibrated=False)
    eff = js.Efficiency(gemm_compute_frac=0.5, gemm_half_rows=0.0, gemm_memory_frac=0.5, gemm_fp8_scale=0.5,
                        gemm_latency_s=3e-6, gemm_quant_latency_s=2e-6)
    import equinox as eqx

    hw = eqx.tree_at(lambda h: h.eff, hw, eff)
    # FP8, compute-bound: 1e13 FLOP at 1979e12 × 0.5 × 0.5 FLOP/s, plus 3 µs + 2 µs (sum: p = 1).
    t = float(kernels.gemm_s(hw, 1e13, 1.0, 1e9, 1.0))
    assert t == pytest.approx(1e13 / (1979e12 * 0.25) + 5e-6, rel=1e-5)
    # BF16: no quantisation latency, no FP8 scale.
    t = float(kernels.gemm_s(hw, 1e13, 1.0, 1e9, 2.0))
    assert t == pytest.approx(1e13 / (989e12 * 0.5) + 3e-6, rel=1e-5)
    # p-norm overlap: p = 2 → sqrt(work² + latency²).
    hw2 = eqx.tree_at(lambda h: h.eff.gemm_latency_p, hw, 2.0)
    work = 4.8e9 / (4.8e12 * 0.5)
    assert float(kernels.gemm_s(hw2, 1.0, 4.8e9, 1e9, 2.0)) == pytest.approx(math.hypot(work, 3e-6), rel=1e-5)



def test_gemm_quantisation_pass_hand_computed() -> None:
    import equinox as eqx

    hw = js.load_hardware("h200-sxm", calibrated=False)
    eff = js.Efficiency(gemm_compute_frac=0.5, gemm_half_rows=0.0, gemm_memory_frac=0.5, gemm_fp8_scale=0.5)
    hw = eqx.tree_at(lambda h: h.eff, hw, eff)
    # FP8, compute-bound 1e13 FLOP, M = 4096 rows, K = 7168: the pass reads 2 B and writes 1 B per element
    # at 4.8 TB/s × 0.5, before the GEMM.
    quant = 4096 * 7168 * 3.0 / (4.8e12 * 0.5)
    t = float(kernels.gemm_s(hw, 1e13, 1.0, 4096.0, 1.0, inner=7168.0))
    assert t == pytest.approx(1e13 / (1979e12 * 0.25) + quant, rel=1e-5)
    # FP4 writes half a byte; BF16 operands need no pass.
    t4 = float(kernels.gemm_s(hw, 0.0, 0.0, 4096.0, 0.5, inner=7168.0))
    assert t4 == pytest.approx(4096 * 7168 * 2.5 / (4.8e12 * 0.5), rel=1e-5)
    assert float(kernels.gemm_s(hw, 1e13, 1.0, 4096.0, 2.0, inner=7168.0)) == pytest.approx(
        float(kernels.gemm_s(hw, 1e13, 1.0, 4096.0, 2.0)), rel=1e-7)


def test_serving_latency_share_hand_computed() -> None:
    import equinox as eqx

    from jaxsim.cost import comm

    hw = js.load_hardware("h200-sxm", calibrated=False)
    eff = js.Efficiency(gemm_compute_frac=0.5, gemm_half_rows=0.0, gemm_memory_frac=0.5, gemm_fp8_scale=0.5,
                        gemm_latency_s=3e-6, gemm_quant_latency_s=2e-6, moe_latency_s=30e-6,
                        decode_attn_latency_s=10e-6, collective_latency_s=7e-6, serving_latency_frac=0.4)
    hw = eqx.tree_at(lambda h: h.eff, hw, eff)
    # FP8 GEMM: work + 0.4 × (3 µs + 2 µs) = work + 2 µs.
    t = float(kernels.gemm_s(hw, 1e13, 1.0, 1e9, 1.0))
    assert t == pytest.approx(1e13 / (1979e12 * 0.25) + 2e-6, rel=1e-5)
    # Decode attention: 1 byte of work at most, + 0.4 × 10 µs.
    assert float(kernels.decode_attention_s(hw, 0.0, 0.0, 1e3, 2.0)) == pytest.approx(4e-6, rel=1e-5)
    # All-reduce over 2 GPUs of 0 bytes: 2 log2(2) link latencies + 0.4 × 7 µs.
    want = 2.0 * float(hw.scale_up_latency_s) + 2.8e-6
    assert float(comm.all_reduce_s(hw, 0.0, 2.0)) == pytest.approx(want, rel=1e-5)
    # Out-of-range shares are clipped into [0, 1]: never a negative latency, never more than the fitted one.
    lo = eqx.tree_at(lambda h: h.eff.serving_latency_frac, hw, -1.0)
    hi = eqx.tree_at(lambda h: h.eff.serving_latency_frac, hw, 3.0)
    assert float(kernels.decode_attention_s(lo, 0.0, 0.0, 1e3, 2.0)) == 0.0
    assert float(kernels.decode_attention_s(hi, 0.0, 0.0, 1e3, 2.0)) == pytest.approx(10e-6, rel=1e-5)


def _regime_hw(share: float = 1.0) -> js.Hardware:
    import equinox as eqx

    hw = js.load_hardware("h200-sxm", calibrated=False)
    eff = js.Efficiency(collective_regimes=1.0, serving_latency_frac=share, coll_ll_latency_s=4e-6,
                        coll_ll_peer_latency_s=1e-6, coll_ll_frac=0.02, coll_ll128_latency_s=6e-6, coll_ll128_frac=0.4,
                        coll_simple_latency_s=20e-6, coll_simple_peer_latency_s=0.5e-6, coll_simple_frac=0.8,
                        coll_peer_half=0.5, coll_ar_oneshot_latency_s=3e-6, coll_ar_oneshot_peer_latency_s=0.1e-6,
                        coll_ar_oneshot_frac=0.6, coll_ar_twoshot_latency_s=20e-6, coll_ar_twoshot_frac=0.7,
                        coll_ar_nvls_latency_s=60e-6, coll_ar_nvls_frac=0.6)
    return eqx.tree_at(lambda h: h.eff, hw, eff)


def test_collective_regimes_hand_computed() -> None:
    from jaxsim.cost import comm

    hw = _regime_hw()
    w = 450e9  # H200 NVLink, per GPU and direction
    softmin = lambda *t: sum(x ** -20.0 for x in t) ** -0.05  # noqa: E731
    # All-gather of 64 MiB over 8 GPUs: three ring protocols, each latency + 7/8 of the buffer at its rate.
    b, n = 64 * 2**20, 8
    traffic, ramp = 7 / 8 * b / w, 7 / 7.5
    want = softmin(4e-6 + 7e-6 + traffic / 0.02, 6e-6 + 7e-6 + traffic / (0.4 * ramp),
                   20e-6 + 3.5e-6 + traffic / (0.8 * ramp))
    assert float(comm.all_gather_s(hw, b, n)) == pytest.approx(want, rel=1e-4)
    assert want == pytest.approx(20e-6 + 3.5e-6 + traffic / (0.8 * ramp), rel=1e-3)  # the simple protocol wins
    # All-reduce of 16 KiB over 4 GPUs: the one-shot kernel (each GPU reads its 3 peers' buffers) wins.
    b, n = 16 * 2**10, 4
    one = 3e-6 + 0.3e-6 + 3 * b / w / 0.6
    want = softmin(one, 20e-6 + 2 * 0.75 * b / w / (0.7 * 3 / 3.5), 60e-6 + 1.25 * b / w / 0.6)
    assert float(comm.all_reduce_s(hw, b, n)) == pytest.approx(want, rel=1e-4)
    assert want == pytest.approx(one, rel=1e-3)
    # One GPU: nothing to do; beyond the NVLink domain the link form prices it (regimes are fitted inside one).
    assert float(comm.all_reduce_s(hw, b, 1.0)) == 0.0
    off = FT.apply_params(hw, {"collective_regimes": 0.0})
    assert float(comm.all_to_all_s(hw, 1e8, 16.0)) == pytest.approx(float(comm.all_to_all_s(off, 1e8, 16.0)))
    assert float(comm.all_to_all_s(hw, 1e8, 8.0)) != pytest.approx(float(comm.all_to_all_s(off, 1e8, 8.0)), rel=1e-3)


def test_collective_regimes_pay_the_serving_share_and_keep_the_bound() -> None:
    from jaxsim.cost import comm

    full, served = _regime_hw(1.0), _regime_hw(0.4)
    # A tiny all-gather is latency: the serving share scales it (4 + 1 µs of the LL protocol at 2 GPUs).
    assert float(comm.all_gather_s(full, 8.0, 2.0)) == pytest.approx(5e-6, rel=1e-2)
    assert float(comm.all_gather_s(served, 8.0, 2.0)) == pytest.approx(2e-6, rel=1e-2)
    # Whatever the fractions and latencies, never below the traffic at the nominal rate.
    free = FT.apply_params(full, {f: 1.0 for f in js.Efficiency.__dataclass_fields__
                                  if f.startswith("coll_") and f.endswith("_frac")}
                           | {f: 0.0 for f in js.Efficiency.__dataclass_fields__
                              if f.startswith("coll_") and (f.endswith("_latency_s") or f.endswith("_half"))})
    for b in (1e3, 1e6, 1e9):
        for n in (2.0, 4.0, 8.0):
            ring = (n - 1) / n * b / 450e9
            assert float(comm.all_gather_s(free, b, n)) >= ring * (1 - 1e-6)
            assert float(comm.all_to_all_s(free, b, n)) >= ring * (1 - 1e-6)
            assert float(comm.all_reduce_s(free, b, n)) >= min(2 * ring, (n + 1) / n * b / 450e9) * (1 - 1e-6)


def test_moe_layer_hand_computed() -> None:
    hw = FT.apply_params(js.load_hardware("h200-sxm", calibrated=False), dict(
        moe_terms=1.0, moe_compute_frac=0.8, moe_fp8_scale=0.5, moe_half_tokens=10.0, moe_fp8_half_tokens=30.0,
        moe_fp8_half_inter=500.0, moe_memory_frac=0.9, moe_work_p=1.0, moe_fp8_row_bytes=20.0,
        moe_row_inter_bytes=1.0, moe_fp8_token_bytes=4.0, moe_pair_cost_s=1e-10, moe_latency_s=20e-6,
        moe_fp8_expert_latency_s=0.25e-6, moe_latency_p=1.0, serving_latency_frac=0.4))
    # 64 tokens, top-8 of 256 experts on EP 8 (32 local): 64 assignments on 16 active experts (4 rows each);
    # FP8 weights, hidden 7168, expert width 2048 per GPU.
    h, i, bw, peak = 7168.0, 2048.0, 4.8e12, 1979e12
    w = 3 * h * i
    cf = 0.8 * 0.5 * 4 / (4 + 30) * i / (i + 500)
    compute = 2 * 64 * w / (peak * cf)
    memory = (16 * w * 1.0 + 64 * (2 * h + 3 * i) * 2.0) / (bw * 0.9)
    passes = (64 * (20 * h + 1 * i) + 64 * 4 * h) / bw + 64 * 8 * 1e-10
    latency = 0.4 * (20e-6 + 0.25e-6 * 32)
    want = compute + memory + passes + latency  # p = 1: the terms add
    got = kernels.moe_layer_s(hw, 64.0, 16.0, 64.0, h, i, 8.0, 32.0, 1.0)
    assert float(got) == pytest.approx(want, rel=1e-4)
    assert float(kernels.moe_layer_s(hw, 0.0, 16.0, 0.0, h, i, 8.0, 32.0, 1.0)) == 0.0


@pytest.mark.parametrize("system", SHIPPED)
def test_fit_prices_isolated_kernels_whatever_the_serving_share(system: str) -> None:
    """The fit predicts the tables (isolated kernels): the serving share must not change a kernel prediction, and
    the shipped files carry the documented constant."""
    import equinox as eqx

    hw = js.load_hardware(system)
    assert float(hw.eff.serving_latency_frac) == pytest.approx(C.SERVING_LATENCY_FRAC)
    rows = _random_rows(np.random.default_rng(3), 40)
    full = eqx.tree_at(lambda h: h.eff.serving_latency_frac, hw, 1.0)
    np.testing.assert_allclose(FT.predict(hw, rows).pred_ms, FT.predict(full, rows).pred_ms, rtol=1e-6)
    # ... while in serving the same GEMM is faster by (1 − share) × its fixed latency (FP8: the tiled form's, or the ramp
    # form's latency + quantisation latency, which the fit leaves nearly additive).
    if float(hw.eff.gemm_tiles) > 0.5:
        lat = float(hw.eff.gemm_fp8_tile_latency_s)
    else:
        lat = float(hw.eff.gemm_latency_s + hw.eff.gemm_quant_latency_s)
        assert float(hw.eff.gemm_latency_p) == pytest.approx(1.0, abs=0.05)
    gap = float(kernels.gemm_s(full, 1.0, 1.0, 1.0, 1.0) - kernels.gemm_s(hw, 1.0, 1.0, 1.0, 1.0))
    assert gap == pytest.approx((1.0 - C.SERVING_LATENCY_FRAC) * lat, rel=0.05)


# ---- fit ----


def _synthetic_gemm_table(rng: np.random.Generator, n: int) -> pd.DataFrame:
    m = np.exp(rng.uniform(0, math.log(16384), n)).round()
    nn = rng.choice([1024, 2048, 4096, 7168, 16384], n)
    k = rng.choice([512, 2048, 4096, 7168], n)
    dtype = rng.choice(["bf16", "fp8"], n)
    return T.check_table(pd.DataFrame({"op": "gemm", "dtype": dtype, "m": m, "n": nn, "k": k, "latency_ms": 1.0,
                                       "source": "synthetic"}), "synthetic")


def test_fit_recovers_known_parameters() -> None:
    """The tiled GEMM form: parameters moved away from the defaults (where the fit starts) come back. (The
    large-transfer FP8 memory fraction is left out: below `gemm_memory_size_bytes` these transfers barely see it.)"""
    truth = {"gemm_tile_compute_frac": 0.7, "gemm_fp8_tile_compute_frac": 0.55, "gemm_tile_memory_frac": 0.7,
             "gemm_tile_latency_s": 4e-6, "gemm_fp8_tile_latency_s": 6e-6}
    base = js.load_hardware("h200-sxm", calibrated=False)
    true_hw = FT.apply_params(base, {**truth, "gemm_tiles": 1.0})
    rng = np.random.default_rng(0)
    df = _synthetic_gemm_table(rng, 400)
    df["latency_ms"] = FT.predict(true_hw, df)["pred_ms"] * np.exp(rng.normal(0, 0.01, len(df)))  # 1 % noise
    result = FT.fit(base, df, adam_steps=800)
    for name, value in truth.items():
        assert result.values[name] == pytest.approx(value, rel=0.15), name
    pred = FT.predict(result.hw, df)
    assert float(np.median(np.abs(pred.pred_ms / df.latency_ms - 1))) < 0.02


def test_calibrate_from_csv_writes_a_loadable_file(tmp_path: Path) -> None:
    cal = C.calibrate("h200-sxm", None, DATA / "kernels_tiny.csv", heldout_frac=0.0, adam_steps=20, lbfgs_steps=0)
    path = C.write(cal, tmp_path, default=True, command="test")
    data = tomllib.loads(path.read_text())
    assert data["name"] == "h200-sxm" and data["provenance"]["package"] == "user CSV"
    assert sum(data["provenance"]["points_fit"].values()) == 9
    assert set(data["efficiency"]) >= {"gemm_tiles", "gemm_tile_compute_frac", "gemm_tile_latency_us", "gemm_memory_frac",
                                       "moe_latency_us", "dec_bf16_memory_frac",
                                       "dec_mha_item_latency_us", "dec_mla_overlap_p"}
    assert data["efficiency"]["dec_paths"] == 1.0  # the decode-attention fit switches its form on
    # The loader reads the file back in SI (per-item costs written in µs like every latency).
    from jaxsim.presets import _apply_calibration

    eff = _apply_calibration(path, js.Efficiency(), {})
    for name in ("dec_paths", "dec_mha_item_latency_s", "dec_mla_latency_s", "dec_overlap_p", "dec_bf16_memory_frac"):
        assert float(getattr(eff, name)) == pytest.approx(cal.values[name], rel=1e-5), name
    assert data["efficiency"]["gemm_memory_frac"] == data["efficiency"]["gemm_tile_memory_frac"]  # derived


# ---- the roofline floor ----


def _random_rows(rng: np.random.Generator, n: int) -> pd.DataFrame:
    pick = lambda xs: rng.choice(xs, n)  # noqa: E731
    logu = lambda lo, hi: np.exp(rng.uniform(math.log(lo), math.log(hi), n)).round()  # noqa: E731
    parts = [
        pd.DataFrame({"op": "gemm", "dtype": pick(["bf16", "fp8", "fp4"]), "m": logu(1, 65536), "n": logu(64, 65536),
                      "k": logu(64, 65536)}),
        pd.DataFrame({"op": "moe", "dtype": pick(["bf16", "fp8", "fp4"]), "tokens": logu(1, 65536),
                      "hidden": pick([2048, 4096, 7168]), "inter": pick([768, 2048]), "topk": pick([4, 8]),
                      "experts": pick([128, 256]), "moe_tp": pick([1, 2]), "moe_ep": pick([1, 8, 64])}),
        *[pd.DataFrame({"op": op, "dtype": pick(["bf16", "fp8"]), "kv_dtype": pick(["bf16", "fp8"]),
                        "batch": logu(1, 1024), "seq_len": logu(1, 16384) if op.startswith("context") else 1.0,
                        "prefix": logu(1, 131072) - 1, "heads": pick([8, 16, 64, 128]), "kv_heads": pick([1, 8]),
                        "head_dim": pick([64, 128]), "window": pick([0, 128])})
          for op in ("context_attention", "generation_attention", "context_mla", "generation_mla")],
        *[pd.DataFrame({"op": op, "gpus": pick([2, 4, 8]), "bytes": logu(128, 1e9)}) for op in T.COLLECTIVES],
    ]
    df = pd.concat(parts, ignore_index=True)
    df["latency_ms"] = 1.0
    return T.check_table(df, "random")


@pytest.mark.parametrize("dec_paths", [0.0, 1.0])
@pytest.mark.parametrize("system", SHIPPED)
def test_calibrated_model_is_never_below_the_roofline(system: str, dec_paths: float) -> None:
    hw = FT.apply_params(js.load_hardware(system), {"dec_paths": dec_paths})
    pred = FT.predict(hw, _random_rows(np.random.default_rng(5), 200))
    assert (pred.pred_ms >= pred.roofline_ms * (1 - 1e-6)).all()
    # The roofline itself, recomputed here for GEMMs: max(2mnk / peak, bytes / HBM).
    g = pred[pred.op == "gemm"]
    peak = g.dtype.map({"bf16": float(hw.bf16_flop_per_s), "fp8": float(hw.fp8_flop_per_s),
                        "fp4": float(hw.fp4_flop_per_s)})
    wb = g.dtype.map({"bf16": 2.0, "fp8": 1.0, "fp4": 0.5})
    bound = np.maximum(2 * g.m * g.n * g.k / peak, (g.n * g.k * wb + g.m * (g.n + g.k) * 2) / float(hw.hbm_bytes_per_s))
    np.testing.assert_allclose(g.roofline_ms, bound * 1e3, rtol=1e-4)
    # Prefill attention with the tile model (what a calibration switches on) keeps its own roofline too.
    rows = _random_rows(np.random.default_rng(6), 200)
    tiled = FT.predict(FT.apply_params(hw, {"ctx_tiles": 1.0}), rows[rows.op.str.startswith("context")])
    assert (tiled.pred_ms >= tiled.roofline_ms * (1 - 1e-6)).all()


@pytest.mark.parametrize("dec_paths", [0.0, 1.0])
@pytest.mark.parametrize("extreme", [50.0, 1e-6])
def test_extreme_parameters_never_beat_the_roofline(extreme: float, dec_paths: float) -> None:
    base = js.load_hardware("b200", calibrated=False)
    big = {name: extreme + (coord == "log1") for group in FT.GROUPS.values() for name, coord in group
           if coord != "logit"}
    hw = FT.apply_params(base, {**big, **{n: 1.0 for g in FT.GROUPS.values() for n, c in g if c == "logit"},
                                "collective_regimes": 1.0, "moe_terms": 1.0, "dec_paths": dec_paths, "ctx_tiles": 1.0,
                                "gemm_tiles": 1.0})
    pred = FT.predict(hw, _random_rows(np.random.default_rng(9), 100))
    assert (pred.pred_ms >= pred.roofline_ms * (1 - 1e-6)).all()


# ---- shipped calibrations and how presets read them ----


@pytest.mark.parametrize("system", SHIPPED)
def test_shipped_calibration_is_the_default(system: str) -> None:
    path = specs_dir() / "calibration" / f"{system}.toml"
    data = tomllib.loads(path.read_text())
    prov = data["provenance"]
    assert prov["package"] == "aiconfigurator-core" and prov["version"] and prov["framework"] in T.FRAMEWORKS
    assert min(prov["points_fit"].values()) > 0
    hw, raw = js.load_hardware(system), js.load_hardware(system, calibrated=False)
    assert float(hw.eff.gemm_memory_frac) == pytest.approx(data["efficiency"]["gemm_memory_frac"], rel=1e-6)
    assert float(hw.eff.moe_latency_s) == pytest.approx(data["efficiency"]["moe_latency_us"] * 1e-6, rel=1e-6)
    assert float(raw.eff.moe_latency_s) == 0.0  # the hardware file alone has no kernel latency


def test_framework_calibration_falls_back_to_the_default() -> None:
    assert js.load_hardware("h200-sxm", framework="no-such-framework").eff == js.load_hardware("h200-sxm").eff


# ---- CLI ----


@pytest.mark.slow  # 13 s on 2 cores; the same fit and write run by default in test_calibrate_from_csv_writes_a_loadable_file
def test_cli_calibrate_from_csv(tmp_path: Path) -> None:
    r = CliRunner().invoke(app, ["calibrate", "--system", "h200-sxm", "--data", str(DATA / "kernels_tiny.csv"),
                                 "--out", str(tmp_path), "--steps", "5", "--framework", "vllm"])
    assert r.exit_code == 0, r.output
    assert (tmp_path / "h200-sxm-vllm.toml").is_file()


def test_cli_calibrate_bad_input_exits_2(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(T, "aic_data_root", lambda: None)
    monkeypatch.setattr(C, "aic_data_root", lambda: None)
    runner = CliRunner()
    r = runner.invoke(app, ["calibrate", "--system", "h200-sxm", "--out", str(tmp_path)])
    assert r.exit_code == 2 and "pip install 'jaxsim-serving[calibrate]'" in r.output
    r = runner.invoke(app, ["calibrate", "--system", "tpu-v9", "--data", str(AIC), "--out", str(tmp_path)])
    assert r.exit_code == 2 and "unknown system" in r.output
    r = runner.invoke(app, ["calibrate", "--system", "h200-sxm", "--data", str(AIC), "--framework", "sglang",
                            "--out", str(tmp_path)])
    assert r.exit_code == 2 and "no sglang kernel tables" in r.output

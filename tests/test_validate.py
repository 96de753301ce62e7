"""`jaxsim validate` on a hand-made sample (tests/data/silicon_tiny.csv, same columns as AIConfigurator's
silicon_sample.csv): skip reasons, the error statistics, predictions equal to `jaxsim estimate`, the CLI's
files and its bad input. Needs no aiconfigurator-core."""

from __future__ import annotations

import json
import shutil
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import typer
from typer.testing import CliRunner

import jaxsim as js
import jaxsim.validate as V
from jaxsim.cli import app as main_app
from jaxsim.cli_validate import register

DATA = Path(__file__).parent / "data"
TINY = DATA / "silicon_tiny.csv"
runner = CliRunner()

# What each hand-made row is for (tests/data/silicon_tiny.csv, in order).
EXPECTED_STATUS = {
    "tiny_ds_agg_c256": "ok",
    "tiny_ds_agg_c256_copy": "duplicate",  # same measurement, labelled DeepSeek-R1: same architecture
    "tiny_ds_disagg_c64": "ok",
    "tiny_r1_disagg_no_batch": "missing_batch_or_workers",
    "tiny_dsr1_h200_trtllm_fp8_agg_cfg181": "tp_ep_product_label",  # TP8/EP8 written as tp_size 64
    "tiny_qwen3_235b_h200_vllm_fp8_agg_1024x1024_c8_tp2_ep2_7": "label_conflicts_id",  # id: 2 GPUs, columns: 4
    "tiny_ds_b300": "unknown_system",
    "tiny_qwen3_agg_c16": "ok",
    "tiny_no_concurrency": "no_concurrency",
    "tiny_unknown_model": "unknown_model",
    "tiny_inconsistent": "inconsistent_parallelism",  # tp 4 × dp 1 ≠ moe_tp 1 × ep 8
    "tiny_conflict_a": "conflicting_duplicate",
    "tiny_conflict_b": "conflicting_duplicate",
    "tiny_qwen3_32b_4_workers": "ok",  # concurrency 64 = 4 × (batch 16 × dp 1): four instances
}


def stderr_of(result: object) -> str:
    """stderr where click keeps it apart (8.2+), else the mixed output."""
    try:
        return result.stderr  # type: ignore[attr-defined]
    except ValueError:
        return result.output  # type: ignore[attr-defined]


@pytest.fixture(scope="module")
def result() -> V.ValidationResult:
    return V.validate(V.load_silicon(TINY))


@pytest.fixture(scope="module")
def neutral() -> V.ValidationResult:
    """The tiny sample with every framework at `jaxsim estimate`'s defaults (mixed prefill, no overhead)."""
    return V.validate(V.load_silicon(TINY), frameworks={})


@pytest.fixture(scope="module")
def cli_app() -> typer.Typer:
    app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)

    @app.callback()
    def _root() -> None:
        """A group, so `validate` stays a sub-command as on the real app."""

    register(app)
    return app


def test_load_silicon_reads_concurrency() -> None:
    df = V.load_silicon(TINY)
    assert len(df) == len(EXPECTED_STATUS)
    conc = dict(zip(df["id"], df["concurrency"], strict=True))
    assert conc["tiny_ds_agg_c256"] == 256 and conc["tiny_ds_disagg_c64"] == 64
    assert np.isnan(conc["tiny_no_concurrency"])


def test_statuses_and_skip_counts(result: V.ValidationResult) -> None:
    assert dict(zip(result.rows["id"], result.rows["status"], strict=True)) == EXPECTED_STATUS
    assert set(result.rows["status"]) - {"ok"} <= set(V.SKIP_REASONS)
    counts = result.counts()
    assert counts["rows"] == 14
    assert counts["modelled"] == 4
    assert counts["distinct_measurements"] == 12  # the copy and the conflicting pair are one measurement each
    assert counts["skipped_rows_by_reason"] == {
        "conflicting_duplicate": 2, "duplicate": 1, "missing_batch_or_workers": 1, "tp_ep_product_label": 1,
        "label_conflicts_id": 1, "unknown_system": 1, "no_concurrency": 1, "unknown_model": 1,
        "inconsistent_parallelism": 1}
    assert sum(counts["unmodelled_measurements_by_reason"].values()) == 12 - 4
    ok = result.rows[result.rows["status"] == "ok"]
    assert ok[["pred_ttft_ms", "pred_tpot_ms"]].gt(0).all().all()
    assert result.rows.loc[result.rows["status"] != "ok", "pred_ttft_ms"].isna().all()


def test_error_stats_hand_computed() -> None:
    # Errors +5 %, −20 %, +30 %, 0 %: |err| = 5, 20, 30, 0.
    s = V.error_stats([100.0, 200.0, 10.0, 50.0], [105.0, 160.0, 13.0, 50.0])
    assert s["n"] == 4
    assert s["median_ape"] == pytest.approx((5 + 20) / 2)
    assert s["mean_ape"] == pytest.approx((5 + 20 + 30 + 0) / 4)
    assert s["within_10_pct"] == pytest.approx(50.0)  # 5 and 0
    assert s["within_20_pct"] == pytest.approx(75.0)  # 20 counts (inclusive)
    assert s["median_signed_pct"] == pytest.approx((0 + 5) / 2)  # sorted: −20, 0, 5, 30
    assert V.error_stats([], [])["n"] == 0
    with pytest.raises(ValueError):
        V.error_stats([1.0], [1.0, 2.0])


def test_error_table_by_group_hand_computed() -> None:
    rows = pd.DataFrame({
        "silicon_ttft_ms": [100.0, 100.0, 100.0, 100.0, 100.0],
        "pred_ttft_ms": [90.0, 150.0, 100.0, 50.0, np.nan],
        "silicon_tpot_ms": [10.0, 10.0, 10.0, 10.0, 10.0],
        "pred_tpot_ms": [11.0, 10.0, 12.5, 10.5, np.nan],
        "status": ["ok", "ok", "ok", "ok", "unknown_system"],
        "mode": ["agg", "agg", "disagg", "disagg", "agg"],
        "family": ["deepseek", "dense", "kimi", "gpt-oss", "deepseek"],
    })
    t = V.error_table(rows, ("all", "mode", "moe")).set_index(["grouping", "group"])
    assert t.loc[("all", "all"), "n"] == 4  # the skipped row is left out
    assert t.loc[("all", "all"), "ttft_median_ape"] == pytest.approx(30.0)  # |err| 10, 50, 0, 50
    assert t.loc[("all", "all"), "ttft_mean_ape"] == pytest.approx(27.5)
    assert t.loc[("all", "all"), "tpot_within_10_pct"] == pytest.approx(75.0)  # 10, 0, 25, 5
    assert t.loc[("mode", "agg"), "ttft_mean_ape"] == pytest.approx(30.0)  # 10, 50
    assert t.loc[("mode", "disagg"), "ttft_median_signed_pct"] == pytest.approx(-25.0)  # 0, −50
    assert t.loc[("mode", "disagg"), "tpot_within_20_pct"] == pytest.approx(50.0)  # 25, 5
    moe = t.xs("moe", level="grouping").iloc[0]
    assert moe["n"] == 3 and moe["ttft_mean_ape"] == pytest.approx(20.0)  # deepseek, kimi, gpt-oss: 10, 0, 50


def test_validate_statistics_match_its_predictions(result: V.ValidationResult) -> None:
    ok = result.rows[result.rows["status"] == "ok"]
    table = result.errors().set_index(["grouping", "group"])
    ape = np.abs(ok["pred_tpot_ms"] / ok["silicon_tpot_ms"] - 1) * 100
    assert table.loc[("all", "all"), "tpot_mean_ape"] == pytest.approx(ape.mean())
    assert table.loc[("all", "all"), "tpot_median_ape"] == pytest.approx(ape.median())
    agg = ok[ok["mode"] == "agg"]
    ape_agg = np.abs(agg["pred_ttft_ms"] / agg["silicon_ttft_ms"] - 1) * 100
    assert table.loc[("mode", "agg"), "n"] == 3
    assert table.loc[("mode", "agg"), "ttft_within_20_pct"] == pytest.approx((ape_agg <= 20).mean() * 100)
    assert table.loc[("framework", "sglang"), "n"] == 1
    assert set(table.loc["system"].index) == {"h200_sxm"}


ESTIMATE_FLAGS = {
    "tiny_ds_agg_c256": ["--model", "deepseek-ai/DeepSeek-V3", "--isl", "1024", "--osl", "1024", "--tp", "1",
                         "--dp", "8", "--moe-tp", "1", "--moe-ep", "8", "--batch-size", "32", "--concurrency", "256",
                         "--rounds", "20"],
    "tiny_ds_disagg_c64": ["--mode", "disagg", "--model", "deepseek-ai/DeepSeek-V3", "--isl", "8192", "--osl", "1024",
                           "--prefill-tp", "1", "--prefill-dp", "8", "--prefill-moe-tp", "1", "--prefill-moe-ep", "8",
                           "--prefill-batch-size", "1", "--prefill-workers", "2", "--decode-tp", "1", "--decode-dp",
                           "8", "--decode-moe-tp", "1", "--decode-moe-ep", "8", "--decode-batch-size", "8",
                           "--decode-workers", "1", "--concurrency", "64", "--rounds", "20"],
    "tiny_qwen3_32b_4_workers": ["--model", "Qwen/Qwen3-32B", "--isl", "2048", "--osl", "256", "--tp", "2", "--dp",
                                 "1", "--batch-size", "16", "--workers", "4", "--concurrency", "64", "--rounds", "20",
                                 "--gemm-quant", "bf16", "--moe-quant", "bf16", "--kv-quant", "bf16"],
}


@pytest.mark.parametrize("row_id", sorted(ESTIMATE_FLAGS))
def test_predictions_equal_jaxsim_estimate(neutral: V.ValidationResult, row_id: str) -> None:
    """With the framework fields at their defaults, validation predicts exactly what `jaxsim estimate` does."""
    out = runner.invoke(main_app, ["estimate", "--system", "h200_sxm", *ESTIMATE_FLAGS[row_id], "--json"])
    assert out.exit_code == 0, out.output
    est = json.loads(out.stdout)
    row = neutral.rows.set_index("id").loc[row_id]
    assert row["pred_ttft_ms"] == pytest.approx(est["ttft_ms"], rel=1e-4)
    assert row["pred_tpot_ms"] == pytest.approx(est["tpot_ms"], rel=1e-4)


def test_framework_fields_follow_the_backend(result: V.ValidationResult, neutral: V.ValidationResult) -> None:
    """TRT-LLM (mixed prefill, like the default) only adds its request overhead to TTFT; the SGLang disagg row
    adds its overhead before the closed-loop bound, so its TTFT grows by at most that much."""
    a, b = result.rows.set_index("id"), neutral.rows.set_index("id")
    trt, sgl = (V.FRAMEWORKS[k].request_overhead_s * 1e3 for k in ("trtllm", "sglang"))
    assert trt > 0 and sgl > 0
    for row_id in ("tiny_ds_agg_c256", "tiny_qwen3_32b_4_workers"):  # trtllm agg rows
        assert a.loc[row_id, "pred_ttft_ms"] == pytest.approx(b.loc[row_id, "pred_ttft_ms"] + trt, rel=1e-5)
        assert a.loc[row_id, "pred_tpot_ms"] == pytest.approx(b.loc[row_id, "pred_tpot_ms"], rel=1e-6)
    sg = "tiny_ds_disagg_c64"
    assert b.loc[sg, "pred_ttft_ms"] < a.loc[sg, "pred_ttft_ms"] <= b.loc[sg, "pred_ttft_ms"] + sgl * (1 + 1e-5)
    row = V.load_silicon(TINY).set_index("id").loc["tiny_qwen3_agg_c16"].to_dict()
    row["id"] = "tiny_qwen3_agg_c16"
    for backend, mixed, overhead in (("sglang", 0.0, sgl / 1e3), ("vllm", 1.0, V.FRAMEWORKS["vllm"].request_overhead_s),
                                     ("other", 1.0, 0.0)):
        s = V.row_to_scenario({**row, "backend": backend}, V.Catalog())
        assert isinstance(s, V.Scenario)
        assert float(s.config.mixed_prefill) == mixed  # type: ignore[union-attr]
        assert float(s.config.request_overhead_s) == pytest.approx(overhead)


def test_rows_are_read_as_the_benchmark_template_runs_them() -> None:
    """Every row's closed loop counts the clients' synchronised first round in 20 measured rounds (AIConfigurator's
    benchmark template); `rounds=0` asks for the steady state alone."""
    row = V.load_silicon(TINY).set_index("id").loc["tiny_qwen3_agg_c16"].to_dict()
    row["id"] = "tiny_qwen3_agg_c16"
    for rounds in (V.BENCH_ROUNDS, 0.0):
        s = V.row_to_scenario(row, V.Catalog(), rounds=rounds)
        assert isinstance(s, V.Scenario)
        assert (s.load.kind, float(s.load.value), float(s.load.rounds)) == ("concurrency", 16.0, rounds)
    assert V.BENCH_ROUNDS == 20.0


INFERENCEX_SOURCE = "source_file=2026-04-06.csv; model=DeepSeek-R1; silicon_concurrency=256; wip=False"


def test_rows_are_read_as_their_benchmark_client_ran_them() -> None:
    """The sample's InferenceX exports ran InferenceX's client (10 N requests, lengths uniform on [int(0.8 L), L],
    so arriving apart after the first round); everything else is read as AIConfigurator's aiperf template runs
    it (20 N requests of exactly L tokens). An explicit `rounds` replaces the client's."""
    row = V.load_silicon(TINY).set_index("id").loc["tiny_ds_agg_c256"].to_dict()
    row["id"] = "tiny_ds_agg_c256"
    cases = [(row["silicon_data_source"], 1024.0, 1024.0, "aiperf"),
             (INFERENCEX_SOURCE, 1024.0, 1024.0, "inferencex"),
             ("db-dump/2026-04-27; config_id=7; silicon_concurrency=256", 8192.0, 1024.0, "inferencex"),
             (INFERENCEX_SOURCE, 2048.0, 256.0, "aiperf"),  # not one of InferenceX's three pairs
             ("source_file=kimi-k2.5-gap-analysis.csv; silicon_concurrency=256", 1024.0, 1024.0, "aiperf")]
    for source, isl, osl, name in cases:
        r = {**row, "silicon_data_source": source, "isl": isl, "osl": osl, "concurrency": 256.0}
        assert V.row_harness(r).name == name
        s = V.row_to_scenario(r, V.Catalog())
        assert isinstance(s, V.Scenario)
        if name == "inferencex":
            # mean of the integers int(0.8 L) … L: (819 + 1024) / 2 and (6553 + 8192) / 2
            means = {1024.0: 921.5, 8192.0: 7372.5}
            assert (float(s.workload.input_tokens), float(s.workload.output_tokens)) == (means[isl], means[osl])
            assert (float(s.load.rounds), s.load.arrivals) == (10.0, "spread")
        else:
            assert (float(s.workload.input_tokens), float(s.workload.output_tokens)) == (isl, osl)
            assert (float(s.load.rounds), s.load.arrivals) == (20.0, "grouped")
        forced = V.row_to_scenario(r, V.Catalog(), rounds=0.0)
        assert isinstance(forced, V.Scenario) and float(forced.load.rounds) == 0.0
    for bad in (float("inf"), float("nan"), -5.0, 0.0):  # a skip with its reason, never an exception
        skipped = V.row_to_scenario({**row, "isl": bad}, V.Catalog())
        assert isinstance(skipped, V.SkipReason) and skipped.reason == "bad_lengths"


def _ix(backend: str, family: str, system: str, precision: str, tp: float, isl: float, osl: float,
        concurrency: float, harness: str = "inferencex") -> V.EngineRow:
    """An `EngineRow` of one of InferenceX's runs (or of another client's with `harness`)."""
    return V.EngineRow(V.HARNESSES[harness], backend, family, system, precision, tp, isl, osl, concurrency)


def test_inferencex_trtllm_rows_run_attention_dp_balancing_as_its_scripts_set_it() -> None:
    """InferenceX's TRT-LLM scripts turn attention-DP balancing on with DP attention: timeout 60 iterations for
    DeepSeek-R1, TRT-LLM's default 50 for GPT-OSS; other clients and frameworks: off."""
    row = V.load_silicon(TINY).set_index("id").loc["tiny_ds_agg_c256"].to_dict()
    row["id"] = "tiny_ds_agg_c256"
    for source, backend, iters in ((INFERENCEX_SOURCE, "trtllm", 60.0), (INFERENCEX_SOURCE, "vllm", 0.0),
                                   (row["silicon_data_source"], "trtllm", 0.0)):
        s = V.row_to_scenario({**row, "silicon_data_source": source, "backend": backend, "concurrency": 256.0},
                              V.Catalog())
        assert isinstance(s, V.Scenario) and float(s.config.adp_balance_iters) == iters
    assert V.adp_balance_iters(_ix("trtllm", "gpt-oss", "b200_sxm", "fp4", 8.0, 1024.0, 1024.0, 64.0)) == 50.0
    assert V.adp_balance_iters(_ix("sglang", "deepseek", "b200_sxm", "fp4", 8.0, 1024.0, 1024.0, 64.0)) == 0.0
    aiperf = _ix("trtllm", "deepseek", "b200_sxm", "fp4", 8.0, 1024.0, 1024.0, 64.0, harness="aiperf")
    assert V.engine_options(aiperf).adp_balance_iters == 0.0


def test_inferencex_sglang_deepseek_rows_poll_as_their_scripts_set_it() -> None:
    """InferenceX's SGLang DeepSeek-R1 scripts for B200 set --scheduler-recv-interval 30 at concurrency ≥ 16 (FP4;
    FP8 at TP 8), else 10; its H200 script and every other client keep SGLang's default, 1."""
    def f(*args: Any, harness: str = "inferencex") -> float:
        backend, family, system, precision, tp, conc = args
        return V.engine_options(_ix(backend, family, system, precision, tp, 1024.0, 1024.0, conc,
                                    harness)).recv_interval

    assert f("sglang", "deepseek", "b200_sxm", "fp4", 4.0, 16.0) == 30.0
    assert f("sglang", "deepseek", "b200_sxm", "fp4", 4.0, 8.0) == 10.0
    assert f("sglang", "deepseek", "b200_sxm", "fp8", 8.0, 64.0) == 30.0
    assert f("sglang", "deepseek", "b200_sxm", "fp8", 4.0, 64.0) == 10.0
    for args in (("sglang", "deepseek", "h200_sxm", "fp8", 8.0, 64.0), ("vllm", "deepseek", "b200_sxm", "fp8", 8.0, 64.0),
                 ("sglang", "glm", "b200_sxm", "fp8", 8.0, 64.0)):
        assert f(*args) == 1.0
    assert f("sglang", "deepseek", "b200_sxm", "fp4", 8.0, 64.0, harness="aiperf") == 1.0
    row = V.load_silicon(TINY).set_index("id").loc["tiny_ds_agg_c256"].to_dict()
    row.update(id="tiny_ds_agg_c256", silicon_data_source=INFERENCEX_SOURCE, backend="sglang", system="b200_sxm",
               precision="fp4", concurrency=256.0)
    s = V.row_to_scenario(row, V.Catalog())
    assert isinstance(s, V.Scenario) and float(s.config.recv_interval) == 30.0


def test_inferencex_rows_take_the_prefill_budget_their_scripts_set() -> None:
    """InferenceX's launch scripts set the prefill token budget per engine and model; other clients keep the
    `jaxsim estimate` default (8,192)."""
    def f(backend: str, family: str, system: str, precision: str, tp: float, isl: float, conc: float,
          osl: float = 1024.0, harness: str = "inferencex") -> float:
        return V.engine_options(_ix(backend, family, system, precision, tp, isl, osl, conc, harness)).chunk

    assert f("trtllm", "deepseek", "b200_sxm", "fp4", 8.0, 1024.0, 64.0) == 8192.0  # floor of 8,192
    assert f("trtllm", "deepseek", "h200_sxm", "fp8", 8.0, 8192.0, 100.0) == 8384.0  # ⌈(100+8192+64)/64⌉·64 = 131·64
    assert f("trtllm", "gpt-oss", "b200_sxm", "fp4", 4.0, 1024.0, 64.0) == 20000.0
    assert f("sglang", "deepseek", "h200_sxm", "fp8", 8.0, 1024.0, 64.0) == 32768.0
    assert f("sglang", "deepseek", "b200_sxm", "fp8", 4.0, 8192.0, 64.0) == 8192.0
    assert f("sglang", "deepseek", "b200_sxm", "fp4", 8.0, 1024.0, 64.0) == 16384.0
    assert f("vllm", "kimi", "b200_sxm", "fp4", 8.0, 1024.0, 64.0) == 2048.0
    assert f("vllm", "minimax", "b200_sxm", "fp8", 8.0, 8192.0, 64.0) == 16384.0
    for args in (("vllm", "kimi", "b200_sxm", "int4", 8.0, 1024.0, 64.0), ("vllm", "minimax", "h200_sxm", "fp8", 8.0,
                 1024.0, 64.0), ("vllm", "gpt-oss", "h100_sxm", "fp4", 2.0, 1024.0, 64.0)):
        assert f(*args) == V.AGG_CHUNK
    assert f("sglang", "deepseek", "h200_sxm", "fp8", 8.0, 1024.0, 64.0, harness="aiperf") == V.AGG_CHUNK
    # The Llama-70B TRT-LLM budget: max_num_tokens = MAX_MODEL_LEN (ISL + OSL + 200), 16,384 on B200 FP8.
    assert f("trtllm", "llama", "h200_sxm", "fp8", 4.0, 1024.0, 4.0) == 2248.0
    assert f("trtllm", "llama", "b200_sxm", "fp8", 4.0, 1024.0, 4.0) == 16384.0


def test_inferencex_trtllm_batch_waiting_as_its_scripts_set_it() -> None:
    """dsr1_fp8_b200_trt.sh waits up to 40 iterations for 0.8 of max_num_tokens at 1k / 1k, concurrency ≥ 64;
    the Llama-70B TRT-LLM scripts 20 iterations for 0.9 below TP 8 at 1k / 1k; nothing else waits. The tokens
    are a share of the row's own prefill budget (`max_num_tokens`)."""
    def f(*args: Any, harness: str = "inferencex") -> tuple[float, float]:
        o = V.engine_options(_ix(*args, harness=harness))
        return o.batch_wait_iters, o.batch_wait_tokens

    assert f("trtllm", "deepseek", "b200_sxm", "fp8", 8.0, 1024.0, 1024.0, 64.0) == (40.0, 0.8 * 8192.0)
    assert f("trtllm", "llama", "h200_sxm", "fp8", 4.0, 1024.0, 1024.0, 4.0) == (20.0, 0.9 * 2248.0)
    for args in (("trtllm", "deepseek", "b200_sxm", "fp8", 8.0, 1024.0, 1024.0, 32.0),
                 ("trtllm", "deepseek", "b200_sxm", "fp4", 8.0, 1024.0, 1024.0, 64.0),
                 ("trtllm", "deepseek", "b200_sxm", "fp8", 8.0, 8192.0, 1024.0, 64.0),
                 ("trtllm", "llama", "h200_sxm", "fp8", 8.0, 1024.0, 1024.0, 4.0),
                 ("vllm", "llama", "h200_sxm", "fp8", 4.0, 1024.0, 1024.0, 4.0)):
        assert f(*args) == (0.0, 0.0)
    assert f("trtllm", "llama", "h200_sxm", "fp8", 4.0, 1024.0, 1024.0, 4.0, harness="aiperf") == (0.0, 0.0)
    assert V.engine_options(_ix("vllm", "llama", "h200_sxm", "fp8", 4.0, 1024.0, 1024.0, 4.0,
                                harness="aiperf")) == V.EngineOptions()


@pytest.mark.slow  # 37 s on 2 cores (two compiles of the spread-arrivals path); the grouped parity runs by default
def test_an_inferencex_row_predicts_what_jaxsim_estimate_does() -> None:
    """Validation of an InferenceX row = `jaxsim estimate` at the client's mean lengths, 10 rounds, spread
    arrivals, and (a TRT-LLM row with attention DP) InferenceX's DeepSeek balancing timeout of 60 iterations
    (framework fields at their defaults)."""
    df = V.load_silicon(TINY)
    df = df[df["id"] == "tiny_ds_agg_c256"].assign(silicon_data_source=INFERENCEX_SOURCE).reset_index(drop=True)
    row = V.validate(df, frameworks={}).rows.iloc[0]
    assert row["status"] == V.OK and row["harness"] == "inferencex"
    flags = [f for f in ESTIMATE_FLAGS["tiny_ds_agg_c256"]]
    for name, value in (("--isl", "921.5"), ("--osl", "921.5"), ("--rounds", "10")):
        flags[flags.index(name) + 1] = value
    assert row["framework"] == "trtllm" and "--dp" in flags and float(flags[flags.index("--dp") + 1]) > 1
    out = runner.invoke(main_app, ["estimate", "--system", "h200_sxm", *flags, "--arrivals", "spread",
                                   "--adp-balance-iters", "60", "--json"])
    assert out.exit_code == 0, out.output
    est = json.loads(out.stdout)
    assert row["pred_ttft_ms"] == pytest.approx(est["ttft_ms"], rel=1e-4)
    assert row["pred_tpot_ms"] == pytest.approx(est["tpot_ms"], rel=1e-4)


def test_overhead_split_is_declared_and_small() -> None:
    assert V.in_overhead_split("x", "agg", 4.0) == (zlib.crc32(b"x") % 4 == 0)
    assert not V.in_overhead_split("x", "agg", 8.0) and not V.in_overhead_split("x", "disagg", 1.0)
    ids = [f"row{i}" for i in range(4000)]
    share = np.mean([V.in_overhead_split(i, "agg", 1.0) for i in ids])
    assert 0.2 < share < 0.3  # one in four of the light-load agg rows


def test_catalog_reads_bundled_configs_and_rejects_hybrids(tmp_path: Path) -> None:
    shutil.copy(DATA / "llama-3.1-70b.config.json", tmp_path / "acme--Mystery-70B_config.json")
    hybrid = json.loads((DATA / "qwen3-32b.config.json").read_text())
    hybrid["layer_types"] = ["linear_attention", "linear_attention", "linear_attention", "full_attention"] * 16
    (tmp_path / "acme--Hybrid-32B_config.json").write_text(json.dumps(hybrid))
    (tmp_path / "acme--Broken_config.json").write_text(json.dumps({"hidden_size": 8}))
    catalog = V.Catalog(tmp_path)
    m = catalog.model("acme/Mystery-70B")
    assert isinstance(m, js.Model) and m.name == "acme/Mystery-70B" and float(m.n_layers) == 80
    assert catalog.model("acme/Hybrid-32B") == V.SkipReason("unsupported_architecture",
                                                             "acme/Hybrid-32B: layer types linear_attention")
    assert catalog.model("acme/Broken").reason == "unreadable_model_config"  # type: ignore[union-attr]
    assert catalog.model("acme/Absent").reason == "unknown_model"  # type: ignore[union-attr]
    assert isinstance(catalog.model("nvidia/DeepSeek-R1-NVFP4"), js.Model)  # SAMPLE_MODEL_ALIASES → preset


def test_quant_and_workers_rules() -> None:
    base = {"model_path": "deepseek-ai/DeepSeek-R1", "precision": "fp4", "gemm_quant_mode": "nvfp4",
            "moe_quant_mode": "nvfp4"}
    assert V._quant(base) == (0.5, 0.5, 1.0)  # nvfp4 profile: FP8 KV
    assert V._quant({**base, "precision": "int4", "gemm_quant_mode": "int4_wo", "moe_quant_mode": "int4_wo"}) == (
        2.0, 0.5, 2.0)  # weight-only int4: experts only, BF16 KV
    # GPT-OSS: MXFP4 experts, BF16 attention / router / head (its quantization_config), BF16 KV (mxfp4 profile)
    assert V._quant({**base, "model_path": "openai/gpt-oss-120b"}) == (2.0, 0.5, 2.0)
    assert V._quant({"model_path": "Qwen/Qwen3-32B", "precision": float("nan"), "gemm_quant_mode": float("nan"),
                     "moe_quant_mode": float("nan")}) == (2.0, 2.0, 2.0)  # checkpoint dtype
    assert V._quant({**base, "moe_quant_mode": "int3"}).reason == "unknown_precision"  # type: ignore[union-attr]
    assert V.agg_workers(256, 32, 8) == 1.0
    assert V.agg_workers(224, 56, 1) == 4.0
    assert V.agg_workers(2, 8, 1) == 1.0  # fewer requests than slots: one instance, partly filled
    assert V.agg_workers(100, 32, 1) == 1.0  # not a whole multiple: queueing, not instances


def test_cli_writes_predictions(cli_app: typer.Typer, tmp_path: Path) -> None:
    out = runner.invoke(cli_app, ["validate", "--data", str(TINY), "--out", str(tmp_path), "--json"])
    assert out.exit_code == 0, out.output
    summary = json.loads(out.stdout)
    assert summary["rows"] == 14 and summary["modelled"] == 4
    pred = pd.read_csv(tmp_path / "predictions.csv")
    assert list(pred.columns) == ["id", "silicon_ttft_ms", "silicon_tpot_ms", "pred_ttft_ms", "pred_tpot_ms",
                                  "status"]
    assert list(pred["id"]) == list(EXPECTED_STATUS) and list(pred["status"]) == list(EXPECTED_STATUS.values())
    assert json.loads((tmp_path / "summary.json").read_text())["modelled"] == 4
    assert (tmp_path / "errors.csv").is_file() and len(pd.read_csv(tmp_path / "details.csv")) == 14
    table = runner.invoke(cli_app, ["validate", "--data", str(TINY), "--out", str(tmp_path / "t")])
    assert table.exit_code == 0 and "med |err|%" in table.output and "skipped: unknown_system" in table.output


def test_cli_bad_data(cli_app: typer.Typer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    missing = runner.invoke(cli_app, ["validate", "--data", str(tmp_path / "nope.csv"), "--out", str(tmp_path)])
    assert missing.exit_code == 2
    err = stderr_of(missing).strip()
    assert len(err.splitlines()) == 1 and "nope.csv" in err and "Traceback" not in missing.output
    (tmp_path / "bad.csv").write_text("id,isl\nx,1\n")
    bad = runner.invoke(cli_app, ["validate", "--data", str(tmp_path / "bad.csv"), "--out", str(tmp_path)])
    assert bad.exit_code == 2 and "missing column" in stderr_of(bad)
    monkeypatch.setattr(V, "find_aiconfigurator", lambda: None)
    none = runner.invoke(cli_app, ["validate", "--out", str(tmp_path)])
    assert none.exit_code == 2
    msg = stderr_of(none).strip()
    assert len(msg.splitlines()) == 1 and "jaxsim-serving[calibrate]" in msg and "--data" in msg

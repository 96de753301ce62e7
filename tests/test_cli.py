"""The `jaxsim` command: specs, estimate in every mode, AIConfigurator names, and bad input (exit 2,
one line on stderr, no traceback)."""

from __future__ import annotations

import json
import math

import pytest
from typer.testing import CliRunner

from jaxsim.cli import app

runner = CliRunner()
REPORT_KEYS = {"ttft_ms", "tpot_ms", "tokens_per_s_per_gpu", "tokens_per_s_per_user", "request_latency_ms",
               "memory_gib_per_gpu", "feasible", "reason", "breakdown_ms"}


def ok_json(*args: str) -> dict:
    result = runner.invoke(app, list(args))
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def stderr_of(result: object) -> str:
    """stderr where click keeps it apart (8.2+), else the mixed output."""
    try:
        return result.stderr  # type: ignore[attr-defined]
    except ValueError:
        return result.output  # type: ignore[attr-defined]


def test_specs_list() -> None:
    result = runner.invoke(app, ["specs", "list"])
    assert result.exit_code == 0
    lines = {line.split(":")[0]: line for line in result.output.splitlines()}
    assert "deepseek-v3" in lines["models"] and "qwen3-235b-a22b" in lines["models"]
    assert "h200-sxm" in lines["hardware"] and "gb200-nvl72" in lines["hardware"]
    assert "chat" in lines["workloads"]


def test_specs_show_model_json() -> None:
    info = ok_json("specs", "show", "deepseek-v3", "--json")
    assert info["kind"] == "model" and info["attention"] == "mla"
    assert info["total_params"] == pytest.approx(671e9, rel=0.01)
    # MLA latent 512 + RoPE 64 per layer × 61 layers (DESIGN.md §5)
    assert info["kv_bytes_per_token"]["fp8"] == 35136
    assert info["kv_bytes_per_token"]["bf16"] == 70272
    assert info["active_params_per_token"] == pytest.approx(37e9, rel=0.03)


def test_specs_show_hardware_and_workload() -> None:
    hw = ok_json("specs", "show", "h200", "--json")  # an alias
    assert (hw["kind"], hw["name"]) == ("hardware", "h200-sxm")
    assert hw["hbm_bytes"] == 141e9 and hw["hbm_bytes_per_s"] == 4.8e12 and hw["scale_up_gpus"] == 8
    assert hw["scale_out_bytes_per_s"] == 400e9 / 8
    wl = ok_json("specs", "show", "chat", "--json")
    assert (wl["kind"], wl["prefix_tokens"], wl["input_tokens"], wl["output_tokens"]) == ("workload", 4096, 512, 256)
    assert wl["ttft_s"] == pytest.approx(0.05) and wl["tpot_s"] == pytest.approx(0.015)
    table = runner.invoke(app, ["specs", "show", "b200"])
    assert table.exit_code == 0 and "hbm_bytes" in table.output


def test_estimate_table() -> None:
    result = runner.invoke(app, ["estimate"])
    assert result.exit_code == 0, result.output
    assert "tokens_per_s_per_gpu" in result.output and "breakdown" in result.output


@pytest.mark.parametrize(
    ("args", "arch", "gpus"),
    [
        (["--mode", "agg"], "agg", 8),
        (["--mode", "disagg"], "disagg", None),
        (["--mode", "afd", "--attn-gpus", "8", "--ffn-gpus", "8"], "agg+afd", 16),
        # P/D + AFD composes the two tested above (library: tests/test_serve.py); -m slow keeps the default run short.
        pytest.param(["--mode", "afd", "--attn-gpus", "8", "--ffn-gpus", "8", "--afd-base", "disagg"], "disagg+afd",
                     None, marks=pytest.mark.slow),
    ],
)
def test_estimate_json_every_mode(args: list[str], arch: str, gpus: int | None) -> None:
    out = ok_json("estimate", "--json", "--isl", "4000", "--osl", "1000", *args)
    assert REPORT_KEYS <= out.keys()
    assert out["architecture"] == arch
    assert out["reason"] in ("ok", "invalid_parallelism", "memory", "ttft", "tpot")
    assert out["feasible"] == (out["reason"] == "ok")
    assert out["tokens_per_s_per_user"] == pytest.approx(1e3 / out["tpot_ms"], rel=1e-5)
    assert out["request_latency_ms"] == pytest.approx(out["ttft_ms"] + 999 * out["tpot_ms"], rel=1e-5)
    assert out["tokens_per_s_per_gpu"] > 0 and math.isfinite(out["tokens_per_s_per_gpu"])
    assert {"attention", "gemm", "moe", "dispatch", "combine", "hidden"} <= out["breakdown_ms"].keys()
    if gpus is not None:
        assert out["gpus"] == gpus
    if arch == "agg":
        # One 8192-token chunk holds the 4000-token prompt: TTFT is one iteration that carries the
        # whole prompt besides the decodes, longer than the mean iteration (TPOT, no MTP).
        assert out["ttft_ms"] > out["tpot_ms"]
    if arch.endswith("afd"):
        assert out["gpus_by_pool"]["attention"] == 8 and out["gpus_by_pool"]["ffn"] == 8
    if arch.startswith("disagg"):
        assert out["gpus_by_pool"]["prefill"] > 0 and out["ttft_ms"] > 0


@pytest.mark.slow  # 17 s on 2 cores
def test_aiconfigurator_names_and_workload_preset() -> None:
    out = ok_json("estimate", "--json", "--model", "deepseek-ai/DeepSeek-V3", "--system", "h200_sxm")
    assert (out["model"], out["system"]) == ("deepseek-v3", "h200-sxm")
    chat = ok_json("estimate", "--json", "--workload", "chat")
    w = chat["workload"]
    assert (w["prefix"], w["isl"], w["osl"]) == (4096, 512, 256)
    # Targets pass through float32 seconds, so allow its rounding (50 ms prints as 50.000001).
    assert (w["ttft_target_ms"], w["tpot_target_ms"]) == (pytest.approx(50, rel=1e-6), pytest.approx(15, rel=1e-6))
    # The load flags: under concurrency 8 each of the 8 DP ranks runs one request.
    low = ok_json("estimate", "--json", "--concurrency", "8")
    assert low["decode_batch_per_rank"] == pytest.approx(1.0)


@pytest.mark.parametrize(
    ("args", "needles"),
    [
        (["--model", "no-such-model"], ["no-such-model", "deepseek-v3", "qwen3-235b-a22b"]),
        (["--system", "no-such-gpu"], ["no-such-gpu", "h200-sxm"]),
        (["--tp", "3"], ["tp = 3", "128"]),
        (["--isl", "200000"], ["context"]),
        (["--osl", "-5"], ["output"]),
        (["--isl", "-1"], ["input"]),
        (["--model", "llama-3.1-70b", "--mode", "afd", "--attn-gpus", "8", "--ffn-gpus", "8"], ["dense"]),
        (["--mode", "afd"], ["--attn-gpus"]),
        (["--mode", "nope"], ["--mode", "nope"]),
        (["--concurrency", "8", "--request-rate", "1"], ["--concurrency", "--request-rate"]),
        (["--rounds", "20"], ["--rounds", "--concurrency"]),
        (["--concurrency", "8", "--rounds", "-1"], ["--rounds", "≥ 1"]),
        (["--concurrency", "8", "--rounds", "0.5"], ["--rounds", "≥ 1"]),
        (["--concurrency", "8", "--arrivals", "random"], ["--arrivals", "grouped", "spread", "random"]),
        (["--arrivals", "spread"], ["--arrivals", "--concurrency"]),
        (["--batch-size", "0"], ["--batch-size"]),
        (["--adp-balance-iters", "-1"], ["--adp-balance-iters", "≥ 0"]),
        (["--mode", "disagg", "--adp-balance-iters", "50"], ["--adp-balance-iters", "agg"]),
        (["--recv-interval", "0.5"], ["--recv-interval", "≥ 1"]),
        (["--recv-interval", "inf"], ["--recv-interval", "finite"]),
        (["--mode", "disagg", "--recv-interval", "10"], ["--recv-interval", "agg"]),
        (["--batch-wait-iters", "-3"], ["--batch-wait-iters", "≥ 0"]),
        (["--mode", "disagg", "--batch-wait-tokens", "6000"], ["--batch-wait-tokens", "agg"]),
    ],
)
def test_bad_input_exits_2_with_one_line(args: list[str], needles: list[str]) -> None:
    result = runner.invoke(app, ["estimate", *args])
    assert result.exit_code == 2, result.output
    err = stderr_of(result)
    assert "Traceback" not in result.output and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1, err
    for needle in needles:
        assert needle in err, (needle, err)


def test_unknown_spec_exits_2() -> None:
    result = runner.invoke(app, ["specs", "show", "no-such-spec"])
    assert result.exit_code == 2
    err = stderr_of(result)
    assert "no-such-spec" in err and "Traceback" not in result.output and len(err.strip().splitlines()) == 1

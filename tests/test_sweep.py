"""Sweeps: equality with a loop over `estimate`, validity masks, Pareto frontier, resume, many devices, CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest
from typer.testing import CliRunner

import jaxsim as js
from jaxsim import sweep as sw
from jaxsim.cli import app

CHAT = js.load_workload("chat")
LOOSE = js.SLO(ttft_s=5.0, tpot_s=0.2)

AGG_AXES = {"tp": [1, 2, 3, 8], "dp": [1, 4, 16], "pp": [1], "moe_tp": [1, 2], "batch": [8, 64, 200],
            "chunk": [1024, 8192], "gemm_bytes": [1], "moe_bytes": [1], "kv_bytes": [1], "nextn": [0, 1],
            "tbo": [0, 1]}
AFD_AXES = {"attn_tp": [1], "attn_dp": [2, 8], "ffn_ep": [4, 6, 16], "ffn_moe_tp": [1], "micro_batches": [1, 3],
            "batch": [32, 128], "chunk": [4096], "gemm_bytes": [1], "moe_bytes": [1], "kv_bytes": [1],
            "nextn": [0]}


@pytest.fixture(scope="module")
def small_result(ds3: js.Model, h200: js.Hardware) -> tuple[list[sw.DesignSpace], sw.SweepResult]:
    spaces = [sw.DesignSpace("agg", AGG_AXES, 32), sw.DesignSpace("agg+afd", AFD_AXES, 32)]
    return spaces, sw.sweep(spaces, ds3, h200, CHAT, LOOSE, chunk=100, keep="all")


def test_sweep_equals_loop_over_estimate(ds3: js.Model, h200: js.Hardware, small_result) -> None:
    spaces, result = small_result
    est = jax.jit(js.estimate)
    rng = np.random.default_rng(0)
    for space in spaces:
        rows = np.flatnonzero(result.columns["arch"] == space.arch)
        for i in rng.choice(rows, 12, replace=False):
            row = {k: v[i] for k, v in result.columns.items()}
            want = est(ds3, h200, sw.row_config(space, row), CHAT, LOOSE)
            for col in ("ttft_s", "tpot_s", "out_tok_per_s_per_gpu", "memory_frac", "gpus", "violation", "breakdown_moe_s"):
                got = want.breakdown.moe_s if col == "breakdown_moe_s" else getattr(want, col)
                assert float(row[col]) == pytest.approx(float(got), rel=2e-5, abs=1e-9), col
            assert bool(row["feasible"]) == bool(want.feasible)


def test_every_configuration_counted_and_decoded_once(small_result) -> None:
    spaces, result = small_result
    for space in spaces:
        assert result.evaluated[space.arch] == space.size
        rows = result.columns["arch"] == space.arch
        # keep="all" keeps every valid row, each index once, and the axis values match the mixed-radix decoding
        idx = result.columns["index"][rows].astype(int)
        assert len(np.unique(idx)) == len(idx) == result.valid[space.arch]
        strides = np.cumprod([1, *space.sizes[::-1]])[:-1][::-1]
        for name, stride, size in zip(space.names, strides, space.sizes, strict=True):
            want = np.asarray(space.axes[name], float)[(idx // stride) % size]
            np.testing.assert_array_equal(result.columns[name][rows], want)


def test_masks_exclude_impossible_combinations(small_result) -> None:
    _, result = small_result
    c = result.columns
    agg = c["arch"] == "agg"
    # tp = 3 does not divide 128 heads; tp·dp/moe_tp must be a whole EP degree dividing 256 experts;
    # tp·dp > 32 GPUs does not fit the cluster: none of these may be kept as valid.
    assert not np.any(c["tp"][agg] == 3)
    gpus = c["tp"][agg] * c["dp"][agg]
    assert np.all(gpus <= 32)
    ep = gpus / c["moe_tp"][agg]
    assert np.all(ep == np.floor(ep)) and np.all(256 % ep == 0)
    afd = c["arch"] == "agg+afd"
    assert not np.any(c["ffn_ep"][afd] == 6)  # 6 does not divide 256 experts
    assert np.all(c["attn_dp"][afd] + c["ffn_ep"][afd] <= 32)
    # The expected number of valid agg rows, counted by brute force over the axes.
    n = 0
    for tp in AGG_AXES["tp"]:
        for dp in AGG_AXES["dp"]:
            for mt in AGG_AXES["moe_tp"]:
                e = tp * dp / mt
                n += (128 % tp == 0 and e == int(e) and 256 % e == 0 and tp * dp <= 32)
    per = np.prod([len(AGG_AXES[k]) for k in ("batch", "chunk", "nextn", "tbo")])
    assert agg.sum() == n * per


def test_pareto_matches_brute_force() -> None:
    rng = np.random.default_rng(3)
    for n in (0, 1, 7, 200):
        x = rng.integers(0, 20, n).astype(float)  # ties on purpose
        y = rng.integers(0, 20, n).astype(float)
        got = sw.pareto_mask(x, y)
        for i in range(n):
            dominated = np.any((x >= x[i]) & (y >= y[i]) & ((x > x[i]) | (y > y[i])))
            if dominated:
                assert not got[i]
        # every non-dominated point is represented (exact duplicates keep one copy)
        front = {(x[i], y[i]) for i in range(n) if got[i]}
        want = {(x[i], y[i]) for i in range(n)
                if not np.any((x >= x[i]) & (y >= y[i]) & ((x > x[i]) | (y > y[i])))}
        assert front == want


def test_result_frontier_and_best(small_result) -> None:
    _, result = small_result
    c = result.columns
    for arch in ("agg", "agg+afd"):
        feas = (c["arch"] == arch) & c["feasible"].astype(bool)
        front = result.pareto(arch)
        assert len(front["index"]) >= 1
        for u, g in zip(front["tok_per_s_per_user"], front["out_tok_per_s_per_gpu"], strict=True):
            better = (c["tok_per_s_per_user"][feas] >= u) & (c["out_tok_per_s_per_gpu"][feas] >= g)
            strictly = (c["tok_per_s_per_user"][feas] > u) | (c["out_tok_per_s_per_gpu"][feas] > g)
            assert not np.any(better & strictly)
        best = result.best(arch, k=3)
        assert best["out_tok_per_s_per_gpu"][0] == c["out_tok_per_s_per_gpu"][feas].max()
        assert np.all(np.diff(best["out_tok_per_s_per_gpu"]) <= 0)
    # keep="pareto" keeps exactly what the analysis needs: the same frontier and the same best rows.
    df = result.to_pandas()
    assert len(df) == len(c["index"]) and "out_tok_per_s_per_gpu" in df.columns


@pytest.mark.slow  # 30-70 s on 2 cores: kept out of the default run's 10-minute budget
def test_keep_pareto_and_feasible_agree_with_all(ds3: js.Model, h200: js.Hardware, small_result) -> None:
    spaces, full = small_result
    feas = sw.sweep(spaces, ds3, h200, CHAT, LOOSE, chunk=100, keep="feasible")
    par = sw.sweep(spaces, ds3, h200, CHAT, LOOSE, chunk=100, keep="pareto", top_k=4)
    assert len(feas.columns["index"]) == int(full.columns["feasible"].sum())
    for arch in ("agg", "agg+afd"):
        for r in (feas, par):
            np.testing.assert_array_equal(np.sort(r.pareto(arch)["index"]), np.sort(full.pareto(arch)["index"]))
            assert r.best(arch)["index"][0] == full.best(arch)["index"][0]
        assert par.feasible[arch] == full.feasible[arch]
    # The on-device selection overflowing its slots falls back to fetching whole chunks: same rows.
    spill = sw.sweep(spaces, ds3, h200, CHAT, LOOSE, chunk=100, keep="pareto", top_k=4, select_cap=1)
    for k, v in par.columns.items():
        if v.dtype == object:
            np.testing.assert_array_equal(spill.columns[k], v, err_msg=k)
        else:  # two compiled programs (with and without the selection): float32 rounding may differ
            np.testing.assert_allclose(spill.columns[k], v, rtol=1e-5, atol=1e-7, err_msg=k)
    assert spill.feasible == par.feasible and spill.valid == par.valid and spill.evaluated == par.evaluated


@pytest.mark.slow  # 37 s on 2 cores
def test_resume_equals_uninterrupted(ds3: js.Model, h200: js.Hardware, small_result, tmp_path: Path) -> None:
    spaces, full = small_result
    part = sw.sweep(spaces, ds3, h200, CHAT, LOOSE, chunk=100, keep="all", checkpoint_dir=tmp_path,
                    stop_after_chunks=3)
    assert part.configs_evaluated < full.configs_evaluated
    resumed = sw.sweep(spaces, ds3, h200, CHAT, LOOSE, chunk=100, keep="all", checkpoint_dir=tmp_path)
    assert resumed.evaluated == full.evaluated and resumed.feasible == full.feasible
    for k, v in full.columns.items():
        np.testing.assert_array_equal(resumed.columns[k], v, err_msg=k)
    with pytest.raises(sw.SweepError, match="different sweep"):
        sw.sweep(spaces, ds3, h200, CHAT, js.SLO(ttft_s=1.0, tpot_s=0.1), chunk=100, checkpoint_dir=tmp_path)


MULTI_DEVICE = """
import numpy as np, jax, jaxsim as js
from jaxsim import sweep as sw
from tests.test_sweep import AGG_AXES, AFD_AXES, CHAT, LOOSE
assert len(jax.devices()) == 4, jax.devices()
spaces = [sw.DesignSpace("agg", AGG_AXES, 32), sw.DesignSpace("agg+afd", AFD_AXES, 32)]
r = sw.sweep(spaces, js.load_model("deepseek-v3"), js.load_hardware("h200-sxm"), CHAT, LOOSE, chunk=100, keep="all")
np.savez(OUT, **{k: (v.astype(str) if k == "arch" else v) for k, v in r.columns.items()})
p = sw.sweep(spaces, js.load_model("deepseek-v3"), js.load_hardware("h200-sxm"), CHAT, LOOSE, chunk=100,
             keep="pareto", top_k=4)
np.savez(OUT.replace(".npz", "_pareto.npz"), agg=np.sort(p.pareto("agg")["index"]),
         afd=np.sort(p.pareto("agg+afd")["index"]), best=[p.best("agg")["index"][0], p.best("agg+afd")["index"][0]],
         feasible=[p.feasible["agg"], p.feasible["agg+afd"]])
"""


@pytest.mark.slow  # 30-70 s on 2 cores: kept out of the default run's 10-minute budget
def test_four_devices_equal_one(small_result, tmp_path: Path) -> None:
    _, full = small_result
    out = tmp_path / "multi.npz"
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=4", "JAX_PLATFORMS": "cpu"}
    root = Path(__file__).parent.parent
    proc = subprocess.run([sys.executable, "-c", f"OUT = {str(out)!r}\n" + MULTI_DEVICE], cwd=root, env=env,
                          capture_output=True, text=True, timeout=600, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    multi = np.load(out)
    for k, v in full.columns.items():
        got = multi[k]
        if k == "arch":
            np.testing.assert_array_equal(got, v.astype(str))
        else:
            np.testing.assert_allclose(got, v, rtol=1e-5, atol=1e-7, err_msg=k)  # float32, other fusions
    # keep="pareto" selects per device shard; the union, re-reduced, is the frontier of the whole space.
    par = np.load(tmp_path / "multi_pareto.npz")
    np.testing.assert_array_equal(par["agg"], np.sort(full.pareto("agg")["index"]))
    np.testing.assert_array_equal(par["afd"], np.sort(full.pareto("agg+afd")["index"]))
    assert list(par["best"]) == [full.best("agg")["index"][0], full.best("agg+afd")["index"][0]]
    assert list(par["feasible"]) == [full.feasible["agg"], full.feasible["agg+afd"]]


def test_design_space_errors() -> None:
    with pytest.raises(sw.SweepError, match="unknown architecture"):
        sw.DesignSpace("pd", AGG_AXES, 8)
    with pytest.raises(sw.SweepError, match="missing: tbo"):
        sw.DesignSpace("agg", {k: v for k, v in AGG_AXES.items() if k != "tbo"}, 8)
    with pytest.raises(sw.SweepError, match="'batch' needs one or more"):
        sw.DesignSpace("agg", {**AGG_AXES, "batch": []}, 8)


runner = CliRunner()


# The AFD modes compile two more architectures (34 s on 2 cores in all): they run with -m slow; agg+afd sweeps are
# checked by default at the library level (small_result).
@pytest.mark.parametrize(("modes", "archs"), [("agg", {"agg"}),
                                               pytest.param("agg,afd", {"agg", "agg+afd", "disagg+afd"},
                                                            marks=pytest.mark.slow)])
def test_cli_sweep_json_and_files(tmp_path: Path, modes: str, archs: set[str]) -> None:
    out = tmp_path / "s"
    res = runner.invoke(app, ["sweep", "--modes", modes, "--total-gpus", "16", "--ttft", "3000", "--tpot", "80",
                              "--out", str(out), "--json", "--csv"])
    assert res.exit_code == 0, res.output
    data = json.loads(res.stdout)
    assert data["configs_evaluated"] > 1000 and data["elapsed_s"] > 0
    assert set(data["best"]) == archs
    best = data["best"]["agg"]
    for key in ("ttft_ms", "tpot_ms", "tokens_per_s_per_gpu", "tokens_per_s_per_user", "request_latency_ms",
                "memory_gib_per_gpu", "feasible", "reason", "breakdown_ms", "config"):
        assert key in best
    assert best["feasible"] and best["tpot_ms"] <= 80 and best["ttft_ms"] <= 3000
    for f in ("results.parquet", "results.csv", "pareto.png", "args.json"):
        assert (out / f).is_file(), f
    import pyarrow.parquet as pq

    table = pq.read_table(out / "results.parquet").to_pandas()
    agg = table[(table["arch"] == "agg") & table["feasible"]]
    assert agg["out_tok_per_s_per_gpu"].max() == pytest.approx(best["tokens_per_s_per_gpu"], rel=1e-5)


@pytest.mark.slow  # 30-70 s on 2 cores: kept out of the default run's 10-minute budget
def test_cli_sweep_resume_after_interruption(tmp_path: Path) -> None:
    out = tmp_path / "r"
    args = ["sweep", "--modes", "agg", "--total-gpus", "8", "--chunk-size", "2048", "--keep", "all", "--json"]
    stopped = runner.invoke(app, [*args, "--out", str(out), "--stop-after-chunks", "2"])
    assert stopped.exit_code == 3
    resumed = runner.invoke(app, ["sweep", "--resume", str(out), "--json"])
    assert resumed.exit_code == 0, resumed.output
    whole = runner.invoke(app, [*args, "--out", str(tmp_path / "w")])
    a, b = json.loads(resumed.stdout), json.loads(whole.stdout)
    assert a["configs_evaluated"] == b["configs_evaluated"] and a["feasible"] == b["feasible"]
    assert a["best"] == b["best"]
    import pyarrow.parquet as pq

    ta = pq.read_table(out / "results.parquet").to_pandas()
    tb = pq.read_table(tmp_path / "w" / "results.parquet").to_pandas()
    assert ta.equals(tb)


@pytest.mark.parametrize(("args", "message"), [
    (["--modes", "agg,pd"], "unknown mode 'pd'"),
    (["--total-gpus", "0"], "--total-gpus must be ≥ 1"),
    (["--keep", "some"], "unknown --keep 'some'"),
    (["--model", "gpt-5"], "unknown model 'gpt-5'"),
    (["--gemm-quant", "int3"], "unknown precision 'int3'"),
    (["--isl", "-5"], "input length must be"),
])
def test_cli_sweep_bad_flags(args: list[str], message: str, tmp_path: Path) -> None:
    res = runner.invoke(app, ["sweep", "--out", str(tmp_path / "x"), *args])
    assert res.exit_code == 2
    text = res.output + (res.stderr if res.stderr_bytes is not None else "")
    assert message in text and "Traceback" not in text


def test_cli_resume_without_a_sweep(tmp_path: Path) -> None:
    res = runner.invoke(app, ["sweep", "--resume", str(tmp_path / "nothing")])
    assert res.exit_code == 2 and "no sweep was started there" in (res.output + res.stderr)

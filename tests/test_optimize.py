"""The differentiable allocation search: known optimum vs brute force, resume, gradients, sensitivities."""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxsim as js
from jaxsim import optimize as op
from tests.conftest import x64

CHAT = js.load_workload("chat")
SLO = js.SLO(ttft_s=0.2, tpot_s=0.03)  # TPOT binds for DeepSeek-V3 on 8 × H200 with the chat workload
SETTINGS = op.Settings(starts=3, rounds=6, steps=30)


@pytest.fixture(scope="module")
def h200() -> js.Hardware:
    """The hardware file's own efficiencies: these tests check the optimiser on a fixed model, so a new
    kernel calibration must not move their problem (the experiment in experiments/optimizer_vs_grid runs
    the calibrated defaults)."""
    return js.load_hardware("h200-sxm", calibrated=False)


@pytest.fixture(scope="module")
def problem(ds3: js.Model, h200: js.Hardware) -> tuple[list[js.AggConfig], op.OptimizeResult]:
    dep = dict(gemm_weight_bytes=1.0, moe_weight_bytes=1.0, kv_bytes=1.0)
    bases = [js.AggConfig(js.Deployment(tp=tp, dp=dp, ep=tp * dp, **dep), batch=32.0, chunk=4096.0, workers=1.0)
             for tp, dp in ((1, 8), (2, 8), (4, 4))]
    return bases, op.optimize(ds3, h200, "agg", bases, 8, CHAT, SLO, settings=SETTINGS)


def test_legal_result_matches_brute_force_grid(ds3: js.Model, h200: js.Hardware, problem) -> None:
    """The constructed problem's optimum is known by exhaustion: every integer batch 1–1024 and every legal
    chunk of every base, priced with the hard model. The optimiser's legal answer must reach 99 % of it,
    meet the SLO, and use far fewer hard evaluations than the grid."""
    bases, res = problem
    batch, chunk = np.meshgrid(np.arange(1.0, 1025.0), np.asarray(op.LEGAL_CHUNKS))
    best = -np.inf
    for b in bases:
        grid = eqx.tree_at(lambda c: (c.batch, c.chunk), b, (jnp.asarray(batch.ravel()), jnp.asarray(chunk.ravel())))
        hard = js.estimate_batch(ds3, h200, grid, CHAT, SLO)
        tput = np.where(np.asarray(hard.feasible), np.asarray(hard.out_tok_per_s_per_gpu), -np.inf)
        best = max(best, float(tput.max()))
    assert np.isfinite(best) and res.legal_metrics is not None
    got = float(res.legal_metrics.out_tok_per_s_per_gpu)
    assert got >= 0.99 * best
    assert got <= best * (1 + 1e-6)  # never better than the exhaustive optimum of the same legal space
    assert bool(res.legal_metrics.feasible)
    assert float(res.legal_metrics.tpot_s) <= float(SLO.tpot_s) and float(res.legal_metrics.ttft_s) <= float(SLO.ttft_s)
    # The relaxed optimum sits on the TPOT boundary it is limited by.
    assert abs(float(res.relaxed_constraints[1])) < 0.02
    assert res.converged_starts >= 1


@pytest.mark.slow  # 30-70 s on 2 cores: kept out of the default run's 10-minute budget
def test_resume_gives_the_same_trajectory(ds3: js.Model, h200: js.Hardware, problem, tmp_path) -> None:
    bases, _ = problem
    stacked = op.stack(bases)
    whole = op.solve_relaxed(ds3, h200, "agg", stacked, 8, CHAT, SLO, settings=SETTINGS)
    op.solve_relaxed(ds3, h200, "agg", stacked, 8, CHAT, SLO, settings=SETTINGS, checkpoint_dir=tmp_path,
                     stop_after_rounds=2)
    resumed = op.solve_relaxed(ds3, h200, "agg", stacked, 8, CHAT, SLO, settings=SETTINGS, checkpoint_dir=tmp_path)
    np.testing.assert_array_equal(np.asarray(resumed.theta), np.asarray(whole.theta))
    np.testing.assert_array_equal(np.asarray(resumed.objective), np.asarray(whole.objective))


def test_relaxed_gradients_match_finite_differences(ds3: js.Model, h200: js.Hardware, problem) -> None:
    bases, _ = problem
    with x64():
        up = lambda t: jax.tree.map(lambda x: jnp.asarray(x, jnp.float64) if eqx.is_array(x) else x, t)  # noqa: E731
        m, hw, base, w, slo = up(ds3), up(h200), up(bases[0]), up(CHAT), up(SLO)
        mode = js.Mode(smooth=True, temperature=0.02)

        def f(theta: jax.Array) -> jax.Array:
            r = js.estimate(m, hw, op.relaxed_config("agg", theta, base, 8.0), w, slo, mode=mode)
            return jnp.log(r.out_tok_per_s_per_gpu) - jnp.log(r.tpot_s)

        theta = jnp.asarray([np.log(40.0), np.log(3000.0)])
        g = np.asarray(jax.grad(f)(theta))
        for i in range(2):
            h = 1e-5
            e = np.zeros(2)
            e[i] = h
            fd = (float(f(theta + e)) - float(f(theta - e))) / (2 * h)
            assert g[i] == pytest.approx(fd, rel=1e-4, abs=1e-7)
        assert g[0] != 0.0  # batch moves throughput and TPOT


def test_sensitivities_signs_and_finite_difference(ds3: js.Model, h200: js.Hardware, problem) -> None:
    _, res = problem
    cfg = res.legal_config
    sens = op.sensitivities(ds3, h200, cfg, CHAT, SLO)
    hwsens = sens["hardware"]
    assert hwsens["hbm_bytes_per_s"] > 0  # decode is memory-bound: more bandwidth, more tokens/s/GPU
    assert all(np.isfinite(v) for v in hwsens.values())
    assert sens["workload"]["output_tokens"] != 0.0
    # d(tput)/d(log bw) ≈ (tput(bw·e^h) − tput(bw·e^−h)) / 2h
    h = 1e-2

    def tput(scale: float) -> float:
        faster = eqx.tree_at(lambda x: x.hbm_bytes_per_s, h200, h200.hbm_bytes_per_s * scale)
        return float(js.estimate(ds3, faster, cfg, CHAT, SLO).out_tok_per_s_per_gpu)

    fd = (tput(np.exp(h)) - tput(np.exp(-h))) / (2 * h)
    assert hwsens["hbm_bytes_per_s"] == pytest.approx(fd, rel=0.05)


def test_unknown_architecture() -> None:
    with pytest.raises(ValueError, match="no relaxation for 'pd'"):
        op.relaxed_config("pd", jnp.zeros(2), None, 8.0)


@pytest.mark.slow  # ~5 min on 2 cores: the calibrated kernel forms make the relaxed solve's compile long
def test_cli_optimize_json(tmp_path) -> None:
    import json

    from typer.testing import CliRunner

    from jaxsim.cli import app

    res = CliRunner().invoke(app, ["optimize", "--modes", "agg", "--total-gpus", "8", "--ttft", "200", "--tpot", "30",
                                   "--starts", "2", "--rounds", "3", "--steps", "10", "--out", str(tmp_path), "--json"])
    assert res.exit_code == 0, res.output
    data = json.loads(res.stdout)
    best = data["best"]["agg"]
    for key in ("ttft_ms", "tpot_ms", "tokens_per_s_per_gpu", "tokens_per_s_per_user", "request_latency_ms",
                "memory_gib_per_gpu", "feasible", "reason", "breakdown_ms", "config", "tpot_slack_ms"):
        assert key in best
    assert best["feasible"] and best["tpot_slack_ms"] >= 0 and best["ttft_slack_ms"] >= 0
    assert data["sensitivities"]["hardware"]["hbm_bytes_per_s"] > 0
    bad = CliRunner().invoke(app, ["optimize", "--modes", "pd", "--out", str(tmp_path)])
    assert bad.exit_code == 2 and "unknown mode 'pd'" in (bad.output + bad.stderr)

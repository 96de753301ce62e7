"""Request-level simulator: determinism, conservation, KV capacity, Little's law, agreement with the analytic
serving model in its steady-state limit, load dependence of TTFT, and a hand-computed trace replay.

Iteration times in the hand-computed trace come from `step_cost` (the step model is tested elsewhere);
which batch each iteration runs, and the times that follow, are worked out by hand here.
"""

from __future__ import annotations

import jax
import numpy as np
import pytest

import jaxsim as js
from jaxsim import simulate as sim
from jaxsim.presets import SpecError


def dep(**kw: float) -> js.Deployment:
    return js.Deployment(**{"gemm_weight_bytes": 1.0, "moe_weight_bytes": 1.0, "kv_bytes": 1.0, **kw})


EP8 = dep(tp=1, dp=8, ep=8)
LOOSE = js.SLO(ttft_s=100.0, tpot_s=1.0)


def np_tree(tree):
    return jax.tree.map(lambda x: np.asarray(x) if isinstance(x, jax.Array) else x, tree)


# --------------------------------------------------------------------------------------------------
# Closed loop, fixed lengths: one compiled call for load dependence, KV capacity and the analytic limit
# --------------------------------------------------------------------------------------------------

CLOSED_W = js.Workload(input_tokens=1000.0, output_tokens=1000.0)
CONCURRENCY = np.array([64.0, 256.0, 512.0, 1024.0, 256.0], np.float32)
KV_CAP = np.array([0.0, 0.0, 0.0, 0.0, 40_000.0], np.float32)  # last: 20 requests' worth of KV per rank
CLOSED_SETTINGS = sim.Settings(requests=320, slots=32, window=32, scan_length=256, max_iterations=60_000,
                               samples=4096, sample_every=4)


@pytest.fixture(scope="module")
def closed_runs(ds3, h200):
    cfg = js.AggConfig(EP8, batch=32.0, chunk=8192.0)
    traffic = sim.Traffic(arrival="closed", concurrency=CONCURRENCY, kv_capacity_tokens=KV_CAP)
    raw = sim.simulate_batch(ds3, h200, cfg, CLOSED_W, traffic, 0, CLOSED_SETTINGS)
    summary = sim.summarize_batch(raw, 0.25)
    return np_tree(raw), np_tree(summary)


def test_every_admitted_request_finishes_and_kv_stays_within_capacity(closed_runs):
    raw, s = closed_runs
    assert (raw.finished == raw.count).all()
    admitted = np.isfinite(raw.admit_s)
    assert (np.isfinite(raw.finish_s) == admitted).all() and admitted.all()
    assert (raw.finish_s >= raw.first_token_s).all() and (raw.first_token_s > raw.admit_s).all()
    kv = raw.samples[:, :, 1]
    assert np.nanmax(kv) <= 1.0 + 1e-6
    # The capped configuration really was limited by KV: 40,000 tokens hold 20 requests of 2,000 tokens,
    # fewer than its 32 slots, and it filled that capacity.
    running = raw.samples[4, :, 2]
    assert np.nanmax(running) == 20
    assert np.nanmax(kv[4]) > 0.95
    assert s.ttft_s[4, 0] > s.ttft_s[1, 0]  # same load, fewer slots: requests wait


def test_ttft_rises_with_concurrency(closed_runs):
    _, s = closed_runs
    ttft = s.ttft_s[:4, 1]  # p50 for 64, 256, 512, 1024 clients on 256 slots
    assert np.all(np.diff(ttft) > 0), ttft
    # Beyond the slots requests queue for whole request lifetimes: TTFT grows by an order of magnitude.
    assert ttft[3] > 10 * ttft[1]


def test_closed_loop_littles_law_holds_with_the_client_count(closed_runs):
    _, s = closed_runs
    groups = 8.0  # dp 8, one instance: the simulated group has concurrency / 8 clients
    clients = CONCURRENCY / groups
    # Over the whole run the clients are in the system until their last requests drain; the
    # time-average lies below the client count and Little's law holds on the simulated queue.
    np.testing.assert_allclose(s.little_l_sys, s.little_lw_sys, rtol=2e-3)
    assert np.all(s.little_l_sys <= clients + 1e-3) and np.all(s.little_l_sys > 0.6 * clients)


def test_agrees_with_the_analytic_model_at_steady_state(closed_runs, ds3, h200):
    """Saturated closed loop (256 clients on 256 slots), fixed lengths: mean TPOT and throughput within
    5 % of `estimate` under the same closed-loop load. (Long outputs: the analytic TPOT counts a request's
    own prefill iteration, which the simulator — like a benchmark client — puts in its TTFT; over 999
    decode steps that is a fraction of a percent.)"""
    _, s = closed_runs
    cfg = js.AggConfig(EP8, batch=32.0, chunk=8192.0)
    r = jax.jit(js.estimate)(ds3, h200, cfg, CLOSED_W, LOOSE, js.Load("concurrency", 256.0))
    tpot, tok = float(r.tpot_s), float(r.requests_per_s * CLOSED_W.output_tokens)
    assert s.tpot_s[1, 0] == pytest.approx(tpot, rel=0.05)
    assert s.out_tok_per_s[1] == pytest.approx(tok, rel=0.05)


# --------------------------------------------------------------------------------------------------
# Poisson arrivals, random lengths: determinism and Little's law on the queue
# --------------------------------------------------------------------------------------------------

POISSON_SETTINGS = sim.Settings(requests=600, slots=32, window=32, scan_length=128, max_iterations=40_000,
                                timeline=8)
POISSON_W = js.Workload(input_tokens=2000.0, output_tokens=200.0)


def poisson_run(ds3, h200, seed: int):
    cfg = js.AggConfig(EP8, batch=32.0, chunk=4096.0)
    traffic = sim.Traffic(arrival="poisson", lengths="uniform", spread=0.5,
                          rate_per_s=np.array([40.0, 120.0], np.float32))
    return np_tree(sim.simulate_batch(ds3, h200, cfg, POISSON_W, traffic, seed, POISSON_SETTINGS))


@pytest.fixture(scope="module")
def poisson_runs(ds3, h200):
    return poisson_run(ds3, h200, 3), poisson_run(ds3, h200, 3), poisson_run(ds3, h200, 4)


def test_same_seed_same_result(poisson_runs):
    a, b, c = poisson_runs
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_array_equal(x, y)
    assert not np.array_equal(a.arrival_s, c.arrival_s)
    assert not np.array_equal(a.input, c.input)
    # Uniform lengths on mean × [0.5, 1.5], whole tokens.
    assert a.input.min() >= 1000 and a.input.max() <= 3000 and np.all(a.input == np.round(a.input))
    assert abs(a.input.mean() / 2000.0 - 1.0) < 0.05


def test_littles_law_on_the_simulated_queue(poisson_runs):
    r = poisson_runs[0]
    s = np_tree(sim.summarize_batch(jax.tree.map(jax.numpy.asarray, r), 0.0))
    assert (r.finished == r.count).all()
    np.testing.assert_allclose(s.little_l_sys, s.little_lw_sys, rtol=0.02)
    # The heavier load builds a real queue, on which Little's law must hold as well.
    assert s.little_l_queue[1] > 1.0
    np.testing.assert_allclose(s.little_l_queue[1], s.little_lw_queue[1], rtol=0.03)
    # Open loop: the served rate is the offered rate (per group: 40 / 8 and 120 / 8 requests/s).
    arrivals = r.arrival_s[:, -1] / (r.count - 1)
    np.testing.assert_allclose(arrivals, 8.0 / np.array([40.0, 120.0]), rtol=0.15)


# --------------------------------------------------------------------------------------------------
# A hand-made trace
# --------------------------------------------------------------------------------------------------


def test_trace_replay_matches_hand_computed_times(tmp_path, ds3, h200):
    """One DP rank, 256-token chunks. Requests (arrival s, input, output): A (0, 300, 3), B (0.01, 100, 2),
    C (10, 50, 1). Hand schedule:
      it1 [0, T1]:        A's first 256 prompt tokens (attending on average 0 + 256/2 positions)
      it2 [T1, T1+T2]:    B admitted (arrived at 0.01 < T1); A's last 44 tokens (256 + 22 positions) and
                          B's 100 (50 positions): 144 tokens, 2 prompts. A and B get their first token.
      it3 (T3):           decode A (KV 300) and B (KV 100): mean 200, uniform-equivalent half-width √3·100.
                          B has its 2 tokens: done.
      it4 (T4):           decode A (KV 301). A done.
      idle until 10 s;    it5 (T5): C's 50 tokens; its first token is its only one.
    """
    path = tmp_path / "trace.csv"
    path.write_text("arrival_s,input_tokens,output_tokens\n0,300,3\n0.01,100,2\n10,50,1\n")
    traffic = sim.trace_traffic(sim.load_trace(path))
    d = dep(tp=8, dp=1, ep=8)
    cfg = js.AggConfig(d, batch=np.array([8.0, 8.0], np.float32), chunk=256.0)  # two copies: N as the Poisson runs
    # The Poisson tests' settings: an open-loop replay shares their compilation; rows past the trace's
    # three do not exist.
    r = np_tree(sim.simulate_batch(ds3, h200, cfg, js.Workload(), traffic, 0, POISSON_SETTINGS))

    step = jax.jit(js.step_cost)

    def t(**kw: float) -> float:
        return float(step(ds3, h200, d, js.StepBatch(**kw)).total_s)

    T1 = t(prefill_tokens=256, prefill_context=128, prefill_sequences=1)
    T2 = t(prefill_tokens=144, prefill_context=(44 * (256 + 22) + 100 * 50) / 144, prefill_sequences=2)
    T3 = t(decode_requests=2, decode_context=200, decode_context_spread=np.sqrt(3.0) * 100)
    T4 = t(decode_requests=1, decode_context=301)
    T5 = t(prefill_tokens=50, prefill_context=25, prefill_sequences=1)
    first = [T1 + T2, T1 + T2, 10 + T5]
    finish = [T1 + T2 + T3 + T4, T1 + T2 + T3, 10 + T5]
    assert int(r.count[0]) == 3 and int(r.finished[0]) == 3
    np.testing.assert_allclose(r.arrival_s[0, :3], [0.0, 0.01, 10.0])
    np.testing.assert_allclose(r.first_token_s[0, :3], first, rtol=1e-5)
    np.testing.assert_allclose(r.finish_s[0, :3], finish, rtol=1e-5)
    np.testing.assert_allclose(r.admit_s[0, :3], [0.0, T1, 10.0], rtol=1e-5)
    assert int(r.iterations[0]) == 5
    assert np.isnan(r.finish_s[0, 3:]).all()
    np.testing.assert_allclose(r.timeline[0, :5, 2], [T1, T2, T3, T4, T5], rtol=1e-5)  # durations
    np.testing.assert_allclose(r.timeline[0, :5, 3], [0, 0, 2, 1, 0])  # decode requests
    np.testing.assert_allclose(r.timeline[0, :5, 4], [256, 144, 0, 0, 50])  # prefill tokens


# --------------------------------------------------------------------------------------------------
# P/D: two pools, KV transfer, decode admission after transfer
# --------------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_disagg_pools_transfer_and_steady_state(ds3, h200):
    w = js.Workload(input_tokens=1000.0, output_tokens=1000.0)
    cfg = js.DisaggConfig(prefill=EP8, decode=EP8, prefill_batch=1.0, decode_batch=16.0, prefill_workers=1.0,
                          decode_workers=1.0)
    settings = sim.Settings(requests=400, slots=128, window=16, scan_length=256, max_iterations=60_000)
    raw = sim.simulate_batch(ds3, h200, cfg, w, sim.Traffic(arrival="closed", concurrency=128.0), 0, settings)
    r = np_tree(raw)
    s = np_tree(sim.summarize_batch(raw, 0.25))
    assert (r.finished == r.count).all()
    # A prompt's first token comes after its prefill iteration and its KV transfer, never before.
    pre = jax.jit(js.step_cost)(ds3, h200, EP8, js.StepBatch(prefill_tokens=1000, prefill_context=500,
                                                              prefill_sequences=1))
    assert np.all(r.first_token_s - r.admit_s >= float(pre.total_s) * (1 - 1e-5))
    assert np.all(r.finish_s - r.first_token_s > 999 * 0.5 * float(s.tpot_s[0, 0]))
    est = jax.jit(js.estimate)(ds3, h200, cfg, w, LOOSE, js.Load("concurrency", 128.0))
    assert s.tpot_s[0, 0] == pytest.approx(float(est.tpot_s), rel=0.05)
    assert s.out_tok_per_s[0] == pytest.approx(float(est.requests_per_s) * 1000.0, rel=0.05)
    np.testing.assert_allclose(s.little_l_sys, s.little_lw_sys, rtol=0.02)


# --------------------------------------------------------------------------------------------------
# Boundary errors
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("text", "message"), [
    ("arrival_s,input_tokens\n0,10\n", "missing column"),
    ("arrival_s,input_tokens,output_tokens\n0,ten,3\n", "not a number"),
    ("arrival_s,input_tokens,output_tokens\n1,10,3\n0,10,3\n", "sort the trace"),
    ("arrival_s,input_tokens,output_tokens\n0,0,3\n", "input and output ≥ 1"),
    ("arrival_s,input_tokens,output_tokens\n", "no requests"),
])
def test_malformed_traces_are_rejected_with_the_fix(tmp_path, text, message):
    path = tmp_path / "t.csv"
    path.write_text(text)
    with pytest.raises(SpecError, match=message):
        sim.load_trace(path)


def test_missing_trace_and_bad_rates_are_rejected(tmp_path):
    with pytest.raises(SpecError, match="no such file"):
        sim.load_trace(tmp_path / "absent.csv")
    with pytest.raises(SpecError, match="rate must be"):
        sim.poisson(-1.0)
    with pytest.raises(SpecError, match="concurrency must be"):
        sim.closed_loop(0)


# --------------------------------------------------------------------------------------------------
# The command
# --------------------------------------------------------------------------------------------------


def _cli(*args: str):
    from typer.testing import CliRunner

    from jaxsim.cli import app

    return CliRunner().invoke(app, list(args))


@pytest.mark.parametrize(("args", "message"), [
    (("--rate", "-3"), "--rate must be > 0"),
    (("--rate", "3", "--concurrency", "4"), "exactly one of"),
    ((), "exactly one of"),
    (("--trace", "/nonexistent/trace.csv"), "no such file"),
    (("--concurrency", "8", "--lengths", "zipf"), "unknown --lengths"),
    (("--concurrency", "8", "--requests", "0"), "--requests must be"),
])
def test_cli_rejects_bad_input_with_one_line(args, message):
    result = _cli("simulate", *args)
    assert result.exit_code == 2, result.output
    lines = [x for x in result.output.strip().splitlines() if x]
    assert len(lines) == 1 and message in lines[0], result.output


@pytest.mark.slow
def test_cli_writes_table_plot_and_trace(tmp_path):
    out = tmp_path / "sim"
    result = _cli("simulate", "--mode", "afd", "--attn-gpus", "8", "--ffn-gpus", "16", "--micro-batches", "3",
                  "--workload", "chat", "--rate", "20", "--requests", "400", "--batch-size", "32", "--out", str(out),
                  "--json")
    assert result.exit_code == 0, result.output
    import json

    summary = json.loads(result.output)
    assert summary["completed"] == summary["simulated_requests"] > 0
    lat = summary["latency_ms"]
    assert lat["TTFT"]["p50"] <= lat["TTFT"]["p90"] <= lat["TTFT"]["p99"]
    assert (out / "latency_cdf.png").stat().st_size > 10_000
    events = json.loads((out / "timeline.json").read_text())["traceEvents"]
    assert any(e.get("cat") == "afd" and e["name"].startswith("FFN") for e in events)
    assert sum(e.get("cat") == "iteration" for e in events) == 200


@pytest.mark.slow
def test_simulate_rows_replays_closed_loop_benchmarks(ds3, h200):
    from jaxsim.serve import Load
    from jaxsim.simulate.validation import simulate_rows
    from jaxsim.validate import DEFAULT_SLO, Scenario

    w = js.Workload(input_tokens=1000.0, output_tokens=500.0)
    rows = [Scenario(ds3, h200, js.AggConfig(EP8, batch=16.0, chunk=8192.0), w, DEFAULT_SLO, Load("concurrency", c))
            for c in (8.0, 128.0)]
    out = simulate_rows(rows, rounds=3)
    assert np.all(out["sim_completed_frac"] == 1.0)
    # 8 clients on 8 ranks: one request per rank, alone; 128 clients fill 16 slots per rank.
    assert out["sim_ttft_ms"][1] > out["sim_ttft_ms"][0] > 0
    assert out["sim_tpot_ms"][1] > out["sim_tpot_ms"][0] > 0
    alone = jax.jit(js.step_cost)(ds3, h200, EP8, js.StepBatch(decode_requests=1.0, decode_context=1250.0))
    assert out["sim_tpot_ms"][0] == pytest.approx(float(alone.total_s) * 1e3, rel=0.02)

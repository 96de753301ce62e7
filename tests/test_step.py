"""The step model: invariants, a hand-computed case, transform consistency, gradients, recompiles."""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxsim as js
from jaxsim.calibrate import fit as FT
from jaxsim.smooth import Mode
from jaxsim.step import BREAKDOWN
from tests.conftest import x64

RATE_FIELDS = ("bf16_flop_per_s", "fp8_flop_per_s", "fp4_flop_per_s", "hbm_bytes_per_s", "scale_up_bytes_per_s",
               "scale_out_bytes_per_s")
TIME_FIELDS = ("scale_up_latency_s", "scale_out_latency_s")


def random_cases(model: js.Model, n: int, seed: int) -> list[tuple[js.Deployment, js.StepBatch]]:
    """Valid deployments (tp·dp = ep·moe_tp, divisors of heads and experts) with random batches."""
    rng = np.random.default_rng(seed)
    cases = []
    experts = float(model.n_routed_experts)
    while len(cases) < n:
        tp, dp, pp = (int(rng.choice([1, 2, 4, 8])) for _ in range(3))
        gpus = tp * dp
        ep = int(rng.choice([e for e in (1, 2, 4, 8, 16, 32, 64) if gpus % e == 0 and (experts == 0 or experts % e == 0)]))
        if experts == 0:
            ep = 1
        d = js.Deployment(tp=tp, dp=dp, pp=pp, ep=ep, moe_tp=gpus // ep, two_batch_overlap=float(rng.integers(0, 2)),
                          nextn=float(rng.integers(0, 3)), nextn_accept=float(rng.uniform(0, 1)),
                          gemm_weight_bytes=float(rng.choice([1.0, 2.0])), moe_weight_bytes=float(rng.choice([0.5, 1, 2])),
                          kv_bytes=float(rng.choice([1.0, 2.0])), attn_compute_bytes=float(rng.choice([1.0, 2.0])))
        if float(js.valid_parallelism(model, d)) != 1.0:
            continue
        pre = float(rng.choice([0.0, rng.uniform(1, 8192)]))
        b = js.StepBatch(decode_requests=float(rng.uniform(0, 256)), decode_context=float(rng.uniform(1, 32768)),
                         prefill_tokens=pre, prefill_context=float(rng.uniform(1, 16384)) if pre else 0.0,
                         prefill_sequences=float(rng.integers(1, 4)) if pre else 0.0)
        cases.append((d, b))
    return cases


MODELS = ("deepseek-v3", "deepseek-v3.2", "qwen3-235b-a22b", "gpt-oss-120b", "llama-3.1-70b")
step = jax.jit(js.step_cost, static_argnames="mode")


@pytest.fixture(scope="module", params=MODELS)
def model(request: pytest.FixtureRequest) -> js.Model:
    return js.load_model(request.param)


def test_breakdown_adds_up(model: js.Model, h200: js.Hardware) -> None:
    for d, b in random_cases(model, 10, 1):
        c = step(model, h200, d, b)
        parts = sum(float(getattr(c, k)) for k in BREAKDOWN)
        assert parts - float(c.hidden_s) == pytest.approx(float(c.total_s), rel=1e-5)
        assert float(c.total_s) > 0 and np.isfinite(float(c.total_s))
        if float(d.two_batch_overlap) == 0:
            assert float(c.hidden_s) == 0.0


def test_faster_hardware_never_slows_a_step(model: js.Model, h200: js.Hardware) -> None:
    for d, b in random_cases(model, 8, 2):
        base = float(step(model, h200, d, b).total_s)
        for field in RATE_FIELDS:
            faster = eqx.tree_at(lambda h, f=field: getattr(h, f), h200, 2.0 * getattr(h200, field))
            assert float(step(model, faster, d, b).total_s) <= base * (1 + 1e-6), field
        for field in TIME_FIELDS:
            quicker = eqx.tree_at(lambda h, f=field: getattr(h, f), h200, 0.5 * getattr(h200, field))
            assert float(step(model, quicker, d, b).total_s) <= base * (1 + 1e-6), field


def test_scaling_every_rate_divides_time(model: js.Model, h200: js.Hardware) -> None:
    k = 3.0
    fast = eqx.tree_at(lambda h: [getattr(h, f) for f in RATE_FIELDS], h200, [k * getattr(h200, f) for f in RATE_FIELDS])
    fast = eqx.tree_at(lambda h: [getattr(h, f) for f in TIME_FIELDS], fast, [getattr(h200, f) / k for f in TIME_FIELDS])
    # Overheads, fixed kernel and collective latencies and the calibrated per-score / per-tile / per-pair costs
    # (every `Efficiency` field in seconds) are times too.
    lat = [f for f in js.Efficiency.__dataclass_fields__ if f.endswith("_s")]
    fast = eqx.tree_at(lambda h: [getattr(h.eff, f) for f in lat], fast, [getattr(h200.eff, f) / k for f in lat])
    for d, b in random_cases(model, 8, 3):
        assert float(step(model, fast, d, b).total_s) == pytest.approx(float(step(model, h200, d, b).total_s) / k,
                                                                         rel=1e-5)


def test_time_grows_with_batch_and_context(model: js.Model, h200: js.Hardware) -> None:
    for d, b in random_cases(model, 6, 4):
        t0 = float(step(model, h200, d, b).total_s)
        for field in ("decode_requests", "decode_context", "prefill_tokens"):
            bigger = eqx.tree_at(lambda x, f=field: getattr(x, f), b, 1.5 * getattr(b, field) + 16)
            if field == "prefill_tokens":
                bigger = eqx.tree_at(lambda x: (x.prefill_sequences, x.prefill_context), bigger,
                                     (jnp.maximum(b.prefill_sequences, 1.0), jnp.maximum(b.prefill_context, 1.0)))
            assert float(step(model, h200, d, bigger).total_s) >= t0 * (1 - 1e-6), field


def test_invalid_parallelism_flagged(ds3: js.Model, h200: js.Hardware) -> None:
    bad = [js.Deployment(tp=3, ep=3), js.Deployment(tp=8, ep=4), js.Deployment(tp=1, dp=6, ep=6)]
    for d in bad:
        assert float(step(ds3, h200, d, js.StepBatch(decode_requests=1, decode_context=10)).valid) == 0.0


def test_hand_computed_memory_bound_decode() -> None:
    """Llama-3.1-70B, TP8, BF16, one request with a 1-token context: every GEMM is weight-bound.
    The hardware file's own (provisional) efficiencies, without the fitted calibration."""
    h200 = js.load_hardware("h200-sxm", calibrated=False)
    m = js.load_model("llama-3.1-70b")
    d = js.Deployment(tp=8)
    c = step(m, h200, d, js.StepBatch(decode_requests=1, decode_context=1))
    # Per GPU and layer: Q,O 2·8192·(64/8)·128 + K,V 2·8192·1·128 + FFN 3·8192·28672/8 elements, 2 bytes each.
    layer_weights = (2 * 8192 * 8 * 128 + 2 * 8192 * 1 * 128 + 3 * 8192 * 28672 / 8) * 2
    lm_head = 8192 * 128256 / 8 * 2
    bw = 4.8e12 * 0.65  # H200 HBM × provisional GEMM memory efficiency
    assert float(c.gemm_s) == pytest.approx((80 * layer_weights + lm_head) / bw, rel=0.01)
    # TP all-reduce: 2 per layer, 8192 × 2 bytes, ring 2·7/8 over NVLink at 450 GB/s × 0.75, + 2·log2(8)·3 µs.
    ar = 2 * 7 / 8 * 8192 * 2 / (450e9 * 0.75) + 2 * 3 * 3e-6
    assert float(c.tp_comm_s) == pytest.approx(80 * 2 * ar, rel=1e-4)


def test_jit_equals_nojit_and_vmap_equals_loop(ds3: js.Model, h200: js.Hardware) -> None:
    cases = random_cases(ds3, 6, 5)
    eager = [js.step_cost(ds3, h200, d, b).total_s for d, b in cases]
    jitted = [step(ds3, h200, d, b).total_s for d, b in cases]
    np.testing.assert_allclose(np.array(jitted), np.array(eager), rtol=1e-5)
    ds, bs = zip(*cases, strict=True)
    d_stack = jax.tree.map(lambda *x: jnp.stack(x), *ds)
    b_stack = jax.tree.map(lambda *x: jnp.stack(x), *bs)
    vm = jax.jit(jax.vmap(js.step_cost, in_axes=(None, None, 0, 0)))(ds3, h200, d_stack, b_stack)
    np.testing.assert_allclose(np.asarray(vm.total_s), np.array(jitted), rtol=1e-5)
    np.testing.assert_allclose(np.asarray(vm.memory_bytes), [float(step(ds3, h200, d, b).memory_bytes)
                                                             for d, b in cases], rtol=1e-5)


def test_float32_close_to_float64(model: js.Model, h200: js.Hardware) -> None:
    cases = random_cases(model, 4, 6)
    f32 = [float(js.step_cost(model, h200, d, b).total_s) for d, b in cases]
    with x64():
        up = lambda t: jax.tree.map(lambda x: jnp.asarray(x, jnp.float64) if eqx.is_array(x) else x, t)  # noqa: E731
        f64 = [float(js.step_cost(up(model), up(h200), up(d), up(b)).total_s) for d, b in cases]
    np.testing.assert_allclose(f32, f64, rtol=1e-4)


@pytest.mark.slow  # 10 cases of 13-21 s on 2 cores (finite gradients are also checked per kernel form)
@pytest.mark.parametrize("mode", [js.HARD, js.SMOOTH])
def test_gradients_finite_for_every_field(model: js.Model, h200: js.Hardware, mode: Mode) -> None:
    def total(mm: js.Model, hw: js.Hardware, d: js.Deployment, b: js.StepBatch) -> jax.Array:
        return js.step_cost(mm, hw, d, b, mode=mode).total_s

    grad = jax.jit(jax.grad(total, argnums=(0, 1, 2, 3)))
    for d, b in [*random_cases(model, 3, 7), (js.Deployment(), js.StepBatch())]:
        grads = grad(model, h200, d, b)
        for leaf in jax.tree.leaves(grads):
            assert np.all(np.isfinite(np.asarray(leaf)))
    # The gradient is informative: more decode requests cost time, more HBM bandwidth saves it.
    g = grad(model, h200, js.Deployment(), js.StepBatch(decode_requests=32, decode_context=2048))
    assert float(g[3].decode_requests) > 0 and float(g[1].hbm_bytes_per_s) < 0


@pytest.mark.slow  # 11 s on 2 cores
def test_smooth_converges_to_hard(ds3: js.Model, h200: js.Hardware) -> None:
    for d, b in random_cases(ds3, 4, 8):
        hard = float(step(ds3, h200, d, b).total_s)
        errs = [abs(float(step(ds3, h200, d, b, mode=Mode(smooth=True, temperature=t)).total_s) / hard - 1)
                for t in (0.1, 0.02, 0.002)]
        assert errs[2] < 0.01 and errs[2] <= errs[0] + 1e-6


def test_no_recompile_when_values_change(ds3: js.Model, h200: js.Hardware) -> None:
    counted = eqx.debug.assert_max_traces(js.step_cost, max_traces=1)
    f = jax.jit(counted)
    for d, b in random_cases(ds3, 5, 9):
        f(ds3, h200, d, b).total_s.block_until_ready()
    faster = eqx.tree_at(lambda h: h.hbm_bytes_per_s, h200, 2 * h200.hbm_bytes_per_s)
    f(ds3, faster, js.Deployment(), js.StepBatch(decode_requests=3.0)).total_s.block_until_ready()


@pytest.mark.parametrize(("n", "block"), [(10, 5), *(pytest.param(n, b, marks=pytest.mark.slow)  # 13-19 s each
                                          for n, b in [(1, 4), (7, 3), (33, 8), (5, 64)])])
def test_blocked_batch_equals_vmap(ds3: js.Model, h200: js.Hardware, n: int, block: int) -> None:
    ds, bs = zip(*random_cases(ds3, n, 10), strict=True)
    d = jax.tree.map(lambda *x: jnp.stack(x), *ds)
    b = jax.tree.map(lambda *x: jnp.stack(x), *bs)
    plain = jax.vmap(js.step_cost, in_axes=(None, None, 0, 0))(ds3, h200, d, b)
    blocked = js.step_cost_batch(ds3, h200, d, b, block=block)
    # Two compiled programs in float32: a few ulps of reassociation over ~60 summed terms.
    for got, want in zip(jax.tree.leaves(blocked), jax.tree.leaves(plain), strict=True):
        np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=3e-5, atol=1e-12)


def test_batch_broadcasts_scalars(ds3: js.Model, h200: js.Hardware) -> None:
    d = js.Deployment(tp=1, dp=8, ep=8)
    b = js.StepBatch(decode_requests=jnp.array([1.0, 8.0, 64.0]), decode_context=2048.0)
    out = js.step_cost_batch(ds3, h200, d, b)
    assert out.total_s.shape == (3,)
    assert float(out.total_s[0]) < float(out.total_s[1]) < float(out.total_s[2])
    single = js.step_cost(ds3, h200, d, js.StepBatch(decode_requests=8.0, decode_context=2048.0))
    assert float(out.total_s[1]) == pytest.approx(float(single.total_s), rel=1e-6)


def test_mean_min_uniform_matches_numeric_average() -> None:
    from jaxsim.cost.flops import mean_min_uniform

    rng = np.random.default_rng(11)
    for _ in range(50):
        c = rng.uniform(10, 10000)
        s = rng.uniform(0, c)
        lim = rng.uniform(0, 2 * c)
        grid = np.linspace(c - s, c + s, 200001)
        assert float(mean_min_uniform(c, s, lim)) == pytest.approx(np.minimum(grid, lim).mean(), rel=1e-4)
    assert float(mean_min_uniform(100.0, 0.0, 30.0)) == 30.0


def test_context_spread_matters_only_with_windows_or_topk(h200: js.Hardware) -> None:
    """A spread of decode contexts costs the same as its mean for full attention (linear in context),
    but less for sliding-window layers whose reads are capped."""
    d = js.Deployment(tp=1)
    for name, capped in (("qwen3-32b", False), ("gpt-oss-120b", True)):
        m = js.load_model(name)
        dd = d if float(m.n_routed_experts) == 0 else js.Deployment(tp=1, ep=1)
        point = step(m, h200, dd, js.StepBatch(decode_requests=16, decode_context=100.0))
        spread = step(m, h200, dd, js.StepBatch(decode_requests=16, decode_context=100.0, decode_context_spread=90.0))
        if capped:  # half of GPT-OSS's layers read min(context, 128): E[min(c, 128)] < min(E[c], 128) here
            assert float(spread.kv_bytes) < float(point.kv_bytes)
        else:
            assert float(spread.kv_bytes) == pytest.approx(float(point.kv_bytes), rel=1e-6)


def test_smooth_primitives_converge_to_hard() -> None:
    from jaxsim import smooth

    rng = np.random.default_rng(12)
    x = np.concatenate([rng.uniform(0, 6, 200), [0.0, 0.001, 0.02, 1.0, 2.0, 3.5]])
    y = rng.uniform(0, 6, len(x))
    for t in (0.05, 0.01, 0.001):
        mode = Mode(smooth=True, temperature=t)
        c = np.asarray(smooth.ceil(x, mode))
        assert np.all(c <= np.ceil(x) + 1e-6)  # never above the staircase
        assert np.all(c[x > 0] >= 1.0)  # a positive count of chunks is at least one
        mx, mn = np.asarray(smooth.maximum(x, y, mode)), np.asarray(smooth.minimum(x, y, mode))
        assert np.all(mx >= np.maximum(x, y) - 1e-6) and np.all(mn <= np.minimum(x, y) + 1e-6)
    fine = Mode(smooth=True, temperature=1e-3)
    away = np.abs(x - np.round(x)) > 0.05  # the smooth step needs ~T to reach a jump
    np.testing.assert_allclose(np.asarray(smooth.ceil(x, fine))[away], np.ceil(x)[away], atol=1e-6)
    np.testing.assert_allclose(np.asarray(smooth.maximum(x, y, fine)), np.maximum(x, y), rtol=0.01)
    np.testing.assert_allclose(np.asarray(smooth.relu(x - 3, fine)), np.maximum(x - 3, 0), atol=1e-3)


@pytest.mark.parametrize("dec_paths", [0.0, 1.0])
def test_serving_latency_share_orders_step_times(ds3: js.Model, h200: js.Hardware, dec_paths: float) -> None:
    """Share 0 ≤ share 0.4 ≤ share 1 for every step, and the share-0 step equals the step with the fitted latencies
    removed (the roofline-side terms are untouched), with either decode-attention form."""
    hw = FT.apply_params(h200, {"dec_paths": dec_paths})
    at = lambda f: eqx.tree_at(lambda h: h.eff.serving_latency_frac, hw, f)  # noqa: E731
    # Every fitted per-call latency (decode attention's per-item and beyond-window costs and prefill attention's
    # per-CTA costs are work, paid in full).
    latencies = tuple(f for f in js.Efficiency.__dataclass_fields__
                      if f.endswith("_latency_s") and not any(w in f for w in ("_item_", "_window_", "_cta_")))
    none = eqx.tree_at(lambda h: tuple(getattr(h.eff, f) for f in latencies), at(1.0), (0.0,) * len(latencies))
    for d, b in random_cases(ds3, 6, 11):
        t0, t4, t1 = (float(js.step_cost(ds3, at(f), d, b).total_s) for f in (0.0, 0.4, 1.0))
        assert t0 <= t4 <= t1 and t0 < t1
        assert t0 == pytest.approx(float(js.step_cost(ds3, none, d, b).total_s), rel=1e-6)

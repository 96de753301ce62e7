"""The batched step-cost oracle: equals the step model description by description, pads without leaking,
never recompiles, and rejects bad input at the boundary."""

from __future__ import annotations

import jax
import numpy as np
import pytest

import jaxsim as js
from jaxsim.oracle import StepOracle
from jaxsim.presets import SpecError
from jaxsim.serve import afd_iteration

EP8 = js.Deployment(tp=1, dp=8, ep=8, gemm_weight_bytes=1.0, moe_weight_bytes=1.0, kv_bytes=1.0)


@pytest.fixture(scope="module")
def oracle(ds3, h200):
    return StepOracle(ds3, h200, EP8, buckets=(8, 64))


def random_descriptions(n: int, seed: int):
    rng = np.random.default_rng(seed)
    dec = rng.integers(0, 200, n).astype(float)
    ctx = rng.uniform(100, 16000, n)
    pre = np.where(rng.random(n) < 0.4, rng.integers(1, 4096, n), 0).astype(float)
    pctx = rng.uniform(0, 8000, n)
    return dec, ctx, pre, pctx


def test_matches_the_step_model_per_description(oracle, ds3, h200):
    dec, ctx, pre, pctx = random_descriptions(37, 0)
    out = oracle.evaluate(dec, ctx, pre, pctx)
    step = jax.jit(js.step_cost)
    for i in range(0, 37, 6):
        c = step(ds3, h200, EP8, js.StepBatch(decode_requests=dec[i], decode_context=ctx[i], prefill_tokens=pre[i],
                                              prefill_context=pctx[i], prefill_sequences=float(pre[i] > 0)))
        assert out["total_s"][i] == pytest.approx(float(c.total_s), rel=1e-5)
        assert out["memory_bytes"][i] == pytest.approx(float(c.memory_bytes), rel=1e-5)
        assert out["interval_s"][i] == pytest.approx(float(c.interval_s), rel=1e-5)
    assert isinstance(out["total_s"], np.ndarray) and out["total_s"].dtype == np.float64 and out["total_s"].shape == (37,)


def test_any_batch_size_and_content_reuses_the_compiled_buckets(oracle):
    dec, ctx, pre, pctx = random_descriptions(64, 1)
    full = oracle(dec, ctx, pre, pctx)
    assert oracle.compilations == 2
    for n in (1, 5, 8, 9, 40, 64):
        part = oracle(dec[:n], ctx[:n], pre[:n], pctx[:n])
        np.testing.assert_allclose(part, full[:n], rtol=1e-6)  # padding never changes a result
    # New contents after a larger call: the scratch buffer is cleared, not stale.
    again = oracle(dec[:3] + 1, ctx[:3], 0.0, 0.0)
    assert again.shape == (3,) and np.all(again > 0)
    assert oracle.compilations == 2
    # Scalars broadcast; more decode requests never take less time.
    t = oracle(np.arange(1.0, 9.0), 4096.0)
    assert np.all(np.diff(t) >= 0)


def test_afd_oracle_prices_the_afd_iteration(ds3, h200):
    d = js.Deployment(tp=1, dp=8, ep=16, gemm_weight_bytes=1.0, moe_weight_bytes=1.0, kv_bytes=1.0)
    o = StepOracle(ds3, h200, d, micro_batches=3, buckets=(8,))
    got = o(np.array([16.0, 128.0]), np.array([2000.0, 6000.0]))
    for i, (b, c) in enumerate(((16.0, 2000.0), (128.0, 6000.0))):
        it = jax.jit(afd_iteration)(ds3, h200, d, 3.0, js.StepBatch(decode_requests=b, decode_context=c))
        assert got[i] == pytest.approx(float(it.total_s), rel=1e-5)


def test_bad_input_is_rejected_with_the_fix(oracle):
    with pytest.raises(SpecError, match="up to 64"):
        oracle(np.ones(65), 100.0)
    with pytest.raises(SpecError, match="finite and ≥ 0: decode_context"):
        oracle(np.ones(3), np.array([1.0, -2.0, 3.0]))
    with pytest.raises(SpecError, match="one length"):
        oracle(np.ones(3), np.ones(4))
    with pytest.raises(SpecError, match="buckets"):
        StepOracle(None, None, None, buckets=(), compile_now=False)  # type: ignore[arg-type]

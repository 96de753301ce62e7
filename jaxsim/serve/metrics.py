"""The `Metrics` pytree every serving architecture returns, and the feasibility verdict.

Names follow DESIGN.md §4. Pools: aggregated serving has one mixed pool, counted under `decode_*`;
P/D has `prefill_*` and `decode_*`; AFD splits its (decode or mixed) instances into `attention_*` and
`ffn_*` GPUs, which are also counted in `decode_gpus`. A pool an architecture does not have is 0.
"""

from __future__ import annotations

import equinox as eqx
import jax.numpy as jnp
from jax import Array
from jax.typing import ArrayLike

from jaxsim import smooth
from jaxsim.smooth import HARD, Mode
from jaxsim.spec import SLO
from jaxsim.step import StepCost

REASONS = ("ok", "invalid_parallelism", "memory", "ttft", "tpot")
OK, INVALID, MEMORY, TTFT, TPOT = range(len(REASONS))


class Breakdown(eqx.Module):
    """Where the time of the iteration that sets TPOT goes (seconds, summed over layers).

    For AFD, `dispatch_s` / `combine_s` are the attention→FFN and FFN→attention transfers, `moe_s` the
    FFN group's expert time; `hidden_s` is time overlapped away (two-batch overlap, AFD micro-batches),
    so the parts minus `hidden_s` add up to the iteration.
    """

    attention_s: Array
    gemm_s: Array
    moe_s: Array
    dispatch_s: Array
    combine_s: Array
    tp_comm_s: Array
    pp_comm_s: Array
    other_s: Array
    hidden_s: Array

    @classmethod
    def of_step(cls, c: StepCost) -> Breakdown:
        return cls(c.attention_s, c.gemm_s, c.moe_s, c.dispatch_s, c.combine_s, c.tp_comm_s, c.pp_comm_s,
                   c.other_s, c.hidden_s)


class Metrics(eqx.Module):
    """Serving metrics of one configuration (SI units; per-GPU rates count every GPU used)."""

    ttft_s: Array
    tpot_s: Array
    out_tok_per_s_per_gpu: Array  # system output tokens/s ÷ all GPUs (prefill + decode, attention + FFN)
    tok_per_s_per_user: Array  # 1 / TPOT
    requests_per_s: Array  # per serving unit (see `gpus`)
    request_latency_s: Array  # TTFT + (output − 1) × TPOT
    gpus: Array  # GPUs of one serving unit (instances × their GPUs; rate-matched P/D: per decode instance)
    prefill_gpus: Array
    decode_gpus: Array
    attention_gpus: Array
    ffn_gpus: Array
    prefill_memory_bytes: Array  # per GPU of each pool
    decode_memory_bytes: Array
    attention_memory_bytes: Array
    ffn_memory_bytes: Array
    memory_frac: Array  # largest (used / usable HBM) over the pools
    decode_batch: Array  # decode requests per attention rank actually running (after load and prefill caps)
    mfu: Array  # model FLOP/s ÷ (GPUs × dense peak at the GEMM weight precision)
    feasible: Array  # bool
    violation: Array  # ≥ 0, finite; 0 when feasible
    reason: Array  # int32 index into REASONS: the first failed check (invalid > memory > TTFT > TPOT)
    breakdown: Breakdown


def verdict(ttft_s: ArrayLike, tpot_s: ArrayLike, memory_frac: ArrayLike, valid: ArrayLike, overload: ArrayLike,
            slo: SLO, mode: Mode = HARD) -> tuple[Array, Array, Array]:
    """(feasible, violation, reason) from the SLO, memory and parallelism checks.

    `overload` is the relative excess of the offered load over capacity (> 0: the queue grows without
    bound, so TTFT misses its target whatever it is). The violation sums the relative excesses, so it is
    finite and positive when anything fails, and 0 otherwise.
    """

    def excess(x: ArrayLike) -> Array:
        return smooth.relu(x, mode)

    ttft_x = excess(ttft_s / slo.ttft_s - 1.0) + excess(overload)
    tpot_x = excess(tpot_s / slo.tpot_s - 1.0)
    mem_x = excess(memory_frac - 1.0)
    invalid = 1.0 - jnp.asarray(valid)
    violation = invalid + mem_x + ttft_x + tpot_x
    fails = jnp.stack([invalid > 0, mem_x > 0, ttft_x > 0, tpot_x > 0])
    reason = jnp.where(jnp.any(fails), 1 + jnp.argmax(fails), OK).astype(jnp.int32)
    return violation <= 0, violation, reason


def assemble(*, ttft_s: Array, tpot_s: Array, requests_per_s: Array, gpus: Array, output_tokens: Array, slo: SLO,
             memory_frac: Array, valid: Array, overload: Array, decode_batch: Array, mfu: Array,
             breakdown: Breakdown, decode_memory_bytes: Array, mode: Mode = HARD, decode_gpus: ArrayLike | None = None,
             prefill_gpus: ArrayLike = 0.0, attention_gpus: ArrayLike = 0.0, ffn_gpus: ArrayLike = 0.0,
             prefill_memory_bytes: ArrayLike = 0.0, attention_memory_bytes: ArrayLike = 0.0,
             ffn_memory_bytes: ArrayLike = 0.0) -> Metrics:
    """Build `Metrics` from an architecture's core numbers: derives the rates, latency and verdict."""
    feasible, violation, reason = verdict(ttft_s, tpot_s, memory_frac, valid, overload, slo, mode)
    like = jnp.zeros_like(tpot_s)
    return Metrics(
        ttft_s=ttft_s,
        tpot_s=tpot_s,
        out_tok_per_s_per_gpu=requests_per_s * output_tokens / gpus,
        tok_per_s_per_user=1.0 / tpot_s,
        requests_per_s=requests_per_s,
        request_latency_s=ttft_s + (output_tokens - 1.0) * tpot_s,
        gpus=gpus,
        prefill_gpus=like + prefill_gpus,
        decode_gpus=like + (gpus if decode_gpus is None else decode_gpus),
        attention_gpus=like + attention_gpus,
        ffn_gpus=like + ffn_gpus,
        prefill_memory_bytes=like + prefill_memory_bytes,
        decode_memory_bytes=decode_memory_bytes,
        attention_memory_bytes=like + attention_memory_bytes,
        ffn_memory_bytes=like + ffn_memory_bytes,
        memory_frac=memory_frac,
        decode_batch=decode_batch,
        mfu=mfu,
        feasible=feasible,
        violation=violation,
        reason=reason,
        breakdown=breakdown,
    )

"""Serving architectures: hand-computed metrics for agg, disagg, Agg+AFD and P/D+AFD, AFD pipeline
properties, feasibility, SLO monotonicity, queueing, transform consistency and gradients.

The hand-computed cases take the step-level times the library computes for the iterations involved
(`step_cost`, `afd_iteration`, `attention_side`, `routed_experts_s`) and derive the serving metrics from
the documented formulas here, in the test. Transfers (KV, A2F, F2A) are computed entirely by hand from
the H200 numbers in `specs/hardware/h200-sxm.toml`.
"""

from __future__ import annotations

import math

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxsim as js
from jaxsim.cost import comm
from jaxsim.serve import AFDConfig, AggConfig, DisaggConfig, Load, afd_iteration
from jaxsim.step import attention_side, routed_experts_s

est = jax.jit(js.estimate, static_argnames="mode")
step = jax.jit(js.step_cost, static_argnames="mode")
afd_it = jax.jit(afd_iteration, static_argnames="mode")
side_fn = jax.jit(attention_side, static_argnames="mode")
routed_fn = jax.jit(routed_experts_s, static_argnames="mode")

@pytest.fixture(scope="module")
def h200() -> js.Hardware:
    """The H200 of specs/hardware/h200-sxm.toml as written (the hand computations below use its link
    fractions and latencies), not overridden by a fitted calibration."""
    return js.load_hardware("h200-sxm", calibrated=False)


# H200 numbers from specs/hardware/h200-sxm.toml.
USABLE = 141e9 * (1 - 0.1)  # HBM × (1 − runtime reserve)
NVLINK_BW, NVLINK_LAT = 450e9 * 0.75, 3e-6  # per GPU per direction × DeepEP-achieved fraction
NIC_BW, NIC_LAT = 400e9 / 8 * 0.85, 10e-6
# DeepSeek-V3: MLA latent 512 + RoPE 64 per layer × 61 layers = 35,136 KV bytes per token in FP8.
DS3_KV_FP8 = (512 + 64) * 61
DS3_TOKEN_TO_EXPERTS = 8 * 7168  # top-k × hidden elements a token sends to the FFN side
DS3_MOE_LAYERS = 61 - 3

W = js.Workload(input_tokens=4000.0, output_tokens=1000.0)
LOOSE = js.SLO(ttft_s=100.0, tpot_s=1.0)
REASON = {name: i for i, name in enumerate(js.REASONS)}


def dep(**kw: float) -> js.Deployment:
    """A deployment with FP8 GEMM / expert weights and FP8 KV (DeepSeek-V3 fits one H200 node)."""
    return js.Deployment(**{"gemm_weight_bytes": 1.0, "moe_weight_bytes": 1.0, "kv_bytes": 1.0, **kw})


EP8 = dep(tp=1, dp=8, ep=8)  # one HGX node: 8 attention-DP ranks, EP 8
EP16 = dep(tp=1, dp=16, ep=16)  # two nodes


def f(x: jax.Array) -> float:
    return float(np.asarray(x))


def decode_only(w: js.Workload, running: float) -> js.StepBatch:
    """Decode requests at every stage of their output: KV spans prefix + input … + output."""
    start, half = f(w.prefix_tokens + w.input_tokens), f(w.output_tokens) / 2
    return js.StepBatch(decode_requests=running, decode_context=start + half, decode_context_spread=half)


def mixed(w: js.Workload, running: float, chunk: float, a: float = 1.0) -> js.StepBatch:
    """An agg iteration: `running` decode requests plus the prompt tokens that keep them running
    (running × input × a / output), attending on average to prefix + input / 2 positions, belonging to
    prefill_tokens / min(input, chunk) prompts."""
    inp, out = f(w.input_tokens), f(w.output_tokens)
    pre = running * inp * a / out
    return eqx.tree_at(lambda b: (b.prefill_tokens, b.prefill_context, b.prefill_sequences), decode_only(w, running),
                       (pre, f(w.prefix_tokens) + inp / 2, pre / min(inp, chunk)))


def with_chunk(w: js.Workload, running: float, chunk: float) -> js.StepBatch:
    """The iteration a new prompt's TTFT sees: `running` decodes plus one chunk of min(input, chunk)
    tokens of that prompt (one sequence, attending on average to prefix + input / 2 positions)."""
    inp = f(w.input_tokens)
    return eqx.tree_at(lambda b: (b.prefill_tokens, b.prefill_context, b.prefill_sequences), decode_only(w, running),
                       (min(inp, chunk), f(w.prefix_tokens) + inp / 2, 1.0))


def burst(w: js.Workload, running: float, tokens: float, decode_share: float = 1.0) -> js.StepBatch:
    """A prefill-carrying agg iteration: `tokens` prompt tokens (tokens / input prompts, at least one)
    beside `decode_share × running` decodes (1: mixed in, 0: a prefill iteration of its own)."""
    inp = f(w.input_tokens)
    return eqx.tree_at(lambda b: (b.prefill_tokens, b.prefill_context, b.prefill_sequences),
                       decode_only(w, running * decode_share), (tokens, f(w.prefix_tokens) + inp / 2,
                                                               max(tokens / inp, 1.0)))


def agg_by_hand(m: js.Model, hw: js.Hardware, d: js.Deployment, w: js.Workload, running: float, chunk: float,
                admitted: float = 1.0, mix: float = 1.0, a: float = 1.0) -> tuple[float, float, float, float]:
    """(time per decode step, T(prefill-carrying iteration), T(decode-only iteration), bursts per decode step)
    of agg with bursty prefill: a burst carries P = min(max(admitted × min(input, chunk),
    running × input × a / output), chunk) prompt tokens; k = running × input / P / (output / a) bursts per
    decode step; step = T_dec + k × (T_burst − mix × T_dec)."""
    inp, iters = f(w.input_tokens), f(w.output_tokens) / a
    tokens = min(max(admitted * min(inp, chunk), running * inp / iters), chunk)
    t_dec = f(step(m, hw, d, decode_only(w, running)).total_s)
    t_burst = f(step(m, hw, d, burst(w, running, tokens, mix)).total_s)
    k = running * inp / tokens / iters
    return t_dec + k * (t_burst - mix * t_dec), t_burst, t_dec, k


def prefill_only(w: js.Workload, prompts: float) -> js.StepBatch:
    inp = f(w.input_tokens)
    return js.StepBatch(prefill_tokens=prompts * inp, prefill_context=f(w.prefix_tokens) + inp / 2,
                        prefill_sequences=prompts)


def kv_transfer_by_hand(w: js.Workload, sender_gpus: float, receiver_gpus: float, sender_tp: float = 1.0) -> float:
    """One request's FP8 KV (prefix + input tokens) from a prefill rank's TP GPUs, over NVLink when both
    instances fit one 8-GPU domain, else over the 400 Gb/s NICs."""
    kv = DS3_KV_FP8 * f(w.prefix_tokens + w.input_tokens) / sender_tp
    if sender_gpus + receiver_gpus <= 8:
        return NVLINK_LAT + kv / NVLINK_BW
    return NIC_LAT + kv / NIC_BW


def approx(x: float, rel: float = 2e-5) -> object:
    return pytest.approx(x, rel=rel)


# --------------------------------------------------------------------------------------------------
# Hand-computed cases, one per architecture
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("prefix", "inp", "out", "chunk", "batch", "workers", "nextn", "accept", "cap", "chunks"),
    [
        # cap = min(64, 8192·1000 / (4000·1) = 2048) = 64; ceil(4000 / 8192) = 1 chunk
        (0.0, 4000.0, 1000.0, 8192.0, 64.0, 1.0, 0.0, 0.0, 64.0, 1),
        # MTP a = 1 + 1·0.7 = 1.7; cap = min(64, 1536·1000 / (4000·1.7) = 225.9) = 64; ceil(4000/1536) = 3
        (2000.0, 4000.0, 1000.0, 1536.0, 64.0, 2.0, 1.0, 0.7, 64.0, 3),
        # prefill-bound: cap = min(64, 2048·100 / 4000 = 51.2) = 51.2; ceil(4000 / 2048) = 2
        (0.0, 4000.0, 100.0, 2048.0, 64.0, 1.0, 0.0, 0.0, 51.2, 2),
    ],
)
def test_agg_hand_computed(ds3: js.Model, h200: js.Hardware, prefix: float, inp: float, out: float, chunk: float,
                           batch: float, workers: float, nextn: float, accept: float, cap: float,
                           chunks: int) -> None:
    d = dep(tp=1, dp=8, ep=8, nextn=nextn, nextn_accept=accept)
    w = js.Workload(prefix_tokens=prefix, input_tokens=inp, output_tokens=out)
    a = 1.0 + nextn * accept
    # Saturation: each burst carries one prompt's chunk, min(input, chunk), or the spread-out mean if larger.
    t, t_chunk, t_dec, k = agg_by_hand(ds3, h200, d, w, cap, chunk, a=a)
    tokens = min(max(min(inp, chunk), cap * inp * a / out), chunk)
    assert k == approx(cap * inp / tokens / (out / a))
    assert 0 < k <= 1 and t_chunk >= t >= t_dec  # bursts are the long iterations; the mean lies between
    c = step(ds3, h200, d, decode_only(w, cap))
    cc = step(ds3, h200, d, burst(w, cap, tokens))
    r = est(ds3, h200, AggConfig(d, batch=batch, chunk=chunk, workers=workers), w, LOOSE)
    groups, gpus = workers * 8, workers * 8  # DP ranks of all instances; TP1 × DP8 per instance
    assert f(r.decode_batch) == approx(cap)
    assert f(r.tpot_s) == approx(t / a)
    assert f(r.tok_per_s_per_user) == approx(a / t)
    assert f(r.ttft_s) == approx(chunks * t_chunk)
    assert f(r.out_tok_per_s_per_gpu) == approx(groups * cap * a / t / gpus)
    assert f(r.requests_per_s) == approx(groups * cap / (out / a) / t)
    assert f(r.request_latency_s) == approx(chunks * t_chunk + (out - 1) * t / a)
    assert f(r.gpus) == gpus and f(r.decode_gpus) == gpus and f(r.prefill_gpus) == 0
    assert f(r.memory_frac) == approx(max(f(c.memory_bytes), f(cc.memory_bytes)) / USABLE)
    # 8-GPU DeepSeek-V3 in FP8 fits an H200 node with a loose SLO.
    assert bool(r.feasible) and int(r.reason) == REASON["ok"] and f(r.violation) == 0
    tight = est(ds3, h200, AggConfig(d, batch=batch, chunk=chunk, workers=workers), w,
                js.SLO(ttft_s=100.0, tpot_s=0.5 * t / a))
    assert not bool(tight.feasible) and int(tight.reason) == REASON["tpot"]
    assert f(tight.violation) == approx(1.0, rel=1e-4)  # TPOT is twice its target: relative excess 1


def test_disagg_hand_computed(ds3: js.Model, h200: js.Hardware) -> None:
    """Prefill: 8 GPUs (DP8/EP8), 2 prompts per rank; decode: 16 GPUs (DP16/EP16), 64 requests per rank."""
    pre = step(ds3, h200, EP8, prefill_only(W, 2.0))
    dec = step(ds3, h200, EP16, decode_only(W, 64.0))
    t_p, t_d = f(pre.total_s), f(dec.total_s)
    assert f(pre.interval_s) == t_p  # no PP
    r_p = 8 * 2.0 / t_p  # requests/s of one prefill instance: DP ranks × prompts per iteration
    r_d = 16 * 64.0 / (1000.0 / 1.0 * t_d)  # DP ranks × batch / (output / a iterations)
    # 8 + 16 GPUs exceed the NVLink domain: NIC; the first token leaves with the decode pool's first step.
    ttft = t_p + kv_transfer_by_hand(W, 8, 16) + t_d
    cfg = DisaggConfig(EP8, EP16, prefill_batch=2.0, decode_batch=64.0, decode_workers=0.0)

    matched = est(ds3, h200, cfg, W, LOOSE)
    assert f(matched.out_tok_per_s_per_gpu) == approx(1000.0 / (8 / r_p + 16 / r_d))
    assert f(matched.requests_per_s) == approx(r_d)
    assert f(matched.prefill_gpus) == approx(8 * r_d / r_p)
    assert f(matched.decode_gpus) == 16
    assert f(matched.ttft_s) == approx(ttft)
    assert f(matched.tpot_s) == approx(t_d)
    assert f(matched.request_latency_s) == approx(ttft + 999 * t_d)
    mem = max(f(pre.memory_bytes), f(dec.memory_bytes)) / USABLE
    assert f(matched.memory_frac) == approx(mem)

    # Given worker counts, the slower pool sets the rate: one case bound by each side.
    for w_p, w_d in ((1.0, 4.0), (4.0, 1.0)):
        prefill_bound = w_p * r_p < w_d * r_d
        assert prefill_bound == (w_p == 1.0)  # precondition: the two cases exercise both pools
        r = est(ds3, h200, eqx.tree_at(lambda c: (c.prefill_workers, c.decode_workers), cfg, (w_p, w_d)), W, LOOSE)
        rate = min(w_p * r_p, w_d * r_d)
        assert f(r.requests_per_s) == approx(rate)
        assert f(r.out_tok_per_s_per_gpu) == approx(rate * 1000.0 / (w_p * 8 + w_d * 16))
        assert f(r.ttft_s) == approx(ttft) and f(r.tpot_s) == approx(t_d)


def test_agg_afd_hand_computed(ds3: js.Model, h200: js.Hardware) -> None:
    """Agg+AFD: 8 attention GPUs (DP8) + 8 FFN GPUs (EP8), 2 micro-batches, 2 instances."""
    chunk = 2048.0
    it = afd_it(ds3, h200, EP8, 2.0, mixed(W, 64.0, chunk))  # cap = min(64, 2048·1000/4000 = 512) = 64
    t = f(it.total_s)
    r = est(ds3, h200, AFDConfig(EP8, micro_batches=2.0, batch=64.0, chunk=chunk, workers=2.0), W, LOOSE)
    # Prefill-bound variant: output 100 → cap = min(64, 2048·100/4000 = 51.2) = 51.2 per rank.
    short = js.Workload(input_tokens=4000.0, output_tokens=100.0)
    t_short = f(afd_it(ds3, h200, EP8, 2.0, mixed(short, 51.2, chunk)).total_s)
    r_short = est(ds3, h200, AFDConfig(EP8, micro_batches=2.0, batch=64.0, chunk=chunk), short, LOOSE)
    assert f(r_short.decode_batch) == approx(51.2)
    assert f(r_short.tpot_s) == approx(t_short)
    assert f(r_short.out_tok_per_s_per_gpu) == approx(8 * 51.2 / t_short / 16)
    assert f(r.tpot_s) == approx(t)
    it_chunk = afd_it(ds3, h200, EP8, 2.0, with_chunk(W, 64.0, chunk))
    t_chunk = f(it_chunk.total_s)
    assert f(r.ttft_s) == approx(math.ceil(4000 / 2048) * t_chunk)
    # 2 instances × 8 ranks × 64 requests × a = 1 tokens per iteration, over 2 × (8 + 8) GPUs
    assert f(r.out_tok_per_s_per_gpu) == approx(2 * 8 * 64.0 / t / 32)
    assert f(r.requests_per_s) == approx(2 * 8 * 64.0 / 1000.0 / t)
    assert (f(r.gpus), f(r.attention_gpus), f(r.ffn_gpus)) == (32, 16, 16)
    mem = max(f(it.attention_memory_bytes), f(it.ffn_memory_bytes), f(it_chunk.attention_memory_bytes),
              f(it_chunk.ffn_memory_bytes))
    assert f(r.memory_frac) == approx(mem / USABLE)
    # AFD's memory payoff: the FFN GPUs hold all routed experts of 58 layers over EP8 (FP8), the
    # attention GPUs none of them (about 19 GB of other weights) but the KV of 64 requests of mean
    # context 4500: 64 × 4500 × 35,136 bytes.
    routed = DS3_MOE_LAYERS * 256 / 8 * 3 * 7168 * 2048
    kv = 64 * 4500 * DS3_KV_FP8
    assert f(it.ffn_memory_bytes) >= routed
    assert kv + 15e9 < f(it.attention_memory_bytes) < kv + 25e9


def test_disagg_afd_hand_computed(ds3: js.Model, h200: js.Hardware) -> None:
    """P/D+AFD, rate-matched: prefill on 8 GPUs (1 prompt per rank) feeding an AFD decode instance of
    8 attention + 8 FFN GPUs, 4 micro-batches."""
    pre = step(ds3, h200, EP8, prefill_only(W, 1.0))
    it = afd_it(ds3, h200, EP8, 4.0, decode_only(W, 64.0))
    t_p, t_d = f(pre.total_s), f(it.total_s)
    r_p, r_d = 8 * 1.0 / t_p, 8 * 64.0 / (1000.0 * t_d)
    cfg = AFDConfig(EP8, micro_batches=4.0, batch=64.0, base="disagg", prefill=EP8, prefill_batch=1.0, workers=0.0)
    r = est(ds3, h200, cfg, W, LOOSE)
    assert js.architecture(cfg) == "disagg+afd"
    assert f(r.out_tok_per_s_per_gpu) == approx(1000.0 / (8 / r_p + 16 / r_d))
    # The first token leaves with the decode instance's first step: + one decode iteration.
    assert f(r.ttft_s) == approx(t_p + kv_transfer_by_hand(W, 8, 16) + t_d)
    assert f(r.tpot_s) == approx(t_d)
    assert f(r.prefill_gpus) == approx(8 * r_d / r_p)
    assert (f(r.attention_gpus), f(r.ffn_gpus)) == (8, 8)


# --------------------------------------------------------------------------------------------------
# The AFD per-layer pipeline
# --------------------------------------------------------------------------------------------------


def moe_layer_s(m: js.Model, hw: js.Hardware, d: js.Deployment, micro_batches: float, b: js.StepBatch) -> float:
    """Time of one MoE layer in an AFD iteration: the iteration with one more MoE layer minus it."""
    longer = eqx.tree_at(lambda x: x.n_layers, m, m.n_layers + 1.0)
    return f(afd_it(longer, hw, d, micro_batches, b).total_s) - f(afd_it(m, hw, d, micro_batches, b).total_s)


def afd_stages(m: js.Model, hw: js.Hardware, d: js.Deployment, micro_batches: float, b: js.StepBatch,
               bw: float, lat: float) -> tuple[float, float, float, float]:
    """(T_a, T_a2f, T_f, T_f2a) of one micro-batch of a decode-only batch; transfers by hand."""
    mb = eqx.tree_at(lambda x: x.decode_requests, b, b.decode_requests / micro_batches)
    side = side_fn(m, hw, d, mb, overhead_share=1.0 / micro_batches)
    t_a = f(side.attention_s + side.attn_gemm_s + 2 * side.tp_all_reduce_s + side.elementwise_s + side.moe_gemm_s)
    tokens = f(mb.decode_requests)  # per attention rank, no MTP
    tp, dp, ep, moe_tp = (f(x) for x in (d.tp, d.dp, d.ep, d.moe_tp))
    t_f = f(routed_fn(m, hw, d, tokens * dp)[0])  # every attention rank's micro-batch
    send = tokens / tp * DS3_TOKEN_TO_EXPERTS  # elements one attention GPU sends
    recv = tokens * dp * DS3_TOKEN_TO_EXPERTS / ep * (1.2 if ep > 1 else 1.0)  # busiest FFN GPU, imbalance 1.2
    t_a2f = lat + max(send, recv) * 1.0 / bw  # FP8 dispatch
    t_f2a = lat + max(send * moe_tp, recv) * 2.0 / bw  # BF16 combine (moe_tp partial sums back)
    return t_a, t_a2f, t_f, t_f2a


@pytest.mark.parametrize(
    ("tp", "dp", "ep", "moe_tp", "micro_batches", "domain"),
    [
        (1, 8, 8, 1, 1.0, "nic"),  # 8 + 8 GPUs > one 8-GPU domain
        (1, 8, 8, 1, 4.0, "nic"),
        (2, 2, 2, 2, 3.0, "nvlink"),  # 4 + 4 GPUs fit one domain
    ],
)
def test_afd_layer_time_formula(ds3: js.Model, h200: js.Hardware, tp: int, dp: int, ep: int, moe_tp: int,
                                micro_batches: float, domain: str) -> None:
    """layer = max(M·T_a, M·T_f, M·T_a2f, M·T_f2a, T_a + T_a2f + T_f + T_f2a); with M = 1 that is the sum."""
    d = dep(tp=tp, dp=dp, ep=ep, moe_tp=moe_tp)
    b = decode_only(W, 96.0)
    bw, lat = (NVLINK_BW, NVLINK_LAT) if domain == "nvlink" else (NIC_BW, NIC_LAT)
    t_a, t_a2f, t_f, t_f2a = afd_stages(ds3, h200, d, micro_batches, b, bw, lat)
    layer = moe_layer_s(ds3, h200, d, micro_batches, b)
    M = micro_batches
    assert layer == approx(max(M * t_a, M * t_f, M * t_a2f, M * t_f2a, t_a + t_a2f + t_f + t_f2a), rel=1e-4)
    if M == 1:
        assert layer == approx(t_a + t_a2f + t_f + t_f2a, rel=1e-4)
    it = afd_it(ds3, h200, d, M, b)
    n = DS3_MOE_LAYERS
    assert f(it.breakdown.moe_s) == approx(M * n * t_f)
    assert f(it.breakdown.dispatch_s) == approx(M * n * t_a2f)
    assert f(it.breakdown.combine_s) == approx(M * n * t_f2a)


@pytest.mark.parametrize(("tp", "dp", "ep", "moe_tp", "micro_batches", "domain"),
                         [(1, 8, 8, 1, 1.0, "nic"), (2, 2, 2, 2, 3.0, "nvlink")])
def test_afd_exchange_pays_collective_latency(ds3: js.Model, h200: js.Hardware, tp: int, dp: int, ep: int,
                                              moe_tp: int, micro_batches: float, domain: str) -> None:
    """With H200's fitted per-call collective latency (7.07 µs, specs/calibration/h200-sxm.toml), A2F and F2A
    each pay it once per micro-batch and MoE layer on top of the hop latency, as the EP all-to-all does."""
    fixed = 7.07065e-6
    hw = eqx.tree_at(lambda h: h.eff.collective_latency_s, h200, fixed)
    d = dep(tp=tp, dp=dp, ep=ep, moe_tp=moe_tp)
    b = decode_only(W, 96.0)
    bw, lat = (NVLINK_BW, NVLINK_LAT) if domain == "nvlink" else (NIC_BW, NIC_LAT)
    t_a, t_a2f, t_f, t_f2a = afd_stages(ds3, hw, d, micro_batches, b, bw, lat + fixed)
    M = micro_batches
    layer = moe_layer_s(ds3, hw, d, M, b)
    assert layer == approx(max(M * t_a, M * t_f, M * t_a2f, M * t_f2a, t_a + t_a2f + t_f + t_f2a), rel=1e-4)
    it, it0 = afd_it(ds3, hw, d, M, b), afd_it(ds3, h200, d, M, b)
    # Dispatch and combine each grow by M micro-batches × 58 MoE layers × 7.07 µs (0.41 ms for M = 1).
    for part in ("dispatch_s", "combine_s"):
        grown = f(getattr(it.breakdown, part)) - f(getattr(it0.breakdown, part))
        assert grown == approx(M * DS3_MOE_LAYERS * fixed, rel=1e-3)
    # The same fixed time the EP all-to-all of cost/comm.py pays per call.
    n = f(d.tp * d.dp + d.ep * d.moe_tp)
    assert f(comm.all_to_all_s(hw, 0.0, n)) - f(comm.all_to_all_s(h200, 0.0, n)) == approx(fixed)


def test_afd_slow_link_bound_by_combine(ds3: js.Model, h200: js.Hardware) -> None:
    """A 1 GB/s NIC makes the F→A direction (BF16, 2 bytes) the bottleneck: layer = M·T_f2a, by hand."""
    slow = eqx.tree_at(lambda h: h.scale_out_bytes_per_s, h200, 1e9)
    M, batch = 3.0, 96.0
    tokens = batch / M
    # Busiest FFN GPU: 8 ranks × 32 tokens × top-8 / EP8 × 1.2 imbalance tokens of 7168 BF16 elements.
    t_f2a = 10e-6 + 8 * tokens * 8 / 8 * 1.2 * 7168 * 2.0 / (1e9 * 0.85)
    layer = moe_layer_s(ds3, slow, EP8, M, decode_only(W, batch))
    assert layer == approx(M * t_f2a, rel=1e-4)


def linear_hw(hw: js.Hardware) -> js.Hardware:
    """Costs linear in tokens and free communication: flat efficiencies (no small-shape penalty), HBM
    1e4× faster (every kernel compute-bound, so weights re-read per micro-batch cost nothing), NVLink and
    NICs 1e9× faster with zero latency."""
    hw = eqx.tree_at(lambda h: (h.eff.gemm_half_rows, h.eff.attn_half_context, h.eff.moe_half_tokens), hw,
                     (0.0, 0.0, 0.0))
    return eqx.tree_at(lambda h: (h.hbm_bytes_per_s, h.scale_up_bytes_per_s, h.scale_out_bytes_per_s,
                                  h.scale_up_latency_s, h.scale_out_latency_s), hw,
                       (1e4 * hw.hbm_bytes_per_s, 1e9 * hw.scale_up_bytes_per_s, 1e9 * hw.scale_out_bytes_per_s,
                        0.0, 0.0))


def test_afd_many_micro_batches_free_comm_tend_to_max_of_sides(ds3: js.Model, h200: js.Hardware) -> None:
    """What is asserted:
    (a) costs linear in tokens + free communication: with M = 1 the layer is T_a(B) + T_f(B) of the
        whole batch B, and for every M ≥ 2 it equals max(T_a(B), T_f(B)) — the pipeline hides the
        smaller side completely and micro-batching costs nothing;
    (b) the real (memory-bound, small-batch) H200 with free communication does not converge: for M ≥ 2
        the layer is M·max(T_a(B/M), T_f(B/M)), which exceeds max(T_a(B), T_f(B)) because every
        micro-batch re-reads the weights, and grows with M.
    """
    b = decode_only(W, 1024.0)
    hw = linear_hw(h200)
    t_a, _, t_f, _ = afd_stages(ds3, hw, EP8, 1.0, b, 1.0, 0.0)
    assert 0.1 < t_a / t_f < 10  # both sides matter
    layers = [moe_layer_s(ds3, hw, EP8, M, b) for M in (1.0, 2.0, 4.0, 8.0)]
    assert layers[0] == approx(t_a + t_f, rel=1e-4)
    for layer in layers[1:]:
        assert layer == approx(max(t_a, t_f), rel=1e-3)

    free = eqx.tree_at(lambda h: (h.scale_up_bytes_per_s, h.scale_out_bytes_per_s, h.scale_up_latency_s,
                                  h.scale_out_latency_s), h200,
                       (1e9 * h200.scale_up_bytes_per_s, 1e9 * h200.scale_out_bytes_per_s, 0.0, 0.0))
    b = decode_only(W, 64.0)
    whole = afd_stages(ds3, free, EP8, 1.0, b, 1.0, 0.0)
    prev = 0.0
    for M in (2.0, 4.0, 8.0):
        t_a, _, t_f, _ = afd_stages(ds3, free, EP8, M, b, 1.0, 0.0)
        layer = moe_layer_s(ds3, free, EP8, M, b)
        assert layer == approx(M * max(t_a, t_f), rel=1e-3)
        assert layer > 1.05 * max(whole[0], whole[2]) and layer > prev
        prev = layer


# --------------------------------------------------------------------------------------------------
# Feasibility and SLO properties
# --------------------------------------------------------------------------------------------------


def test_exceeding_hbm_is_infeasible_for_memory(ds3: js.Model, h200: js.Hardware) -> None:
    h100 = js.load_hardware("h100-sxm")
    one = js.Deployment()  # one GPU, BF16 weights
    # 671e9 parameters × 2 bytes on one 80 GB H100 (72 GB usable after its 10 % reserve): > 18× over.
    r = est(ds3, h100, AggConfig(one, batch=1.0), W, LOOSE)
    assert not bool(r.feasible) and int(r.reason) == REASON["memory"]
    assert f(r.memory_frac) > 0.98 * 671e9 * 2 / (80e9 * 0.9)
    # The same on one H200, for the other architectures: routed experts alone, 58 layers × 256 × 3·7168·2048
    # BF16 elements, are 9× the usable 126.9 GB.
    routed = DS3_MOE_LAYERS * 256 * 3 * 7168 * 2048 * 2.0
    for cfg in (DisaggConfig(one, one, decode_batch=1.0), AFDConfig(one, micro_batches=1.0, batch=1.0)):
        r = est(ds3, h200, cfg, W, LOOSE)
        assert not bool(r.feasible) and int(r.reason) == REASON["memory"], js.architecture(cfg)
        assert f(r.memory_frac) >= routed / USABLE
    # Invalid parallelism is reported before memory: TP 3 does not divide 128 heads.
    r = est(ds3, h200, AggConfig(js.Deployment(tp=3, ep=3), batch=1.0), W, LOOSE)
    assert int(r.reason) == REASON["invalid_parallelism"] and not bool(r.feasible)


def random_agg(n: int, seed: int) -> tuple[AggConfig, js.Workload]:
    """Random agg deployments of DeepSeek-V3 (1–16 GPUs, some too small to fit) and workloads, stacked."""
    rng = np.random.default_rng(seed)
    cfgs, ws = [], []
    for _ in range(n):
        tp, dp = int(rng.choice([1, 2, 4, 8])), int(rng.choice([1, 2, 4]))
        d = dep(tp=tp, dp=dp, ep=tp * dp, nextn=float(rng.integers(0, 2)), nextn_accept=float(rng.uniform(0.5, 1)))
        cfgs.append(AggConfig(d, batch=float(rng.uniform(1, 256)), chunk=float(rng.uniform(512, 16384)),
                              workers=float(rng.integers(1, 3))))
        ws.append(js.Workload(prefix_tokens=float(rng.choice([0.0, 2048.0])), input_tokens=float(rng.uniform(256, 8000)),
                              output_tokens=float(rng.uniform(64, 2000))))
    return stack(cfgs), stack(ws)


def random_afd(n: int, seed: int) -> tuple[AFDConfig, js.Workload]:
    rng = np.random.default_rng(seed)
    cfgs, ws = [], []
    for _ in range(n):
        tp, dp, ep = int(rng.choice([1, 2])), int(rng.choice([1, 2, 4, 8])), int(rng.choice([1, 4, 8, 16, 32]))
        d = dep(tp=tp, dp=dp, ep=ep)
        cfgs.append(AFDConfig(d, micro_batches=float(rng.integers(1, 5)), batch=float(rng.uniform(1, 256)),
                              chunk=float(rng.uniform(512, 16384)), workers=float(rng.integers(1, 3))))
        ws.append(js.Workload(input_tokens=float(rng.uniform(256, 8000)), output_tokens=float(rng.uniform(64, 2000))))
    return stack(cfgs), stack(ws)


def random_disagg(n: int, seed: int) -> tuple[DisaggConfig, js.Workload]:
    rng = np.random.default_rng(seed)
    cfgs, ws = [], []
    for _ in range(n):
        p, d = (dep(tp=1, dp=k, ep=k) for k in rng.choice([4, 8, 16], size=2))
        cfgs.append(DisaggConfig(p, d, prefill_batch=float(rng.integers(1, 4)), decode_batch=float(rng.uniform(1, 256)),
                                 prefill_workers=float(rng.integers(1, 4)), decode_workers=float(rng.integers(0, 3))))
        ws.append(js.Workload(input_tokens=float(rng.uniform(256, 8000)), output_tokens=float(rng.uniform(64, 2000))))
    return stack(cfgs), stack(ws)


def stack(items: list) -> object:
    return jax.tree.map(lambda *x: jnp.stack(x), *items)


N_RANDOM = 16
RANDOM = {"agg": random_agg, "disagg": random_disagg, "agg+afd": random_afd}


def unstack(tree: object, i: int) -> object:
    return jax.tree.map(lambda x: x[i], tree)


@pytest.mark.parametrize("arch", list(RANDOM))
def test_raising_a_target_never_breaks_feasibility(ds3: js.Model, h200: js.Hardware, arch: str) -> None:
    cfg, w = RANDOM[arch](N_RANDOM, 11)
    rng = np.random.default_rng(12)
    free = js.SLO(ttft_s=jnp.full(N_RANDOM, 1e6), tpot_s=jnp.full(N_RANDOM, 1e6))
    base = js.estimate_batch(ds3, h200, cfg, w, free)
    # Targets around each configuration's own metrics, so roughly half pass each check.
    slo = js.SLO(ttft_s=base.ttft_s * rng.uniform(0.5, 1.5, N_RANDOM), tpot_s=base.tpot_s * rng.uniform(0.5, 1.5, N_RANDOM))
    r0 = js.estimate_batch(ds3, h200, cfg, w, slo)
    flipped = 0
    for field in ("tpot_s", "ttft_s"):
        raised = eqx.tree_at(lambda s, k=field: getattr(s, k), slo, getattr(slo, field) * rng.uniform(1, 3, N_RANDOM))
        r1 = js.estimate_batch(ds3, h200, cfg, w, raised)
        f0, f1 = np.asarray(r0.feasible), np.asarray(r1.feasible)
        assert np.all(~f0 | f1), field  # feasible stays feasible
        assert np.all(np.asarray(r1.violation) <= np.asarray(r0.violation) * (1 + 1e-6)), field
        flipped += int(np.sum(~f0 & f1))
        # Metrics other than the verdict do not depend on the targets.
        np.testing.assert_allclose(np.asarray(r1.out_tok_per_s_per_gpu), np.asarray(r0.out_tok_per_s_per_gpu))
    f0 = np.asarray(r0.feasible)
    assert 0 < f0.sum() < N_RANDOM and flipped > 0  # the property was exercised both ways


# --------------------------------------------------------------------------------------------------
# Queueing
# --------------------------------------------------------------------------------------------------


def test_concurrency_queueing_and_littles_law(ds3: js.Model, h200: js.Hardware) -> None:
    """DP8 with 64 slots per rank: 512 slots. chunk 2048 → 2 chunks per 4000-token prompt."""
    chunk, cap, slots = 2048.0, 64.0, 512.0  # cap = min(64, 2048·1000/4000 = 512)
    cfg = AggConfig(EP8, batch=cap, chunk=chunk)
    t_cap = agg_by_hand(ds3, h200, EP8, W, cap, chunk, admitted=cap)[0]
    capacity = 8 * cap / 1000.0 / t_cap  # requests/s at full occupancy
    prev = 0.0
    for n in (8.0, 100.0, 512.0, 600.0, 1024.0, 4096.0):
        r = est(ds3, h200, cfg, W, LOOSE, Load("concurrency", n))
        running = min(cap, n / 8)
        # A synchronised group: every burst holds a full 2048-token chunk (4000-token prompts exceed it).
        t, t_chunk, _, _ = agg_by_hand(ds3, h200, EP8, W, running, chunk, admitted=running)
        assert t_chunk == approx(f(step(ds3, h200, EP8, with_chunk(W, running, chunk)).total_s))
        wait = max(n - slots, 0.0) / capacity  # the excess waits for a slot (Little's law)
        assert f(r.decode_batch) == approx(running)
        assert f(r.tpot_s) == approx(t)
        assert f(r.ttft_s) == approx(2 * t_chunk + wait)
        assert f(r.ttft_s) >= prev
        prev = f(r.ttft_s)
        # Little's law: requests/s × time in system = requests in system. A request holds its slot for
        # `output` mean iterations, while the model's latency counts the prompt's 2 chunk iterations
        # (each longer than the mean one) plus output − 1 mean iterations: the product exceeds N by
        # (2·t_chunk/t − 1)/output (the excess over the slots waits (N − slots)/capacity, which
        # Little's law counts exactly).
        product = f(r.requests_per_s) * f(r.request_latency_s)
        excess = (2 * t_chunk / t - 1) / 1000
        assert excess < 0.05
        assert n * (1 - 1e-5) <= product <= n * (1 + excess + 1e-5)
        if n <= slots:
            no_queue = est(ds3, h200, AggConfig(EP8, batch=n / 8, chunk=chunk), W, LOOSE)
            assert f(r.ttft_s) == approx(f(no_queue.ttft_s))


def test_rate_load_served_below_capacity_infeasible_above(ds3: js.Model, h200: js.Hardware) -> None:
    chunk, cap = 2048.0, 64.0
    cfg = AggConfig(EP8, batch=cap, chunk=chunk)
    t_cap = agg_by_hand(ds3, h200, EP8, W, cap, chunk)[0]  # time per decode step at the cap
    capacity = 8 * cap / 1000.0 / t_cap
    lam = 0.5 * capacity
    r = est(ds3, h200, cfg, W, LOOSE, Load("rate", lam))
    # Little's law for the running batch: λ/8 per rank × 1000 iterations × T(cap) = half the cap.
    running = lam / 8 * 1000.0 * t_cap
    assert running == approx(32.0)
    # Poisson arrivals: a burst carries one prompt's 2048-token chunk.
    t, t_chunk, _, _ = agg_by_hand(ds3, h200, EP8, W, running, chunk)
    service = 4000 / chunk * t_cap  # prefill seconds per prompt on one of the 8 rank-servers
    rho = lam * service / 8
    wait = rho * service / (2 * (1 - rho))  # M/D/1
    assert f(r.requests_per_s) == approx(lam)
    assert f(r.decode_batch) == approx(running)
    assert f(r.tpot_s) == approx(t)
    assert f(r.ttft_s) == approx(2 * t_chunk + wait)
    assert bool(r.feasible)

    over = est(ds3, h200, cfg, W, LOOSE, Load("rate", 1.5 * capacity))
    assert not bool(over.feasible) and int(over.reason) == REASON["ttft"]
    assert f(over.requests_per_s) == approx(capacity)
    assert f(over.violation) >= 0.5 * (1 - 1e-5)  # overload 1.5 − 1

    # P/D: 2 prefill instances and 1 decode instance; capacity = min(2·r_p, r_d).
    dis = DisaggConfig(EP8, EP8, prefill_batch=1.0, decode_batch=64.0, prefill_workers=2.0, decode_workers=1.0)
    r_p = 8 / f(step(ds3, h200, EP8, prefill_only(W, 1.0)).total_s)
    r_d = 8 * 64.0 / 1000.0 / f(step(ds3, h200, EP8, decode_only(W, 64.0)).total_s)
    cap_pd = min(2 * r_p, r_d)
    below = est(ds3, h200, dis, W, LOOSE, Load("rate", 0.5 * cap_pd))
    assert f(below.requests_per_s) == approx(0.5 * cap_pd) and bool(below.feasible)
    above = est(ds3, h200, dis, W, LOOSE, Load("rate", 1.5 * cap_pd))
    assert not bool(above.feasible) and int(above.reason) == REASON["ttft"]


# --------------------------------------------------------------------------------------------------
# Rate matching
# --------------------------------------------------------------------------------------------------


def test_rate_matching_is_the_best_split(ds3: js.Model, h200: js.Hardware) -> None:
    """The rate-matched closed form output / (g_p/r_p + g_d/r_d) bounds every integer worker split."""
    cfg = DisaggConfig(EP8, EP16, prefill_batch=1.0, decode_batch=128.0)
    r_p = 8 / f(step(ds3, h200, EP8, prefill_only(W, 1.0)).total_s)
    r_d = 16 * 128.0 / 1000.0 / f(step(ds3, h200, EP16, decode_only(W, 128.0)).total_s)
    best = 1000.0 / (8 / r_p + 16 / r_d)
    assert f(est(ds3, h200, cfg, W, LOOSE).out_tok_per_s_per_gpu) == approx(best)
    splits = [f(est(ds3, h200, eqx.tree_at(lambda c: (c.prefill_workers, c.decode_workers), cfg, (p, q)), W,
                    LOOSE).out_tok_per_s_per_gpu) for p in (1.0, 2.0, 3.0, 5.0) for q in (1.0, 2.0, 3.0)]
    assert max(splits) <= best * (1 + 1e-5)
    assert max(splits) > 0.7 * best  # a near-matched integer split comes close


# --------------------------------------------------------------------------------------------------
# Transform consistency and gradients
# --------------------------------------------------------------------------------------------------


def leaves_close(a: object, b: object, rtol: float = 1e-5) -> None:
    # atol 1e-7: differences of float32 sums of ~10 ms (AFD's hidden_s = max(parts − total, 0)) cancel to
    # a few ns in one compiled program and to 0 in another; every other leaf is compared relatively.
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_allclose(np.asarray(x, dtype=float), np.asarray(y, dtype=float), rtol=rtol, atol=1e-7)


def test_jit_equals_eager(ds3: js.Model, h200: js.Hardware) -> None:
    for cfg in (AggConfig(EP8, batch=48.0, chunk=2048.0), AFDConfig(EP8, micro_batches=3.0, batch=48.0)):
        leaves_close(est(ds3, h200, cfg, W, LOOSE), js.estimate(ds3, h200, cfg, W, LOOSE))


@pytest.mark.parametrize("arch", ["agg", "agg+afd"])
def test_estimate_batch_equals_loop(ds3: js.Model, h200: js.Hardware, arch: str) -> None:
    cfg, w = RANDOM[arch](N_RANDOM, 11)
    slo = js.SLO(ttft_s=jnp.full(N_RANDOM, 1e6), tpot_s=jnp.full(N_RANDOM, 1e6))
    batched = js.estimate_batch(ds3, h200, cfg, w, slo)
    for i in range(N_RANDOM):
        leaves_close(unstack(batched, i), est(ds3, h200, unstack(cfg, i), unstack(w, i), unstack(slo, i)))


@pytest.mark.slow  # 19 s on 2 cores; the optimiser tests check relaxed gradients by finite differences
def test_gradients_finite_and_match_finite_differences(ds3: js.Model, h200: js.Hardware) -> None:
    def agg_tput(batch: jax.Array, chunk: jax.Array) -> jax.Array:
        return js.estimate(ds3, h200, AggConfig(EP8, batch=batch, chunk=chunk), W, LOOSE,
                           mode=js.SMOOTH).out_tok_per_s_per_gpu

    def afd_tput(micro_batches: jax.Array, batch: jax.Array) -> jax.Array:
        return js.estimate(ds3, h200, AFDConfig(EP8, micro_batches=micro_batches, batch=batch), W, LOOSE,
                           mode=js.SMOOTH).out_tok_per_s_per_gpu

    signs = []
    for fn, point in ((agg_tput, (64.0, 2048.0)), (afd_tput, (3.0, 64.0))):
        vg = jax.jit(jax.value_and_grad(fn, argnums=(0, 1)))
        _, grads = vg(*point)
        signs.append(f(grads[1 if fn is afd_tput else 0]))
        assert all(np.isfinite(f(g)) for g in grads)
        for i, g in enumerate(grads):
            h = 0.01 * point[i]
            up = list(point)
            dn = list(point)
            up[i] += h
            dn[i] -= h
            fd = (f(vg(*up)[0]) - f(vg(*dn)[0])) / (2 * h)
            assert f(g) == pytest.approx(fd, rel=0.05, abs=1e-3 * abs(f(vg(*point)[0])) / point[i])
    # Informative: in the memory-bound regime more running requests raise throughput per GPU.
    assert signs[0] > 0 and signs[1] > 0


def test_rate_matched_pd_prefill_queue_follows_the_load(ds3: js.Model, h200: js.Hardware) -> None:
    """Rate-matched P/D (decode_workers = 0) under Load("rate", λ): the documented pools are one decode
    instance and W_p = r_d / r_p prefill instances, r_d at the configured decode batch; prompts then
    queue as M/D/1 with S = 1/r_p per prefill instance and rho = λ·S / W_p = λ / r_d."""
    cfg = DisaggConfig(EP8, EP8, prefill_batch=1.0, decode_batch=64.0, decode_workers=0.0)
    t_p = f(step(ds3, h200, EP8, prefill_only(W, 1.0)).total_s)
    r_p = 8 / t_p
    r_d = 8 * 64.0 / 1000.0 / f(step(ds3, h200, EP8, decode_only(W, 64.0)).total_s)
    t_d = f(step(ds3, h200, EP8, decode_only(W, 64.0 * 1.0)).total_s)
    ttfts = []
    for frac in (0.1, 0.5, 0.9):
        r = est(ds3, h200, cfg, W, LOOSE, Load("rate", frac * r_d))
        # The decode pool runs λ/8 × 1000 × T(64) requests per rank (Little's law, one step from the cap).
        running = frac * r_d / 8 * 1000.0 * t_d
        t_run = f(step(ds3, h200, EP8, decode_only(W, running)).total_s)
        no_queue = t_p + kv_transfer_by_hand(W, 8, 8) + t_run  # 8 + 8 GPUs: NIC; + the first decode step
        assert f(r.requests_per_s) == approx(frac * r_d)
        rho, service = frac, 1 / r_p
        assert f(r.ttft_s) == approx(no_queue + rho * service / (2 * (1 - rho)), rel=1e-4)
        ttfts.append(f(r.ttft_s))
    assert ttfts[0] < 1.1 * no_queue and ttfts[0] < ttfts[1] < ttfts[2]


# --------------------------------------------------------------------------------------------------
# Closed-loop groups, prefill apart from decode, request overhead, the P/D bottleneck
# --------------------------------------------------------------------------------------------------

SHORT = js.Workload(input_tokens=1024.0, output_tokens=256.0)


def test_synchronised_group_prefilled_in_one_iteration(ds3: js.Model, h200: js.Hardware) -> None:
    """Concurrency 48 on DP8: 6 requests per rank arrive together each round; 6 × 1024 = 6144 tokens fit the
    8192 budget, so the whole group is prefilled in one iteration beside the 6 decodes: TTFT = T(6 decodes +
    6144 prefill tokens), and that burst comes once per 256 decode steps."""
    cfg = AggConfig(EP8, batch=64.0, chunk=8192.0)
    r = est(ds3, h200, cfg, SHORT, LOOSE, Load("concurrency", 48.0))
    t_dec = f(step(ds3, h200, EP8, decode_only(SHORT, 6.0)).total_s)
    t_group = f(step(ds3, h200, EP8, burst(SHORT, 6.0, 6144.0)).total_s)
    assert f(r.decode_batch) == approx(6.0)
    assert f(r.ttft_s) == approx(t_group)
    assert f(r.tpot_s) == approx(t_dec + (t_group - t_dec) / 256.0)
    # The same load arriving apart (a Poisson rate with the same running batch) sees one prompt per burst.
    single = f(step(ds3, h200, EP8, burst(SHORT, 6.0, 1024.0)).total_s)
    assert t_group > 2 * single  # the group's iteration is much longer than a lone prompt's


def test_prefill_apart_from_decode_waits_behind_its_group(ds3: js.Model, h200: js.Hardware) -> None:
    """SGLang-style scheduling (mixed_prefill = 0) under concurrency 256 on DP8: 32 prompts per rank × 1024 =
    32768 tokens = 4 prefill batches of 8192 tokens, each run alone (no decodes). Prompt j waits for the batches
    before it: mean TTFT = (1 + (4 − 1)/2) batches = 2.5 × T(8192 alone). Decodes pause for the 4 batches every
    256 steps: TPOT = T(32 decodes) + 4/256 × T(8192 alone)."""
    cfg = AggConfig(EP8, batch=64.0, chunk=8192.0, mixed_prefill=0.0)
    r = est(ds3, h200, cfg, SHORT, LOOSE, Load("concurrency", 256.0))
    t_alone = f(step(ds3, h200, EP8, burst(SHORT, 32.0, 8192.0, decode_share=0.0)).total_s)
    t_dec = f(step(ds3, h200, EP8, decode_only(SHORT, 32.0)).total_s)
    assert f(r.ttft_s) == approx(2.5 * t_alone)
    assert f(r.tpot_s) == approx(t_dec + 4.0 / 256.0 * t_alone)
    # Mixed into the decodes (the default), the group's sub-groups keep their spacing: one burst each.
    mixed_r = est(ds3, h200, AggConfig(EP8, batch=64.0, chunk=8192.0), SHORT, LOOSE, Load("concurrency", 256.0))
    t_mix = f(step(ds3, h200, EP8, burst(SHORT, 32.0, 8192.0)).total_s)
    assert f(mixed_r.ttft_s) == approx(t_mix)
    assert f(mixed_r.tpot_s) == approx(t_dec + 4.0 / 256.0 * (t_mix - t_dec))
    # Without a synchronised closed loop there is no group to wait behind.
    sat = est(ds3, h200, cfg, SHORT, LOOSE)
    t_one = f(step(ds3, h200, EP8, burst(SHORT, 64.0, 1024.0, decode_share=0.0)).total_s)
    assert f(sat.ttft_s) == approx(t_one)


def test_measured_first_round_is_a_wave_weighted_by_the_rounds(ds3: js.Model, h200: js.Hardware) -> None:
    """Concurrency 256 on DP8 with prefill mixed into the decodes: in steady state each 8192-token sub-group
    of a rank's 32 prompts has its own burst (TTFT = one burst). When the measurement starts with the clients
    sending together, the first round prefills the rank's 32 × 1024 tokens as 4 bursts back to back: prompts
    wait 0, 1, 2, 3 bursts behind the others, 1.5 on average, which the mean over R rounds counts once."""
    cfg = AggConfig(EP8, batch=64.0, chunk=8192.0)
    t_mix = f(step(ds3, h200, EP8, burst(SHORT, 32.0, 8192.0)).total_s)
    steady = est(ds3, h200, cfg, SHORT, LOOSE, Load("concurrency", 256.0))
    assert f(steady.ttft_s) == approx(t_mix)
    for rounds in (1.0, 4.0, 20.0):
        r = est(ds3, h200, cfg, SHORT, LOOSE, Load("concurrency", 256.0, rounds))
        assert f(r.ttft_s) == approx(t_mix + 1.5 * t_mix / rounds)
        assert f(r.tpot_s) == approx(f(steady.tpot_s))  # the wave changes TTFT only
        assert f(r.requests_per_s) == approx(f(steady.requests_per_s))
    # A group that fits one burst (6 × 1024 ≤ 8192 per rank) has nobody to wait behind.
    small = [est(ds3, h200, cfg, SHORT, LOOSE, Load("concurrency", 48.0, rounds)) for rounds in (0.0, 20.0)]
    assert f(small[1].ttft_s) == approx(f(small[0].ttft_s))
    # Prefill apart from decode (SGLang) already waits behind its group every round: rounds change nothing.
    apart = AggConfig(EP8, batch=64.0, chunk=8192.0, mixed_prefill=0.0)
    both = [est(ds3, h200, apart, SHORT, LOOSE, Load("concurrency", 256.0, rounds)) for rounds in (0.0, 20.0)]
    assert f(both[1].ttft_s) == approx(f(both[0].ttft_s))
    # Other loads have no synchronised start.
    for load in (Load(rounds=20.0), Load("rate", 1.0, 20.0)):
        assert f(est(ds3, h200, cfg, SHORT, LOOSE, load).ttft_s) == approx(
            f(est(ds3, h200, cfg, SHORT, LOOSE, Load(load.kind, load.value)).ttft_s))


def test_agg_afd_first_round_is_a_wave_of_full_chunk_bursts(ds3: js.Model, h200: js.Hardware) -> None:
    """Agg+AFD (DP8 attention, EP8 FFN) at concurrency 256: a rank's 32 prompts of 1024 tokens fill 4 bursts of
    8192 tokens in the synchronised first round, so prompts wait 1.5 such AFD iterations on average, counted once
    in R rounds; TPOT and the steady state are untouched, and other loads have no first round."""
    cfg = AFDConfig(EP8, micro_batches=2.0, batch=64.0, chunk=8192.0)
    t_wave = f(afd_it(ds3, h200, EP8, 2.0, burst(SHORT, 32.0, 8192.0)).total_s)
    steady = est(ds3, h200, cfg, SHORT, LOOSE, Load("concurrency", 256.0))
    for rounds in (1.0, 20.0):
        r = est(ds3, h200, cfg, SHORT, LOOSE, Load("concurrency", 256.0, rounds))
        assert f(r.ttft_s) - f(steady.ttft_s) == approx(1.5 * t_wave / rounds, rel=1e-4)
        assert f(r.tpot_s) == approx(f(steady.tpot_s))
    # 6 prompts per rank fit one burst: nobody to wait behind.
    small = [est(ds3, h200, cfg, SHORT, LOOSE, Load("concurrency", 48.0, rounds)) for rounds in (0.0, 20.0)]
    assert f(small[1].ttft_s) == approx(f(small[0].ttft_s))
    for load in (Load(rounds=20.0), Load("rate", 1.0, 20.0)):
        assert f(est(ds3, h200, cfg, SHORT, LOOSE, load).ttft_s) == approx(
            f(est(ds3, h200, cfg, SHORT, LOOSE, Load(load.kind, load.value)).ttft_s))


def test_spread_arrivals_prefill_one_prompt_per_burst_after_a_first_round_wave(ds3: js.Model,
                                                                                h200: js.Hardware) -> None:
    """Concurrency 256 on DP8 with random lengths (`arrivals="spread"`): after the first round a rank's 32
    requests arrive one by one, each just after the iteration its predecessor finished in has started, so it
    waits for that decode iteration and is then prefilled alone beside the 32 decodes (1024 tokens; 32 × 1024 /
    256 = 128 per decode step on average, so 1 / 8 of the steps carry one). The first round is still a wave:
    32 × 1024 tokens in 4 full 8192-token bursts, 1.5 bursts of waiting on average, counted once in R rounds,
    the round in which nobody waits for an iteration in flight. Between rounds the 256 clients also queue for the
    prefill budget as clients of a closed network: 8 ranks, each prompt taking 1024 / 8192 of a full-budget
    iteration, the rest of each cycle (256 decode steps) elsewhere (`queueing.closed_network_wait`)."""
    from jaxsim.serve.queueing import closed_network_wait
    cfg = AggConfig(EP8, batch=64.0, chunk=8192.0)
    t_dec = f(step(ds3, h200, EP8, decode_only(SHORT, 32.0)).total_s)
    t_one = f(step(ds3, h200, EP8, burst(SHORT, 32.0, 1024.0)).total_s)
    t_group = f(step(ds3, h200, EP8, burst(SHORT, 32.0, 8192.0)).total_s)
    tpot = t_dec + 0.125 * (t_one - t_dec)

    def queued(t_full: float, step_s: float) -> float:
        return f(closed_network_wait(Load("concurrency", 256.0), 8.0, t_full / 8.0, 256.0 * step_s))

    q = queued(t_group, tpot)
    assert q > 0.0
    for rounds in (0.0, 1.0, 10.0):
        r = est(ds3, h200, cfg, SHORT, LOOSE, Load("concurrency", 256.0, rounds, arrivals="spread"))
        share = 1.0 / rounds if rounds else 0.0
        assert f(r.ttft_s) == approx(t_one + (1.0 - share) * (t_dec + q) + share * 1.5 * t_group)
        assert f(r.tpot_s) == approx(tpot)
    # Prefill apart from decode (SGLang): no group wave every round any more, only in the first.
    apart = AggConfig(EP8, batch=64.0, chunk=8192.0, mixed_prefill=0.0)
    t_alone = f(step(ds3, h200, EP8, prefill_only(SHORT, 1.0)).total_s)
    t_alone_group = f(step(ds3, h200, EP8, prefill_only(SHORT, 8.0)).total_s)
    for rounds in (0.0, 10.0):
        r = est(ds3, h200, apart, SHORT, LOOSE, Load("concurrency", 256.0, rounds, arrivals="spread"))
        share = 1.0 / rounds if rounds else 0.0
        q_apart = queued(t_alone_group, f(r.tpot_s))
        assert f(r.ttft_s) == approx(t_alone + (1.0 - share) * (t_dec + q_apart) + share * 1.5 * t_alone_group,
                                     rel=1e-4)
    # A scheduler that polls for new requests every K decode iterations (SGLang's --scheduler-recv-interval):
    # the predecessor ends at a uniform place in the cycle, so the wait is (K + 1) / 2 iterations, not 1.
    for k in (10.0, 30.0):
        polled = eqx.tree_at(lambda c: c.recv_interval, cfg, k)
        r = est(ds3, h200, polled, SHORT, LOOSE, Load("concurrency", 256.0, 10.0, arrivals="spread"))
        assert f(r.ttft_s) == approx(t_one + 0.9 * ((k + 1.0) / 2.0 * t_dec + q) + 0.1 * 1.5 * t_group)
    # One client: nobody else keeps the engine busy, nobody to wave with.
    one = AggConfig(dep(tp=8, ep=8), batch=64.0, chunk=8192.0)
    alone = est(ds3, h200, one, SHORT, LOOSE, Load("concurrency", 1.0, 10.0, arrivals="spread"))
    assert f(alone.ttft_s) == approx(f(step(ds3, h200, dep(tp=8, ep=8), burst(SHORT, 1.0, 1024.0)).total_s))
    with pytest.raises(ValueError, match="arrivals"):
        Load("concurrency", 8.0, arrivals="together")


def test_attention_dp_balancing_holds_prompts_that_arrive_apart(ds3: js.Model, h200: js.Hardware) -> None:
    """TensorRT-LLM's attention-DP balancing (`adp_balance_iters`): a prompt arriving apart is held until all
    DP ranks have one or the timeout passes. DP8, 16 clients per rank, random lengths: each rank sees
    r = rps / 8 prompts/s, the other 7 ranks all have one after H(7) / r on average, so a hold lasts
    W = min(timeout, H(7) / r); its opener waits W and the 8 r W prompts arriving during it W / 2, so the mean
    is W (1 + 4 r W) / (1 + 8 r W), weighted by the 9 rounds of 10 after the first (whose wave reaches every
    rank at once). TPOT and throughput are untouched; equal-length groups and saturation are never held."""
    base = AggConfig(EP8, batch=16.0, chunk=8192.0)
    h7 = sum(1.0 / k for k in range(1, 8))
    bound = set()
    for iters in (2.0, 500.0):  # the timeout binds, then the time until every rank has a prompt
        cfg = eqx.tree_at(lambda c: c.adp_balance_iters, base, iters)
        for load, weight in ((Load("concurrency", 128.0, 10.0, arrivals="spread"), 0.9), (Load("rate", 4.0), 1.0)):
            off, on = (est(ds3, h200, c, SHORT, LOOSE, load) for c in (base, cfg))
            r, timeout = f(off.requests_per_s) / 8.0, iters * f(off.tpot_s)
            bound.add(timeout < h7 / r)
            hold = min(timeout, h7 / r)
            wait = hold * (1.0 + 4.0 * r * hold) / (1.0 + 8.0 * r * hold)
            assert f(on.ttft_s) - f(off.ttft_s) == approx(weight * wait, rel=1e-4)
            assert (f(on.tpot_s), f(on.requests_per_s)) == (approx(f(off.tpot_s)), approx(f(off.requests_per_s)))
        for load in (Load("concurrency", 128.0, 10.0), Load()):
            assert f(est(ds3, h200, cfg, SHORT, LOOSE, load).ttft_s) == approx(
                f(est(ds3, h200, base, SHORT, LOOSE, load).ttft_s))
    assert bound == {True, False}
    # One rank: nobody to balance with.
    one = AggConfig(dep(tp=8, ep=8), batch=64.0, chunk=8192.0)
    load = Load("concurrency", 16.0, 10.0, arrivals="spread")
    held = eqx.tree_at(lambda c: c.adp_balance_iters, one, 60.0)
    assert f(est(ds3, h200, held, SHORT, LOOSE, load).ttft_s) == approx(f(est(ds3, h200, one, SHORT, LOOSE, load).ttft_s))


def test_pd_first_round_queues_each_prefill_ranks_share(ds3: js.Model, h200: js.Hardware) -> None:
    """P/D, 2 prefill instances of DP8 (16 ranks, 1 prompt per iteration), 4 decode instances with room for
    all, concurrency 64: in the synchronised first round each rank gets 4 prompts and runs them one after
    another, so they wait 0, 1, 2, 3 prefill iterations, 1.5 on average; over R rounds that adds 1.5 t_p / R."""
    cfg = DisaggConfig(EP8, EP8, prefill_batch=1.0, decode_batch=64.0, prefill_workers=2.0, decode_workers=4.0)
    t_p = f(step(ds3, h200, EP8, prefill_only(SHORT, 1.0)).total_s)
    steady = est(ds3, h200, cfg, SHORT, LOOSE, Load("concurrency", 64.0))
    for rounds in (1.0, 20.0):
        r = est(ds3, h200, cfg, SHORT, LOOSE, Load("concurrency", 64.0, rounds))
        assert f(r.ttft_s) - f(steady.ttft_s) == approx(1.5 * t_p / rounds, rel=1e-4)
        assert f(r.tpot_s) == approx(f(steady.tpot_s))


def test_bursty_prefill_is_cheaper_than_spread_for_a_small_moe_batch(ds3: js.Model, h200: js.Hardware) -> None:
    """Jensen on expert-weight traffic: 2 requests per rank with 1024-token prompts and 128-token outputs.
    Spreading 2 × 1024 / 128 = 16 prompt tokens over every iteration makes each one touch far more experts
    than 2 decodes do; prefilling each prompt in one iteration leaves most iterations decode-only."""
    w = js.Workload(input_tokens=1024.0, output_tokens=128.0)
    r = est(ds3, h200, AggConfig(EP8, batch=2.0, chunk=8192.0), w, LOOSE)
    spread = f(step(ds3, h200, EP8, mixed(w, 2.0, 8192.0)).total_s)
    t, _, t_dec, k = agg_by_hand(ds3, h200, EP8, w, 2.0, 8192.0)
    assert k == approx(2.0 / 128.0)  # one 1024-token burst per prompt, 2 prompts per 128 steps
    assert f(r.tpot_s) == approx(t)
    assert t_dec < f(r.tpot_s) < spread


def test_request_overhead_adds_to_ttft_only(ds3: js.Model, h200: js.Hardware) -> None:
    """The fixed per-request time adds to TTFT; under a closed loop it also lengthens each client's cycle, so the
    clients queue a little less at the prefill pool (P/D): the TTFT grows by at most the overhead, barely less."""
    load = Load("concurrency", 64.0)
    for cfg in (AggConfig(EP8, batch=64.0, chunk=8192.0),
                DisaggConfig(EP8, EP8, prefill_batch=1.0, decode_batch=64.0, prefill_workers=1.0, decode_workers=1.0)):
        r0 = est(ds3, h200, cfg, SHORT, LOOSE, load)
        r1 = est(ds3, h200, eqx.tree_at(lambda c: c.request_overhead_s, cfg, 0.1), SHORT, LOOSE, load)
        assert 0.1 - 1e-3 <= f(r1.ttft_s) - f(r0.ttft_s) <= 0.1 + 1e-6
        assert f(r1.tpot_s) == approx(f(r0.tpot_s))
        assert f(r1.requests_per_s) == approx(f(r0.requests_per_s))


def test_trtllm_batch_waiting_holds_prompts_until_enough_tokens_or_the_timeout(ds3: js.Model,
                                                                                 h200: js.Hardware) -> None:
    """TensorRT-LLM batch waiting (`batch_wait_iters`, `batch_wait_tokens`): one rank (TP8), 64 clients, random
    lengths. Prompts of 1024 tokens arrive at r = rps; with the mark at 6,553 tokens and 64 decode tokens, k =
    (6553 − 64) / 1024 ≈ 6.3 prompts end a hold early, after (k − 1) / r; else the timeout (iterations × step).
    A hold of W keeps its arrivals W (1 + rW / 2) / (1 + rW) on average, over the 9 rounds of 10 after the first;
    TPOT is untouched; equal-length groups are not held."""
    tp8 = dep(tp=8, ep=8)
    base = AggConfig(tp8, batch=64.0, chunk=8192.0)
    load = Load("concurrency", 64.0, 10.0, arrivals="spread")
    off = est(ds3, h200, base, SHORT, LOOSE, load)
    r, step_s = f(off.requests_per_s), f(off.tpot_s)
    k = (6553.0 - 64.0) / 1024.0
    for iters in (5.0, 1000.0):  # the timeout binds, then the token mark
        cfg = eqx.tree_at(lambda c: (c.batch_wait_iters, c.batch_wait_tokens), base, (iters, 6553.0))
        on = est(ds3, h200, cfg, SHORT, LOOSE, load)
        hold = min(iters * step_s, (k - 1.0) / r)
        assert f(on.ttft_s) - f(off.ttft_s) == approx(0.9 * hold * (1 + r * hold / 2) / (1 + r * hold), rel=1e-4)
        assert f(on.tpot_s) == approx(f(off.tpot_s))
        grouped = Load("concurrency", 64.0, 10.0)
        assert f(est(ds3, h200, cfg, SHORT, LOOSE, grouped).ttft_s) == approx(
            f(est(ds3, h200, base, SHORT, LOOSE, grouped).ttft_s))
    # One prompt already reaches the mark: nothing to wait for.
    low = eqx.tree_at(lambda c: (c.batch_wait_iters, c.batch_wait_tokens), base, (40.0, 1000.0))
    assert f(est(ds3, h200, low, SHORT, LOOSE, load).ttft_s) == approx(f(off.ttft_s))


def exact_mva_wait(n: int, servers: int, service: float, think: float) -> float:
    """Exact mean-value analysis of a closed network: one FCFS station of `servers` exponential servers
    (marginal probabilities), N clients, think time elsewhere; the mean wait in the station's queue."""
    p = [1.0] + [0.0] * n  # P(j clients at the station), population 0
    r = 0.0
    for k in range(1, n + 1):
        # an arrival that finds i = j − 1 clients waits for i − c + 1 departures when all servers are busy
        r = service * (1.0 + sum(max(j - servers, 0) * p[j - 1] for j in range(1, k + 1)) / servers)
        x = k / (r + think)
        new = [0.0] * (n + 1)
        for j in range(1, k + 1):
            new[j] = x * service / min(j, servers) * p[j - 1]
        new[0] = 1.0 - sum(new[1:])
        p = new
    return r - service


def test_closed_network_wait_follows_mean_value_analysis() -> None:
    """The approximate MVA wait against the exact one: no wait for one client; one server near its knee (N* =
    (S + Z) / S = 78) within 30 % (Schweitzer's approximation is worst there); eight servers (Seidmann's
    single-server equivalent) above the exact wait at the knee, by less than 3×, and within 25 % past it; the
    asymptote far beyond."""
    from jaxsim.serve.queueing import closed_network_wait

    def approx_wait(n: float, c: float, s: float, z: float) -> float:
        return f(closed_network_wait(Load("concurrency", n), c, s, z))

    assert approx_wait(1.0, 1.0, 0.3, 23.0) == approx(0.0)
    for n in (64, 80):
        assert approx_wait(n, 1.0, 0.3, 23.0) == approx(exact_mva_wait(n, 1, 0.3, 23.0), rel=0.3)
    knee = exact_mva_wait(64, 8, 2.4, 23.0)
    assert knee < approx_wait(64.0, 8.0, 2.4, 23.0) < 3.0 * knee
    assert approx_wait(100.0, 8.0, 2.4, 23.0) == approx(exact_mva_wait(100, 8, 2.4, 23.0), rel=0.25)
    far = f(closed_network_wait(Load("concurrency", 2000.0), 1.0, 0.3, 23.0))
    assert far == approx(2000 * 0.3 - 23.0 - 0.3, rel=1e-3)
    for load in (Load(), Load("rate", 1.0)):
        assert f(closed_network_wait(load, 1.0, 0.3, 23.0)) == 0.0


def test_pd_clients_queue_at_the_prefill_pool_near_its_knee(ds3: js.Model, h200: js.Hardware) -> None:
    """P/D below the prefill pool's capacity but near it: the asymptotic bound says no wait, the closed network
    does (8 prefill ranks, one 8k prompt each per iteration; the clients spend the rest of each cycle decoding
    64 tokens on 4 decode instances with room for all)."""
    from jaxsim.serve.queueing import closed_network_wait
    w = js.Workload(input_tokens=8000.0, output_tokens=64.0)
    cfg = DisaggConfig(EP8, EP8, prefill_batch=1.0, decode_batch=64.0, prefill_workers=1.0, decode_workers=4.0)
    t_p = f(step(ds3, h200, EP8, prefill_only(w, 1.0)).total_s)
    for n in (6.0, 12.0):  # the knee is at about 8 × (1.1 s + 1 s) / 1.1 s ≈ 16 clients
        r = est(ds3, h200, cfg, w, LOOSE, Load("concurrency", n))
        t_d = f(step(ds3, h200, EP8, decode_only(w, n / 32)).total_s)
        unqueued = t_p + kv_transfer_by_hand(w, 8, 8) + t_d
        rest = unqueued - t_p + 63 * t_d
        wait = f(closed_network_wait(Load("concurrency", n), 8.0, t_p, rest))
        assert n / (8 / t_p) < unqueued + 63 * t_d  # below the knee: the asymptotic bound adds nothing
        assert wait > 0.0
        assert f(r.ttft_s) == approx(unqueued + wait, rel=1e-4)


def test_pd_closed_loop_bound_by_the_slower_pool_obeys_littles_law(ds3: js.Model, h200: js.Hardware) -> None:
    """One prefill instance (1 prompt per rank per iteration) feeding 4 decode instances with room for all:
    the prefill pool is the bottleneck, so N requests circulate at its capacity r_p and, by Little's law, each
    spends N / r_p in the system; TTFT takes what the unqueued latency leaves (the closed-network approximation
    meets this asymptote to within a small part of one prompt's service: 1e-4 of the wait here)."""
    w = js.Workload(input_tokens=8000.0, output_tokens=64.0)
    cfg = DisaggConfig(EP8, EP8, prefill_batch=1.0, decode_batch=64.0, prefill_workers=1.0, decode_workers=4.0)
    t_p = f(step(ds3, h200, EP8, prefill_only(w, 1.0)).total_s)
    r_p = 8 / t_p
    n = 512.0
    r = est(ds3, h200, cfg, w, LOOSE, Load("concurrency", n))
    t_d = f(step(ds3, h200, EP8, decode_only(w, n / 32)).total_s)  # 512 requests over 4 × 8 decode ranks
    unqueued = t_p + kv_transfer_by_hand(w, 8, 8) + t_d
    assert f(r.requests_per_s) == approx(r_p)  # precondition: prefill-bound
    assert f(r.ttft_s) == approx(n / r_p - 63 * t_d, rel=2e-4)
    assert f(r.ttft_s) > unqueued
    assert f(r.requests_per_s) * f(r.request_latency_s) == approx(n, rel=2e-4)

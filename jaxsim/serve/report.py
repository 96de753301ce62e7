"""Metrics in report units (ms, GiB, tokens/s) as plain Python values: the keys `jaxsim estimate --json`
prints, shared by every command that reports a configuration."""

from __future__ import annotations

from typing import Any

import numpy as np

from jaxsim.serve.metrics import REASONS, Metrics

GIB = float(2**30)


def metrics_report(r: Metrics) -> dict[str, Any]:
    """One configuration's metrics (scalar leaves) as a JSON-ready dict."""

    def f(x: Any) -> float:
        return float(np.asarray(x))

    pools = {"prefill": r.prefill_memory_bytes, "decode": r.decode_memory_bytes,
             "attention": r.attention_memory_bytes, "ffn": r.ffn_memory_bytes}
    gpus = {"prefill": r.prefill_gpus, "decode": r.decode_gpus, "attention": r.attention_gpus, "ffn": r.ffn_gpus}
    return {
        "ttft_ms": f(r.ttft_s) * 1e3,
        "tpot_ms": f(r.tpot_s) * 1e3,
        "tokens_per_s_per_gpu": f(r.out_tok_per_s_per_gpu),
        "tokens_per_s_per_user": f(r.tok_per_s_per_user),
        "request_latency_ms": f(r.request_latency_s) * 1e3,
        "requests_per_s": f(r.requests_per_s),
        "memory_gib_per_gpu": max(f(v) for v in pools.values()) / GIB,
        "memory_gib_per_gpu_by_pool": {k: f(v) / GIB for k, v in pools.items() if f(v) > 0},
        "memory_frac": f(r.memory_frac),
        "gpus": f(r.gpus),
        "gpus_by_pool": {k: f(v) for k, v in gpus.items() if f(v) > 0},
        "decode_batch_per_rank": f(r.decode_batch),
        "mfu": f(r.mfu),
        "feasible": bool(np.asarray(r.feasible)),
        "reason": REASONS[int(np.asarray(r.reason))],
        "violation": f(r.violation),
        "breakdown_ms": {k.removesuffix("_s"): f(getattr(r.breakdown, k)) * 1e3
                         for k in r.breakdown.__dataclass_fields__},
    }

"""Metrics in report units (ms, GiB, tokens/s) as plain Python values: the keys `jaxsim estimate --json`
prints, shared by every command that reports a configuration (estimate, sweep, optimize)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from jaxsim.serve.metrics import REASONS, Breakdown, Metrics

GIB = float(2**30)
BREAKDOWN_FIELDS = tuple(Breakdown.__dataclass_fields__)
FLAT_FIELDS = tuple(f for f in Metrics.__dataclass_fields__ if f != "breakdown") + tuple(
    f"breakdown_{k}" for k in BREAKDOWN_FIELDS)


def flatten(r: Metrics) -> dict[str, Any]:
    """Every field of `Metrics` under a flat name (`breakdown_<part>` for the breakdown)."""
    out = {f: getattr(r, f) for f in Metrics.__dataclass_fields__ if f != "breakdown"}
    out.update({f"breakdown_{k}": getattr(r.breakdown, k) for k in BREAKDOWN_FIELDS})
    return out


def metrics_report(r: Metrics | Mapping[str, Any]) -> dict[str, Any]:
    """One configuration's metrics (a scalar `Metrics`, or its `flatten`ed form, e.g. a sweep row) as a
    JSON-ready dict."""
    flat = flatten(r) if isinstance(r, Metrics) else r

    def f(key: str) -> float:
        return float(np.asarray(flat[key]))

    pools = ("prefill", "decode", "attention", "ffn")
    mem = {p: f(f"{p}_memory_bytes") for p in pools}
    gpus = {p: f(f"{p}_gpus") for p in pools}
    return {
        "ttft_ms": f("ttft_s") * 1e3,
        "tpot_ms": f("tpot_s") * 1e3,
        "tokens_per_s_per_gpu": f("out_tok_per_s_per_gpu"),
        "tokens_per_s_per_user": f("tok_per_s_per_user"),
        "request_latency_ms": f("request_latency_s") * 1e3,
        "requests_per_s": f("requests_per_s"),
        "memory_gib_per_gpu": max(mem.values()) / GIB,
        "memory_gib_per_gpu_by_pool": {k: v / GIB for k, v in mem.items() if v > 0},
        "memory_frac": f("memory_frac"),
        "gpus": f("gpus"),
        "gpus_by_pool": {k: v for k, v in gpus.items() if v > 0},
        "decode_batch_per_rank": f("decode_batch"),
        "mfu": f("mfu"),
        "feasible": bool(np.asarray(flat["feasible"])),
        "reason": REASONS[int(np.asarray(flat["reason"]))],
        "violation": f("violation"),
        "breakdown_ms": {k.removesuffix("_s"): f(f"breakdown_{k}") * 1e3 for k in BREAKDOWN_FIELDS},
    }

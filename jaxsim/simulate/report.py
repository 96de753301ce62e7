"""What `jaxsim simulate` writes: a percentile table, a latency CDF plot and a Chrome trace of the first
iterations (trace-event JSON; open it in https://ui.perfetto.dev or chrome://tracing).

Trace tracks: one per pool (agg: the simulated group; P/D: prefill and decode pools). For AFD, each
iteration is also drawn as its `M` micro-batches on an attention track, a link track (A→F then F→A) and an
FFN track: the iteration's per-part totals from `afd_iteration` split evenly over the micro-batches and laid
out as a ping-pong, scaled to the iteration's duration — a schematic of where the time goes, not a
per-layer schedule.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jax
import numpy as np

from jaxsim.serve.afd import AFDConfig, afd_iteration
from jaxsim.simulate.engine import POOL_AGG, POOL_DECODE, POOL_PREFILL, TIMELINE_FIELDS, SimResult
from jaxsim.simulate.stats import STAT_NAMES, Summary
from jaxsim.spec import Hardware, Model, StepBatch

POOL_NAMES = {POOL_AGG: "serving group (one attention-DP rank)", POOL_PREFILL: "prefill pool",
              POOL_DECODE: "decode pool"}


def percentile_rows(s: Summary) -> dict[str, dict[str, float]]:
    """{metric: {mean, p50, p90, p99}} in ms for TTFT, TPOT and end-to-end latency (one configuration)."""
    out = {}
    for label, field in (("TTFT", s.ttft_s), ("TPOT", s.tpot_s), ("E2E", s.e2e_s)):
        v = np.asarray(field, np.float64).reshape(-1)
        out[label] = {k: float(x) * 1e3 for k, x in zip(STAT_NAMES, v, strict=True)}
    return out


def cdf_plot(r: SimResult, path: str | Path, title: str, warmup_frac: float = 0.0) -> Path:
    """CDFs of TTFT, TPOT and end-to-end latency of the completed requests (one configuration)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    arrival, first, finish = (np.asarray(x, np.float64) for x in (r.arrival_s, r.first_token_s, r.finish_s))
    out = np.asarray(r.output, np.float64)
    n = int(np.asarray(r.count))
    i = np.arange(arrival.shape[0])
    keep = np.isfinite(finish) & (i >= np.floor(warmup_frac * n)) & (i < np.ceil((1 - warmup_frac) * n))
    series = {"TTFT": (first - arrival)[keep], "TPOT": ((finish - first) / np.maximum(out - 1, 1))[keep & (out > 1)],
              "end-to-end": (finish - arrival)[keep]}
    fig, axes = plt.subplots(1, 3, figsize=(13, 4), dpi=110)
    for ax, (name, v) in zip(axes, series.items(), strict=True):
        v = np.sort(v) * 1e3
        if v.size:
            ax.plot(v, np.arange(1, v.size + 1) / v.size, lw=1.6)
            for q in (50, 90, 99):
                ax.axvline(np.percentile(v, q), ls=":", lw=0.9, color="grey")
        ax.set_xlabel(f"{name} (ms)")
        ax.set_ylim(0, 1.0)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("fraction of requests")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path)
    plt.close(fig)
    return path


def _afd_parts(m: Model, hw: Hardware, cfg: AFDConfig, rows: np.ndarray) -> np.ndarray:
    """(attention, A→F, FFN, F→A) seconds per iteration, totals over layers and micro-batches."""
    col = {k: i for i, k in enumerate(TIMELINE_FIELDS)}
    batch = StepBatch(decode_requests=rows[:, col["decode_requests"]],
                      decode_context=rows[:, col["decode_context"]],
                      decode_context_spread=rows[:, col["decode_context_spread"]],
                      prefill_tokens=rows[:, col["prefill_tokens"]], prefill_context=rows[:, col["prefill_context"]],
                      prefill_sequences=rows[:, col["prefill_sequences"]])
    it = jax.jit(jax.vmap(lambda b: afd_iteration(m, hw, cfg.deploy, cfg.micro_batches, b)))(batch)
    bd = it.breakdown
    attn = bd.attention_s + bd.gemm_s + bd.tp_comm_s + bd.other_s
    return np.stack([np.asarray(x, np.float64) for x in (attn, bd.dispatch_s, bd.moe_s, bd.combine_s)], axis=1)


def chrome_trace(r: SimResult, path: str | Path, m: Model | None = None, hw: Hardware | None = None,
                 cfg: Any = None) -> Path:
    """Write the recorded first iterations (one configuration) as Chrome trace-event JSON."""
    rows = np.asarray(r.timeline, np.float64)
    rows = rows[np.isfinite(rows[:, 1])]
    col = {k: i for i, k in enumerate(TIMELINE_FIELDS)}
    events: list[dict[str, Any]] = [{"name": "process_name", "ph": "M", "pid": 0, "args": {"name": "jaxsim simulate"}}]
    tids = {POOL_AGG: 1, POOL_PREFILL: 2, POOL_DECODE: 3}
    for pool, tid in tids.items():
        if (rows[:, col["pool"]] == pool).any():
            events.append({"name": "thread_name", "ph": "M", "pid": 0, "tid": tid, "args": {"name": POOL_NAMES[pool]}})
    for k, row in enumerate(rows):
        pool = float(row[col["pool"]])
        dec, pre = row[col["decode_requests"]], row[col["prefill_tokens"]]
        name = "prefill" if pool == POOL_PREFILL else ("mixed" if pre > 0 and dec > 0 else
                                                       "prefill chunk" if pre > 0 else "decode")
        events.append({"name": name, "cat": "iteration", "ph": "X", "pid": 0, "tid": tids.get(pool, 1),
                       "ts": row[col["start_s"]] * 1e6, "dur": row[col["duration_s"]] * 1e6,
                       "args": {"iteration": k, "decode_requests": dec, "prefill_tokens": pre,
                                "prefill_sequences": row[col["prefill_sequences"]], "kv_frac": row[col["kv_frac"]],
                                "decode_context": row[col["decode_context"]]}})
    if isinstance(cfg, AFDConfig) and m is not None and hw is not None:
        running = rows[rows[:, col["pool"]] != POOL_PREFILL]
        if len(running):
            parts = _afd_parts(m, hw, cfg, running)
            M = max(round(float(cfg.micro_batches)), 1)
            names = ("attention", "A→F", "FFN (experts)", "F→A")
            track = {"attention": 11, "A→F": 12, "FFN (experts)": 13, "F→A": 12}
            for name, tid in (("attention GPUs", 11), ("A↔F link", 12), ("FFN GPUs", 13)):
                events.append({"name": "thread_name", "ph": "M", "pid": 0, "tid": tid, "args": {"name": name}})
            for row, p in zip(running, parts, strict=True):
                per = p / M
                # Ping-pong layout: micro-batch j's attention after j − 1's; its transfer, experts and return
                # follow it. Scaled so the schematic spans the iteration.
                span = M * per[0] + per[1] + per[2] + per[3]
                scale = row[col["duration_s"]] / span if span > 0 else 0.0
                for j in range(M):
                    t = row[col["start_s"]] + j * per[0] * scale
                    for name, d in zip(names, per, strict=True):
                        events.append({"name": f"{name} µb{j}", "cat": "afd", "ph": "X", "pid": 0, "tid": track[name],
                                       "ts": t * 1e6, "dur": d * scale * 1e6})
                        t += d * scale
    path = Path(path)
    path.write_text(json.dumps({"traceEvents": events, "displayTimeUnit": "ms"}))
    return path

"""Request-level simulation: arrivals, queues, continuous batching and latency percentiles, vectorized.

`simulate` runs one configuration (a pure `lax.scan` of scheduler steps priced by the step model);
`simulate_batch` runs many at once (`vmap`, one compilation per architecture and `Settings`);
`summarize` turns a raw result into TTFT / TPOT / end-to-end percentiles, throughput and KV use.

    import numpy as np, jaxsim as js
    from jaxsim import simulate as sim
    m, hw, w = js.load_model("deepseek-v3"), js.load_hardware("h200-sxm"), js.load_workload("chat")
    d = js.Deployment(tp=1, dp=8, ep=8, gemm_weight_bytes=1.0, moe_weight_bytes=1.0, kv_bytes=1.0)
    cfg = js.AggConfig(d, batch=64.0, chunk=8192.0)
    traffic = sim.Traffic(arrival="closed", concurrency=np.array([64.0, 256.0, 512.0, 1024.0], np.float32))
    s = sim.simulate_summary(m, hw, cfg, w, traffic, seed=0,
                             settings=sim.Settings(requests=1000, slots=64, max_iterations=100_000))
    s.ttft_s[:, 2]          # p90 TTFT (s) at each concurrency; s.tpot_s, s.e2e_s, s.out_tok_per_s, ...

Poisson load: `sim.Traffic(arrival="poisson", rate_per_s=...)`; trace replay:
`sim.trace_traffic(sim.load_trace("trace.csv"))`; lengths: `lengths="uniform" | "lognormal"` with `spread`,
or `"empirical"` drawn from a trace's rows. `Settings.slots` must hold the largest batch (agg: per
attention-DP rank; P/D: the decode pool's ranks × decode batch).
"""

from jaxsim.simulate.engine import (
    SAMPLE_FIELDS,
    TIMELINE_FIELDS,
    Settings,
    SimResult,
    Unit,
    iteration_s,
    simulate,
    unit_of,
)
from jaxsim.simulate.run import simulate_batch, simulate_summary, summarize_batch
from jaxsim.simulate.stats import STAT_NAMES, Summary, summarize
from jaxsim.simulate.traffic import (
    ARRIVAL_KINDS,
    LENGTH_KINDS,
    Requests,
    Traffic,
    closed_loop,
    generate,
    load_trace,
    poisson,
    trace_traffic,
)

__all__ = [
    "ARRIVAL_KINDS",
    "LENGTH_KINDS",
    "SAMPLE_FIELDS",
    "STAT_NAMES",
    "TIMELINE_FIELDS",
    "Requests",
    "Settings",
    "SimResult",
    "Summary",
    "Traffic",
    "Unit",
    "closed_loop",
    "generate",
    "iteration_s",
    "load_trace",
    "poisson",
    "simulate",
    "simulate_batch",
    "simulate_summary",
    "summarize",
    "summarize_batch",
    "trace_traffic",
    "unit_of",
]

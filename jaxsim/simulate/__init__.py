"""Request-level simulation: arrivals, queues, continuous batching and latency percentiles, vectorized.

`simulate` runs one configuration (a pure `lax.scan` of scheduler steps priced by the step model);
`simulate_batch` runs many at once (`vmap`, one compilation per architecture and `Settings`);
`summarize` turns a raw result into TTFT / TPOT / end-to-end percentiles, throughput and KV use.
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

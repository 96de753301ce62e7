"""Serving architectures on top of the step model: aggregated, P/D disaggregated, AFD."""

from jaxsim.serve.afd import AFDConfig, afd_iteration, afd_metrics
from jaxsim.serve.agg import AggConfig, agg_metrics
from jaxsim.serve.disagg import DisaggConfig, disagg_metrics
from jaxsim.serve.estimate import ARCHITECTURES, Config, architecture, estimate, estimate_batch
from jaxsim.serve.metrics import REASONS, Breakdown, Metrics
from jaxsim.serve.queueing import LOAD_KINDS, Load

__all__ = [
    "ARCHITECTURES",
    "LOAD_KINDS",
    "REASONS",
    "AFDConfig",
    "AggConfig",
    "Breakdown",
    "Config",
    "DisaggConfig",
    "Load",
    "Metrics",
    "afd_iteration",
    "afd_metrics",
    "agg_metrics",
    "architecture",
    "disagg_metrics",
    "estimate",
    "estimate_batch",
]

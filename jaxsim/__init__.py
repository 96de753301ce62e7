"""jaxsim: a vectorized, JIT-compiled, differentiable simulator of MoE LLM serving."""

from jaxsim.batching import blocked_vmap
from jaxsim.cost.flops import active_params, kv_bytes_per_token, total_params
from jaxsim.cost.memory import kv_bytes_per_token_gpu, kv_capacity_tokens, weight_bytes_per_gpu
from jaxsim.presets import (
    SpecError,
    check_deployment,
    describe_model,
    dtype_bytes,
    list_presets,
    load_hardware,
    load_model,
    load_slo,
    load_workload,
    make_workload,
    model_from_hf_config,
)
from jaxsim.serve import (
    ARCHITECTURES,
    REASONS,
    AFDConfig,
    AggConfig,
    Breakdown,
    DisaggConfig,
    Load,
    Metrics,
    architecture,
    estimate,
    estimate_batch,
)
from jaxsim.smooth import HARD, SMOOTH, Mode
from jaxsim.spec import SLO, Deployment, Efficiency, Hardware, Model, StepBatch, Workload
from jaxsim.step import BREAKDOWN, StepCost, step_cost, step_cost_batch, valid_parallelism

__version__ = "0.1.0"

__all__ = [
    "ARCHITECTURES",
    "BREAKDOWN",
    "HARD",
    "REASONS",
    "SLO",
    "SMOOTH",
    "AFDConfig",
    "AggConfig",
    "Breakdown",
    "Deployment",
    "DisaggConfig",
    "Efficiency",
    "Hardware",
    "Load",
    "Metrics",
    "Mode",
    "Model",
    "SpecError",
    "StepBatch",
    "StepCost",
    "Workload",
    "active_params",
    "architecture",
    "blocked_vmap",
    "check_deployment",
    "describe_model",
    "dtype_bytes",
    "estimate",
    "estimate_batch",
    "kv_bytes_per_token",
    "kv_bytes_per_token_gpu",
    "kv_capacity_tokens",
    "list_presets",
    "load_hardware",
    "load_model",
    "load_slo",
    "load_workload",
    "make_workload",
    "model_from_hf_config",
    "step_cost",
    "step_cost_batch",
    "total_params",
    "valid_parallelism",
    "weight_bytes_per_gpu",
]

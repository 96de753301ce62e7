"""One entry point for every architecture: `estimate(model, hw, config, workload, slo, load)`.

The architecture is the configuration's type (a static choice, one compilation each); everything
numeric inside it can be batched with `estimate_batch`.
"""

from __future__ import annotations

import equinox as eqx

from jaxsim.batching import DEFAULT_BLOCK, blocked_vmap
from jaxsim.serve.afd import AFDConfig, afd_metrics
from jaxsim.serve.agg import AggConfig, agg_metrics
from jaxsim.serve.disagg import DisaggConfig, disagg_metrics
from jaxsim.serve.metrics import Metrics
from jaxsim.serve.queueing import SATURATION, Load
from jaxsim.smooth import HARD, Mode
from jaxsim.spec import SLO, Hardware, Model, Workload

Config = AggConfig | DisaggConfig | AFDConfig
ARCHITECTURES = ("agg", "disagg", "agg+afd", "disagg+afd")


def architecture(cfg: Config) -> str:
    """The architecture name of a configuration: agg, disagg, agg+afd or disagg+afd."""
    if isinstance(cfg, AggConfig):
        return "agg"
    if isinstance(cfg, DisaggConfig):
        return "disagg"
    if isinstance(cfg, AFDConfig):
        return f"{cfg.base}+afd"
    raise TypeError(f"not a serving configuration: {type(cfg).__name__}")


def estimate(m: Model, hw: Hardware, cfg: Config, w: Workload, slo: SLO, load: Load = SATURATION,
             mode: Mode = HARD) -> Metrics:
    """Serving metrics of one configuration (pure; jit it, or use `estimate_batch` for many)."""
    if isinstance(cfg, AggConfig):
        return agg_metrics(m, hw, cfg, w, slo, load, mode)
    if isinstance(cfg, DisaggConfig):
        return disagg_metrics(m, hw, cfg, w, slo, load, mode)
    if isinstance(cfg, AFDConfig):
        return afd_metrics(m, hw, cfg, w, slo, load, mode)
    raise TypeError(f"not a serving configuration: {type(cfg).__name__}")


@eqx.filter_jit
def estimate_batch(m: Model, hw: Hardware, cfg: Config, w: Workload, slo: SLO, load: Load = SATURATION,
                   mode: Mode = HARD, block: int = DEFAULT_BLOCK) -> Metrics:
    """`estimate` over many configurations: array leaves of `cfg`, `w`, `slo` and `load` carry a leading
    axis of N (scalars broadcast). Evaluated in cache-sized blocks; one compilation per architecture,
    N and mode."""
    return blocked_vmap(lambda c, ww, s, ld: estimate(m, hw, c, ww, s, ld, mode), block)(cfg, w, slo, load)

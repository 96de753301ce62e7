"""The simulator side of `jaxsim validate --simulate`: predict measured deployments request by request.

`simulate_rows` takes the scenarios `jaxsim.validate.row_to_scenario` builds (model, hardware, configuration,
workload, SLO and the measured `Load("concurrency", N)`) and replays each row's benchmark: N closed-loop
clients sending requests of the row's fixed ISL / OSL, all starting together (aiperf / genai-perf
`--concurrency N`). Each client sends `rounds` requests; the first and last round (ramp-up and drain) are
left out, and the mean TTFT and TPOT of the rest are the prediction — what the benchmark reports.

Rows are simulated in stacked batches grouped by what the simulator compiles on (attention kind,
architecture) and by power-of-two buckets of the slot array and request table, so a whole sample needs a
handful of compilations; model and hardware are stacked like the configuration.

Caveat: an agg row is simulated as one of its identical attention-DP groups with round(N / groups) clients
(at least 1), so a concurrency that is not a multiple of the groups is rounded (N = 4 on 8 ranks runs 8).
The configuration's `request_overhead_s` and `mixed_prefill` are honoured (see `jaxsim.simulate.engine`).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import Any

import jax
import numpy as np

from jaxsim.serve.afd import AFDConfig
from jaxsim.serve.agg import AggConfig
from jaxsim.serve.disagg import DisaggConfig
from jaxsim.serve.estimate import architecture
from jaxsim.simulate.engine import Settings
from jaxsim.simulate.run import simulate_summary
from jaxsim.simulate.traffic import Traffic

OUTPUTS = ("sim_ttft_ms", "sim_tpot_ms", "sim_requests_per_s", "sim_completed_frac")


def _pow2(n: float, floor: int) -> int:
    return max(floor, 1 << max(math.ceil(n) - 1, 0).bit_length())


def _unit_shape(s: Any, rounds: int) -> tuple[int, int, int, int]:
    """(slots, requests, window, iterations) one scenario needs (before bucketing)."""
    cfg, conc, out = s.config, float(s.load.value), float(s.workload.output_tokens)
    inp = float(s.workload.input_tokens)
    if isinstance(cfg, AggConfig) or (isinstance(cfg, AFDConfig) and cfg.base == "agg"):
        d = cfg.deploy
        groups = float(cfg.workers * d.dp * (1.0 if isinstance(cfg, AFDConfig) else d.pp))
        slots = float(cfg.batch)
        clients = max(round(conc / groups), 1)
        chunk = float(cfg.chunk)
        prefill_iters = clients * math.ceil(inp / chunk) if inp > chunk else math.ceil(clients * inp / chunk)
        window = 64
    else:
        if isinstance(cfg, DisaggConfig):
            ranks = float(max(float(cfg.decode_workers), 1.0) * cfg.decode.dp * cfg.decode.pp)
            slots, pre_ranks = ranks * float(cfg.decode_batch), float(cfg.prefill_workers * cfg.prefill.dp)
        else:
            ranks = float(max(float(cfg.workers), 1.0) * cfg.deploy.dp)
            slots, pre_ranks = ranks * float(cfg.batch), float(cfg.prefill_workers * cfg.prefill.dp)
        clients = max(round(conc), 1)
        prompt_cap = max(pre_ranks, 1.0) * float(cfg.prefill_batch)
        prefill_iters = math.ceil(clients / prompt_cap)
        window = _pow2(prompt_cap, 64)
    waves = math.ceil(clients / max(slots, 1.0))
    # Generous: KV capacity can hold fewer requests than the slots; the loop stops when all are done.
    iterations = int(rounds * waves * (out + prefill_iters + 2) * 3) + 4096
    return int(slots), int(clients * rounds), window, iterations


def _stack(trees: Sequence[Any]) -> Any:
    """One pytree whose array leaves hold a leading axis over `trees` (identical structure)."""
    leaves = [jax.tree.leaves(t) for t in trees]
    treedef = jax.tree.structure(trees[0])
    dtype = jax.dtypes.canonicalize_dtype(np.float64)
    columns = np.asarray([[np.asarray(x) for x in row] for row in leaves], dtype=dtype)
    return jax.tree.unflatten(treedef, list(columns.T))


def simulate_rows(scenarios: Sequence[Any], rounds: int = 5, seed: int = 0, max_slots: int = 16384,
                  max_requests: int = 32768) -> dict[str, np.ndarray]:
    """Simulated TTFT and TPOT of validation scenarios at their measured concurrency (closed loop).

    Args:
        scenarios: `jaxsim.validate.Scenario`s (anything with `.model .hw .config .workload .load`), each
            with `load.kind == "concurrency"`.
        rounds: requests per client; the first and last round are left out of the means (so ≥ 3).
        seed: PRNG seed (fixed lengths and a closed loop use no randomness; kept for completeness).
        max_slots, max_requests: rows needing a larger slot array or request table are not simulated (NaN).

    Returns:
        Arrays of length `len(scenarios)`, in order: `sim_ttft_ms` and `sim_tpot_ms` (means over the steady
        requests), `sim_requests_per_s` (whole system) and `sim_completed_frac` (share of the simulated
        requests that finished within the iteration budget; < 1 flags an unreliable row). NaN where a row
        was not simulated.
    """
    if rounds < 3:
        raise ValueError(f"rounds must be ≥ 3 (a warm-up, a measured and a drain round), got {rounds}")
    n = len(scenarios)
    out = {k: np.full(n, np.nan) for k in OUTPUTS}
    groups: dict[tuple, list[int]] = {}
    shapes: dict[int, tuple[int, int, int, int]] = {}
    for i, s in enumerate(scenarios):
        if s.load.kind != "concurrency":
            raise ValueError(f"scenario {i}: simulate_rows replays closed-loop benchmarks; load is {s.load.kind!r}")
        slots, requests, window, iterations = _unit_shape(s, rounds)
        if slots > max_slots or requests > max_requests or slots < 1:
            continue
        shapes[i] = (slots, requests, window, iterations)
        key = (s.model.attention, architecture(s.config), _pow2(slots, 8), _pow2(requests, 64), window)
        groups.setdefault(key, []).append(i)
    warmup = 1.0 / rounds
    for (_, _, slots, requests, window), idx in groups.items():
        iterations = max(shapes[i][3] for i in idx)
        settings = Settings(requests=requests, slots=slots, window=window, scan_length=256,
                            max_iterations=iterations, samples=8, sample_every=1 << 20, timeline=1)
        models = [dataclasses.replace(scenarios[i].model, name="stacked") for i in idx]
        hws = [dataclasses.replace(scenarios[i].hw, name="stacked") for i in idx]
        cfgs = [scenarios[i].config for i in idx]
        ws = [scenarios[i].workload for i in idx]
        traffic = Traffic(arrival="closed",
                          concurrency=np.asarray([float(scenarios[i].load.value) for i in idx], np.float32),
                          request_count=np.asarray([shapes[i][1] for i in idx], np.float32))
        summary = simulate_summary(_stack(models), _stack(hws), _stack(cfgs), _stack(ws), traffic, seed, settings,
                                   warmup_frac=warmup)
        out["sim_ttft_ms"][idx] = np.asarray(summary.ttft_s[:, 0], np.float64) * 1e3
        out["sim_tpot_ms"][idx] = np.asarray(summary.tpot_s[:, 0], np.float64) * 1e3
        out["sim_requests_per_s"][idx] = np.asarray(summary.requests_per_s, np.float64)
        out["sim_completed_frac"][idx] = np.asarray(summary.completed_frac, np.float64)
    return out

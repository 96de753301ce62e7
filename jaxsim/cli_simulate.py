"""`jaxsim simulate`: request-level simulation of one configuration under load (a thin layer over
`jaxsim.simulate`). Registered on the main app by `register(app)`.

Takes `jaxsim estimate`'s scenario flags plus the offered load (`--rate`, `--concurrency` or `--trace FILE`),
`--requests`, `--seed` and the length distribution; prints the TTFT / TPOT / end-to-end percentile table and
writes `latency_cdf.png`, `timeline.json` (Chrome trace events of the first iterations: open it in
https://ui.perfetto.dev) and `summary.json` to `--out`.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Annotated, Any

import jax
import numpy as np
import typer
from rich.console import Console
from rich.table import Table

from jaxsim import presets
from jaxsim.cli import afd_config, build_deployment, positive, print_json, scenario, user_errors
from jaxsim.presets import SpecError
from jaxsim.serve import AggConfig, DisaggConfig, architecture
from jaxsim.serve.estimate import Config
from jaxsim.simulate import (
    LENGTH_KINDS,
    Settings,
    Traffic,
    load_trace,
    simulate_batch,
    summarize_batch,
    trace_traffic,
    unit_of,
)
from jaxsim.simulate.report import cdf_plot, chrome_trace, percentile_rows
from jaxsim.spec import Hardware, Model, Workload

Opt = typer.Option
IntOpt = Annotated[int | None, Opt()]


def build_config(m: Model, mode: str, *, batch_size: float, ctx_tokens: float, workers: float, tp: int, pp: int,
                 dp: int, moe_tp: int | None, moe_ep: int | None, quants: tuple, prefill: tuple, decode: tuple,
                 prefill_batch_size: float, prefill_workers: float, decode_batch_size: float | None,
                 decode_workers: float, attn_gpus: int | None, ffn_gpus: int | None, micro_batches: int,
                 afd_base: str) -> Config:
    """The configuration `jaxsim estimate` builds from the same flags."""
    for label, value in (("batch-size", batch_size), ("ctx-tokens", ctx_tokens),
                         ("prefill-batch-size", prefill_batch_size)):
        positive(label, value)
    if mode == "agg":
        positive("workers", workers)
        return AggConfig(build_deployment(m, tp, pp, dp, moe_tp, moe_ep, *quants), batch=batch_size, chunk=ctx_tokens,
                         workers=workers)
    if mode == "disagg":
        pre = build_deployment(m, *prefill, *quants)
        dec = build_deployment(m, *decode, *quants)
        return DisaggConfig(pre, dec, prefill_batch=prefill_batch_size,
                            decode_batch=batch_size if decode_batch_size is None else decode_batch_size,
                            prefill_workers=prefill_workers, decode_workers=decode_workers)
    if mode == "afd":
        return afd_config(m, tp, attn_gpus, ffn_gpus, moe_tp, moe_ep, micro_batches, afd_base, batch_size, ctx_tokens,
                          workers, quants, prefill=prefill, prefill_batch=prefill_batch_size,
                          prefill_workers=prefill_workers)
    raise SpecError(f"unknown --mode {mode!r}; known: agg, disagg, afd")


def _pow2(n: float) -> int:
    return 1 << max(math.ceil(n) - 1, 0).bit_length()


def plan(m: Model, hw: Hardware, cfg: Config, w: Workload, traffic: Traffic, requests: int, timeline: int
         ) -> tuple[Settings, dict[str, float]]:
    """Static sizes for one configuration: the slot array fits its batch, the table its share of the requests."""
    unit = jax.tree.map(float, jax.jit(unit_of)(m, hw, cfg, w, traffic))
    if unit.kv_cap <= 0:
        raise SpecError("the weights leave no memory for the KV cache on this deployment; use more GPUs or lower "
                        "precision")
    groups = unit.groups
    share = math.ceil(requests / groups)
    if traffic.arrival == "trace":
        share = math.ceil(int(traffic.trace_input.shape[0]) / groups)
    slots = _pow2(unit.slot_cap)
    window = max(64, _pow2(unit.prompt_cap))
    out_max = float(np.max(np.asarray(traffic.trace_output))) if traffic.arrival == "trace" else \
        float(w.output_tokens) * (1.0 + 4.0 * float(traffic.spread))
    iterations = int(share * (out_max + 4) + share * 2 + 4096)
    return (Settings(requests=max(share, 1), slots=slots, window=window, scan_length=256,
                     max_iterations=min(iterations, 50_000_000), samples=1024,
                     sample_every=max(1, iterations // 1024 // 4), timeline=timeline),
            {"groups": groups, "gpus": unit.gpus, "slots": unit.slot_cap, "kv_capacity_tokens": unit.kv_cap})


def simulate_cmd(
    model: Annotated[str, Opt(help="Model preset, alias or config.json path.")] = "deepseek-v3",
    system: Annotated[str, Opt(help="GPU system preset or alias (h200_sxm).")] = "h200-sxm",
    mode: Annotated[str, Opt(help="Serving architecture: agg, disagg or afd.")] = "agg",
    workload: Annotated[str | None, Opt(help="Workload preset (sets isl/osl/prefix and the SLO).")] = None,
    isl: Annotated[float | None, Opt(help="New input tokens per request (mean).")] = None,
    osl: Annotated[float | None, Opt(help="Output tokens per request (mean).")] = None,
    prefix: Annotated[float | None, Opt(help="Cached prefix tokens per request (KV reused).")] = None,
    ttft: Annotated[float | None, Opt(help="TTFT target, ms.")] = None,
    tpot: Annotated[float | None, Opt(help="TPOT target, ms.")] = None,
    batch_size: Annotated[float, Opt(help="Running requests per attention-DP rank (agg, AFD).")] = 64,
    ctx_tokens: Annotated[float, Opt(help="Prefill token budget per iteration per rank (agg, Agg+AFD).")] = 8192,
    workers: Annotated[float, Opt(help="Instances (agg, AFD; 0 = rate-matched for P/D+AFD).")] = 1,
    tp: Annotated[int, Opt(help="Attention tensor parallel degree.")] = 1,
    pp: Annotated[int, Opt(help="Pipeline parallel degree.")] = 1,
    dp: Annotated[int, Opt(help="Attention data parallel degree.")] = 8,
    moe_tp: IntOpt = None,
    moe_ep: IntOpt = None,
    gemm_quant: Annotated[str, Opt(help="Attention / dense GEMM weight precision.")] = "fp8",
    moe_quant: Annotated[str, Opt(help="Routed-expert weight precision.")] = "fp8",
    kv_quant: Annotated[str, Opt(help="KV-cache precision.")] = "fp8",
    attn_quant: Annotated[str, Opt(help="Attention math precision.")] = "bf16",
    nextn: Annotated[int, Opt(help="Speculative (MTP) tokens per step.")] = 0,
    nextn_accepted: Annotated[float, Opt(help="Acceptance probability of each draft token.")] = 0.0,
    tbo: Annotated[bool, Opt("--tbo/--no-tbo", help="Two-batch overlap.")] = False,
    prefill_tp: IntOpt = None,
    prefill_pp: IntOpt = None,
    prefill_dp: IntOpt = None,
    prefill_moe_tp: IntOpt = None,
    prefill_moe_ep: IntOpt = None,
    prefill_batch_size: Annotated[float, Opt(help="Prompts per prefill iteration per DP rank.")] = 1,
    prefill_workers: Annotated[float, Opt(help="Prefill instances.")] = 1,
    decode_tp: IntOpt = None,
    decode_pp: IntOpt = None,
    decode_dp: IntOpt = None,
    decode_moe_tp: IntOpt = None,
    decode_moe_ep: IntOpt = None,
    decode_batch_size: Annotated[float | None, Opt(help="Decode requests per DP rank (default --batch-size).")] = None,
    decode_workers: Annotated[float, Opt(help="Decode instances; 0 = rate-matched pools.")] = 0,
    attn_gpus: IntOpt = None,
    ffn_gpus: IntOpt = None,
    micro_batches: Annotated[int, Opt(help="AFD micro-batches.")] = 2,
    afd_base: Annotated[str, Opt(help="AFD on an agg or a disagg base.")] = "agg",
    rate: Annotated[float | None, Opt(help="Open-loop Poisson load, requests/s (whole system).")] = None,
    concurrency: Annotated[float | None, Opt(help="Closed-loop load: clients always in the system.")] = None,
    trace: Annotated[Path | None, Opt(help="Replay a CSV of arrival_s, input_tokens, output_tokens "
                                           "(prefix_tokens optional).")] = None,
    requests: Annotated[int, Opt(help="Requests to simulate (whole system; a trace sets its own).")] = 2000,
    seed: Annotated[int, Opt(help="PRNG seed (arrivals and lengths).")] = 0,
    lengths: Annotated[str, Opt(help="Length distribution: fixed, uniform, lognormal or empirical.")] = "fixed",
    spread: Annotated[float, Opt(help="uniform: relative half-width; lognormal: σ of log-length.")] = 0.0,
    lengths_from: Annotated[Path | None, Opt(help="CSV (trace columns) to draw lengths from (--lengths "
                                                  "empirical).")] = None,
    warmup: Annotated[float, Opt(help="Fraction of requests left out at each end of the statistics.")] = 0.1,
    timeline_iterations: Annotated[int, Opt(help="Iterations drawn in timeline.json.")] = 200,
    out: Annotated[Path, Opt(help="Output folder: latency_cdf.png, timeline.json, summary.json.")]
    = Path("jaxsim-simulate"),
    as_json: Annotated[bool, Opt("--json", help="Print one JSON object.")] = False,
) -> None:
    """Simulate requests one by one under a Poisson, closed-loop or trace load: latency percentiles,
    throughput, KV use, a latency CDF plot and a Chrome trace of the first iterations."""
    with user_errors():
        m = presets.load_model(model)
        hw = presets.load_hardware(system)
        w, slo = scenario(m, workload, isl, osl, prefix, ttft, tpot)
        loads = [x for x in (rate, concurrency, trace) if x is not None]
        if len(loads) != 1:
            raise SpecError("give exactly one of --rate, --concurrency or --trace")
        if lengths not in LENGTH_KINDS:
            raise SpecError(f"unknown --lengths {lengths!r}; known: {', '.join(LENGTH_KINDS)}")
        if not (math.isfinite(spread) and spread >= 0) or (lengths == "uniform" and spread > 1):
            raise SpecError(f"--spread must be ≥ 0 (≤ 1 for uniform), got {spread:g}")
        if requests < 1:
            raise SpecError(f"--requests must be ≥ 1, got {requests}")
        if not 0 <= warmup < 0.5:
            raise SpecError(f"--warmup must be in [0, 0.5), got {warmup:g}")
        if timeline_iterations < 1:
            raise SpecError(f"--timeline-iterations must be ≥ 1, got {timeline_iterations}")
        kw: dict[str, Any] = {"lengths": lengths, "spread": spread}
        table = None
        if lengths == "empirical":
            if lengths_from is None and trace is None:
                raise SpecError("--lengths empirical needs --lengths-from CSV (or --trace)")
            table = load_trace(lengths_from or trace)
        elif lengths_from is not None:
            raise SpecError("--lengths-from is only used with --lengths empirical")
        if trace is not None:
            traffic = trace_traffic(load_trace(trace), arrival="trace", **kw)
        elif rate is not None:
            positive("rate", rate)
            traffic = (trace_traffic(table, arrival="poisson", rate_per_s=rate, **kw) if table is not None
                       else Traffic(arrival="poisson", rate_per_s=rate, **kw))
        else:
            assert concurrency is not None
            positive("concurrency", concurrency)
            traffic = (trace_traffic(table, arrival="closed", concurrency=concurrency, **kw) if table is not None
                       else Traffic(arrival="closed", concurrency=concurrency, **kw))
        quants = (gemm_quant, moe_quant, kv_quant, attn_quant, nextn, nextn_accepted, tbo)
        cfg = build_config(
            m, mode, batch_size=batch_size, ctx_tokens=ctx_tokens, workers=workers, tp=tp, pp=pp, dp=dp,
            moe_tp=moe_tp, moe_ep=moe_ep, quants=quants,
            prefill=(prefill_tp or tp, prefill_pp or pp, prefill_dp or dp, prefill_moe_tp or moe_tp,
                     prefill_moe_ep or moe_ep),
            decode=(decode_tp or tp, decode_pp or pp, decode_dp or dp, decode_moe_tp or moe_tp,
                    decode_moe_ep or moe_ep),
            prefill_batch_size=prefill_batch_size, prefill_workers=prefill_workers,
            decode_batch_size=decode_batch_size, decode_workers=decode_workers, attn_gpus=attn_gpus,
            ffn_gpus=ffn_gpus, micro_batches=micro_batches, afd_base=afd_base)
        settings, unit = plan(m, hw, cfg, w, traffic, requests, timeline_iterations)
        raw = simulate_batch(m, hw, cfg, w, traffic, seed, settings)
        s = jax.tree.map(lambda x: np.asarray(x)[0], summarize_batch(raw, warmup))
        r = jax.tree.map(lambda x: np.asarray(x)[0] if isinstance(x, jax.Array) else x, raw)
        out.mkdir(parents=True, exist_ok=True)
        arch = architecture(cfg)
        load_text = (f"rate {rate:g}/s" if rate is not None else f"concurrency {concurrency:g}"
                     if concurrency is not None else f"trace {trace}")
        scope = "whole system" if unit["groups"] == 1 else f"one of {unit['groups']:g} identical groups"
        title = f"{arch}: {m.name} on {hw.name}, {load_text}, {int(s.completed)} requests simulated ({scope})"
        plot = cdf_plot(r, out / "latency_cdf.png", title, warmup)
        tl = chrome_trace(r, out / "timeline.json", m, hw, cfg)
        result = {
            "model": m.name, "system": hw.name, "architecture": arch, "load": load_text,
            "workload": {"prefix": float(w.prefix_tokens), "isl": float(w.input_tokens), "osl": float(w.output_tokens),
                         "lengths": lengths, "spread": spread},
            "latency_ms": percentile_rows(s),
            "requests_per_s": float(s.requests_per_s), "output_tokens_per_s": float(s.out_tok_per_s),
            "output_tokens_per_s_per_gpu": float(s.out_tok_per_s_per_gpu), "gpus": float(s.gpus),
            "kv_utilisation_mean": float(s.kv_frac_mean), "kv_utilisation_max": float(s.kv_frac_max),
            "mean_queue_wait_ms": float(s.queue_wait_s) * 1e3,
            "completed": int(s.completed), "simulated_requests": int(s.count),
            "completed_fraction": float(s.completed_frac), "blocked": bool(s.blocked),
            "groups_in_system": unit["groups"], "kv_capacity_tokens_per_group": unit["kv_capacity_tokens"],
            "simulated_s": float(s.sim_s), "iterations": int(s.iterations),
            "slo_ttft_ms": float(slo.ttft_s) * 1e3, "slo_tpot_ms": float(slo.tpot_s) * 1e3,
            "plot": str(plot), "timeline": str(tl),
        }
        (out / "summary.json").write_text(json.dumps(result, indent=1))
        if as_json:
            print_json(result)
            return
        console = Console(highlight=False, width=max(Console().width, 140))
        t = Table(title=f"{title} — latency (ms), warm-up {warmup:g} left out at each end", header_style="bold")
        t.add_column("metric")
        for k in ("mean", "p50", "p90", "p99"):
            t.add_column(k, justify="right")
        for metric, row in result["latency_ms"].items():
            t.add_row(metric, *(f"{row[k]:.2f}" for k in ("mean", "p50", "p90", "p99")))
        console.print(t)
        print(f"throughput {result['requests_per_s']:.3g} requests/s, {result['output_tokens_per_s']:.4g} output "
              f"tokens/s ({result['output_tokens_per_s_per_gpu']:.4g} per GPU, {result['gpus']:g} GPUs); KV use "
              f"mean {result['kv_utilisation_mean']:.1%}, max {result['kv_utilisation_max']:.1%}; "
              f"{result['completed']}/{result['simulated_requests']} simulated requests finished")
        if result["blocked"]:
            print("warning: a request does not fit an empty serving group (KV or batch too small)")
        print(f"wrote {plot}, {tl} (open in https://ui.perfetto.dev) and {out / 'summary.json'}")


def register(app: typer.Typer) -> None:
    """Add the `simulate` command to the `jaxsim` app."""
    app.command("simulate")(simulate_cmd)


if __name__ != "__main__":  # imported before jaxsim.cli finished: add the command to the main app now
    from jaxsim.cli import register_extension

    register_extension(__name__)

"""The `jaxsim` command: a thin layer over the public API.

Bad input exits with code 2 and one line on stderr naming the problem and the fix.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any

import jax
import typer
from rich.console import Console
from rich.table import Table

from jaxsim import presets
from jaxsim.presets import SpecError
from jaxsim.serve import AFDConfig, AggConfig, DisaggConfig, Load, architecture, estimate
from jaxsim.serve.estimate import Config
from jaxsim.serve.queueing import ARRIVALS
from jaxsim.serve.report import metrics_report
from jaxsim.spec import SLO, Deployment, Hardware, StepBatch, Workload
from jaxsim.step import BREAKDOWN, StepCost, step_cost

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Vectorized, differentiable simulator of MoE LLM serving.")
specs_app = typer.Typer(no_args_is_help=True, help="List and show the built-in model, hardware and workload specs.")
app.add_typer(specs_app, name="specs")

_out = Console(highlight=False)


@contextlib.contextmanager
def user_errors() -> Iterator[None]:
    """Turn `SpecError` into a one-line message on stderr and exit code 2."""
    try:
        yield
    except SpecError as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise typer.Exit(2) from None


def print_json(obj: Any) -> None:
    print(json.dumps(obj, indent=2, sort_keys=False))


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.6g}"
    if isinstance(value, dict):
        return ", ".join(f"{k}={_fmt(v)}" for k, v in value.items())
    return str(value)


def print_fields(title: str, fields: dict[str, Any]) -> None:
    table = Table(title=title, show_header=True, header_style="bold", min_width=60)
    table.add_column("field")
    table.add_column("value", justify="right")
    for k, v in fields.items():
        table.add_row(k, _fmt(v))
    _out.print(table)


@specs_app.command("list")
def specs_list() -> None:
    """List the preset names of every kind."""
    with user_errors():
        for kind in presets.KINDS:
            print(f"{kind}: {', '.join(presets.list_presets(kind))}")


@specs_app.command("show")
def specs_show(
    name: Annotated[str, typer.Argument(help="A preset name or alias (model, hardware or workload).")],
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Show one spec; for a model also its total / active parameters and KV bytes per token."""
    with user_errors():
        info = describe_any(name)
        if as_json:
            print_json(info)
        else:
            print_fields(f"{info['kind']} {info['name']}", {k: v for k, v in info.items() if k != "kind"})


def describe_any(name: str) -> dict[str, Any]:
    """Find `name` among models, hardware and workloads and describe it."""
    errors = []
    for kind, describe in (("model", lambda n: presets.describe_model(presets.load_model(n))),
                           ("hardware", lambda n: presets.describe_hardware(presets.load_hardware(n))),
                           ("workload", presets.describe_workload)):
        try:
            return {"kind": kind, **describe(name)}
        except SpecError as exc:
            if not str(exc).startswith("unknown"):
                raise
            errors.append(kind)
    known = "; ".join(f"{k}: {', '.join(presets.list_presets(k))}" for k in presets.KINDS)
    raise SpecError(f"unknown spec {name!r}; known {known}")


def build_deployment(model: presets.Model, tp: int, pp: int, dp: int, moe_tp: int | None, moe_ep: int | None,
                     gemm_quant: str, moe_quant: str, kv_quant: str, attn_quant: str, nextn: int,
                     nextn_accepted: float, tbo: bool) -> Deployment:
    """A checked `Deployment` from CLI flags; MoE degrees default to EP over all attention GPUs."""
    gpus_per_stage = tp * dp
    if moe_ep is None and moe_tp is None:
        moe_ep, moe_tp = (gpus_per_stage, 1) if float(model.n_routed_experts) > 0 else (1, gpus_per_stage)
    elif moe_ep is None:
        moe_ep = max(gpus_per_stage // max(moe_tp or 1, 1), 1)
    elif moe_tp is None:
        moe_tp = max(gpus_per_stage // max(moe_ep, 1), 1)
    d = Deployment(tp=tp, pp=pp, dp=dp, ep=moe_ep, moe_tp=moe_tp, two_batch_overlap=float(tbo), nextn=nextn,
                   nextn_accept=nextn_accepted, gemm_weight_bytes=presets.dtype_bytes(gemm_quant),
                   moe_weight_bytes=presets.dtype_bytes(moe_quant), kv_bytes=presets.dtype_bytes(kv_quant),
                   attn_compute_bytes=presets.dtype_bytes(attn_quant))
    presets.check_deployment(model, d)
    return d


@app.command("step")
def step_cmd(
    model: Annotated[str, typer.Option(help="Model preset, alias or config.json path.")] = "deepseek-v3",
    system: Annotated[str, typer.Option(help="GPU system preset or alias.")] = "h200-sxm",
    tp: Annotated[int, typer.Option(help="Attention tensor parallel degree.")] = 1,
    pp: Annotated[int, typer.Option(help="Pipeline parallel degree.")] = 1,
    dp: Annotated[int, typer.Option(help="Attention data parallel degree.")] = 8,
    moe_tp: Annotated[int | None, typer.Option(help="MoE tensor parallel degree.")] = None,
    moe_ep: Annotated[int | None, typer.Option(help="MoE expert parallel degree.")] = None,
    batch_size: Annotated[float, typer.Option(help="Decode requests per attention-DP rank.")] = 64,
    context: Annotated[float, typer.Option(help="Mean KV length of the decode requests (tokens).")] = 4096,
    prefill_tokens: Annotated[float, typer.Option(help="Prompt tokens per DP rank in this iteration.")] = 0,
    prefill_context: Annotated[float, typer.Option(help="Mean KV positions each prefill token attends.")] = 0,
    prefill_seqs: Annotated[float, typer.Option(help="Prompts the prefill tokens belong to.")] = 1,
    gemm_quant: Annotated[str, typer.Option(help="Attention / dense GEMM weight precision.")] = "fp8",
    moe_quant: Annotated[str, typer.Option(help="Routed-expert weight precision.")] = "fp8",
    kv_quant: Annotated[str, typer.Option(help="KV-cache precision.")] = "fp8",
    attn_quant: Annotated[str, typer.Option(help="Attention math precision.")] = "bf16",
    nextn: Annotated[int, typer.Option(help="Speculative (MTP) tokens per step.")] = 0,
    nextn_accepted: Annotated[float, typer.Option(help="Acceptance probability of each draft token.")] = 0.0,
    tbo: Annotated[bool, typer.Option("--tbo/--no-tbo", help="Two-batch overlap.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Time and memory of one serving iteration (the core step model) for one configuration."""
    with user_errors():
        m = presets.load_model(model)
        hw = presets.load_hardware(system)
        for label, value in (("batch-size", batch_size), ("context", context), ("prefill-tokens", prefill_tokens),
                             ("prefill-context", prefill_context), ("prefill-seqs", prefill_seqs)):
            if value < 0:
                raise SpecError(f"--{label} must be ≥ 0, got {value:g}")
        if context > float(m.max_context) or prefill_context > float(m.max_context):
            raise SpecError(f"context exceeds {m.name}'s maximum of {float(m.max_context):g} tokens")
        d = build_deployment(m, tp, pp, dp, moe_tp, moe_ep, gemm_quant, moe_quant, kv_quant, attn_quant, nextn,
                             nextn_accepted, tbo)
        batch = StepBatch(decode_requests=batch_size, decode_context=context, prefill_tokens=prefill_tokens,
                          prefill_context=prefill_context, prefill_sequences=prefill_seqs if prefill_tokens else 0)
        cost = jax.jit(step_cost)(m, hw, d, batch)
        result = step_report(cost, hw)
        result = {"model": m.name, "system": hw.name, "gpus_per_instance": int(float(d.gpus)), **result}
        if as_json:
            print_json(result)
        else:
            print_fields(f"one iteration: {m.name} on {hw.name}", {k: v for k, v in result.items()
                                                                   if k != "breakdown_ms"})
            print_fields("breakdown (ms, summed over layers)", result["breakdown_ms"])


def step_report(cost: StepCost, hw: Hardware) -> dict[str, Any]:
    """A `StepCost` in report units (ms, GiB)."""
    gib = float(2**30)
    return {
        "step_ms": float(cost.total_s) * 1e3,
        "interval_ms": float(cost.interval_s) * 1e3,
        "memory_gib_per_gpu": float(cost.memory_bytes) / gib,
        "weights_gib_per_gpu": float(cost.weight_bytes) / gib,
        "kv_gib_per_gpu": float(cost.kv_bytes) / gib,
        "hbm_gib_per_gpu": float(hw.hbm_bytes) / gib,
        "fits_memory": bool(float(cost.memory_bytes) <= float(hw.hbm_bytes * (1 - hw.eff.runtime_reserve_frac))),
        "tflop_per_gpu": float(cost.flops) / 1e12,
        "breakdown_ms": {k.removesuffix("_s"): float(getattr(cost, k)) * 1e3 for k in (*BREAKDOWN, "hidden_s")},
    }


Opt = typer.Option
IntOpt = Annotated[int | None, Opt()]


@app.command("estimate")
def estimate_cmd(
    model: Annotated[str, Opt(help="Model preset, alias or config.json path.")] = "deepseek-v3",
    system: Annotated[str, Opt(help="GPU system preset or alias (h200_sxm).")] = "h200-sxm",
    mode: Annotated[str, Opt(help="Serving architecture: agg, disagg or afd.")] = "agg",
    workload: Annotated[str | None, Opt(help="Workload preset (sets isl/osl/prefix and the SLO).")] = None,
    isl: Annotated[float | None, Opt(help="New input tokens per request.")] = None,
    osl: Annotated[float | None, Opt(help="Output tokens per request.")] = None,
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
    concurrency: Annotated[float | None, Opt(help="Closed-loop load: requests in the system.")] = None,
    rounds: Annotated[float, Opt(help="With --concurrency: measured requests per client after the clients start "
                                 "together (the first round is a prefill wave, weight 1/rounds in TTFT); 0 = "
                                 "steady state.")] = 0,
    arrivals: Annotated[str, Opt(help="With --concurrency: 'grouped' (requests of equal lengths re-form the same "
                                 "groups every round) or 'spread' (random lengths: after the first round requests "
                                 "arrive apart).")] = "grouped",
    request_rate: Annotated[float | None, Opt(help="Open-loop Poisson load, requests/s.")] = None,
    adp_balance_iters: Annotated[float, Opt(help="agg with attention DP: TensorRT-LLM's attention-DP balancing "
                                            "timeout in iterations (attention_dp_config enable_balance / "
                                            "timeout_iters; 50 is its default when on); 0 = off.")] = 0,
    recv_interval: Annotated[float, Opt(help="agg: decode iterations between the scheduler's polls for new "
                                        "requests (SGLang's --scheduler-recv-interval); 1 = every iteration.")] = 1,
    batch_wait_iters: Annotated[float, Opt(help="agg: TensorRT-LLM batch waiting, timeout in iterations "
                                           "(batch_wait_timeout_iters); 0 = off.")] = 0,
    batch_wait_tokens: Annotated[float, Opt(help="agg: tokens per iteration that end TensorRT-LLM's batch wait "
                                            "early (batch_wait_max_tokens_ratio × max_num_tokens).")] = 0,
    as_json: Annotated[bool, Opt("--json", help="Print one JSON object.")] = False,
) -> None:
    """Serving metrics of one configuration: TTFT, TPOT, throughput, memory, feasibility, breakdown."""
    with user_errors():
        m = presets.load_model(model)
        hw = presets.load_hardware(system)
        w, slo = scenario(m, workload, isl, osl, prefix, ttft, tpot)
        if concurrency is not None and request_rate is not None:
            raise SpecError("give either --concurrency or --request-rate, not both")
        check_rounds(rounds)
        if rounds and concurrency is None:
            raise SpecError("--rounds describes a closed-loop benchmark: give it with --concurrency")
        if arrivals not in ARRIVALS:
            raise SpecError(f"--arrivals must be one of {', '.join(ARRIVALS)}, got {arrivals!r}")
        if arrivals != "grouped" and concurrency is None:
            raise SpecError("--arrivals describes a closed-loop benchmark: give it with --concurrency")
        load = Load()
        if concurrency is not None:
            positive("concurrency", concurrency)
            load = Load("concurrency", concurrency, rounds, arrivals=arrivals)
        elif request_rate is not None:
            positive("request-rate", request_rate)
            load = Load("rate", request_rate)
        for label, value in (("batch-size", batch_size), ("ctx-tokens", ctx_tokens),
                             ("prefill-batch-size", prefill_batch_size)):
            positive(label, value)
        quants = (gemm_quant, moe_quant, kv_quant, attn_quant, nextn, nextn_accepted, tbo)
        # Scheduler options of aggregated serving that hold new prompts: (flag, value, lowest value, its default).
        for label, value, low, off in (("adp-balance-iters", adp_balance_iters, 0, 0), ("recv-interval", recv_interval,
                                       1, 1), ("batch-wait-iters", batch_wait_iters, 0, 0),
                                       ("batch-wait-tokens", batch_wait_tokens, 0, 0)):
            if not low <= value < float("inf"):
                raise SpecError(f"--{label} must be a finite number ≥ {low} ({off} = off), got {value}")
            if value != off and mode != "agg":
                raise SpecError(f"--{label} applies to --mode agg (how its scheduler admits new prompts)")
        if mode == "agg":
            positive("workers", workers)
            cfg: Config = AggConfig(build_deployment(m, tp, pp, dp, moe_tp, moe_ep, *quants), batch=batch_size,
                                    chunk=ctx_tokens, workers=workers, adp_balance_iters=adp_balance_iters,
                                    recv_interval=recv_interval, batch_wait_iters=batch_wait_iters,
                                    batch_wait_tokens=batch_wait_tokens)
        elif mode == "disagg":
            pre = build_deployment(m, prefill_tp or tp, prefill_pp or pp, prefill_dp or dp, prefill_moe_tp or moe_tp,
                                   prefill_moe_ep or moe_ep, *quants)
            dec = build_deployment(m, decode_tp or tp, decode_pp or pp, decode_dp or dp, decode_moe_tp or moe_tp,
                                   decode_moe_ep or moe_ep, *quants)
            cfg = DisaggConfig(pre, dec, prefill_batch=prefill_batch_size,
                               decode_batch=batch_size if decode_batch_size is None else decode_batch_size,
                               prefill_workers=prefill_workers, decode_workers=decode_workers)
        elif mode == "afd":
            cfg = afd_config(m, tp, attn_gpus, ffn_gpus, moe_tp, moe_ep, micro_batches, afd_base, batch_size,
                             ctx_tokens, workers, quants, prefill=(prefill_tp or tp, prefill_pp or pp,
                             prefill_dp or dp, prefill_moe_tp or moe_tp, prefill_moe_ep or moe_ep),
                             prefill_batch=prefill_batch_size, prefill_workers=prefill_workers)
        else:
            raise SpecError(f"unknown --mode {mode!r}; known: agg, disagg, afd")
        result = jax.jit(estimate, static_argnames="mode")(m, hw, cfg, w, slo, load)
        out = {"model": m.name, "system": hw.name, "architecture": architecture(cfg),
               "workload": {"prefix": float(w.prefix_tokens), "isl": float(w.input_tokens),
                            "osl": float(w.output_tokens), "ttft_target_ms": round(float(slo.ttft_s) * 1e3, 4),
                            "tpot_target_ms": round(float(slo.tpot_s) * 1e3, 4)},
               **metrics_report(result)}
        if as_json:
            print_json(out)
        else:
            head = {k: v for k, v in out.items() if k not in ("breakdown_ms", "workload")}
            print_fields(f"{out['architecture']}: {m.name} on {hw.name}", {**out["workload"], **head})
            print_fields("breakdown of the decode iteration (ms)", out["breakdown_ms"])


def positive(label: str, value: float) -> None:
    if not value > 0:
        raise SpecError(f"--{label} must be > 0, got {value:g}")


def check_rounds(rounds: float) -> None:
    """`--rounds`: 0 (steady state) or at least one measured request per client."""
    if not (rounds == 0 or 1 <= rounds < math.inf):  # NaN fails both
        raise SpecError(f"--rounds must be 0 (steady state) or a finite number ≥ 1 of measured requests per client, "
                        f"got {rounds:g}")


def scenario(m: presets.Model, workload: str | None, isl: float | None, osl: float | None, prefix: float | None,
             ttft: float | None, tpot: float | None) -> tuple[Workload, SLO]:
    """Workload and SLO from a preset and/or explicit lengths and targets (explicit values win)."""
    if workload is not None:
        base, base_slo = presets.load_workload(workload), presets.load_slo(workload)
        dflt = (float(base.input_tokens), float(base.output_tokens), float(base.prefix_tokens),
                float(base_slo.ttft_s) * 1e3, float(base_slo.tpot_s) * 1e3)
    else:
        dflt = (4000.0, 1000.0, 0.0, 2000.0, 50.0)
    pick = [dflt[i] if v is None else v for i, v in enumerate((isl, osl, prefix, ttft, tpot))]
    w = presets.make_workload(pick[0], pick[1], pick[2], model=m, name=workload or "custom")
    for label, value in (("ttft", pick[3]), ("tpot", pick[4])):
        positive(label, value)
    return w, SLO(ttft_s=pick[3] * 1e-3, tpot_s=pick[4] * 1e-3)


def afd_config(m: presets.Model, tp: int, attn_gpus: int | None, ffn_gpus: int | None, moe_tp: int | None,
               moe_ep: int | None, micro_batches: int, base: str, batch: float, chunk: float, workers: float,
               quants: tuple, prefill: tuple, prefill_batch: float, prefill_workers: float) -> AFDConfig:
    """A checked AFD configuration from CLI flags."""
    if base not in ("agg", "disagg"):
        raise SpecError(f"unknown --afd-base {base!r}; known: agg, disagg")
    if attn_gpus is None or ffn_gpus is None:
        raise SpecError("--mode afd needs --attn-gpus and --ffn-gpus")
    if attn_gpus < 1 or ffn_gpus < 1:
        raise SpecError("--attn-gpus and --ffn-gpus must be ≥ 1")
    if attn_gpus % tp:
        raise SpecError(f"--tp {tp} does not divide --attn-gpus {attn_gpus}: attention runs TP × DP over them")
    moe_tp = moe_tp or (ffn_gpus // moe_ep if moe_ep else 1)
    moe_ep = moe_ep or ffn_gpus // max(moe_tp, 1)
    if moe_ep * moe_tp != ffn_gpus:
        raise SpecError(f"moe_ep × moe_tp = {moe_ep * moe_tp} must equal --ffn-gpus {ffn_gpus}")
    gemm_q, moe_q, kv_q, attn_q, nextn, accept, _tbo = quants  # AFD overlaps by micro-batching instead
    d = Deployment(tp=tp, dp=attn_gpus // tp, ep=moe_ep, moe_tp=moe_tp, nextn=nextn, nextn_accept=accept,
                   gemm_weight_bytes=presets.dtype_bytes(gemm_q), moe_weight_bytes=presets.dtype_bytes(moe_q),
                   kv_bytes=presets.dtype_bytes(kv_q), attn_compute_bytes=presets.dtype_bytes(attn_q))
    presets.check_afd(m, d, micro_batches)
    if base == "disagg" and workers < 0:
        raise SpecError("--workers must be ≥ 0 (0 = rate-matched)")
    if base == "agg":
        positive("workers", workers)
    pre = build_deployment(m, *prefill, *quants) if base == "disagg" else Deployment()
    return AFDConfig(d, micro_batches=micro_batches, batch=batch, chunk=chunk, workers=workers, base=base,
                     prefill=pre, prefill_batch=prefill_batch, prefill_workers=prefill_workers)


# Scenario options shared by `sweep` and `optimize`.
ModelOpt = Annotated[str, Opt(help="Model preset, alias or config.json path.")]
SystemOpt = Annotated[str, Opt(help="GPU system preset or alias.")]
WorkloadOpt = Annotated[str | None, Opt(help="Workload preset (default chat unless --isl/--osl are given).")]
IslOpt = Annotated[float | None, Opt(help="New input tokens per request.")]
OslOpt = Annotated[float | None, Opt(help="Output tokens per request.")]
PrefixOpt = Annotated[float | None, Opt(help="Cached prefix tokens per request.")]
GpusOpt = Annotated[int, Opt(help="GPUs in the cluster.")]
TtftOpt = Annotated[float | None, Opt(help="TTFT target, ms.")]
TpotOpt = Annotated[float | None, Opt(help="TPOT target, ms.")]


def cluster_scenario(m: presets.Model, workload: str | None, isl: float | None, osl: float | None,
                     prefix: float | None, ttft: float | None, tpot: float | None,
                     total_gpus: int) -> tuple[Workload, SLO]:
    """Workload and SLO of a cluster-wide command (chat unless lengths are given), checked."""
    wl = workload or (None if isl is not None or osl is not None else "chat")
    if total_gpus < 1:
        raise SpecError(f"--total-gpus must be ≥ 1, got {total_gpus}")
    return scenario(m, wl, isl, osl, prefix, ttft, tpot)


@app.command("sweep")
def sweep_cmd(
    model: ModelOpt = "deepseek-v3",
    system: SystemOpt = "h200-sxm",
    workload: WorkloadOpt = None,
    isl: IslOpt = None,
    osl: OslOpt = None,
    prefix: PrefixOpt = None,
    total_gpus: GpusOpt = 64,
    ttft: TtftOpt = None,
    tpot: TpotOpt = None,
    modes: Annotated[str, Opt(help="Comma-separated: agg, disagg, afd (= agg+afd and disagg+afd).")] = "agg,disagg,afd",
    gemm_quant: Annotated[str, Opt(help="Comma-separated GEMM weight precisions to sweep.")] = "fp8",
    moe_quant: Annotated[str, Opt(help="Comma-separated expert weight precisions to sweep.")] = "fp8",
    kv_quant: Annotated[str, Opt(help="Comma-separated KV precisions to sweep.")] = "fp8",
    out: Annotated[Path, Opt(help="Output directory (results, plot, checkpoints).")] = Path("jaxsim-sweep"),
    csv: Annotated[bool, Opt("--csv", help="Also write results.csv.")] = False,
    keep: Annotated[str, Opt(help="Rows to keep: pareto (frontier + top per chunk), feasible or all.")] = "pareto",
    chunk_size: Annotated[int | None, Opt(help="Configurations per jitted call [default: 2^18 on CPUs, 2^22 on "
                                             "accelerators].")] = None,
    top: Annotated[int, Opt(help="Best configurations shown per architecture.")] = 1,
    resume: Annotated[Path | None, Opt(help="Continue an interrupted sweep from DIR's checkpoints.")] = None,
    as_json: Annotated[bool, Opt("--json", help="Print one JSON object instead of tables.")] = False,
    stop_after_chunks: Annotated[int | None, Opt(hidden=True)] = None,
) -> None:
    """Evaluate every configuration of the default design spaces; SLO filter, Pareto, best per architecture."""
    with user_errors():
        if resume is not None:
            args_file = resume / "args.json"
            if not args_file.is_file():
                raise SpecError(f"--resume {resume}: no sweep was started there ({args_file} is missing)")
            saved = json.loads(args_file.read_text())
            out = resume
        else:
            saved = {"model": model, "system": system, "workload": workload, "isl": isl, "osl": osl, "prefix": prefix,
                     "total_gpus": total_gpus, "ttft": ttft, "tpot": tpot, "modes": modes, "gemm_quant": gemm_quant,
                     "moe_quant": moe_quant, "kv_quant": kv_quant, "keep": keep, "chunk_size": chunk_size}
        run_sweep(saved, out, csv=csv, top=top, as_json=as_json, stop_after_chunks=stop_after_chunks,
                  resuming=resume is not None)


def run_sweep(a: dict[str, Any], out: Path, *, csv: bool, top: int, as_json: bool,
              stop_after_chunks: int | None, resuming: bool = False) -> None:
    """The body of `jaxsim sweep` with its arguments resolved (also what --resume replays)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from jaxsim import sweep as sw
    from jaxsim.plots import pareto_plot

    m = presets.load_model(a["model"])
    hw = presets.load_hardware(a["system"])
    w, slo = cluster_scenario(m, a["workload"], a["isl"], a["osl"], a["prefix"], a["ttft"], a["tpot"],
                              a["total_gpus"])
    if a["keep"] not in sw.KEEP:
        raise SpecError(f"unknown --keep {a['keep']!r}; known: {', '.join(sw.KEEP)}")
    if a["chunk_size"] is not None and a["chunk_size"] < 1:
        raise SpecError("--chunk-size must be ≥ 1")
    modes = [x.strip() for x in a["modes"].split(",") if x.strip()]
    for mode in modes:
        if mode not in sw.MODES:
            raise SpecError(f"unknown mode {mode!r} in --modes; known: {', '.join(sw.MODES)}")
    quants = [[presets.dtype_bytes(q) for q in a[k].split(",")] for k in ("gemm_quant", "moe_quant", "kv_quant")]
    spaces = sw.default_spaces(m, hw, int(a["total_gpus"]), modes, *quants)
    if not spaces:
        raise SpecError(f"nothing to sweep: {m.name} is dense and --modes asks only for AFD")
    out.mkdir(parents=True, exist_ok=True)
    (out / "args.json").write_text(json.dumps(a, indent=1))
    total = sum(s.size for s in spaces)
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                  console=Console(stderr=True), disable=as_json, transient=True) as bar:
        task = bar.add_task("sweeping", total=total)
        done: dict[str, int] = {}

        def progress(arch: str, n: int, _size: int) -> None:
            done[arch] = n
            bar.update(task, completed=sum(done.values()), description=f"sweeping {arch}")

        result = sw.sweep(spaces, m, hw, w, slo, chunk=a["chunk_size"], keep=a["keep"],
                          checkpoint_dir=out / "checkpoints", resume=resuming, progress=progress,
                          stop_after_chunks=stop_after_chunks)
    if stop_after_chunks is not None and result.configs_evaluated < total:
        print(f"stopped after {stop_after_chunks} chunks; continue with: jaxsim sweep --resume {out}",
              file=sys.stderr)
        raise typer.Exit(3)
    table = result.to_arrow()
    import pyarrow.parquet as pq

    pq.write_table(table, out / "results.parquet")
    if csv:
        result.to_pandas().to_csv(out / "results.csv", index=False)
    title = (f"{m.name} on {int(a['total_gpus'])} × {hw.name}, ISL {float(w.input_tokens):g} / OSL "
             f"{float(w.output_tokens):g} / prefix {float(w.prefix_tokens):g}, TTFT ≤ {float(slo.ttft_s) * 1e3:g} ms")
    plot = pareto_plot(result, out / "pareto.png", title, float(slo.tpot_s))
    best = {}
    for space in spaces:
        rows = result.best(space.arch, k=top)
        best[space.arch] = [{"config": {n: float(rows[n][i]) for n in space.names},
                             **metrics_report({k: v[i] for k, v in rows.items()})} for i in range(len(rows["index"]))]
    summary = {"configs_evaluated": result.configs_evaluated, "elapsed_s": result.elapsed_s,
               "compile_s": result.compile_s, "evaluated": result.evaluated, "valid": result.valid,
               "feasible": result.feasible, "results": str(out / "results.parquet"), "plot": str(plot),
               "best": {k: (v[0] if v else None) for k, v in best.items()}}
    if as_json:
        print_json(summary)
        return
    print_best(best, result)
    print(f"evaluated {result.configs_evaluated:,} configurations in {result.elapsed_s:.1f} s "
          f"(compile {result.compile_s:.1f} s); {sum(result.feasible.values()):,} meet the SLO")
    print(f"results: {out / 'results.parquet'}{' and results.csv' if csv else ''}; Pareto plot: {plot}")


def print_best(best: dict[str, list[dict[str, Any]]], result: Any) -> None:
    """The best configurations of each architecture as one table."""
    from jaxsim.sweep import describe_config

    console = Console(highlight=False, width=max(_out.width, 150))
    table = Table(title="best SLO-feasible configurations per architecture (by output tokens/s/GPU)",
                  header_style="bold")
    for col in ("architecture", "configuration", "tok/s/GPU", "tok/s/user", "TTFT ms", "TPOT ms", "GPUs",
                "mem GiB"):
        table.add_column(col, justify="left" if col in ("architecture", "configuration") else "right",
                         no_wrap=col != "configuration")
    for arch, entries in best.items():
        if not entries:
            table.add_row(arch, f"none of {result.valid[arch]:,} valid configurations meets the SLO", *[""] * 6)
        for e in entries:
            table.add_row(arch, describe_config(arch, e["config"]), f"{e['tokens_per_s_per_gpu']:.1f}",
                          f"{e['tokens_per_s_per_user']:.1f}", f"{e['ttft_ms']:.1f}", f"{e['tpot_ms']:.2f}",
                          f"{e['gpus']:g}", f"{e['memory_gib_per_gpu']:.1f}")
    console.print(table)


@app.command("optimize")
def optimize_cmd(
    model: ModelOpt = "deepseek-v3",
    system: SystemOpt = "h200-sxm",
    workload: WorkloadOpt = None,
    isl: IslOpt = None,
    osl: OslOpt = None,
    prefix: PrefixOpt = None,
    total_gpus: GpusOpt = 64,
    ttft: TtftOpt = None,
    tpot: TpotOpt = None,
    modes: Annotated[str, Opt(help="Comma-separated: agg, disagg, afd (= Agg+AFD).")] = "agg,disagg,afd",
    starts: Annotated[int, Opt(help="Optimiser starts per discrete combination.")] = 4,
    rounds: Annotated[int, Opt(help="Augmented-Lagrangian rounds.")] = 8,
    steps: Annotated[int, Opt(help="Adam steps per round.")] = 40,
    out: Annotated[Path, Opt(help="Directory for the optimiser checkpoints.")] = Path("jaxsim-optimize"),
    resume: Annotated[bool, Opt("--resume", help="Continue from the checkpoints in --out.")] = False,
    as_json: Annotated[bool, Opt("--json", help="Print one JSON object.")] = False,
) -> None:
    """Gradient-based search of the best SLO-feasible allocation per architecture, plus sensitivities."""
    import shutil

    from jaxsim import optimize as opt
    from jaxsim.sweep import describe_config

    with user_errors():
        m = presets.load_model(model)
        hw = presets.load_hardware(system)
        w, slo = cluster_scenario(m, workload, isl, osl, prefix, ttft, tpot, total_gpus)
        for label, v in (("starts", starts), ("rounds", rounds), ("steps", steps)):
            if v < 1:
                raise SpecError(f"--{label} must be ≥ 1, got {v}")
        wanted = [x.strip() for x in modes.split(",") if x.strip()]
        archs = []
        for mode in wanted:
            arch = {"agg": "agg", "disagg": "disagg", "afd": "agg+afd", "agg+afd": "agg+afd"}.get(mode)
            if arch is None:
                raise SpecError(f"unknown mode {mode!r} in --modes; known: agg, disagg, afd")
            if arch == "agg+afd" and float(m.n_routed_experts) == 0:
                continue
            archs.append(arch)
        ckpt = out / "checkpoints"
        if not resume and ckpt.exists():
            shutil.rmtree(ckpt)
        settings = opt.Settings(starts=starts, rounds=rounds, steps=steps)
        best, relaxed, evals = {}, {}, {}
        overall = None
        for arch in archs:
            bases = opt.default_bases(m, hw, arch, total_gpus)
            if not bases:
                continue
            res = opt.optimize(m, hw, arch, bases, total_gpus, w, slo, settings=settings, checkpoint_dir=ckpt)
            relaxed[arch] = {"tokens_per_s_per_gpu": res.relaxed_tok_per_s_per_gpu,
                             "log_constraints": [float(x) for x in res.relaxed_constraints],
                             "converged_starts": res.converged_starts, "starts": res.total_starts}
            evals[arch] = res.model_evaluations
            if res.legal_metrics is None:
                best[arch] = None
                continue
            report = metrics_report(res.legal_metrics)
            report["ttft_slack_ms"] = float(slo.ttft_s) * 1e3 - report["ttft_ms"]
            report["tpot_slack_ms"] = float(slo.tpot_s) * 1e3 - report["tpot_ms"]
            best[arch] = {"config": opt.config_dict(arch, res.legal_config), **report}
            if overall is None or report["tokens_per_s_per_gpu"] > best[overall[0]]["tokens_per_s_per_gpu"]:
                overall = (arch, res.legal_config)
        sens = opt.sensitivities(m, hw, overall[1], w, slo) if overall else None
        summary = {"best": best, "relaxed": relaxed, "model_evaluations": evals,
                   "sensitivities_at": overall[0] if overall else None, "sensitivities": sens}
        if as_json:
            print_json(summary)
            return
        console = Console(highlight=False, width=max(_out.width, 150))
        table = Table(title="best legal configuration per architecture (optimiser, re-evaluated with the hard model)",
                      header_style="bold")
        for col in ("architecture", "configuration", "tok/s/GPU", "relaxed", "tok/s/user", "TTFT ms (slack)",
                    "TPOT ms (slack)", "mem GiB"):
            table.add_column(col, justify="left" if col in ("architecture", "configuration") else "right")
        for arch in archs:
            b = best.get(arch)
            if b is None:
                rel = f"{relaxed[arch]['tokens_per_s_per_gpu']:.1f}"
                table.add_row(arch, "no legal configuration meets the SLO", "", rel, "", "", "", "")
                continue
            table.add_row(arch, describe_config(arch, b["config"]), f"{b['tokens_per_s_per_gpu']:.1f}",
                          f"{relaxed[arch]['tokens_per_s_per_gpu']:.1f}", f"{b['tokens_per_s_per_user']:.1f}",
                          f"{b['ttft_ms']:.1f} ({b['ttft_slack_ms']:+.1f})",
                          f"{b['tpot_ms']:.2f} ({b['tpot_slack_ms']:+.2f})", f"{b['memory_gib_per_gpu']:.1f}")
        console.print(table)
        if sens:
            st = Table(title=f"sensitivities at the best {overall[0]} configuration: d(tokens/s/GPU) / d(log field)",
                       header_style="bold")
            st.add_column("field")
            st.add_column("tok/s/GPU per e-fold", justify="right")
            rows = [(f"{k}", v) for part in sens.values() for k, v in part.items()]
            for k, v in sorted(rows, key=lambda kv: -abs(kv[1])):
                st.add_row(k, f"{v:+.2f}")
            console.print(st)


EXTENSIONS = ("jaxsim.cli_validate", "jaxsim.cli_calibrate", "jaxsim.cli_simulate")


_REGISTERED: set[str] = set()


def register_extension(name: str) -> None:
    """Add the commands of the already-imported module `name` (its `register(app)`) to the app, once."""
    import sys

    if name not in _REGISTERED:
        sys.modules[name].register(app)
        _REGISTERED.add(name)


def _register_extensions() -> None:
    """Commands that live in modules of their own register themselves here (`register(app)`). A module
    imported before this one is half-initialised while it imports `jaxsim.cli`: it has no `register` yet
    and calls `register_extension` itself at its end."""
    import importlib

    for name in EXTENSIONS:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as e:
            if e.name == name:  # not written yet in this checkout
                continue
            raise
        if hasattr(module, "register"):
            register_extension(name)


if __name__ != "__main__":  # under `python -m jaxsim.cli` the block at the end imports this module properly
    _register_extensions()


def main() -> None:
    """Console-script entry point. Compiled programs are cached on disk (JAXSIM_CACHE_DIR, default
    ~/.cache/jaxsim/xla) so repeated runs skip most of XLA's compile time."""
    cache = Path(os.environ.get("JAXSIM_CACHE_DIR", Path.home() / ".cache" / "jaxsim" / "xla"))
    try:
        cache.mkdir(parents=True, exist_ok=True)
        jax.config.update("jax_compilation_cache_dir", str(cache))
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)
    except OSError:
        pass
    app()

if __name__ == "__main__":
    from jaxsim.cli import main as _main  # the importable module, with the extension commands registered once

    _main()

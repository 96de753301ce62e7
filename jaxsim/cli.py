"""The `jaxsim` command: a thin layer over the public API.

Bad input exits with code 2 and one line on stderr naming the problem and the fix.
"""

from __future__ import annotations

import contextlib
import json
import sys
from collections.abc import Iterator
from typing import Annotated, Any

import jax
import typer
from rich.console import Console
from rich.table import Table

from jaxsim import presets
from jaxsim.presets import SpecError
from jaxsim.spec import Deployment, Hardware, StepBatch
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


def main() -> None:
    """Console-script entry point."""
    app()

if __name__ == "__main__":
    main()

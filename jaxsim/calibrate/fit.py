"""Fit the kernel-efficiency parameters of a `Hardware` to a measured kernel table.

Predictions come from the same functions the step model prices one iteration with: `cost.flops` for
FLOPs and bytes, `cost.kernels` / `step.routed_experts_s` / `step.prefill_core_attention_s` for the kernel time,
`cost.comm` for collectives.
Each row of the table becomes one call of those functions (its shape as a broadcast array field of a
stub `Model` / `Deployment`), so a fitted parameter means in serving what it meant in the fit.

Parameters live in unconstrained coordinates (logit for fractions, log for half-sizes, latencies and
precision scales); the loss is the mean squared log error, each op weighted equally inside its family;
optax Adam from the hardware's current values (optionally followed by L-BFGS; off by default because its
line search takes minutes to compile on a CPU for the full tables). The roofline floor holds by construction:
fractions are clipped to ≤ 1 and latencies only add time.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pandas as pd
from jax import Array

from jaxsim.calibrate.tables import COLLECTIVES, FAMILY
from jaxsim.cost import comm
from jaxsim.cost import kernels as K
from jaxsim.spec import BYTES_PER_DTYPE, Deployment, Efficiency, Hardware, Model
from jaxsim.step import decode_attention_s, prefill_core_attention_s, routed_experts_s

# Activations (GEMM inputs / outputs, MoE tokens) are BF16 in every measured table.
ACT_BYTES = 2.0
# DeepSeek-V3's MLA dimensions: the shape AIConfigurator's MLA tables measure.
MLA_DIMS = dict(kv_lora_rank=512.0, qk_rope_dim=64.0, qk_nope_dim=128.0, v_head_dim=128.0, head_dim=192.0)

# The M-ramp GEMM form's fields (`gemm_tiles` = 0), not fitted any more; `gemm_tiles` is a switch.
_RAMP_GEMM = ("gemm_tiles", "gemm_compute_frac", "gemm_half_rows", "gemm_memory_frac", "gemm_fp8_scale",
              "gemm_fp4_scale", "gemm_latency_s", "gemm_quant_latency_s", "gemm_latency_p")
# Fitted parameters per parameter group: (name, coordinate). Names are `Efficiency` fields, or
# `Hardware` fields for the link latency. Coordinates: "logit" (a fraction), "log" (> 0), "log1" (≥ 1: log(p − 1)).
GROUPS: dict[str, tuple[tuple[str, str], ...]] = {
    # The tiled form (`kernels.tiled_gemm_s`, switched on below); `gemm_memory_frac` follows (`derived_values`).
    "gemm": tuple((f, "logit" if f.endswith("_frac") else "log1" if f.endswith("_p") else "log")
                  for f in Efficiency.__dataclass_fields__ if f.startswith("gemm_") and f not in _RAMP_GEMM),
    "moe": (("moe_compute_frac", "logit"), ("moe_fp8_scale", "log"), ("moe_fp4_scale", "log"),
            ("moe_half_tokens", "log"), ("moe_memory_frac", "logit"), ("moe_latency_s", "log"),
            ("moe_latency_p", "log1"), ("moe_work_p", "log1"),
            *((f, "log") for f in ("moe_fp8_half_tokens", "moe_fp4_half_tokens", "moe_half_inter",
                                   "moe_fp8_half_inter", "moe_fp4_half_inter", "moe_row_bytes", "moe_fp8_row_bytes",
                                   "moe_fp4_row_bytes", "moe_row_inter_bytes", "moe_token_bytes", "moe_fp8_token_bytes",
                                   "moe_fp4_token_bytes", "moe_pair_cost_s",
                                   "moe_expert_latency_s", "moe_fp8_expert_latency_s", "moe_fp4_expert_latency_s"))),
    # Prefill attention as the tile model (`ctx_tiles` = 1, see SWITCHES). `attn_latency_p` stays here although
    # only decode attention uses it now, so a calibration keeps fitting it from the decode tables.
    "attention": (("attn_latency_p", "log1"),
                  *((f, "logit" if f.endswith("_frac") else "log1" if f.endswith("_p") else "log")
                    for f in Efficiency.__dataclass_fields__ if f.startswith("ctx_") and f != "ctx_tiles")),
    "decode_attention": tuple((f, "logit" if f.endswith("_frac") or f == "dec_item_head_dim_power" else
                               "log1" if f.endswith("_p") else "log")
                              for f in Efficiency.__dataclass_fields__ if f.startswith("dec_") and f != "dec_paths"),
    "collectives": tuple((f, "logit" if f.endswith("_frac") else "log") for f in Efficiency.__dataclass_fields__
                         if f.startswith("coll_")),
}
# Switches a group's fit turns on (not fitted; written into the calibration file with the fitted values).
SWITCHES: dict[str, dict[str, float]] = {"collectives": {"collective_regimes": 1.0}, "moe": {"moe_terms": 1.0},
                                         "decode_attention": {"dec_paths": 1.0},
                                         "attention": {"ctx_tiles": 1.0},
                                         "gemm": {"gemm_tiles": 1.0}}
# The switches are static fields of `Efficiency` (they choose the traced program), set by replacement.
STATIC_SWITCHES = frozenset(f for group in SWITCHES.values() for f in group)
GROUP_OF_OP = {"gemm": "gemm", "moe": "moe", "context_attention": "attention", "context_mla": "attention",
               "generation_attention": "decode_attention", "generation_mla": "decode_attention",
               **{c: "collectives" for c in COLLECTIVES}}
HARDWARE_PARAMS = ("scale_up_latency_s",)
# Starting values for parameters whose default switches their term off (0 latency, 0 half-size).
_START = {"moe_latency_s": 20e-6, "moe_quant_latency_s": 5e-6,
          "attn_latency_s": 8e-6, "decode_attn_latency_s": 8e-6, "attn_compute_half_context": 64.0,
          "collective_latency_s": 2e-6}
_EPS = 1e-9


class Rows(NamedTuple):
    """The numeric columns of one op's rows as float arrays (NaN-free where the op uses them)."""

    op: str
    cols: dict[str, Array]
    latency_s: Array


def _bytes(series: pd.Series) -> np.ndarray:
    return series.map(BYTES_PER_DTYPE).to_numpy(dtype=float)


def split_rows(df: pd.DataFrame) -> list[Rows]:
    """Kernel-table rows grouped by op, as arrays (the order of rows within an op is kept)."""
    out = []
    for op, part in df.groupby("op", sort=True):
        cols = {c: jnp.asarray(part[c].to_numpy(dtype=float)) for c in part.columns
                if c not in ("op", "dtype", "kv_dtype", "source", "latency_ms") and part[c].notna().all()}
        cols["dtype_bytes"] = jnp.asarray(_bytes(part["dtype"]))
        cols["kv_bytes"] = jnp.asarray(_bytes(part["kv_dtype"]))
        out.append(Rows(str(op), cols, jnp.asarray(part["latency_ms"].to_numpy(dtype=float) * 1e-3)))
    return out


def _stub_model(attention: str, **fields: Any) -> Model:
    base = dict(n_layers=1.0, n_dense_layers=0.0, hidden=1.0, vocab=1.0, n_heads=1.0, n_kv_heads=1.0, head_dim=1.0,
                v_head_dim=1.0)
    return Model(name="kernel", attention=attention, **(base | fields))


def _attention_model(op: str, c: Mapping[str, Array]) -> Model:
    if op.endswith("mla"):
        return _stub_model("mla", n_heads=c["heads"], n_kv_heads=c["heads"], **MLA_DIMS)
    window = c.get("window", jnp.zeros_like(c["heads"]))
    return _stub_model("gqa", n_heads=c["heads"], n_kv_heads=c["kv_heads"], head_dim=c["head_dim"],
                       v_head_dim=c["head_dim"], sliding_window=window, sliding_layer_frac=(window > 0) * 1.0)


def predict_op(hw: Hardware, rows: Rows, quant_pass: bool = True, bound: bool = False) -> Array:
    """Predicted time (s) of every row of one op, through the step model's cost functions.

    The tables time each op alone (AIConfigurator's collectors replay it as a CUDA graph), so every fitted
    per-call latency is paid in full here: `serving_latency_frac` is set to 1 whatever `hw` holds. The GEMM
    tables time BF16 activations into FP8 / FP4 modules, so their activation-quantisation pass over m × k is
    priced (`quant_pass=False` leaves it out: the GEMM kernel alone). `bound=True` gives prefill attention's
    roofline bound (`step.prefill_core_attention_s`)."""
    hw = eqx.tree_at(lambda h: h.eff.serving_latency_frac, hw, jnp.ones_like(hw.eff.serving_latency_frac))
    op, c = rows.op, rows.cols
    if op == "gemm":
        m, n, k, wb = c["m"], c["n"], c["k"], c["dtype_bytes"]
        flops = 2.0 * m * n * k
        bytes_ = n * k * wb + m * (k + n) * ACT_BYTES
        return K.gemm_s(hw, flops, bytes_, m, wb, inner=k if quant_pass else 0.0, shapes=((n, k),))
    if op == "moe":
        model = _stub_model("gqa", hidden=c["hidden"], n_routed_experts=c["experts"], top_k=c["topk"],
                            moe_intermediate=c["inter"])
        d = Deployment(ep=c["moe_ep"], moe_tp=c["moe_tp"], moe_weight_bytes=c["dtype_bytes"],
                       activation_bytes=ACT_BYTES, expert_imbalance=1.0)
        # The imported rows route tokens evenly ("balanced"): a GPU's assignments spread over as many of its
        # experts as they can fill, where serving routing (`flops.expert_load`) expects random picks.
        assignments = c["tokens"] * c["topk"] / c["moe_ep"]
        local = c["experts"] / c["moe_ep"]
        layer = K.moe_layer_s(hw, assignments, jnp.clip(assignments, 1.0, local), c["tokens"], c["hidden"],
                              c["inter"] / c["moe_tp"], c["topk"], local, c["dtype_bytes"], ACT_BYTES)
        return layer if hw.eff.moe_terms > 0.5 else routed_experts_s(model, hw, d, c["tokens"])[0]
    if op in ("context_attention", "generation_attention", "context_mla", "generation_mla"):
        model = _attention_model(op, c)
        d = Deployment(kv_bytes=c["kv_bytes"], attn_compute_bytes=c["dtype_bytes"])
        if op.startswith("generation"):
            return decode_attention_s(model, hw, d, c["batch"], c["prefix"] + c["seq_len"])[0]
        tokens = c["batch"] * c["seq_len"]
        context = c["prefix"] + 0.5 * (c["seq_len"] + 1.0)  # mean positions a causal prefill token attends
        return prefill_core_attention_s(model, hw, d, tokens, context, c["batch"], absorbed=False, bound=bound)[0]
    fn: Callable[..., Array] = {"all_reduce": comm.all_reduce_s, "all_gather": comm.all_gather_s,
                                "reduce_scatter": comm.reduce_scatter_s, "all_to_all": comm.all_to_all_s}[op]
    return fn(hw, c["bytes"], c["gpus"])


def roofline_op(hw: Hardware, rows: Rows) -> Array:
    """The roofline bound of every row (kernels: max(FLOPs / peak, bytes / HBM); collectives: bytes over the
    nominal link without latency), from the same FLOP and byte counts as `predict_op` (prefill attention under
    the tile model: its exact causal FLOPs and compulsory bytes, `kernels.prefill_attention_roofline_s`).

    Decode attention takes its roofline from the `decode_attn_*` form (`dec_paths` = 0), whose ideal is the exact
    max; the `dec_*` terms are ideal as well (fractions and occupancy 1, latencies and per-item costs 0, no slow path)
    but their p-norm would sit above the max."""
    fields = Efficiency.__dataclass_fields__
    # Tiles and waves are the kernel's quantisation of the work, not part of the bound: the ideal GEMM is the
    # ramp form at full efficiency (= max(FLOPs / peak, bytes / HBM)).
    switches = {f for group in SWITCHES.values() for f in group} - {"gemm_tiles"}
    zero = ("_latency_s", "_overhead_s", "_half", "_bytes", "_cost_s")
    ideal = eqx.tree_at(lambda h: h.eff, hw, Efficiency(**(
        {f: 1.0 for f in fields if f.endswith("_frac") or f.endswith("_scale")}
        | {f: 0.0 for f in fields if f.endswith(zero) or "_half_" in f}
        | {f: 1e3 for f in fields if f.endswith("_work_p")}  # overlapping compute and traffic: their max
        | {f: getattr(hw.eff, f) for f in switches}
        # decode attention: the bound of the old form at its ideal (the new form's p-norm sits above it)
        | dict(dec_paths=0.0, dec_fp8_heavy_slowdown=0.0)
        | dict(ctx_softmax_s=0.0, ctx_kv_step_s=0.0, ctx_tail_frac=0.0, ctx_diag_tiles=0.0, ctx_window_extra=0.0,
               ctx_sched_p=1e3))))
    if rows.op in COLLECTIVES:
        ideal = eqx.tree_at(lambda h: (h.scale_up_latency_s, h.scale_out_latency_s), ideal, (0.0, 0.0))
    # Prefill attention's tile model stays above its roofline even with ideal parameters (its tile padding, waves
    # and pre-pass are work, not efficiencies), so its rows take the bound directly.
    return predict_op(ideal, rows, quant_pass=False, bound=True)


# --------------------------------------------------------------------------------------------------
# Parameters in unconstrained coordinates
# --------------------------------------------------------------------------------------------------


def groups_for(df: pd.DataFrame) -> tuple[str, ...]:
    """Parameter groups the table's ops can determine."""
    present = {GROUP_OF_OP[op] for op in df["op"].unique()}
    return tuple(g for g in GROUPS if g in present)


def _value(hw: Hardware, name: str) -> float:
    return float(getattr(hw, name)) if name in HARDWARE_PARAMS else float(getattr(hw.eff, name))


def to_unconstrained(hw: Hardware, groups: tuple[str, ...], dtypes: set[str] | None = None) -> dict[str, Array]:
    """The hardware's current values of the fitted parameters, in fit coordinates."""
    out = {}
    for g in groups:
        for name, coord in GROUPS[g]:
            v = _value(hw, name)
            if v <= 0:
                v = _START.get(name, 1.0)
            if coord == "logit":
                v = min(max(v, 0.02), 0.98)
                out[name] = jnp.asarray(math.log(v / (1.0 - v)))
            elif coord == "log1":
                out[name] = jnp.asarray(math.log(max(v - 1.0, 0.5)))
            else:
                out[name] = jnp.asarray(math.log(v))
    return out


def from_unconstrained(params: Mapping[str, Array]) -> dict[str, Array]:
    coord = {name: c for g in GROUPS.values() for name, c in g}
    conv = {"logit": jax.nn.sigmoid, "log": jnp.exp, "log1": lambda z: 1.0 + jnp.exp(z)}
    return {k: conv[coord[k]](v) for k, v in params.items()}


def apply_params(hw: Hardware, values: Mapping[str, Any]) -> Hardware:
    """`hw` with the given parameter values (Efficiency fields and the link-latency Hardware fields)."""
    static = {k: float(v) for k, v in values.items() if k in STATIC_SWITCHES}
    eff_vals = {k: v for k, v in values.items() if k not in HARDWARE_PARAMS and k not in STATIC_SWITCHES}
    hw_vals = {k: v for k, v in values.items() if k in HARDWARE_PARAMS}
    eff = dataclasses.replace(hw.eff, **static) if static else hw.eff
    if eff_vals:
        names = tuple(eff_vals)
        eff = eqx.tree_at(lambda e: [getattr(e, n) for n in names], eff,
                          [jnp.asarray(eff_vals[n], dtype=jnp.result_type(float)) for n in names])
    out = eqx.tree_at(lambda h: h.eff, hw, eff)
    if hw_vals:
        names = tuple(hw_vals)
        out = eqx.tree_at(lambda h: [getattr(h, n) for n in names], out,
                          [jnp.asarray(hw_vals[n], dtype=jnp.result_type(float)) for n in names])
    return out


# --------------------------------------------------------------------------------------------------
# Loss and fit
# --------------------------------------------------------------------------------------------------


def _weights(rows: list[Rows]) -> list[float]:
    """Per-row weight so that every op counts equally inside its family and every family equally overall."""
    fam_ops: dict[str, int] = {}
    for r in rows:
        fam_ops[FAMILY[r.op]] = fam_ops.get(FAMILY[r.op], 0) + 1
    n_fam = len(fam_ops)
    return [1.0 / (n_fam * fam_ops[FAMILY[r.op]] * r.latency_s.shape[0]) for r in rows]


def loss_fn(params: Mapping[str, Array], hw: Hardware, rows: list[Rows], weights: list[float]) -> Array:
    """Weighted mean squared log error of the predictions."""
    h = apply_params(hw, from_unconstrained(params))
    total = jnp.zeros(())
    for r, w in zip(rows, weights, strict=True):
        err = jnp.log(predict_op(h, r) + _EPS) - jnp.log(r.latency_s)
        total = total + w * jnp.sum(err**2)
    return total


class FitResult(NamedTuple):
    """Fitted hardware and the fit's record."""

    hw: Hardware
    values: dict[str, float]  # fitted parameter values (SI)
    loss: float  # final weighted mean squared log error on the fit rows
    steps: int


def fit(hw: Hardware, df: pd.DataFrame, adam_steps: int = 600, lbfgs_steps: int = 0,
        learning_rate: float = 0.05) -> FitResult:
    """Fit the efficiency parameters of every group the table covers; other parameters keep `hw`'s values.

    L-BFGS steps, when asked for, run after Adam and are kept only when they lower the loss."""
    groups = groups_for(df)
    if not groups:
        raise ValueError("the kernel table has no rows of a fittable op")
    rows = split_rows(df)
    weights = _weights(rows)
    switches = {k: v for g in groups for k, v in SWITCHES.get(g, {}).items()}
    hw = apply_params(hw, switches)
    p0 = to_unconstrained(hw, groups)

    def loss(p: Mapping[str, Array]) -> Array:
        return loss_fn(p, hw, rows, weights)

    value_and_grad = jax.value_and_grad(loss)
    adam = optax.adam(learning_rate)

    @jax.jit
    def run_adam(p: dict[str, Array]) -> dict[str, Array]:
        def body(carry, _):
            p, s = carry
            _, g = value_and_grad(p)
            g = jax.tree.map(lambda x: jnp.where(jnp.isfinite(x), x, 0.0), g)
            upd, s = adam.update(g, s, p)
            return (optax.apply_updates(p, upd), s), None

        (p, _), _ = jax.lax.scan(body, (p, adam.init(p)), None, length=adam_steps)
        return p

    p = run_adam(p0)
    if lbfgs_steps > 0:
        lbfgs = optax.lbfgs()
        vg = optax.value_and_grad_from_state(loss)

        @jax.jit
        def run_lbfgs(p: dict[str, Array]) -> dict[str, Array]:
            def body(carry, _):
                p, s = carry
                v, g = vg(p, state=s)
                ok = jnp.all(jnp.asarray([jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(g)])) & jnp.isfinite(v)
                upd, s2 = lbfgs.update(g, s, p, value=v, grad=g, value_fn=loss)
                p2 = optax.apply_updates(p, upd)
                keep = lambda a, b: jax.tree.map(lambda x, y: jnp.where(ok, x, y), a, b)  # noqa: E731
                return (keep(p2, p), keep(s2, s)), None

            (p, _), _ = jax.lax.scan(body, (p, lbfgs.init(p)), None, length=lbfgs_steps)
            return p

        p_l = run_lbfgs(p)
        if float(loss(p_l)) < float(loss(p)):
            p = p_l
    values = switches | {k: float(v) for k, v in from_unconstrained(p).items()}
    values |= derived_values(values)
    return FitResult(apply_params(hw, values), values, float(loss(p)), adam_steps + lbfgs_steps)


def derived_values(values: Mapping[str, float]) -> dict[str, float]:
    """Parameters set from fitted ones rather than fitted themselves.

    `scale_up_frac` (point-to-point transfers: P/D KV cache, PP activations, the AFD exchange) is the bulk
    ring protocol's fraction of the link at two GPUs, `coll_simple_frac / (1 + coll_peer_half)`, when the
    collectives were fitted. `gemm_memory_frac` (the HBM fraction of elementwise kernels, `kernels.memory_bound_s`)
    is the tiled GEMMs' fraction for large BF16 transfers, `gemm_tile_memory_frac`, when the GEMMs were fitted."""
    out = {}
    if "coll_simple_frac" in values and "coll_peer_half" in values:
        out["scale_up_frac"] = values["coll_simple_frac"] / (1.0 + max(values["coll_peer_half"], 0.0))
    if "gemm_tile_memory_frac" in values:
        out["gemm_memory_frac"] = values["gemm_tile_memory_frac"]
    return out


def predict(hw: Hardware, df: pd.DataFrame) -> pd.DataFrame:
    """`df` with `pred_ms` and `roofline_ms` columns (same row order)."""
    out = df.copy()
    out["pred_ms"] = np.nan
    out["roofline_ms"] = np.nan
    for _, part in df.groupby("op", sort=True):
        (rows,) = split_rows(part)
        out.loc[part.index, "pred_ms"] = np.asarray(predict_op(hw, rows)) * 1e3
        out.loc[part.index, "roofline_ms"] = np.asarray(roofline_op(hw, rows)) * 1e3
    return out

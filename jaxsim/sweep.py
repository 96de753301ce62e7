"""Mega-sweeps: every configuration of a design space, evaluated in chunks with one jit + vmap.

A `DesignSpace` is one architecture and a set of axes — discrete ones (TP, attention DP, MoE-TP, PP,
AFD group sizes, micro-batches, precisions, worker counts) and gridded continuous ones (batch, chunk).
Its configurations are the Cartesian product of the axes, numbered 0 … N−1; configuration `i` is decoded
from `i` on the device (mixed-radix digits → axis values), so nothing of size N is ever materialised and
memory stays flat however large N is. Combinations that cannot exist (a degree that does not divide the
heads or experts, EP not a whole number, more GPUs than the cluster has) are masked as invalid.

`sweep` evaluates the spaces chunk by chunk — each chunk a fixed-size jitted call (one compilation per
architecture), sharded over all local devices with `shard_map` — and keeps, per chunk, all rows, the
feasible rows, or only the Pareto-optimal and top-k feasible rows (`keep`). Finished chunks can be
checkpointed with orbax and a sweep resumed from them.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from jaxsim.batching import DEFAULT_BLOCK, blocked_vmap
from jaxsim.serve import AFDConfig, AggConfig, DisaggConfig, Load, Metrics, estimate
from jaxsim.serve.metrics import REASONS
from jaxsim.serve.queueing import SATURATION
from jaxsim.serve.report import FLAT_FIELDS, flatten
from jaxsim.spec import SLO, Deployment, Hardware, Model, Workload

SWEEP_ARCHITECTURES = ("agg", "disagg", "agg+afd", "disagg+afd")
KEEP = ("all", "feasible", "pareto")
# Every metric of `Metrics`, flattened (feasible and reason are set per row below).
METRIC_COLUMNS = tuple(f for f in FLAT_FIELDS if f not in ("feasible", "reason"))

# Axes of each architecture and what they mean. Precisions are bytes per element.
AXES: dict[str, tuple[str, ...]] = {
    "agg": ("tp", "dp", "pp", "moe_tp", "batch", "chunk", "gemm_bytes", "moe_bytes", "kv_bytes", "nextn", "tbo"),
    "disagg": ("p_tp", "p_dp", "p_moe_tp", "prefill_batch", "prefill_workers", "d_tp", "d_dp", "d_pp", "d_moe_tp",
               "decode_batch", "decode_workers", "gemm_bytes", "moe_bytes", "kv_bytes", "nextn", "tbo"),
    "agg+afd": ("attn_tp", "attn_dp", "ffn_ep", "ffn_moe_tp", "micro_batches", "batch", "chunk", "gemm_bytes",
                "moe_bytes", "kv_bytes", "nextn"),
    "disagg+afd": ("attn_tp", "attn_dp", "ffn_ep", "ffn_moe_tp", "micro_batches", "batch", "workers", "p_tp",
                   "p_dp", "p_moe_tp", "prefill_batch", "prefill_workers", "gemm_bytes", "moe_bytes", "kv_bytes",
                   "nextn"),
}


class SweepError(ValueError):
    """A design space that cannot be swept (unknown axis, empty axis, bad value)."""


@dataclasses.dataclass(frozen=True)
class DesignSpace:
    """One architecture's axes; every combination of their values is one configuration.

    Args:
        arch: one of SWEEP_ARCHITECTURES.
        axes: axis name → values; every axis of `AXES[arch]` must be given (a single value fixes it).
        total_gpus: the cluster; a configuration needing more GPUs than this is invalid. Aggregated and
            AFD instances are replicated to fill it (per-GPU metrics count the GPUs actually used).
        nextn_accept: acceptance probability of each speculative token.
    """

    arch: str
    axes: Mapping[str, Sequence[float]]
    total_gpus: float
    nextn_accept: float = 0.7

    def __post_init__(self) -> None:
        if self.arch not in AXES:
            raise SweepError(f"unknown architecture {self.arch!r}; known: {', '.join(AXES)}")
        names = AXES[self.arch]
        unknown = sorted(set(self.axes) - set(names))
        missing = [n for n in names if n not in self.axes]
        if unknown or missing:
            raise SweepError(f"{self.arch}: axes {', '.join(names)} are needed"
                             + (f"; unknown: {', '.join(unknown)}" if unknown else "")
                             + (f"; missing: {', '.join(missing)}" if missing else ""))
        for n in names:
            vals = np.asarray(self.axes[n], dtype=float)
            if vals.ndim != 1 or vals.size == 0 or not np.all(np.isfinite(vals)) or np.any(vals < 0):
                raise SweepError(f"{self.arch}: axis {n!r} needs one or more finite values ≥ 0")
        if not self.total_gpus >= 1:
            raise SweepError("total_gpus must be ≥ 1")

    @property
    def names(self) -> tuple[str, ...]:
        return AXES[self.arch]

    @property
    def sizes(self) -> tuple[int, ...]:
        return tuple(len(self.axes[n]) for n in self.names)

    @property
    def size(self) -> int:
        return math.prod(self.sizes)

    def signature(self) -> dict[str, Any]:
        """A JSON-able description (checkpoints refuse to resume a different space)."""
        return {"arch": self.arch, "total_gpus": float(self.total_gpus), "nextn_accept": float(self.nextn_accept),
                "axes": {n: [float(v) for v in self.axes[n]] for n in self.names}}

    def decode(self, idx: jax.Array) -> dict[str, jax.Array]:
        """Axis values of configuration `idx` (last axis varies fastest)."""
        out = {}
        stride = 1
        for name, size in reversed(list(zip(self.names, self.sizes, strict=True))):
            table = jnp.asarray(np.asarray(self.axes[name], dtype=np.float32))
            out[name] = table[(idx // stride) % size]
            stride *= size
        return {n: out[n] for n in self.names}


def _whole(x: jax.Array) -> jax.Array:
    return (x >= 1) & (x == jnp.floor(x))


def _precisions(v: Mapping[str, jax.Array]) -> dict[str, jax.Array]:
    return {"gemm_weight_bytes": v["gemm_bytes"], "moe_weight_bytes": v["moe_bytes"], "kv_bytes": v["kv_bytes"],
            "nextn": v["nextn"]}


def build_config(space: DesignSpace, v: Mapping[str, jax.Array]) -> tuple[Any, jax.Array]:
    """(serving configuration, validity beyond the model's own checks) from decoded axis values."""
    total = space.total_gpus
    acc = {"nextn_accept": jnp.full_like(v["nextn"], space.nextn_accept)}
    if space.arch == "agg":
        ep = v["tp"] * v["dp"] / v["moe_tp"]
        d = Deployment(tp=v["tp"], dp=v["dp"], pp=v["pp"], ep=ep, moe_tp=v["moe_tp"], two_batch_overlap=v["tbo"],
                       **_precisions(v), **acc)
        instances = jnp.floor(total / d.gpus)
        return AggConfig(d, batch=v["batch"], chunk=v["chunk"], workers=instances), _whole(ep) & (instances >= 1)
    if space.arch == "disagg":
        p_ep = v["p_tp"] * v["p_dp"] / v["p_moe_tp"]
        d_ep = v["d_tp"] * v["d_dp"] / v["d_moe_tp"]
        pre = Deployment(tp=v["p_tp"], dp=v["p_dp"], ep=p_ep, moe_tp=v["p_moe_tp"], two_batch_overlap=v["tbo"],
                         **_precisions(v), **acc)
        dec = Deployment(tp=v["d_tp"], dp=v["d_dp"], pp=v["d_pp"], ep=d_ep, moe_tp=v["d_moe_tp"],
                         two_batch_overlap=v["tbo"], **_precisions(v), **acc)
        used = v["prefill_workers"] * pre.gpus + v["decode_workers"] * dec.gpus
        ok = _whole(p_ep) & _whole(d_ep) & (used <= total) & (v["decode_workers"] >= 1)
        return DisaggConfig(pre, dec, prefill_batch=v["prefill_batch"], decode_batch=v["decode_batch"],
                            prefill_workers=v["prefill_workers"], decode_workers=v["decode_workers"]), ok
    d = Deployment(tp=v["attn_tp"], dp=v["attn_dp"], ep=v["ffn_ep"], moe_tp=v["ffn_moe_tp"], **_precisions(v), **acc)
    unit = d.tp * d.dp + d.ep * d.moe_tp
    if space.arch == "agg+afd":
        instances = jnp.floor(total / unit)
        return (AFDConfig(d, micro_batches=v["micro_batches"], batch=v["batch"], chunk=v["chunk"], workers=instances,
                          base="agg"), instances >= 1)
    p_ep = v["p_tp"] * v["p_dp"] / v["p_moe_tp"]
    pre = Deployment(tp=v["p_tp"], dp=v["p_dp"], ep=p_ep, moe_tp=v["p_moe_tp"], **_precisions(v), **acc)
    used = v["prefill_workers"] * pre.gpus + v["workers"] * unit
    ok = _whole(p_ep) & (used <= total) & (v["workers"] >= 1)
    return (AFDConfig(d, micro_batches=v["micro_batches"], batch=v["batch"], workers=v["workers"], base="disagg",
                      prefill=pre, prefill_batch=v["prefill_batch"], prefill_workers=v["prefill_workers"]), ok)


def _row(space: DesignSpace, m: Model, hw: Hardware, w: Workload, slo: SLO, load: Load,
         idx: jax.Array) -> dict[str, jax.Array]:
    """Axis values and metrics of configuration `idx` (one configuration; vmapped by the caller)."""
    v = space.decode(idx)
    cfg, ok = build_config(space, v)
    r: Metrics = estimate(m, hw, cfg, w, slo, load)
    valid = ok & (r.reason != REASONS.index("invalid_parallelism")) & (idx < space.size)
    out = dict(v)
    flat = flatten(r)
    out.update({k: flat[k] for k in METRIC_COLUMNS})
    out["feasible"] = r.feasible & valid
    out["reason"] = jnp.where(valid, r.reason, REASONS.index("invalid_parallelism"))
    out["valid"] = valid
    out["index"] = idx
    return out


def make_evaluator(space: DesignSpace, m: Model, hw: Hardware, w: Workload, slo: SLO, load: Load = SATURATION,
                   block: int = DEFAULT_BLOCK, select: tuple[int, int] | None = None
                   ) -> Callable[[jax.Array], dict[str, jax.Array]]:
    """A jitted function: configuration indices (sharded over all local devices) → columns.

    With `select = (top_k, cap)` each device returns only the rows of its shard that `keep="pareto"`
    keeps (the feasible Pareto frontier plus the `top_k` feasible rows of highest tokens/s/GPU), compacted
    into `cap` slots, plus `_n_sel` (how many slots are used; more than `cap` means the selection
    overflowed and the chunk must be fetched whole) and `_stats` (configurations in range, valid,
    feasible). The rows that leave the device then no longer scale with the chunk, which is what lets an
    accelerator sweep at its own speed instead of the host link's.
    """
    def per_device(idx: jax.Array) -> dict[str, jax.Array]:
        cols = blocked_vmap(lambda i: _row(space, m, hw, w, slo, load, i), block)(idx)
        return cols if select is None else _select_on_device(cols, idx < space.size, *select)

    devices = jax.devices()
    if len(devices) == 1:
        return jax.jit(per_device)
    mesh = Mesh(np.array(devices), ("configs",))
    return jax.jit(jax.shard_map(per_device, mesh=mesh, in_specs=PartitionSpec("configs"),
                                 out_specs=PartitionSpec("configs")))


def _select_on_device(cols: dict[str, jax.Array], in_range: jax.Array, top_k: int,
                      cap: int) -> dict[str, jax.Array]:
    """The Pareto + top-k feasible rows of one shard, compacted in index order (see `make_evaluator`).

    Same rule as `pareto_mask`: sorted by user rate then GPU rate, both descending, a row is on the
    frontier when its GPU rate beats every row before it (the first of equal rows wins).
    """
    feas = cols["feasible"]
    x = jnp.where(feas, cols["tok_per_s_per_user"], -jnp.inf)
    y = jnp.where(feas, cols["out_tok_per_s_per_gpu"], -jnp.inf)
    order = jnp.lexsort((-y, -x))
    ys = y[order]
    before = jnp.concatenate([jnp.full((1,), -jnp.inf, ys.dtype), jax.lax.cummax(ys)[:-1]])
    sel = jnp.zeros_like(feas).at[order].set(ys > before)
    _, top = jax.lax.top_k(y, min(top_k, y.shape[0]))
    sel = sel.at[top].set(True) & feas
    pos = jnp.nonzero(sel, size=cap, fill_value=0)[0]
    out = {k: v[pos] for k, v in cols.items()}
    out["_n_sel"] = jnp.sum(sel, dtype=jnp.int32)[None]
    out["_stats"] = jnp.stack([jnp.sum(in_range), jnp.sum(cols["valid"]), jnp.sum(feas)]).astype(jnp.int32)[None]
    return out


def pareto_mask(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Points not dominated when both x and y are maximised (ties: the first of equal points is kept)."""
    x, y = np.asarray(x), np.asarray(y)
    keep = np.zeros(len(x), dtype=bool)
    if len(x) == 0:
        return keep
    order = np.lexsort((-y, -x))  # by x descending, then y descending (stable: lower index first)
    ys = y[order]
    before = np.concatenate([[-np.inf], np.maximum.accumulate(ys)[:-1]])
    keep[order] = ys > before
    return keep


def _reduce(cols: dict[str, np.ndarray], keep: str, top_k: int) -> dict[str, np.ndarray]:
    """Rows of one chunk to keep: all valid ones, the feasible ones, or Pareto + top-k feasible ones."""
    valid = cols["valid"]
    if keep == "all":
        sel = valid
    else:
        sel = cols["feasible"].copy()
        if keep == "pareto":
            f = np.flatnonzero(sel)
            mask = pareto_mask(cols["tok_per_s_per_user"][f], cols["out_tok_per_s_per_gpu"][f])
            top = np.argsort(-cols["out_tok_per_s_per_gpu"][f], kind="stable")[:top_k]
            mask[top] = True
            sel = np.zeros_like(sel)
            sel[f[mask]] = True
    return {k: v[sel] for k, v in cols.items()}


@dataclasses.dataclass
class SweepResult:
    """Kept rows of every swept architecture as a struct of arrays, plus counts and timing."""

    columns: dict[str, np.ndarray]
    evaluated: dict[str, int]
    valid: dict[str, int]
    feasible: dict[str, int]
    elapsed_s: float
    compile_s: float

    @property
    def configs_evaluated(self) -> int:
        return sum(self.evaluated.values())

    def to_pandas(self) -> Any:
        import pandas as pd

        return pd.DataFrame(self.columns)

    def to_arrow(self) -> Any:
        import pyarrow as pa

        return pa.table(self.columns)

    def best(self, arch: str | None = None, k: int = 1) -> dict[str, np.ndarray]:
        """The k feasible rows of highest output tokens/s/GPU (of one architecture, or of all)."""
        sel = self.columns["feasible"].astype(bool)
        if arch is not None:
            sel &= self.columns["arch"] == arch
        idx = np.flatnonzero(sel)
        idx = idx[np.argsort(-self.columns["out_tok_per_s_per_gpu"][idx], kind="stable")[:k]]
        return {c: v[idx] for c, v in self.columns.items()}

    def pareto(self, arch: str) -> dict[str, np.ndarray]:
        """The feasible Pareto frontier of tokens/s/GPU vs tokens/s/user of one architecture, by user rate."""
        sel = np.flatnonzero(self.columns["feasible"].astype(bool) & (self.columns["arch"] == arch))
        mask = pareto_mask(self.columns["tok_per_s_per_user"][sel], self.columns["out_tok_per_s_per_gpu"][sel])
        idx = sel[mask]
        idx = idx[np.argsort(self.columns["tok_per_s_per_user"][idx], kind="stable")]
        return {c: v[idx] for c, v in self.columns.items()}


def _merge(parts: Iterable[dict[str, np.ndarray]], names: Sequence[str]) -> dict[str, np.ndarray]:
    """Concatenate chunks; a column an architecture does not have is NaN in its rows."""
    parts = list(parts)
    out = {}
    for n in names:
        vals = [p[n] if n in p else np.full(len(p["index"]), np.nan) for p in parts]
        out[n] = np.concatenate(vals) if vals else np.zeros(0)
    return out


class _Checkpoints:
    """Finished chunks of a sweep as orbax checkpoints under `root/<arch>/chunks_<first>_<last>`.

    Each checkpoint holds the kept rows and counts of the chunks it lists; several chunks are grouped
    per save so short sweeps do not pay for many small writes.
    """

    def __init__(self, root: Path, spaces: Sequence[DesignSpace], chunk: int, keep: str, top_k: int,
                 extra: Mapping[str, Any], resume: bool) -> None:
        import shutil

        import orbax.checkpoint as ocp

        self.root = root.resolve()
        self.ckpt = ocp.PyTreeCheckpointer()
        manifest = {"spaces": [s.signature() for s in spaces], "chunk": chunk, "keep": keep, "top_k": top_k,
                    **extra}
        path = self.root / "manifest.json"
        if path.exists() and not resume:
            shutil.rmtree(self.root)
        if path.exists():
            old = json.loads(path.read_text())
            if old != json.loads(json.dumps(manifest)):
                raise SweepError(f"{self.root} holds checkpoints of a different sweep; use another --out directory "
                                 "or remove it")
        else:
            self.root.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(manifest, indent=1))

    def load(self, arch: str) -> list[tuple[set[int], dict[str, np.ndarray]]]:
        """(chunk ids, rows with their summed counts under `_stats`) of every finished group."""
        folder = self.root / arch.replace("+", "_")
        out = []
        for path in sorted(folder.glob("chunks_*")) if folder.is_dir() else []:
            if not path.name.replace("chunks_", "").replace("_", "").isdigit():
                continue  # an unfinished (temporary) write
            data = {k: np.asarray(v) for k, v in self.ckpt.restore(path).items()}
            n, stats, chunks = int(data.pop("n_rows")), data.pop("stats"), data.pop("chunks")
            rows = {k: v[:n] for k, v in data.items()}
            rows["arch"] = np.full(n, arch, dtype=object)
            rows["_stats"] = stats
            out.append(({int(c) for c in chunks}, rows))
        return out

    def save(self, arch: str, chunks: Sequence[int], rows: dict[str, np.ndarray]) -> None:
        """Save the kept rows and counts of `chunks` (numeric columns; the architecture is the folder)."""
        n = len(rows["index"])
        # Zero-length arrays do not round-trip everywhere: store at least one (padded) row and the count.
        data = {k: (v if n else np.zeros(1, dtype=v.dtype)) for k, v in rows.items() if k not in ("arch", "_stats")}
        data["n_rows"] = np.asarray(n)
        data["stats"] = rows["_stats"]
        data["chunks"] = np.asarray(sorted(chunks), dtype=np.int64)
        name = f"chunks_{min(chunks):07d}_{max(chunks):07d}"
        self.ckpt.save(self.root / arch.replace("+", "_") / name, data)


def _concat(parts: Sequence[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Rows of one architecture's chunks as one block, counts summed under `_stats`."""
    out = {k: np.concatenate([p[k] for p in parts]) for k in parts[0] if k != "_stats"}
    out["_stats"] = np.sum([p["_stats"] for p in parts], axis=0)
    return out


def _rereduce(kept: Sequence[dict[str, np.ndarray]], keep: str, top_k: int) -> list[dict[str, np.ndarray]]:
    """Blocks of kept rows of one architecture merged and reduced again to one block (counts summed)."""
    merged = _concat(kept)
    stats = merged.pop("_stats")
    return [{**_reduce({**merged, "valid": merged["valid"].astype(bool)}, keep, top_k), "_stats": stats}]


def _to_host(x: jax.Array) -> np.ndarray:
    """A sharded result column as one NumPy array on this process (gathered across hosts if several)."""
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        return np.asarray(multihost_utils.process_allgather(x, tiled=True))
    return np.asarray(x)


def sweep(spaces: Sequence[DesignSpace], m: Model, hw: Hardware, w: Workload, slo: SLO, load: Load = SATURATION,
          *, chunk: int | None = None, keep: str = "feasible", top_k: int = 64,
          checkpoint_dir: str | Path | None = None, resume: bool = True, checkpoint_every_s: float = 10.0,
          progress: Callable[[str, int, int], None] | None = None,
          stop_after_chunks: int | None = None, block: int | None = None,
          select_cap: int = 4096) -> SweepResult:
    """Evaluate every configuration of `spaces` and keep rows per `keep` (see the module docstring).

    Args:
        chunk: configurations per jitted call (rounded up to a multiple of the local device count); default
            2^18 on CPUs, 2^22 on accelerators.
        keep: "all" valid rows, "feasible" rows, or "pareto" (the Pareto-optimal and the `top_k` best
            feasible rows of each architecture, re-reduced as chunks arrive so memory stays flat).
        checkpoint_dir: save finished chunks there (orbax), at most every `checkpoint_every_s` seconds
            and when stopping early; with `resume`, chunks already saved by the same sweep are skipped
            (without it, old checkpoints there are removed first).
        progress: called as progress(arch, configurations done, configurations total).
        stop_after_chunks: stop after this many newly evaluated chunks (to test interruption and resume).
        block: configurations vmapped at once inside a chunk (see `jaxsim.batching`); default: a few
            thousand on CPUs (cache-sized), the whole chunk on accelerators.
        select_cap: with keep="pareto", rows each device may hand back per chunk (the selection runs on
            the device; a chunk whose selection is larger is fetched whole instead).
    """
    if keep not in KEEP:
        raise SweepError(f"keep must be one of {KEEP}, got {keep!r}")
    n_dev = len(jax.devices())
    on_cpu = jax.devices()[0].platform == "cpu"
    chunk = (1 << 18 if on_cpu else 1 << 22) if chunk is None else chunk
    chunk = max(n_dev, -(-int(chunk) // n_dev) * n_dev)
    block = (DEFAULT_BLOCK if on_cpu else chunk // n_dev) if block is None else block
    select = (top_k, select_cap) if keep == "pareto" else None
    ckpt = _Checkpoints(Path(checkpoint_dir), spaces, chunk, keep, top_k, {"model": m.name, "hardware": hw.name,
                        "workload": [float(w.prefix_tokens), float(w.input_tokens), float(w.output_tokens)],
                        "slo": [float(slo.ttft_s), float(slo.tpot_s)], "load": [load.kind, float(load.value)]},
                        resume) if checkpoint_dir is not None else None
    t_start = time.perf_counter()
    compile_s = 0.0
    parts, evaluated, valid, feasible = [], {}, {}, {}
    new_chunks = 0
    sharding = NamedSharding(Mesh(np.array(jax.devices()), ("configs",)), PartitionSpec("configs"))
    stopped = False
    full_chunk = chunk
    for space in spaces:
        arch = space.arch
        # A space smaller than one chunk is evaluated in one call of its own (rounded up) size.
        chunk = min(full_chunk, -(-space.size // n_dev) * n_dev)
        n_chunks = -(-space.size // chunk)
        run = run_all = None
        reduced_rows = 1 << 14
        saved = ckpt.load(arch) if ckpt is not None else []
        done = set().union(*(ids for ids, _ in saved)) if saved else set()
        kept = [rows for _, rows in saved]
        pending: list[dict[str, np.ndarray]] = []
        pending_ids: list[int] = []
        finished = len(done)
        last_save = time.perf_counter()

        def flush(arch: str = arch) -> None:
            nonlocal last_save, pending, pending_ids
            if ckpt is not None and pending:
                ckpt.save(arch, pending_ids, _concat(pending))
            pending, pending_ids, last_save = [], [], time.perf_counter()

        for c in range(n_chunks):
            if c in done:
                continue
            if stop_after_chunks is not None and new_chunks >= stop_after_chunks:
                stopped = True
                break
            host_idx = np.arange(c * chunk, (c + 1) * chunk, dtype=np.int32)
            # Built per addressable shard, so the same code makes a global array across hosts.
            idx = jax.make_array_from_callback(host_idx.shape, sharding, lambda ix, h=host_idx: h[ix])
            if run is None:
                t0 = time.perf_counter()
                run = make_evaluator(space, m, hw, w, slo, load, block, select).lower(idx).compile()
                compile_s += time.perf_counter() - t0
            out = run(idx)
            n_sel = _to_host(out.pop("_n_sel")) if select is not None else None
            if n_sel is not None and n_sel.max() > select[1]:  # frontier larger than the slots: fetch whole
                if run_all is None:
                    run_all = make_evaluator(space, m, hw, w, slo, load, block).lower(idx).compile()
                out = run_all(idx)
                n_sel = None
            if n_sel is not None:
                stats = _to_host(out.pop("_stats")).sum(axis=0)
                used = (np.arange(select[1])[None, :] < n_sel[:, None]).ravel()
                cols = {k: _to_host(v)[used] for k, v in out.items()}
            else:
                cols = {k: _to_host(v) for k, v in out.items()}
                stats = np.array([np.sum(cols["index"] < space.size), np.sum(cols["valid"]), np.sum(cols["feasible"])])
            rows = _reduce(cols, keep, top_k)
            rows["arch"] = np.full(len(rows["index"]), arch, dtype=object)
            rows["_stats"] = stats
            new_chunks += 1
            finished += 1
            kept.append(rows)
            pending.append(rows)
            pending_ids.append(c)
            held = sum(len(k["index"]) for k in kept)
            if keep == "pareto" and len(kept) > 1 and held > 2 * reduced_rows:
                # Keep memory flat: re-reduce to one block whenever the held rows have doubled since the
                # last reduction (amortised: a large frontier is not re-sorted at every chunk).
                kept = _rereduce(kept, keep, top_k)
                reduced_rows = max(len(kept[0]["index"]), 1 << 14)
            if time.perf_counter() - last_save >= checkpoint_every_s:
                flush()
            if progress is not None:
                progress(arch, min(finished * chunk, space.size), space.size)
        if stopped:
            flush()
        if keep == "pareto" and len(kept) > 1:
            kept = _rereduce(kept, keep, top_k)
        evaluated[arch] = valid[arch] = feasible[arch] = 0
        for rows in kept:
            rows = dict(rows)
            stats = rows.pop("_stats")
            evaluated[arch] += int(stats[0])
            valid[arch] += int(stats[1])
            feasible[arch] += int(stats[2])
            rows["arch"] = np.asarray(rows["arch"]).astype(object)
            parts.append(rows)
        if progress is not None and not stopped:
            progress(arch, space.size, space.size)
        if stopped:
            break
    columns = _merge(parts, _columns(spaces))
    order = np.lexsort((columns["index"], [SWEEP_ARCHITECTURES.index(a) for a in columns["arch"]])) \
        if len(columns["index"]) else np.zeros(0, dtype=int)
    return SweepResult({k: v[order] for k, v in columns.items()}, evaluated, valid, feasible,
                       time.perf_counter() - t_start, compile_s)


def _columns(spaces: Sequence[DesignSpace]) -> list[str]:
    names: list[str] = ["arch"]
    for s in spaces:
        names += [n for n in s.names if n not in names]
    return [*names, *METRIC_COLUMNS, "feasible", "reason", "valid", "index"]


# --------------------------------------------------------------------------------------------------
# Default design spaces
# --------------------------------------------------------------------------------------------------

BATCHES = (1, 2, 4, 8, 12, 16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512)
CHUNKS = (512, 1024, 2048, 4096, 8192, 16384)
MODES = {"agg": ("agg",), "disagg": ("disagg",), "afd": ("agg+afd", "disagg+afd"), "agg+afd": ("agg+afd",),
         "disagg+afd": ("disagg+afd",)}


def _pow2_upto(n: float, start: int = 1) -> list[int]:
    out, v = [], start
    while v <= n:
        out.append(v)
        v *= 2
    return out


def default_spaces(m: Model, hw: Hardware, total_gpus: int, modes: Sequence[str] = ("agg", "disagg", "afd"),
                   gemm_bytes: Sequence[float] = (1.0,), moe_bytes: Sequence[float] = (1.0,),
                   kv_bytes: Sequence[float] = (1.0,)) -> list[DesignSpace]:
    """The spaces `jaxsim sweep` explores: powers of two for every degree (TP within one scale-up
    domain and dividing the heads, EP dividing the experts), batches 1–512, chunks 512–16k, MTP on/off
    when the model ships MTP layers, two-batch overlap on/off, and worker counts that fit the cluster."""
    archs: list[str] = []
    for mode in modes:
        if mode not in MODES:
            raise SweepError(f"unknown mode {mode!r}; known: {', '.join(MODES)}")
        archs += [a for a in MODES[mode] if a not in archs]
    heads, experts = float(m.n_heads), float(m.n_routed_experts)
    tps = [t for t in _pow2_upto(min(8, float(hw.scale_up_gpus), total_gpus)) if heads % t == 0]
    dps = _pow2_upto(total_gpus)
    eps = [e for e in _pow2_upto(total_gpus) if experts and experts % e == 0]
    nextn = (0, 1) if float(m.n_mtp_layers) > 0 else (0,)
    prec = {"gemm_bytes": list(gemm_bytes), "moe_bytes": list(moe_bytes), "kv_bytes": list(kv_bytes),
            "nextn": list(nextn)}
    workers = [w for w in (1, 2, 3, 4, 5, 6, 7, 8) if w <= total_gpus]
    spaces = []
    for arch in archs:
        if arch.endswith("afd") and not experts:
            continue  # dense models have no FFN experts to disaggregate
        if arch == "agg":
            ax = {"tp": tps, "dp": dps, "pp": [1], "moe_tp": [1, 2] if experts else [1], "batch": BATCHES,
                  "chunk": CHUNKS, "tbo": [0, 1] if experts else [0], **prec}
        elif arch == "disagg":
            ax = {"p_tp": tps, "p_dp": [d for d in dps if d <= 16], "p_moe_tp": [1], "prefill_batch": [1, 2, 4, 8],
                  "prefill_workers": workers, "d_tp": tps, "d_dp": dps, "d_pp": [1], "d_moe_tp": [1],
                  "decode_batch": BATCHES, "decode_workers": [1, 2, 3, 4], "tbo": [0, 1] if experts else [0], **prec}
        elif arch == "agg+afd":
            ax = {"attn_tp": [t for t in tps if t <= 2], "attn_dp": dps, "ffn_ep": eps, "ffn_moe_tp": [1],
                  "micro_batches": [1, 2, 3, 4], "batch": BATCHES, "chunk": CHUNKS, **prec}
        else:
            ax = {"attn_tp": [t for t in tps if t <= 2], "attn_dp": dps, "ffn_ep": eps, "ffn_moe_tp": [1],
                  "micro_batches": [1, 2, 3, 4], "batch": BATCHES, "workers": [1, 2], "p_tp": tps,
                  "p_dp": [d for d in dps if d <= 16], "p_moe_tp": [1], "prefill_batch": [1, 2, 4],
                  "prefill_workers": [w for w in workers if w in (1, 2, 3, 4, 6, 8)], **prec}
        spaces.append(DesignSpace(arch, {k: [float(x) for x in v] for k, v in ax.items()}, float(total_gpus)))
    return spaces


def row_config(space: DesignSpace, row: Mapping[str, Any]) -> Any:
    """The serving configuration of one result row (for re-evaluating it with `estimate`)."""
    values = {n: jnp.asarray(float(row[n]), jnp.float32) for n in space.names}
    cfg, _ = build_config(space, values)
    return cfg


def describe_config(arch: str, c: Mapping[str, float]) -> str:
    """A configuration of `arch` in one short line (degrees, batch, chunk, options)."""

    def g(k: str) -> str:
        return f"{float(c[k]):g}"

    def inst(prefix: str, tp: str, dp: str, moe_tp: str, pp: str | None = None) -> str:
        t, d, mt = float(c[tp]), float(c[dp]), float(c[moe_tp])
        s = f"TP{t:g}·DP{d:g}·EP{t * d / mt:g}" + (f"·MoE-TP{mt:g}" if mt > 1 else "")
        if pp and float(c[pp]) > 1:
            s += f"·PP{g(pp)}"
        return prefix + s

    extras = (", MTP" + g("nextn") if float(c.get("nextn", 0)) else "") + (", TBO" if float(c.get("tbo", 0)) else "")
    if arch == "agg":
        return f"{inst('', 'tp', 'dp', 'moe_tp', 'pp')}, batch {g('batch')}, chunk {g('chunk')}{extras}"
    if arch == "disagg":
        return (f"P {g('prefill_workers')}× {inst('', 'p_tp', 'p_dp', 'p_moe_tp')} batch {g('prefill_batch')} | "
                f"D {g('decode_workers')}× {inst('', 'd_tp', 'd_dp', 'd_moe_tp', 'd_pp')} batch {g('decode_batch')}"
                f"{extras}")
    n_attn = float(c["attn_tp"]) * float(c["attn_dp"])
    n_ffn = float(c["ffn_ep"]) * float(c["ffn_moe_tp"])
    afd = (f"{n_attn:g}A (TP{g('attn_tp')}·DP{g('attn_dp')}) + {n_ffn:g}F (EP{g('ffn_ep')}), "
           f"M={g('micro_batches')}, batch {g('batch')}")
    if arch == "agg+afd":
        return f"{afd}, chunk {g('chunk')}{extras}"
    return (f"P {g('prefill_workers')}× {inst('', 'p_tp', 'p_dp', 'p_moe_tp')} batch {g('prefill_batch')} | "
            f"{g('workers')}× {afd}{extras}")

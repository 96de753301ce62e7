"""Measured kernel tables: jaxsim's own CSV format and an importer for AIConfigurator's performance database.

A *kernel table* is a pandas DataFrame with one row per measured kernel call, in the columns of `COLUMNS`
(SI-free, as measured: element counts, tokens, bytes, milliseconds). Columns that do not apply to a row's
`op` are empty (NaN). The same columns are the documented CSV format for users' own measurements
(`read_csv` / `write_csv`, README "Calibrating against measured kernels").

Ops and the columns they need (`REQUIRED`):
- `gemm`: `m` rows (tokens) × `k` inner × `n` output; `dtype` is the weight / operand precision.
- `moe`: routed experts of one MoE layer on one GPU of an EP × MoE-TP group that serves `tokens` tokens:
  `hidden`, `inter` (per expert), `topk`, `experts`, `moe_tp`, `moe_ep`; `dtype` of the expert weights.
- `context_attention` / `generation_attention` (GQA / MHA): `batch` sequences of `seq_len` new tokens
  (1 for generation) after `prefix` cached positions, `heads` / `kv_heads` per GPU, `head_dim`, optional
  `window` (sliding window, 0 = none); `dtype` of the attention math, `kv_dtype` of the cache.
- `context_mla` / `generation_mla`: as above for DeepSeek-style MLA (kv_lora 512, rope 64, nope 128,
  v 128) with `heads` per GPU.
- `all_reduce`, `all_gather`, `reduce_scatter`, `all_to_all`: `gpus` in the group, `bytes` per GPU
  (the buffer each GPU holds: input of all-reduce / all-to-all, output of all-gather, input of reduce-scatter).
Every row has `latency_ms` > 0.
"""

from __future__ import annotations

import re
import zlib
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from jaxsim.presets import SpecError

OPS = ("gemm", "moe", "context_attention", "generation_attention", "context_mla", "generation_mla",
       "all_reduce", "all_gather", "reduce_scatter", "all_to_all")
COLLECTIVES = ("all_reduce", "all_gather", "reduce_scatter", "all_to_all")
# Reporting families: the op of each row grouped as the validation tables show them.
FAMILY = {"gemm": "gemm", "moe": "moe", "context_attention": "context_attention",
          "generation_attention": "decode_attention", "context_mla": "context_mla", "generation_mla": "decode_mla",
          **{c: "collectives" for c in COLLECTIVES}}
DTYPES = ("bf16", "fp8", "fp4")
NUMERIC = ("m", "n", "k", "tokens", "hidden", "inter", "topk", "experts", "moe_tp", "moe_ep", "batch", "seq_len",
           "prefix", "heads", "kv_heads", "head_dim", "window", "gpus", "bytes", "latency_ms")
COLUMNS = ("op", "dtype", "kv_dtype", *NUMERIC, "source")
_ATTN = ("batch", "seq_len", "prefix", "heads")
REQUIRED = {
    "gemm": ("m", "n", "k"),
    "moe": ("tokens", "hidden", "inter", "topk", "experts", "moe_tp", "moe_ep"),
    "context_attention": (*_ATTN, "kv_heads", "head_dim"),
    "generation_attention": (*_ATTN, "kv_heads", "head_dim"),
    "context_mla": _ATTN,
    "generation_mla": _ATTN,
    **{c: ("gpus", "bytes") for c in COLLECTIVES},
}

# AIConfigurator precision names → ours. Precisions our cost model cannot express (weights and math in
# different precisions, e.g. w4a16) are left out of the import.
_AIC_DTYPE = {"bfloat16": "bf16", "float16": "bf16", "half": "bf16", "fp8": "fp8", "fp8_block": "fp8",
              "nvfp4": "fp4", "int8": "fp8"}
_ELEM_BYTES = {"half": 2, "bfloat16": 2, "float16": 2, "int8": 1, "fp8": 1}
# Files imported per (op folder, file) of the database; the largest version of each wins.
AIC_FILES = {
    "gemm_perf.parquet": "gemm",
    "moe_perf.parquet": "moe",
    "context_attention_perf.parquet": "context_attention",
    "generation_attention_perf.parquet": "generation_attention",
    "context_mla_perf.parquet": "context_mla",
    "generation_mla_perf.parquet": "generation_mla",
    "custom_allreduce_perf.parquet": "custom_allreduce",
    "nccl_perf.parquet": "nccl",
}
FRAMEWORKS = ("trtllm", "sglang", "vllm")
# Decode-attention rows with more query heads per KV head than this are left out of the import: they run
# 3-4x slower than the same KV bytes at smaller groups (a different kernel path), and no preset model
# has such groups (Llama-3.1 / GPT-OSS 8, Qwen3-235B 16; MLA tables are separate).
MAX_GQA_GROUP = 16


# --------------------------------------------------------------------------------------------------
# Own CSV format
# --------------------------------------------------------------------------------------------------


def check_table(df: pd.DataFrame, where: str) -> pd.DataFrame:
    """Validate a kernel table and return it with every column of `COLUMNS` in order (numbers as float)."""
    missing = [c for c in ("op", "latency_ms") if c not in df.columns]
    if missing:
        raise SpecError(f"{where}: missing column(s) {', '.join(missing)}; a kernel table needs op, latency_ms and "
                        f"the shape columns of each op (see the README section on calibration)")
    unknown = sorted(set(df.columns) - set(COLUMNS))
    if unknown:
        raise SpecError(f"{where}: unknown column(s) {', '.join(unknown)}; known: {', '.join(COLUMNS)}")
    out = df.reindex(columns=list(COLUMNS)).copy()
    out["op"] = out["op"].astype(str).str.strip().str.lower()
    bad_ops = sorted(set(out["op"]) - set(OPS))
    if bad_ops:
        raise SpecError(f"{where}: unknown op(s) {', '.join(bad_ops)}; known ops: {', '.join(OPS)}")
    for col in ("dtype", "kv_dtype"):
        vals = out[col].astype(object).where(out[col].notna(), "bf16").astype(str).str.strip().str.lower()
        vals = vals.replace({"": "bf16", "nan": "bf16", "bfloat16": "bf16", "nvfp4": "fp4"})
        bad = sorted(set(vals) - set(DTYPES))
        if bad:
            raise SpecError(f"{where}: unknown {col} value(s) {', '.join(bad)}; use one of {', '.join(DTYPES)}")
        out[col] = vals
    for col in NUMERIC:
        try:
            out[col] = pd.to_numeric(out[col], errors="raise").astype(float)
        except (ValueError, TypeError):
            raise SpecError(f"{where}: column {col} must hold numbers") from None
    for col in ("prefix", "window"):
        out[col] = out[col].fillna(0.0)
    for op, cols in REQUIRED.items():
        rows = out[out["op"] == op]
        for col in cols:
            vals = rows[col]
            positive = col not in ("prefix",)
            bad = vals.isna() | ~np.isfinite(vals) | ((vals <= 0) if positive else (vals < 0))
            if bad.any():
                i = int(rows.index[bad.to_numpy()][0])
                raise SpecError(f"{where}: row {i} ({op}) needs column {col} {'> 0' if positive else '≥ 0'}, "
                                f"got {rows.loc[i, col]!r}")
    lat = out["latency_ms"]
    if (lat.isna() | ~np.isfinite(lat) | (lat <= 0)).any():
        i = int(out.index[(lat.isna() | ~np.isfinite(lat) | (lat <= 0)).to_numpy()][0])
        raise SpecError(f"{where}: row {i}: latency_ms must be a number > 0, got {out.loc[i, 'latency_ms']!r}")
    out["source"] = out["source"].astype(object).where(out["source"].notna(), "").astype(str)
    return out.reset_index(drop=True)


def read_csv(path: str | Path) -> pd.DataFrame:
    """Read a kernel table in jaxsim's CSV format (columns of `COLUMNS`; see the module docstring)."""
    path = Path(path)
    if not path.is_file():
        raise SpecError(f"--data {path}: no such file; pass a kernel-table CSV or an AIConfigurator "
                        "systems/data folder")
    try:
        df = pd.read_csv(path, comment="#")
    except (OSError, ValueError) as exc:
        raise SpecError(f"cannot read {path} as CSV: {exc}") from None
    if "source" not in df.columns:
        df["source"] = path.name
    return check_table(df, str(path))


def write_csv(df: pd.DataFrame, path: str | Path) -> None:
    """Write a kernel table in jaxsim's CSV format."""
    check_table(df, str(path)).to_csv(path, index=False)


# --------------------------------------------------------------------------------------------------
# AIConfigurator's database: systems/data/<system>/<op>/<framework>/<version>/<file>.parquet
# --------------------------------------------------------------------------------------------------


def _version_key(v: str) -> tuple:
    return tuple((0, int(p)) if p.isdigit() else (1, p) for p in re.split(r"[.\-]|(?<=\d)(?=[a-z])", v))


def aic_data_root() -> Path | None:
    """`systems/data` of the installed aiconfigurator-core package (found without importing it), or None."""
    import importlib.util

    spec = importlib.util.find_spec("aiconfigurator_core")
    if spec is None or not spec.submodule_search_locations:
        return None
    root = Path(next(iter(spec.submodule_search_locations))) / "systems" / "data"
    return root if root.is_dir() else None


def aic_files(system_dir: Path, framework: str) -> dict[str, Path]:
    """The largest file of each kind (`AIC_FILES`, most measured shapes; the newest version on ties) for one
    framework; NCCL tables are shared by all frameworks."""
    found: dict[str, tuple[tuple, Path]] = {}
    for path in system_dir.glob("*/*/*/*.parquet"):
        kind = AIC_FILES.get(path.name)
        fw, version = path.parent.parent.name, path.parent.name
        if kind is None or fw != ("nccl" if kind == "nccl" else framework):
            continue
        key = (pq.read_metadata(path).num_rows, _version_key(version))
        if kind not in found or key > found[kind][0]:
            found[kind] = (key, path)
    return {k: p for k, (_, p) in found.items()}


def _dtype(series: pd.Series) -> pd.Series:
    return series.astype(str).map(_AIC_DTYPE)


def _frame(op: str | pd.Series, rows: int, source: str, **cols) -> pd.DataFrame:
    df = pd.DataFrame({"op": op if isinstance(op, pd.Series) else [op] * rows, **cols})
    df["source"] = source
    return df


def _one_fp8_flavour(raw: pd.DataFrame, col: str) -> pd.DataFrame:
    """Keep one FP8 kernel family: block-scaled (`fp8_block`, DeepSeek / Qwen3 FP8 checkpoints, DeepGEMM-style)
    where the table has it, else per-tensor `fp8`. The two differ by up to 3× at the same shape and the
    cost model knows precisions only by their bytes."""
    kinds = set(raw[col].astype(str))
    drop = "fp8" if "fp8_block" in kinds else None
    return raw[raw[col].astype(str) != drop] if drop else raw


def _from_aic(kind: str, raw: pd.DataFrame, source: str) -> pd.DataFrame:
    """One AIConfigurator table → kernel-table rows (latency in ms, as the database stores it)."""
    if kind in ("gemm", "moe"):
        raw = _one_fp8_flavour(raw, "gemm_dtype" if kind == "gemm" else "moe_dtype")
    raw = raw.reset_index(drop=True)
    rows = len(raw)
    lat = raw["latency"].astype(float)
    if kind == "gemm":
        df = _frame("gemm", rows, source, dtype=_dtype(raw["gemm_dtype"]), m=raw["m"], n=raw["n"], k=raw["k"],
                    latency_ms=lat)
    elif kind == "moe":
        # Balanced routing only: imbalance is a property of the deployment (Deployment.expert_imbalance),
        # not of the kernel; non-gated expert kernels are not the gated FFN the model prices. Where a table
        # holds two kernels at one shape (Blackwell NVFP4: TRT-LLM's default MoE kernel and its min-latency
        # kernel, which AIConfigurator keeps as a low-latency view and serves small token counts from), the
        # engine runs the faster: one row per shape, at the lower latency.
        keep = raw["distribution"].astype(str).eq("balanced")
        if "kernel_source" in raw:
            keep &= ~raw["kernel_source"].astype(str).str.contains("nongated")
        shape = ["moe_dtype", "num_tokens", "hidden_size", "inter_size", "topk", "num_experts", "moe_tp_size",
                 "moe_ep_size"]
        raw = raw[keep].assign(latency=lat[keep]).groupby(shape, as_index=False, sort=False)["latency"].min()
        lat = raw["latency"].astype(float)
        df = _frame("moe", len(raw), source, dtype=_dtype(raw["moe_dtype"]), tokens=raw["num_tokens"],
                    hidden=raw["hidden_size"], inter=raw["inter_size"], topk=raw["topk"], experts=raw["num_experts"],
                    moe_tp=raw["moe_tp_size"], moe_ep=raw["moe_ep_size"], latency_ms=lat)
    elif kind in ("context_attention", "generation_attention", "context_mla", "generation_mla"):
        gen = kind.startswith("generation")
        # Generation rows: `step` positions are cached before the one new token (`isl` = 1).
        prefix = raw["step"] if gen else raw.get("step", pd.Series(0, index=raw.index))
        dtype_col = "mla_dtype" if kind.endswith("mla") else "attn_dtype"
        cols = dict(dtype=_dtype(raw[dtype_col]), kv_dtype=_dtype(raw["kv_cache_dtype"]), batch=raw["batch_size"],
                    seq_len=raw["isl"], prefix=prefix, heads=raw["num_heads"], latency_ms=lat)
        if not kind.endswith("mla"):
            if gen:  # see MAX_GQA_GROUP
                keep = (raw["num_heads"] / raw["num_key_value_heads"]) <= MAX_GQA_GROUP
                raw = raw[keep].reset_index(drop=True)
                cols = {k: v[keep].reset_index(drop=True) for k, v in cols.items()}
                rows = len(raw)
            cols.update(kv_heads=raw["num_key_value_heads"], head_dim=raw["head_dim"],
                        window=raw.get("window_size", pd.Series(0, index=raw.index)))
        df = _frame(kind, rows, source, **cols)
    elif kind in ("custom_allreduce", "nccl"):
        dcol = "allreduce_dtype" if kind == "custom_allreduce" else "nccl_dtype"
        elem = raw[dcol].astype(str).map(_ELEM_BYTES)
        op = raw["op_name"].astype(str).replace({"alltoall": "all_to_all"})
        df = _frame(op, rows, source, dtype=_dtype(raw[dcol]), gpus=raw["num_gpus"],
                    bytes=raw["message_size"].astype(float) * elem, latency_ms=lat)
    else:  # pragma: no cover - AIC_FILES and this function list the same kinds
        raise ValueError(kind)
    return df.dropna(subset=["dtype"])


def aic_system_dir(system: str, root: Path) -> Path:
    """The database folder of a system, given a project name or alias (`h200-sxm`) or an AIConfigurator name."""
    from jaxsim import presets

    names = [system]
    try:
        file = presets._resolve("hardware", system)
        data = presets._read_toml(file)
        names += [str(data.get("name", file.stem)), *map(str, data.get("aliases", []))]
    except SpecError:
        pass
    for name in names:
        for cand in (name, name.replace("-", "_"), name.lower(), name.lower().replace("-", "_")):
            if (root / cand).is_dir():
                return root / cand
    known = sorted(p.name for p in root.iterdir() if p.is_dir())
    raise SpecError(f"no measured kernel tables for system {system!r} under {root}; known: {', '.join(known)}")


def load_aic(system: str, framework: str = "trtllm", root: str | Path | None = None) -> pd.DataFrame:
    """Import the largest tables of one system and framework from AIConfigurator's database.

    Args:
        system: project name or alias (`h200-sxm`, `b200`) or the database's folder name (`h200_sxm`).
        framework: `trtllm`, `sglang` or `vllm` (NCCL tables are shared).
        root: the `systems/data` folder (default: the installed aiconfigurator-core's).
    Returns a kernel table (`COLUMNS`); `source` names each row's file relative to `root`.
    """
    if framework not in FRAMEWORKS:
        raise SpecError(f"unknown framework {framework!r}; use one of {', '.join(FRAMEWORKS)}")
    if root is None:
        root = aic_data_root()
        if root is None:
            raise SpecError("no measured kernel tables: aiconfigurator-core is not installed; install the extra with "
                            "pip install 'jaxsim-serving[calibrate]' or pass --data (a kernel CSV or a systems/data "
                            "folder)")
    root = Path(root)
    if not root.is_dir():
        raise SpecError(f"--data {root}: not a folder")
    sdir = aic_system_dir(system, root)
    files = aic_files(sdir, framework)
    if not any(k not in ("nccl", "custom_allreduce") for k in files):
        raise SpecError(f"no {framework} kernel tables for {sdir.name} under {root}; try another --framework "
                        f"({', '.join(f for f in FRAMEWORKS if f != framework)})")
    parts = []
    for kind, path in sorted(files.items()):
        raw = pq.read_table(path).to_pandas()
        parts.append(_from_aic(kind, raw, str(path.relative_to(root))))
    df = pd.concat(parts, ignore_index=True)
    if (df["op"] == "all_reduce").any() and "custom_allreduce" in files:
        # The framework's own all-reduce (what its TP layers call) replaces NCCL's where it was measured.
        nccl_ar = (df["op"] == "all_reduce") & df["source"].str.contains("/nccl/")
        df = df[~nccl_ar]
    return check_table(df, str(sdir))


def framework_row_counts(system: str, root: str | Path | None = None) -> dict[str, int]:
    """Rows each framework's imported tables hold for a system (0 when it has none)."""
    root = Path(root) if root is not None else aic_data_root()
    if root is None:
        return {}
    sdir = aic_system_dir(system, root)
    counts = {}
    for fw in FRAMEWORKS:
        files = {k: p for k, p in aic_files(sdir, fw).items() if k != "nccl"}
        counts[fw] = int(sum(pq.read_metadata(p).num_rows for p in files.values()))
    return counts


def heldout_mask(df: pd.DataFrame, frac: float = 0.2, seed: int = 0) -> np.ndarray:
    """True for the rows held out from the fit: a fixed random `frac` of each source table (and op).

    The draw of a table depends only on its name, its length and `seed`, so the split is the same on
    every machine and run.
    """
    mask = np.zeros(len(df), dtype=bool)
    for (source, op), idx in df.groupby(["source", "op"], sort=True).indices.items():
        rng = np.random.default_rng([seed, zlib.crc32(f"{source}|{op}".encode())])
        take = rng.permutation(len(idx))[: round(frac * len(idx))]
        mask[idx[take]] = True
    return mask

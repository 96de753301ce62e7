"""Validation against measured deployments: AIConfigurator's `systems/silicon_sample.csv` (or any CSV with
its columns) of real agg and disagg deployments with measured TTFT and TPOT.

Each row becomes the configuration `jaxsim estimate` builds from the same flags (same `Deployment` fields,
same `check_deployment`, same `estimate`, the CLI's default chunk and SLO) under the row's measured load,
`Load("concurrency", N, rounds, arrivals)` with N from the free-text `silicon_concurrency=N`, read as the row's
benchmark client ran it (`row_harness`, `HARNESSES`). The rows do not record their benchmark command; their
provenance names two sources whose clients are published:
- the InferenceX exports (`source_file=<YYYY-MM-DD>.csv`, `db-dump/...`; every row at ISL / OSL 1k / 1k,
  1k / 8k or 8k / 1k): SemiAnalysis InferenceX's `benchmark_serving` (`benchmarks/benchmark_lib.sh`; srt-slurm's
  SA-Bench for the multi-node P/D runs) with `--num-prompts 10 N --max-concurrency N --num-warmups 2 N
  --random-range-ratio 0.8 --ignore-eos`, whose sampler draws every ISL and OSL uniformly on the integers
  [int(0.8 L), L]: the workload takes the mean lengths, 10 rounds, and spread arrivals (requests that start
  together finish apart) (= `jaxsim estimate --isl 921.5 --osl 921.5 --concurrency N --rounds 10 --arrivals
  spread` for a 1k / 1k row);
- everything else (AIConfigurator's gap-analysis runs): its own benchmark template
  (`generator/config/backend_templates/benchmark/bench_run.sh.j2`: aiperf `--concurrency N --num-requests 20 N
  --warmup-request-count 2 N`, ISL / OSL fixed, `ignore_eos`): 20 rounds, grouped arrivals (= `jaxsim estimate
  --concurrency N --rounds 20`).
Both clients start the measured phase after the warm-up has drained, so the N clients send their first measured
requests together: the mean TTFT counts one prefill wave in R rounds. InferenceX's launch scripts are published
too, and the agg rows take the engine options they set that change TTFT (`engine_options`): the prefill budget
(`inferencex_chunk`), TensorRT-LLM's attention-DP balancing (`adp_balance_iters`) and batch waiting
(`trtllm_batch_wait`), SGLang's poll interval (`sglang_recv_interval`); every other row keeps the `jaxsim estimate`
defaults.
Rows that cannot be modelled are skipped with a reason, never bent to fit. The rules, in the order they are applied:

- `no_concurrency`: the free text holds no `silicon_concurrency=N`; `unknown_mode`: neither agg nor disagg.
- `unknown_system`: `load_hardware` knows no preset or alias for the system (e.g. b300_sxm, gb300).
- `unknown_model` / `unsupported_architecture` / `unreadable_model_config`: the model is resolved by preset
  alias first, then through `SAMPLE_MODEL_ALIASES` (re-quantised or instruction-tuned checkpoints that share
  an architecture), then from a bundled HuggingFace `config.json` (`<org>--<name>_config.json`, as
  aiconfigurator-core ships them) read by `model_from_hf_config`. Configs with linear-attention / SSM
  layers (Qwen3.5's Gated DeltaNet) are `unsupported_architecture`: the importer would read them as full
  attention.
- `bad_lengths`: ISL + OSL beyond the model's context.
- `unknown_precision`: a quant mode outside `QUANT_BYTES`.
- `missing_batch_or_workers`: agg without `batch_size`; disagg without both batch sizes and worker counts.
- `missing_parallelism`, `inconsistent_parallelism` (MoE: tp × attention_dp ≠ moe_tp × moe_ep),
  `label_conflicts_id` (agg: the row's id names `_tpT_epE` but tp × attention_dp ≠ T GPUs),
  `tp_ep_product_label` (an instance larger than the scale-up domain that splits experts both ways,
  MoE-TP > 1 and EP > 1: the sample's pattern of writing TP8/EP8 on 8 GPUs as tp_size = 64,
  moe_tp = moe_ep = 8), `invalid_parallelism` (`check_deployment` rejects it, e.g. tp = 72 for 128 heads).
- `duplicate`: the measurement (system, mode, ISL, OSL, concurrency, measured TTFT and TPOT) or the id was
  already seen with the same resolved configuration; only the first copy is predicted.
  `conflicting_duplicate`: copies of one measurement resolve to different configurations; all are skipped.
- `prediction_not_finite`: the model returned a non-finite TTFT or TPOT.

Precision: GEMM and expert weight bytes follow `gemm_quant_mode` / `moe_quant_mode` (`QUANT_BYTES`);
when both are missing, `precision`, else the checkpoint name (`-FP8` → 1 byte, `-NVFP4` → 0.5, else BF16).
Weight-only modes (`int4_wo`, W4A16) quantise the routed experts only: GEMM weights stay BF16, and so do GPT-OSS's
(`EXPERTS_ONLY_CHECKPOINTS`: its checkpoint quantises the experts to MXFP4 and keeps attention, router, embeddings
and head in BF16, whatever the row's `gemm_quant_mode` says). KV cache:
AIConfigurator's quantisation profiles — FP8 for fp8 and nvfp4 deployments, BF16 for bf16, missing
precision, weight-only int4 and GPT-OSS (its mxfp4 profile).

Agg instances: `batch_size` is per attention-DP rank; where the concurrency is k > 1 times the slots of one
instance (batch × attention DP) and k is whole, the row is read as k identical instances (workers = k).
Disagg pools take their batch sizes and worker counts from the row (no rate matching).

Frameworks (`backend`, `FRAMEWORKS`): the hardware takes the framework's fitted calibration where one is
shipped (`specs/calibration/<system>-<framework>.toml`, else the system's); agg rows take the scheduler's
documented default (`AggConfig.mixed_prefill`: vLLM and TRT-LLM mix prefill chunks into decode iterations,
SGLang runs prefill batches apart), and every row the framework's fixed per-request time
(`request_overhead_s`: HTTP, tokenisation, scheduling, streaming the first token), estimated as the median
gap of a declared calibration split (`in_overhead_split`; experiments/validation/overhead.py). Those two
fields have no `jaxsim estimate` flag: with them at their defaults (`frameworks={}`) the predictions equal
`jaxsim estimate`'s exactly.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import math
import re
import zlib
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import equinox as eqx
import jax
import numpy as np
import pandas as pd

from jaxsim import presets
from jaxsim.batching import blocked_vmap
from jaxsim.presets import SpecError
from jaxsim.serve import REASONS, AggConfig, DisaggConfig, Load, architecture, estimate
from jaxsim.serve.estimate import Config
from jaxsim.spec import SLO, Deployment, Hardware, Model, Workload

# --------------------------------------------------------------------------------------------------
# The data
# --------------------------------------------------------------------------------------------------

POOL_COLUMNS = ("batch_size", "num_workers", "tp_size", "pp_size", "attention_dp_size", "moe_tp_size", "moe_ep_size")
COLUMNS = ("id", "silicon_data_source", "backend", "model_path", "system", "precision", "mode", "isl", "osl",
           "gemm_quant_mode", "moe_quant_mode", "batch_size", "tp_size", "pp_size", "attention_dp_size",
           "moe_tp_size", "moe_ep_size", *(f"{p}_{c}" for p in ("prefill", "decode") for c in POOL_COLUMNS),
           "silicon_ttft_ms", "silicon_tpot_ms")
PREDICTION_COLUMNS = ("id", "silicon_ttft_ms", "silicon_tpot_ms", "pred_ttft_ms", "pred_tpot_ms", "status")
_CONCURRENCY = re.compile(r"silicon_concurrency\s*=\s*(\d+(?:\.\d+)?)")
_ID_LAYOUT = re.compile(r"_tp(\d+)(?:_0)?_ep(?:\d+|none)?")

OK = "ok"
SKIP_REASONS = {
    "no_concurrency": "no silicon_concurrency=N in silicon_data_source: the load is unknown",
    "unknown_mode": "mode is neither agg nor disagg",
    "unknown_system": "no hardware preset for the system",
    "unknown_model": "no preset and no bundled config.json for the model",
    "unsupported_architecture": "linear-attention / SSM layers, which the step model does not express",
    "unreadable_model_config": "the HuggingFace importer rejects the bundled config.json",
    "bad_lengths": "ISL + OSL not a valid workload for the model",
    "unknown_precision": "a quant mode without a byte width",
    "missing_batch_or_workers": "batch sizes or worker counts missing",
    "missing_parallelism": "a parallelism degree missing",
    "inconsistent_parallelism": "tp × attention_dp ≠ moe_tp × moe_ep",
    "label_conflicts_id": "the id's _tpT_epE names another instance size than the columns",
    "tp_ep_product_label": "TP×EP product written as the TP degree (instance beyond the scale-up domain)",
    "invalid_parallelism": "check_deployment rejects the layout",
    "duplicate": "a copy of a measurement already predicted",
    "conflicting_duplicate": "copies of one measurement with different configurations",
    "prediction_not_finite": "the model returned a non-finite time",
}

# Checkpoints of the sample that share the architecture of another name (re-quantised, instruction-tuned,
# or renamed organisation); their precision comes from the row's quant columns.
SAMPLE_MODEL_ALIASES = {
    "nvidia/DeepSeek-R1-NVFP4": "deepseek-ai/DeepSeek-R1",
    "nvidia/Qwen3-32B-NVFP4": "Qwen/Qwen3-32B",
    "meta-llama/Llama-3.1-8B-Instruct": "meta-llama/Meta-Llama-3.1-8B",
    "nvidia/Llama-3.1-8B-Instruct-FP8": "meta-llama/Meta-Llama-3.1-8B",
    "zhipuai/GLM-5": "zai-org/GLM-5",
}

QUANT_BYTES = {"bf16": 2.0, "bfloat16": 2.0, "float16": 2.0, "fp16": 2.0, "fp8": 1.0, "fp8_block": 1.0,
               "fp8_static": 1.0, "fp4": 0.5, "nvfp4": 0.5, "mxfp4": 0.5, "w4afp8": 0.5, "w4a16_mxfp4": 0.5,
               "int4": 0.5, "int4_wo": 0.5}
WEIGHT_ONLY = ("int4_wo", "w4a16_mxfp4")
KV_FP8_PRECISIONS = ("fp8", "fp4")
BF16_KV_CHECKPOINTS = ("openai/gpt-oss",)  # AIConfigurator's mxfp4 profile keeps the KV cache in BF16
# Checkpoints whose quantisation covers the routed experts only: GPT-OSS ships MXFP4 experts and BF16 attention,
# router, embeddings and head (its config.json `quantization_config.modules_to_not_convert`), whatever the
# sample's `gemm_quant_mode` says.
EXPERTS_ONLY_CHECKPOINTS = ("openai/gpt-oss",)

AGG_CHUNK = 8192.0  # `jaxsim estimate --ctx-tokens` default
BENCH_ROUNDS = 20.0  # aiperf rows: measured requests per client after a synchronised start (module docstring)
DEFAULT_SLO = SLO(ttft_s=2.0, tpot_s=0.05)  # `jaxsim estimate` defaults; they do not change TTFT or TPOT


@dataclasses.dataclass(frozen=True)
class Harness:
    """How a row's benchmark client ran: `rounds` measured requests per client after a synchronised start
    (`Load.rounds`); request lengths drawn uniformly on the integers [floor(`length_low` × L), L] for a label
    L (1: every request exactly L); `arrivals` ("grouped" for equal lengths, "spread" for random ones:
    `Load.arrivals`)."""

    name: str
    rounds: float
    length_low: float
    arrivals: str

    def mean_length(self, label: float) -> float:
        """Mean request length for a labelled length (the mean of the uniform integers)."""
        return 0.5 * (math.floor(self.length_low * label) + label)


# AIConfigurator's benchmark template (bench_run.sh.j2): aiperf --concurrency N --num-requests 20 N, fixed
# ISL / OSL. SemiAnalysis InferenceX (benchmarks/benchmark_lib.sh, and srt-slurm's SA-Bench for its multi-node
# P/D runs): benchmark_serving --num-prompts 10 N --max-concurrency N --num-warmups 2 N --random-range-ratio
# 0.8, whose sampler draws lengths uniformly on [int(0.8 L), L].
HARNESSES = {"aiperf": Harness("aiperf", BENCH_ROUNDS, 1.0, "grouped"),
             "inferencex": Harness("inferencex", 10.0, 0.8, "spread")}
INFERENCEX_LENGTHS = ((1024.0, 1024.0), (1024.0, 8192.0), (8192.0, 1024.0))  # its three ISL / OSL pairs
_INFERENCEX_SOURCE = re.compile(r"^\s*(source_file=\d{4}-\d{2}-\d{2}\.csv|db-dump/)")


@dataclasses.dataclass(frozen=True)
class EngineRow:
    """What of a row picks the engine options its benchmark's launch script set (`engine_options`)."""

    harness: Harness
    backend: str
    family: str
    system: str
    precision: str
    tp: float
    isl: float
    osl: float
    concurrency: float


@dataclasses.dataclass(frozen=True)
class EngineOptions:
    """The `AggConfig` scheduler options of a row's deployment; the defaults are `jaxsim estimate`'s."""

    chunk: float = AGG_CHUNK
    adp_balance_iters: float = 0.0
    recv_interval: float = 1.0
    batch_wait_iters: float = 0.0
    batch_wait_tokens: float = 0.0


def engine_options(r: EngineRow) -> EngineOptions:
    """The scheduler options a row ran with: as InferenceX's published launch scripts set them for its runs (the
    four functions below, each of which takes an InferenceX row), the defaults for every other client, whose
    launch options are not published."""
    if r.harness.name != "inferencex":
        return EngineOptions()
    chunk = inferencex_chunk(r)
    wait_iters, wait_tokens = trtllm_batch_wait(r, chunk)
    return EngineOptions(chunk=chunk, adp_balance_iters=adp_balance_iters(r), recv_interval=sglang_recv_interval(r),
                         batch_wait_iters=wait_iters, batch_wait_tokens=wait_tokens)


# TensorRT-LLM attention-DP context balancing (`AggConfig.adp_balance_iters`) as InferenceX's TRT-LLM scripts
# set it whenever attention DP is on: `attention_dp_config: {enable_balance: true, timeout_iters: 60}` for
# DeepSeek-R1 (benchmarks/dsr1_fp{4,8}_{b200,h200}_trt.sh), `{enable_balance: true}` (TRT-LLM's default
# timeout, 50 iterations) for GPT-OSS (benchmarks/gptoss_fp4_*_trt.sh).
INFERENCEX_TRTLLM_ADP_BALANCE_ITERS = {"deepseek": 60.0}
TRTLLM_ADP_BALANCE_DEFAULT_ITERS = 50.0


def adp_balance_iters(r: EngineRow) -> float:
    """The attention-DP balancing timeout (iterations) of an InferenceX row's deployment, 0 when it was off."""
    if r.backend != "trtllm":
        return 0.0
    return INFERENCEX_TRTLLM_ADP_BALANCE_ITERS.get(r.family, TRTLLM_ADP_BALANCE_DEFAULT_ITERS)


# SGLang's scheduler poll interval (`AggConfig.recv_interval`) as InferenceX's SGLang DeepSeek-R1 scripts for B200
# set it: `--scheduler-recv-interval` 30 at concurrency ≥ 16, else 10 (benchmarks/dsr1_fp4_b200.sh; dsr1_fp8_b200.sh
# the same at TP 8 and 10 at TP 4); the H200 script (dsr1_fp8_h200.sh) leaves SGLang's default, 1.
SGLANG_RECV_SYSTEMS = ("b200_sxm",)


def sglang_recv_interval(r: EngineRow) -> float:
    """Decode iterations between SGLang's polls for new requests in an InferenceX row's deployment (1: every one)."""
    if r.backend != "sglang" or r.family != "deepseek" or r.system not in SGLANG_RECV_SYSTEMS:
        return 1.0
    if r.concurrency >= 16 and (r.tp == 8 or r.precision == "fp4"):
        return 30.0
    return 10.0


LLAMA_TRT_MAX_MODEL_LEN_SYSTEMS = ("h200_sxm", "b200_sxm")


def inferencex_chunk(r: EngineRow) -> float:
    """The prefill token budget per iteration (`AggConfig.chunk`) of an InferenceX row's deployment, as its launch
    scripts set it (benchmarks/single_node/fixed_seq_len/*.sh), else the `jaxsim estimate` default.

    - TRT-LLM DeepSeek-R1 (dsr1_*_trt.sh): `max_num_tokens` = max(8192, ⌈(CONC + ISL + 64) / 64⌉ × 64);
      GPT-OSS (gptoss_fp4_*_trt.sh): 20,000.
    - SGLang DeepSeek-R1 (dsr1_*.sh): `--chunked-prefill-size` 32,768 on H200 and on B200 FP8 at TP 8, 8,192 on
      B200 FP8 at TP 4, 16,384 on B200 FP4.
    - TRT-LLM Llama-3.1-70B (benchmarks/70b_fp8_h200_trt_slurm.sh, 70b_fp4_b200_trt_slurm.sh): `--max_num_tokens
      $MAX_MODEL_LEN`, taken as ISL + OSL + 200 (the scripts read it from the environment; InferenceX's other scripts
      set ISL + OSL + 200); 70b_fp8_b200_trt_slurm.sh: 16,384.
    - vLLM Kimi-K2.5 FP4 and MiniMax-M2.5 on B200 (kimik2.5_fp4_b200.sh, minimaxm2.5_fp{8,4}_b200.sh):
      `--max-num-batched-tokens` 2 × ISL; GPT-OSS (gptoss_fp4_*.sh): 8,192.
    """
    if r.backend == "trtllm" and r.family == "deepseek":
        return max(8192.0, math.ceil((r.concurrency + r.isl + 64.0) / 64.0) * 64.0)
    if r.backend == "trtllm" and r.family == "gpt-oss":
        return 20000.0
    if r.backend == "trtllm" and r.family == "llama" and r.system in LLAMA_TRT_MAX_MODEL_LEN_SYSTEMS:
        return 16384.0 if r.system == "b200_sxm" and r.precision == "fp8" else r.isl + r.osl + 200.0
    if r.backend == "sglang" and r.family == "deepseek":
        if r.system == "b200_sxm" and r.precision == "fp4":
            return 16384.0
        return 8192.0 if r.system == "b200_sxm" and r.tp == 4 else 32768.0
    twice_isl = r.family == "minimax" or (r.family == "kimi" and r.precision == "fp4")
    if r.backend == "vllm" and r.system == "b200_sxm" and twice_isl:
        return 2.0 * r.isl
    return AGG_CHUNK


def trtllm_batch_wait(r: EngineRow, chunk: float) -> tuple[float, float]:
    """TensorRT-LLM batch waiting (`AggConfig.batch_wait_iters`, `.batch_wait_tokens`) of an InferenceX row's
    deployment with prefill budget `chunk`, (0, 0) when off: DeepSeek-R1 FP8 on B200 at 1k / 1k and concurrency
    ≥ 64 (dsr1_fp8_b200_trt.sh: `batch_wait_timeout_iters: 40`, `batch_wait_max_tokens_ratio: 0.8` of
    `max_num_tokens`); Llama-3.1-70B at 1k / 1k below TP 8 (70b_*_trt_slurm.sh: 20 iterations, 0.9)."""
    if r.backend != "trtllm" or (r.isl, r.osl) != (1024.0, 1024.0):
        return 0.0, 0.0
    if r.family == "deepseek" and r.system == "b200_sxm" and r.precision == "fp8" and r.concurrency >= 64:
        return 40.0, 0.8 * chunk
    if r.family == "llama" and r.tp < 8:
        return 20.0, 0.9 * chunk
    return 0.0, 0.0


def row_harness(row: Mapping[str, Any]) -> Harness:
    """The benchmark client of a row, from its provenance: the sample's InferenceX exports
    (`silicon_data_source` starting `source_file=<YYYY-MM-DD>.csv` or `db-dump/`, every row at one of
    InferenceX's three ISL / OSL pairs) ran InferenceX's client; every other row (AIConfigurator's
    gap-analysis runs, hand-made rows) is read as AIConfigurator's aiperf template runs it."""
    source = str(row.get("silicon_data_source") or "")
    lengths = (_num(row.get("isl")), _num(row.get("osl")))
    if _INFERENCEX_SOURCE.match(source) and lengths in INFERENCEX_LENGTHS:
        return HARNESSES["inferencex"]
    return HARNESSES["aiperf"]


@dataclasses.dataclass(frozen=True)
class Framework:
    """What the serving framework adds to the engine model: whether its scheduler mixes prefill chunks into
    decode iterations (`AggConfig.mixed_prefill`) and its fixed per-request time (`request_overhead_s`)."""

    mixed_prefill: float = 1.0
    request_overhead_s: float = 0.0


# Schedulers by their documented defaults: vLLM V1 and TRT-LLM (in-flight batching) put prefill chunks and
# decodes in one iteration; SGLang runs prefill batches apart unless `--enable-mixed-chunk` is given.
# Request overheads: the median of measured − predicted TTFT (predicted with no overhead) over the declared
# calibration split (`in_overhead_split`: lightly loaded agg rows, 1 in 4 by a hash of the id), rounded to
# the ms; recomputed by experiments/validation/overhead.py. The same constant serves agg and disagg rows.
FRAMEWORKS = {"vllm": Framework(1.0, 0.054), "trtllm": Framework(1.0, 0.041), "sglang": Framework(0.0, 0.231)}
OVERHEAD_SPLIT_MAX_CONCURRENCY = 4.0  # no queueing at this load: the gap is the fixed per-request time


def in_overhead_split(row_id: str, mode: str, concurrency: float) -> bool:
    """Whether a row belongs to the calibration split the request overheads are estimated from: agg, concurrency
    ≤ 4, and CRC32 of its id ≡ 0 (mod 4). Every other row is held out from that estimate."""
    return (mode == "agg" and concurrency <= OVERHEAD_SPLIT_MAX_CONCURRENCY
            and zlib.crc32(row_id.encode()) % 4 == 0)
MOE_FAMILIES = ("deepseek", "qwen3-moe", "gpt-oss", "kimi")
GROUPINGS = ("all", "mode", "system", "model", "framework", "family", "moe")


def find_aiconfigurator() -> Path | None:
    """Folder of the installed `aiconfigurator_core` package (found without importing it), or None."""
    spec = importlib.util.find_spec("aiconfigurator_core")
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def default_model_configs(data: Path | None = None) -> Path | None:
    """The bundled `model_configs/` beside a `systems/silicon_sample.csv`, else the installed package's."""
    candidates = [data.resolve().parent.parent / "model_configs"] if data is not None else []
    pkg = find_aiconfigurator()
    if pkg is not None:
        candidates.append(pkg / "model_configs")
    return next((c for c in candidates if c.is_dir()), None)


def load_silicon(path: str | Path) -> pd.DataFrame:
    """Read a silicon CSV, check its columns, and add `concurrency` (NaN where the free text has none)."""
    path = Path(path)
    if not path.is_file():
        raise SpecError(f"--data {path}: no such file; pass a CSV with AIConfigurator's silicon_sample.csv columns")
    try:
        df = pd.read_csv(path)
    except (OSError, ValueError) as exc:
        raise SpecError(f"cannot read {path} as CSV: {exc}") from None
    missing = [c for c in COLUMNS if c not in df.columns]
    if missing:
        raise SpecError(f"{path}: missing column(s) {', '.join(missing)}; expected silicon_sample.csv's columns")
    text = df["silicon_data_source"].fillna("").astype(str)
    df["concurrency"] = pd.to_numeric(text.str.extract(_CONCURRENCY, expand=False), errors="coerce")
    df["id"] = df["id"].astype(str)
    return df.reset_index(drop=True)


# --------------------------------------------------------------------------------------------------
# One row → one configuration
# --------------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class SkipReason:
    """Why a row is not predicted: a key of `SKIP_REASONS` and a detail for the reader."""

    reason: str
    detail: str = ""


class Scenario(NamedTuple):
    """Everything `estimate` needs for one row."""

    model: Model
    hw: Hardware
    config: Config
    workload: Workload
    slo: SLO
    load: Load


def _unsupported_layers(cfg: Mapping[str, Any]) -> str | None:
    """Layer kinds of a HuggingFace config that the step model cannot express, or None."""
    text = cfg.get("text_config", cfg)
    kinds = {str(k) for k in (text.get("layer_types") or [])} - {"full_attention", "sliding_attention", "attention"}
    if kinds:
        return f"layer types {', '.join(sorted(kinds))}"
    if any(k.startswith("linear_num_") for k in text) or "hybrid_override_pattern" in text:
        return "linear-attention / SSM layers"
    return None


class Catalog:
    """Resolves the sample's model and system names to specs, memoised for one validation run."""

    def __init__(self, model_configs: str | Path | None = None) -> None:
        self.model_configs = Path(model_configs) if model_configs is not None else None
        self._models: dict[str, Model | SkipReason] = {}
        self._hardware: dict[str, Hardware | SkipReason] = {}

    def hardware(self, system: str, framework: str | None = None) -> Hardware | SkipReason:
        """The system's hardware with the framework's fitted calibration where one is shipped
        (`specs/calibration/<system>-<framework>.toml`), else the system's own calibration."""
        key = f"{system}|{framework or ''}"
        if key not in self._hardware:
            try:
                self._hardware[key] = presets.load_hardware(system, framework=framework)
            except SpecError as exc:
                self._hardware[key] = SkipReason("unknown_system", f"{system}: {exc}")
        return self._hardware[key]

    def model(self, name: str) -> Model | SkipReason:
        if name not in self._models:
            self._models[name] = self._resolve_model(name)
        return self._models[name]

    def _resolve_model(self, name: str) -> Model | SkipReason:
        for candidate in dict.fromkeys((name, SAMPLE_MODEL_ALIASES.get(name, name))):
            try:
                return presets.load_model(candidate)
            except SpecError as exc:
                if not str(exc).startswith("unknown"):
                    return SkipReason("unreadable_model_config", f"{candidate}: {exc}")
            if self.model_configs is None:
                continue
            file = self.model_configs / f"{candidate.replace('/', '--')}_config.json"
            if not file.is_file():
                continue
            try:
                cfg = json.loads(file.read_text())
            except (OSError, json.JSONDecodeError) as exc:
                return SkipReason("unreadable_model_config", f"{file.name}: {exc}")
            unsupported = _unsupported_layers(cfg) if isinstance(cfg, Mapping) else None
            if unsupported:
                return SkipReason("unsupported_architecture", f"{name}: {unsupported}")
            try:
                return presets.model_from_hf_config(cfg, name=name)
            except SpecError as exc:
                return SkipReason("unreadable_model_config", f"{file.name}: {exc}")
        where = f" or in {self.model_configs}" if self.model_configs else " (no model_configs folder given)"
        return SkipReason("unknown_model", f"{name}: no preset{where}")


def _num(value: Any) -> float | None:
    """A positive finite number from a CSV cell, else None (empty, NaN, 0)."""
    try:
        x = float(value)
    except (TypeError, ValueError):
        return None
    return x if math.isfinite(x) and x > 0 else None


def _quant(row: Mapping[str, Any]) -> tuple[float, float, float] | SkipReason:
    """(GEMM weight, expert weight, KV) bytes per element of a row (see the module docstring)."""
    model = str(row["model_path"])
    precision = str(row["precision"]).strip().lower() if isinstance(row["precision"], str) else ""
    modes = [str(row[k]).strip().lower() if isinstance(row[k], str) else "" for k in ("gemm_quant_mode",
                                                                                      "moe_quant_mode")]
    if not precision:
        upper = model.upper()
        precision = "fp4" if "FP4" in upper else "fp8" if "FP8" in upper else "bf16"
    for i, mode in enumerate(modes):
        modes[i] = mode or precision
    for mode in (*modes, precision):
        if mode not in QUANT_BYTES:
            return SkipReason("unknown_precision", f"{mode!r}; known: {', '.join(QUANT_BYTES)}")
    gemm = 2.0 if modes[0] in WEIGHT_ONLY or model.startswith(EXPERTS_ONLY_CHECKPOINTS) else QUANT_BYTES[modes[0]]
    bf16_kv = precision not in KV_FP8_PRECISIONS or model.startswith(BF16_KV_CHECKPOINTS)
    return gemm, QUANT_BYTES[modes[1]], 2.0 if bf16_kv else 1.0


def _id_gpus(row_id: str) -> int | None:
    """GPUs per instance named by an id's `_tpT_epE` token (the 2026 exports), or None."""
    found = _ID_LAYOUT.search(row_id)
    return int(found.group(1)) if found else None


def _deployment(row: Mapping[str, Any], prefix: str, m: Model, hw: Hardware,
                quant: tuple[float, float, float]) -> Deployment | SkipReason:
    """The `Deployment` of one pool (prefix "" for agg, "prefill_" / "decode_"), built as `jaxsim estimate`
    builds it from --tp --pp --dp --moe-tp --moe-ep and the quant flags."""
    tp = _num(row[f"{prefix}tp_size"])
    if tp is None:
        return SkipReason("missing_parallelism", f"{prefix}tp_size missing")
    pp = _num(row[f"{prefix}pp_size"]) or 1.0
    dp = _num(row[f"{prefix}attention_dp_size"]) or 1.0
    moe_tp, ep = _num(row[f"{prefix}moe_tp_size"]), _num(row[f"{prefix}moe_ep_size"])
    gpus = tp * dp
    label = f"{prefix}tp {tp:g} × dp {dp:g}, moe_tp {moe_tp or 0:g} × moe_ep {ep or 0:g}"
    if float(m.n_routed_experts) <= 0:  # dense: the MoE columns do not apply
        moe_tp, ep = gpus, 1.0
    else:
        if moe_tp is None and ep is None:
            moe_tp, ep = 1.0, gpus
        elif ep is None:
            ep = max(gpus // moe_tp, 1.0)
        elif moe_tp is None:
            moe_tp = max(gpus // ep, 1.0)
        if moe_tp * ep != gpus:
            return SkipReason("inconsistent_parallelism", label)
        if moe_tp > 1 and ep > 1 and gpus > float(hw.scale_up_gpus):
            return SkipReason("tp_ep_product_label", f"{label} on {float(hw.scale_up_gpus):g}-GPU domains")
    if not prefix:
        named = _id_gpus(str(row["id"]))
        if named is not None and named != gpus:
            return SkipReason("label_conflicts_id", f"id names {named} GPUs; {label}")
    gemm, moe, kv = quant
    d = Deployment(tp=tp, pp=pp, dp=dp, ep=ep, moe_tp=moe_tp, two_batch_overlap=0.0, nextn=0.0, nextn_accept=0.0,
                   gemm_weight_bytes=gemm, moe_weight_bytes=moe, kv_bytes=kv,
                   attn_compute_bytes=presets.dtype_bytes("bf16"))
    try:
        presets.check_deployment(m, d)
    except SpecError as exc:
        return SkipReason("invalid_parallelism", f"{prefix or 'agg '}{exc}")
    return d


def agg_workers(concurrency: float, batch: float, dp: float) -> float:
    """Instances of an agg row: k when the concurrency is a whole k > 1 times one instance's slots, else 1."""
    k = concurrency / (batch * dp)
    return float(round(k)) if k > 1 and abs(k - round(k)) < 1e-9 else 1.0


def row_to_scenario(row: Mapping[str, Any], catalog: Catalog | None = None,
                    frameworks: Mapping[str, Framework] = FRAMEWORKS,
                    rounds: float | None = None) -> Scenario | SkipReason:
    """The (model, hw, config, workload, slo, load) `jaxsim estimate` would evaluate for one CSV row, or
    why the row cannot be modelled. `row` needs the `COLUMNS` and `concurrency` (see `load_silicon`);
    `frameworks` maps the `backend` column to its scheduler and overhead (unknown: `Framework()`); the
    row's benchmark client (`row_harness`) sets the mean lengths, `Load.rounds` and `Load.arrivals`;
    `rounds`, when given, replaces the client's rounds (0: the steady state without the first round)."""
    catalog = catalog if catalog is not None else Catalog()
    conc = _num(row.get("concurrency"))
    if conc is None:
        return SkipReason("no_concurrency", str(row["id"]))
    mode = str(row["mode"]).strip().lower()
    if mode not in ("agg", "disagg"):
        return SkipReason("unknown_mode", f"mode {row['mode']!r} is neither agg nor disagg")
    backend = str(row["backend"]).strip().lower()
    hw = catalog.hardware(str(row["system"]), backend or None)
    if isinstance(hw, SkipReason):
        return hw
    m = catalog.model(str(row["model_path"]))
    if isinstance(m, SkipReason):
        return m
    harness = row_harness(row)
    try:
        isl, osl = _num(row["isl"]), _num(row["osl"])
        if isl is None or osl is None:
            raise SpecError(f"ISL {row['isl']} and OSL {row['osl']} must be positive finite numbers")
        w = presets.make_workload(harness.mean_length(isl), harness.mean_length(osl), 0.0, model=m)
    except (SpecError, TypeError, ValueError) as exc:
        return SkipReason("bad_lengths", str(exc))
    quant = _quant(row)
    if isinstance(quant, SkipReason):
        return quant
    cfg: Config
    if mode == "agg":
        batch = _num(row["batch_size"])
        if batch is None:
            return SkipReason("missing_batch_or_workers", "agg batch_size missing")
        d = _deployment(row, "", m, hw, quant)
        if isinstance(d, SkipReason):
            return d
        fw = frameworks.get(backend, Framework())
        precision = str(row["precision"]).strip().lower() if isinstance(row["precision"], str) else ""
        opts = engine_options(EngineRow(harness, backend, model_family(str(row["model_path"]), m),
                                        str(row["system"]).strip().lower(), precision, float(d.tp), isl, osl,
                                        conc))
        cfg = AggConfig(d, batch=batch, chunk=opts.chunk, workers=agg_workers(conc, batch, float(d.dp)),
                        mixed_prefill=fw.mixed_prefill, request_overhead_s=fw.request_overhead_s,
                        adp_balance_iters=opts.adp_balance_iters, recv_interval=opts.recv_interval,
                        batch_wait_iters=opts.batch_wait_iters, batch_wait_tokens=opts.batch_wait_tokens)
    else:
        keys = ("prefill_batch_size", "decode_batch_size", "prefill_num_workers", "decode_num_workers")
        sizes = {k: _num(row[k]) for k in keys}
        lacking = [k for k, v in sizes.items() if v is None]
        if lacking:
            return SkipReason("missing_batch_or_workers", ", ".join(lacking))
        pools = [_deployment(row, p, m, hw, quant) for p in ("prefill_", "decode_")]
        for pool in pools:
            if isinstance(pool, SkipReason):
                return pool
        pre, dec = pools
        assert isinstance(pre, Deployment) and isinstance(dec, Deployment)
        fw = frameworks.get(backend, Framework())
        cfg = DisaggConfig(pre, dec, prefill_batch=sizes["prefill_batch_size"],
                           decode_batch=sizes["decode_batch_size"], prefill_workers=sizes["prefill_num_workers"],
                           decode_workers=sizes["decode_num_workers"], request_overhead_s=fw.request_overhead_s)
    load = Load("concurrency", conc, harness.rounds if rounds is None else rounds, arrivals=harness.arrivals)
    return Scenario(m, hw, cfg, w, DEFAULT_SLO, load)


def scenario_key(s: Scenario) -> tuple:
    """Identity of a resolved configuration (to tell exact duplicates from conflicting ones)."""
    leaves = tuple(round(float(x), 9) for x in jax.tree.leaves((s.config, s.workload, s.load)))
    return s.model.name, s.hw.name, architecture(s.config), leaves


# --------------------------------------------------------------------------------------------------
# Predictions
# --------------------------------------------------------------------------------------------------


def model_family(model_path: str, m: Model | None) -> str:
    """Family of a sample model name: deepseek, kimi, gpt-oss, glm, minimax, llama, qwen3-moe, qwen3-dense,
    else other-moe / dense."""
    name = model_path.lower()
    for key, family in (("deepseek", "deepseek"), ("kimi", "kimi"), ("gpt-oss", "gpt-oss"), ("glm", "glm"),
                        ("minimax", "minimax"), ("llama", "llama")):
        if key in name:
            return family
    moe = m is not None and float(m.n_routed_experts) > 0
    if "qwen" in name:
        return "qwen3-moe" if moe else "qwen3-dense"
    return "other-moe" if moe else "dense"


def _stack(trees: Sequence[Any]) -> Any:
    """One pytree whose array leaves hold a leading axis over `trees` (identical structure)."""
    leaves = [jax.tree.leaves(t) for t in trees]
    treedef = jax.tree.structure(trees[0])
    dtype = jax.dtypes.canonicalize_dtype(np.float64)  # float32 unless x64 is enabled, as the specs
    columns = np.asarray([[np.asarray(x) for x in row] for row in leaves], dtype=dtype)
    return jax.tree.unflatten(treedef, list(columns.T))


def _bucket(n: int) -> int:
    """Padded batch length (powers of two from 64) so repeated runs reuse compilations."""
    return max(64, 1 << (n - 1).bit_length())


@eqx.filter_jit
def _estimate_rows(m: Model, hw: Hardware, cfg: Config, w: Workload, slo: SLO, load: Load) -> Any:
    """`estimate` over rows whose every argument, model and hardware included, carries a leading axis."""
    return blocked_vmap(lambda *a: estimate(*a))(m, hw, cfg, w, slo, load)


def predict(scenarios: Sequence[Scenario]) -> dict[str, np.ndarray]:
    """Predictions of each scenario: `pred_ttft_ms`, `pred_tpot_ms`, `pred_verdict` (the `REASONS` name),
    `pred_requests_per_s` (served by the unit) and `pred_decode_batch` (running requests per rank).

    `estimate` is evaluated in stacked batches grouped by what it compiles on (attention kind,
    architecture, the load's kind and arrivals); model and hardware are stacked like the configuration, so a
    whole sample needs a handful of compilations.
    """
    n = len(scenarios)
    out = {k: np.full(n, np.nan) for k in ("pred_ttft_ms", "pred_tpot_ms", "pred_requests_per_s",
                                            "pred_decode_batch")}
    out["pred_verdict"] = np.full(n, "", dtype=object)
    groups: dict[tuple[str, ...], list[int]] = {}
    for i, s in enumerate(scenarios):  # static fields must agree within a stacked batch
        groups.setdefault((s.model.attention, architecture(s.config), s.load.kind, s.load.arrivals), []).append(i)
    for idx in groups.values():
        padded = idx + [idx[-1]] * (_bucket(len(idx)) - len(idx))
        models = [dataclasses.replace(scenarios[i].model, name="stacked") for i in padded]
        hws = [dataclasses.replace(scenarios[i].hw, name="stacked") for i in padded]
        args = [models, hws] + [[scenarios[i][k] for i in padded] for k in range(2, 6)]
        r = _estimate_rows(*(_stack(a) for a in args))
        k = len(idx)
        for name, value, scale in (("pred_ttft_ms", r.ttft_s, 1e3), ("pred_tpot_ms", r.tpot_s, 1e3),
                                   ("pred_requests_per_s", r.requests_per_s, 1.0),
                                   ("pred_decode_batch", r.decode_batch, 1.0)):
            out[name][idx] = np.asarray(value, dtype=np.float64)[:k] * scale
        out["pred_verdict"][idx] = [REASONS[int(x)] for x in np.asarray(r.reason)[:k]]
    return out


# --------------------------------------------------------------------------------------------------
# Statistics
# --------------------------------------------------------------------------------------------------


def error_stats(measured: Iterable[float], predicted: Iterable[float]) -> dict[str, float]:
    """Absolute % error |pred − meas| / meas × 100 of paired values: median, mean, share within 10 % and
    20 % (inclusive, in %), and the median signed % error (> 0: over-prediction)."""
    meas, pred = np.asarray(list(measured), float), np.asarray(list(predicted), float)
    if meas.shape != pred.shape:
        raise ValueError(f"measured and predicted differ in length: {meas.shape} vs {pred.shape}")
    if meas.size == 0:
        nan = float("nan")
        return {"n": 0, "median_ape": nan, "mean_ape": nan, "within_10_pct": nan, "within_20_pct": nan,
                "median_signed_pct": nan}
    signed = 100.0 * (pred - meas) / meas
    ape = np.abs(signed)
    return {"n": int(meas.size), "median_ape": float(np.median(ape)), "mean_ape": float(np.mean(ape)),
            "within_10_pct": float(np.mean(ape <= 10.0) * 100.0), "within_20_pct": float(np.mean(ape <= 20.0) * 100.0),
            "median_signed_pct": float(np.median(signed))}


def error_table(rows: pd.DataFrame, groupings: Sequence[str] = GROUPINGS) -> pd.DataFrame:
    """TTFT and TPOT error statistics of the `ok` rows, overall ("all") and per value of each grouping column.

    `rows` holds silicon_/pred_ ttft_ms and tpot_ms, `status` and the grouping columns; grouping "moe"
    is the rows whose `family` is one of `MOE_FAMILIES`, "all" every ok row.
    """
    ok = rows[rows["status"] == OK]
    out = []
    for grouping in groupings:
        if grouping == "all":
            parts: list[tuple[str, pd.DataFrame]] = [("all", ok)]
        elif grouping == "moe":
            parts = [("MoE (" + ", ".join(MOE_FAMILIES) + ")", ok[ok["family"].isin(MOE_FAMILIES)])]
        else:
            parts = [(str(k), g) for k, g in ok.groupby(grouping, sort=True)]
        for label, g in parts:
            entry: dict[str, Any] = {"grouping": grouping, "group": label, "n": len(g)}
            for metric in ("ttft", "tpot"):
                stats = error_stats(g[f"silicon_{metric}_ms"], g[f"pred_{metric}_ms"])
                entry.update({f"{metric}_{k}": v for k, v in stats.items() if k != "n"})
            out.append(entry)
    return pd.DataFrame(out)


# --------------------------------------------------------------------------------------------------
# The whole sample
# --------------------------------------------------------------------------------------------------

MEASUREMENT_KEY = ("system", "mode", "isl", "osl", "concurrency", "silicon_ttft_ms", "silicon_tpot_ms")


@dataclasses.dataclass
class ValidationResult:
    """One row per input row: its identity, group labels, `status` and predictions (NaN when skipped)."""

    rows: pd.DataFrame

    def predictions(self) -> pd.DataFrame:
        """The `PREDICTION_COLUMNS` of every input row, in input order (plus the simulator's latencies when
        the rows were simulated)."""
        extra = [c for c in ("sim_ttft_ms", "sim_tpot_ms") if c in self.rows]
        return self.rows.loc[:, [*PREDICTION_COLUMNS, *extra]]

    def write_predictions(self, path: str | Path) -> Path:
        """Write `predictions()` as CSV; returns the path."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        self.predictions().to_csv(path, index=False)
        return path

    def errors(self, groupings: Sequence[str] = GROUPINGS) -> pd.DataFrame:
        """`error_table` of the predicted rows."""
        return error_table(self.rows, groupings)

    def counts(self) -> dict[str, Any]:
        """Rows read, distinct measurements, rows that copy an earlier row in every column but the id and
        the free text, how many were modelled, and skips by reason (rows and measurements; a measurement's
        outcome is `ok` if any copy was predicted, else its first row's)."""
        status = self.rows["status"]
        by_measurement = self.rows.groupby("measurement", sort=False)["status"].agg(
            lambda s: OK if (s == OK).any() else s.iloc[0])
        skipped = status[status != OK].value_counts()
        return {"rows": len(self.rows), "distinct_measurements": int(by_measurement.size),
                "exact_copy_rows": int(self.rows["exact_copy"].sum()),
                "modelled": int((status == OK).sum()),
                "skipped_rows_by_reason": {str(k): int(v) for k, v in skipped.items()},
                "unmodelled_measurements_by_reason": {str(k): int(v) for k, v in
                                                      by_measurement[by_measurement != OK].value_counts().items()},
                "predicted_verdicts": {str(k): int(v) for k, v in
                                       self.rows.loc[status == OK, "pred_verdict"].value_counts().items()}}


def validate(df: pd.DataFrame, catalog: Catalog | None = None, model_configs: str | Path | None = None,
             frameworks: Mapping[str, Framework] = FRAMEWORKS, simulate: bool = False,
             simulate_sample: int | None = None, simulate_rounds: int = 3, seed: int = 0,
             rounds: float | None = None) -> ValidationResult:
    """Predict every modellable row of a silicon table (from `load_silicon`) and label every other one.

    Args:
        df: the table, one measurement per row, with `COLUMNS` and `concurrency`.
        catalog: model / hardware resolver (default: presets plus `model_configs`).
        model_configs: folder of bundled `<org>--<name>_config.json` files for models without a preset.
        frameworks: scheduler and request overhead per `backend` (default `FRAMEWORKS`).
        simulate: also replay each predicted row's benchmark with the request-level simulator
            (`jaxsim.simulate.validation.simulate_rows`: closed-loop clients at the measured concurrency),
            giving the columns `sim_ttft_ms`, `sim_tpot_ms` and `sim_completed_frac` (NaN where not simulated).
        simulate_sample: simulate only this many predicted rows, drawn with `seed` (the simulator costs about
            a second per row on a CPU); None simulates them all.
        simulate_rounds: requests per simulated client (the first and last round are left out of the means).
        rounds: measured requests per client after the clients' synchronised start (`Load.rounds`; default
            None: each row's benchmark client's, `row_harness`; 0 for the steady state alone).
    """
    catalog = catalog if catalog is not None else Catalog(model_configs)
    n = len(df)
    records = df.to_dict("records")
    parsed = [row_to_scenario(r, catalog, frameworks, rounds) for r in records]
    status = np.array([p.reason if isinstance(p, SkipReason) else OK for p in parsed], dtype=object)
    detail = np.array([p.detail if isinstance(p, SkipReason) else "" for p in parsed], dtype=object)

    # Measurements: identical measured values under one load are one measurement, whatever the labels.
    # A repeated id is a copy of its first row's measurement.
    measurement = np.array(["|".join(map(str, t)) for t in df.loc[:, list(MEASUREMENT_KEY)].itertuples(index=False)],
                           dtype=object)
    first_key: dict[str, str] = {}
    members: dict[str, list[int]] = {}
    for i, row_id in enumerate(df["id"]):
        measurement[i] = first_key.setdefault(row_id, measurement[i])
        members.setdefault(measurement[i], []).append(i)
    for idx in members.values():
        valid = [i for i in idx if status[i] == OK]
        keys = {i: scenario_key(parsed[i]) for i in valid}  # type: ignore[arg-type]
        if len(set(keys.values())) > 1:
            for i in valid:
                status[i] = "conflicting_duplicate"
                detail[i] = f"{len(valid)} copies, {len(set(keys.values()))} configurations"
        else:
            for i in valid[1:]:
                status[i] = "duplicate"
                detail[i] = f"of {records[valid[0]]['id']}"

    todo = [i for i in range(n) if status[i] == OK]
    pred = {k: np.full(n, np.nan) for k in ("pred_ttft_ms", "pred_tpot_ms", "pred_requests_per_s",
                                             "pred_decode_batch")}
    pred["pred_verdict"] = np.full(n, "", dtype=object)
    if todo:
        for k, v in predict([parsed[i] for i in todo]).items():  # type: ignore[misc]
            pred[k][todo] = v
        bad = [i for i in todo if not (math.isfinite(pred["pred_ttft_ms"][i]) and
                                       math.isfinite(pred["pred_tpot_ms"][i]))]
        status[bad] = "prediction_not_finite"
        for k in ("pred_ttft_ms", "pred_tpot_ms"):
            pred[k][bad] = np.nan

    sim = {k: np.full(n, np.nan) for k in SIM_COLUMNS}
    if simulate:
        chosen = [i for i in range(n) if status[i] == OK]
        if simulate_sample is not None:
            if simulate_sample < 1:
                raise SpecError(f"--simulate-sample must be ≥ 1, got {simulate_sample}")
            rng = np.random.default_rng(seed)
            chosen = sorted(rng.choice(chosen, size=min(simulate_sample, len(chosen)), replace=False).tolist())
        if chosen:
            from jaxsim.simulate.validation import simulate_rows

            got = simulate_rows([parsed[i] for i in chosen], rounds=simulate_rounds, seed=seed)
            for k in SIM_COLUMNS:
                sim[k][chosen] = got[k]

    models = [p.model if isinstance(p, Scenario) else None for p in parsed]
    rows = pd.DataFrame({
        "id": df["id"].to_numpy(),
        "silicon_ttft_ms": df["silicon_ttft_ms"].to_numpy(float),
        "silicon_tpot_ms": df["silicon_tpot_ms"].to_numpy(float),
        "pred_ttft_ms": pred["pred_ttft_ms"],
        "pred_tpot_ms": pred["pred_tpot_ms"],
        "status": status,
        "detail": detail,
        "mode": df["mode"].astype(str).to_numpy(),
        "system": df["system"].astype(str).to_numpy(),
        "model": df["model_path"].astype(str).to_numpy(),
        "framework": df["backend"].astype(str).to_numpy(),
        "family": [model_family(str(name), m) for name, m in zip(df["model_path"], models, strict=True)],
        "moe": [m is not None and float(m.n_routed_experts) > 0 for m in models],
        "isl": df["isl"].to_numpy(float),
        "osl": df["osl"].to_numpy(float),
        "concurrency": df["concurrency"].to_numpy(float),
        "harness": [row_harness(r).name for r in records],
        "pred_verdict": pred["pred_verdict"],
        "pred_requests_per_s": pred["pred_requests_per_s"],
        "pred_decode_batch": pred["pred_decode_batch"],
        "measurement": measurement,
        "exact_copy": df.drop(columns=["id", "silicon_data_source"]).duplicated().to_numpy(),
        "overhead_split": [in_overhead_split(str(i), str(m).strip().lower(), float(c)) for i, m, c in
                           zip(df["id"], df["mode"], df["concurrency"], strict=True)],
        **(sim if simulate else {}),
    })
    return ValidationResult(rows)


SIM_COLUMNS = ("sim_ttft_ms", "sim_tpot_ms", "sim_completed_frac")
SIDE_BY_SIDE_GROUPINGS = ("all", "moe", "mode", "system")


def simulated_mask(rows: pd.DataFrame) -> pd.Series:
    """Predicted rows the simulator finished: both simulated latencies finite, every simulated request done."""
    if "sim_ttft_ms" not in rows:
        return pd.Series(False, index=rows.index)
    return ((rows["status"] == OK) & np.isfinite(rows["sim_ttft_ms"]) & np.isfinite(rows["sim_tpot_ms"])
            & (rows["sim_completed_frac"] >= 1.0))


def side_by_side(rows: pd.DataFrame, groupings: Sequence[str] = SIDE_BY_SIDE_GROUPINGS) -> pd.DataFrame:
    """The analytic model's and the simulator's error statistics over the same rows (those `simulated_mask`
    keeps), per grouping: columns `analytic_<stat>` and `sim_<stat>` for TTFT and TPOT."""
    same = rows[simulated_mask(rows)]
    analytic = error_table(same, groupings)
    simulated = error_table(same.assign(pred_ttft_ms=same["sim_ttft_ms"], pred_tpot_ms=same["sim_tpot_ms"]),
                            groupings)
    keys = ["grouping", "group", "n"]
    return analytic.merge(simulated, on=keys, suffixes=("_analytic", "_sim"))

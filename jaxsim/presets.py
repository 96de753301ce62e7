"""Read specs from `specs/*.toml` and HuggingFace `config.json` files into the spec pytrees.

This is the boundary: everything a user can get wrong (an unknown name, a malformed file, a missing or
negative field, a parallelism that does not divide the model) raises `SpecError` here with a message
that says what is wrong and how to fix it, before any JAX code runs.
"""

from __future__ import annotations

import json
import math
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from jaxsim.cost import flops as F
from jaxsim.spec import BYTES_PER_DTYPE, SLO, Deployment, Efficiency, Hardware, Model, Workload

KINDS = ("models", "hardware", "workloads")


class SpecError(ValueError):
    """Bad user input: an unknown name, a malformed spec file or an impossible deployment."""


def specs_dir() -> Path:
    """The preset folder: shipped inside the wheel as `jaxsim/_specs`, or `specs/` of a source checkout."""
    here = Path(__file__).resolve().parent
    for candidate in (here / "_specs", here.parent / "specs"):
        if (candidate / "models").is_dir():
            return candidate
    raise SpecError(f"preset folder not found (looked in {here / '_specs'} and {here.parent / 'specs'}); "
                    "reinstall jaxsim-serving")


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as fh:
            return tomllib.load(fh)
    except tomllib.TOMLDecodeError as exc:
        raise SpecError(f"malformed TOML in {path}: {exc}; fix the syntax of that file") from None
    except OSError as exc:
        raise SpecError(f"cannot read {path}: {exc.strerror}") from None


def _norm(name: str) -> str:
    return name.strip().lower().replace("_", "-")


def list_presets(kind: str) -> list[str]:
    """Names of the built-in presets of one kind ('models', 'hardware', 'workloads')."""
    if kind not in KINDS:
        raise SpecError(f"unknown spec kind {kind!r}; known kinds: {', '.join(KINDS)}")
    return sorted(p.stem for p in (specs_dir() / kind).glob("*.toml") if not p.stem.startswith("_"))


def _resolve(kind: str, name: str) -> Path:
    """Path of the preset named `name` (its file stem or one of its aliases), or of a .toml file."""
    path = Path(name)
    if path.suffix == ".toml" and path.is_file():
        return path
    wanted = _norm(name)
    for stem in list_presets(kind):
        file = specs_dir() / kind / f"{stem}.toml"
        if wanted == _norm(stem):
            return file
        aliases = _read_toml(file).get("aliases", [])
        if any(wanted == _norm(a) for a in aliases):
            return file
    singular = {"models": "model", "hardware": "system", "workloads": "workload"}[kind]
    raise SpecError(f"unknown {singular} {name!r}; known: {', '.join(list_presets(kind))} "
                    f"(or pass a path to a .toml file{' or a HuggingFace config.json' if kind == 'models' else ''})")


def _number(value: Any, where: str, key: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise SpecError(f"{where}: field {key!r} must be a finite number, got {value!r}")
    if value < 0:
        raise SpecError(f"{where}: field {key!r} must be ≥ 0, got {value}")
    return float(value)


def _table(data: Mapping[str, Any], key: str, where: str) -> Mapping[str, Any]:
    table = data.get(key)
    if not isinstance(table, Mapping):
        raise SpecError(f"{where}: missing table [{key}]")
    return table


# --------------------------------------------------------------------------------------------------
# Models
# --------------------------------------------------------------------------------------------------

MODEL_FIELDS = tuple(f for f in Model.__dataclass_fields__ if f not in ("name", "attention"))
MODEL_REQUIRED = ("n_layers", "hidden", "vocab", "n_heads", "n_kv_heads", "head_dim", "v_head_dim")


def model_from_fields(name: str, attention: str, arch: Mapping[str, Any], where: str) -> Model:
    """Validate architecture fields (the names of `Model`) and build the pytree."""
    if attention not in ("gqa", "mla"):
        raise SpecError(f"{where}: attention must be 'gqa' or 'mla', got {attention!r}")
    unknown = sorted(set(arch) - set(MODEL_FIELDS))
    if unknown:
        raise SpecError(f"{where}: unknown field(s) {', '.join(unknown)}; known fields: {', '.join(MODEL_FIELDS)}")
    missing = [k for k in MODEL_REQUIRED if k not in arch]
    if missing:
        raise SpecError(f"{where}: missing required field(s) {', '.join(missing)}")
    v = {k: _number(arch[k], where, k) for k in arch}
    for k in ("n_layers", "hidden", "vocab", "n_heads", "n_kv_heads", "head_dim"):
        if v[k] <= 0:
            raise SpecError(f"{where}: field {k!r} must be > 0, got {v[k]:g}")
    if v.get("n_dense_layers", 0) > v["n_layers"]:
        raise SpecError(f"{where}: n_dense_layers ({v['n_dense_layers']:g}) exceeds n_layers ({v['n_layers']:g})")
    n_moe = v["n_layers"] - v.get("n_dense_layers", 0)
    if n_moe > 0:
        experts, top_k = v.get("n_routed_experts", 0), v.get("top_k", 0)
        if experts <= 0 or not 0 < top_k <= experts or v.get("moe_intermediate", 0) <= 0:
            raise SpecError(f"{where}: {n_moe:g} MoE layers need n_routed_experts > 0, 0 < top_k ≤ n_routed_experts "
                            "and moe_intermediate > 0 (for a dense model set n_dense_layers = n_layers)")
    elif v.get("dense_intermediate", 0) <= 0:
        raise SpecError(f"{where}: a dense model needs dense_intermediate > 0")
    if attention == "mla" and (v.get("kv_lora_rank", 0) <= 0 or v.get("qk_rope_dim", 0) <= 0):
        raise SpecError(f"{where}: MLA attention needs kv_lora_rank > 0 and qk_rope_dim > 0")
    if v["n_heads"] % v["n_kv_heads"] != 0:
        raise SpecError(f"{where}: n_heads ({v['n_heads']:g}) must be a multiple of n_kv_heads ({v['n_kv_heads']:g})")
    if not 0 <= v.get("sliding_layer_frac", 0) <= 1:
        raise SpecError(f"{where}: sliding_layer_frac must be within [0, 1]")
    return Model(name=name, attention=attention, **v)


def load_model(name: str) -> Model:
    """A model by preset name or alias, a spec .toml path, or a HuggingFace config.json path."""
    path = Path(name)
    if path.suffix == ".json":
        return model_from_hf_config(path)
    file = _resolve("models", name)
    data = _read_toml(file)
    return model_from_fields(str(data.get("name", file.stem)), str(data.get("attention", "")),
                             _table(data, "architecture", str(file)), str(file))


def model_from_hf_config(config: str | Path | Mapping[str, Any], name: str | None = None) -> Model:
    """Build a `Model` from a HuggingFace `config.json` (path or parsed dict).

    Understands the DeepSeek-V2/V3/V3.2 and Kimi-K2 layout (MLA, shared experts, first-k dense layers,
    DSA indexer), Qwen2/3 and Qwen3-MoE, GPT-OSS (sliding-window layer types), Mixtral and Llama.
    """
    where = "config"
    if not isinstance(config, Mapping):
        where = str(config)
        try:
            config = json.loads(Path(config).read_text())
        except OSError as exc:
            raise SpecError(f"cannot read {where}: {exc.strerror}") from None
        except json.JSONDecodeError as exc:
            raise SpecError(f"malformed JSON in {where}: {exc}") from None
    if not isinstance(config, Mapping):
        raise SpecError(f"{where}: expected a JSON object")
    cfg: Mapping[str, Any] = config.get("text_config", config)  # multimodal wrappers

    def get(*keys: str, default: Any = None) -> Any:
        for k in keys:
            if cfg.get(k) is not None:
                return cfg[k]
        return default

    for key in ("num_hidden_layers", "hidden_size", "num_attention_heads", "vocab_size"):
        if get(key) is None:
            raise SpecError(f"{where}: missing {key!r}; is this a decoder-only model's config.json?")
    known_types = {"full_attention", "sliding_attention"}
    other = sorted({str(t) for t in get("layer_types", default=[]) or []} - known_types)
    if other or get("linear_num_key_heads") is not None:
        kinds = ", ".join(other) or "linear attention"
        raise SpecError(f"{where}: layers of type {kinds} (e.g. Gated DeltaNet / linear attention) are not modelled "
                        "by jaxsim's step model; only full and sliding-window attention (GQA, MLA, DSA) are")
    layers = int(get("num_hidden_layers"))
    hidden = int(get("hidden_size"))
    heads = int(get("num_attention_heads"))
    mla = get("kv_lora_rank") is not None
    arch: dict[str, float] = {"n_layers": layers, "hidden": hidden, "vocab": int(get("vocab_size")), "n_heads": heads}
    if mla:
        nope, rope = int(get("qk_nope_head_dim")), int(get("qk_rope_head_dim"))
        arch.update(n_kv_heads=heads, head_dim=nope + rope, v_head_dim=int(get("v_head_dim")),
                    q_lora_rank=int(get("q_lora_rank", default=0)), kv_lora_rank=int(get("kv_lora_rank")),
                    qk_nope_dim=nope, qk_rope_dim=rope)
    else:
        head_dim = int(get("head_dim", default=hidden // heads))
        arch.update(n_kv_heads=int(get("num_key_value_heads", default=heads)), head_dim=head_dim,
                    v_head_dim=head_dim)
    experts = int(get("n_routed_experts", "num_experts", "num_local_experts", default=0))
    if experts > 0:
        moe_inter = int(get("moe_intermediate_size", default=0) or get("intermediate_size"))
        dense_layers = int(get("first_k_dense_replace", default=0))
        dense_layers += len(get("mlp_only_layers", default=[]) or [])
        step = int(get("decoder_sparse_step", "moe_layer_freq", default=1) or 1)
        if step > 1:  # MoE on every step-th layer only
            dense_layers = layers - (layers - dense_layers) // step
        n_shared = int(get("n_shared_experts", default=0))
        shared_inter = moe_inter * n_shared
        if get("shared_expert_intermediate_size"):
            n_shared, shared_inter = 1, int(get("shared_expert_intermediate_size"))
        arch.update(n_dense_layers=dense_layers, n_routed_experts=experts, n_shared_experts=n_shared,
                    top_k=int(get("num_experts_per_tok", "experts_per_token", "moe_topk")),
                    moe_intermediate=moe_inter, shared_intermediate=shared_inter / max(n_shared, 1),
                    dense_intermediate=int(get("intermediate_size", default=0)) if dense_layers else 0)
    else:
        arch.update(n_dense_layers=layers, dense_intermediate=int(get("intermediate_size")))
    layer_types = get("layer_types")
    if layer_types and get("sliding_window"):
        arch.update(sliding_window=int(get("sliding_window")),
                    sliding_layer_frac=sum(t == "sliding_attention" for t in layer_types) / len(layer_types))
    elif get("sliding_window") and get("use_sliding_window", default=False):
        arch.update(sliding_window=int(get("sliding_window")), sliding_layer_frac=1.0)
    if get("index_topk"):
        arch.update(index_n_heads=int(get("index_n_heads")), index_head_dim=int(get("index_head_dim")),
                    index_topk=int(get("index_topk")))
    arch.update(max_context=int(get("max_position_embeddings", default=131072)),
                tied_embeddings=1 if get("tie_word_embeddings", default=False) else 0,
                n_mtp_layers=int(get("num_nextn_predict_layers", default=0)))
    model_name = name or str(config.get("_name_or_path") or Path(where).stem.replace(".config", "") or "custom")
    return model_from_fields(model_name, "mla" if mla else "gqa", arch, where)


# --------------------------------------------------------------------------------------------------
# Hardware
# --------------------------------------------------------------------------------------------------

EFFICIENCY_FIELDS = tuple(Efficiency.__dataclass_fields__)
# Times (every field ending in `_s`: latencies, overheads, per-score and per-tile costs) are written in µs as `_us`.
_US = tuple(f for f in EFFICIENCY_FIELDS if f.endswith("_s"))
# SMs of a hardware file whose [compute] table does not set `sm_count`: the H100 / H200 SXM's (NVIDIA H100
# Tensor Core GPU Architecture whitepaper: 132 SMs on the SXM5 part). Only the tiled prefill-attention model uses it.
DEFAULT_SM_COUNT = 132.0
# Decode attention takes the attention parameters of a hardware file that does not set its own.
_DECODE_FROM = {"decode_attn_compute_frac": "attn_compute_frac", "decode_attn_memory_frac": "attn_memory_frac",
                "decode_attn_half_context": "attn_half_context", "decode_attn_latency_s": "attn_latency_s"}


def _efficiency(table: Mapping[str, Any], where: str, base: Efficiency | None = None) -> Efficiency:
    values = {k: float(getattr(base, k)) for k in EFFICIENCY_FIELDS} if base is not None else {}
    for key, raw in table.items():
        if key in ("provisional", "source", "fitted"):
            continue
        field = key[:-3] + "_s" if key.endswith("_us") else key
        if field not in EFFICIENCY_FIELDS:
            known = [f[:-2] + "_us" if f in _US else f for f in EFFICIENCY_FIELDS]
            raise SpecError(f"{where}: unknown efficiency field {key!r}; known: {', '.join(known)}")
        value = _number(raw, where, key) * (1e-6 if field in _US else 1.0)
        if field.endswith("_frac") and not 0 < value <= 1:
            raise SpecError(f"{where}: efficiency {key!r} must be within (0, 1], got {value:g}")
        if (field.endswith("_scale") and value <= 0) or (field.endswith("_p") and value < 1):
            raise SpecError(f"{where}: efficiency {key!r} must be {'> 0' if field.endswith('_scale') else '≥ 1'}, "
                            f"got {value:g}")
        values[field] = value
    if base is None:
        for dec, src in _DECODE_FROM.items():
            if dec not in values and src in values:
                values[dec] = values[src]
    return Efficiency(**values)


def calibration_file(stem: str, framework: str | None = None) -> Path | None:
    """The fitted calibration of a hardware preset: `specs/calibration/<stem>-<framework>.toml` when a framework
    is named and that file exists, else `<stem>.toml` (the default framework's), else None."""
    folder = specs_dir() / "calibration"
    names = ([f"{stem}-{framework.strip().lower()}.toml"] if framework else []) + [f"{stem}.toml"]
    return next((folder / n for n in names if (folder / n).is_file()), None)


def _apply_calibration(calib: Path, eff: Efficiency, link: dict[str, float]) -> Efficiency:
    """Override efficiencies (`[efficiency]`) and fitted link latencies (`[scale_up] latency_us`) from a calibration."""
    data = _read_toml(calib)
    eff = _efficiency(_table(data, "efficiency", str(calib)), str(calib), base=eff)
    up = data.get("scale_up", {})
    if not isinstance(up, Mapping):
        raise SpecError(f"{calib}: [scale_up] must be a table")
    if "latency_us" in up:
        link["scale_up_latency_s"] = _number(up["latency_us"], str(calib), "scale_up.latency_us") * 1e-6
    return eff


def load_hardware(name: str, framework: str | None = None, calibrated: bool = True) -> Hardware:
    """A GPU system by preset name or alias (`h200-sxm`, `h200_sxm`) or a spec .toml path.

    `[compute] sm_count` (streaming multiprocessors) is optional: files without it get `DEFAULT_SM_COUNT` (132,
    the H100 / H200 SXM's); set it for other GPUs, since the tiled prefill-attention model spreads its tiles over
    them. A fitted calibration overrides the file's provisional efficiencies (and the scale-up latency):
    `specs/calibration/<name>-<framework>.toml` when `framework` is given and that file exists, else
    `specs/calibration/<name>.toml`. `calibrated=False` gives the hardware file's own values.
    """
    file = _resolve("hardware", name)
    data = _read_toml(file)
    where = str(file)
    comp, mem = _table(data, "compute", where), _table(data, "memory", where)
    up, out = _table(data, "scale_up", where), _table(data, "scale_out", where)
    power = _table(data, "power", where)

    def need(table: Mapping[str, Any], key: str, section: str) -> float:
        if key not in table:
            raise SpecError(f"{where}: missing field {key!r} in [{section}]")
        value = _number(table[key], where, f"{section}.{key}")
        if value <= 0:
            raise SpecError(f"{where}: field {section}.{key} must be > 0")
        return value

    bf16 = need(comp, "bf16_tflop_per_s", "compute") * 1e12
    fp8 = _number(comp.get("fp8_tflop_per_s", bf16 / 1e12), where, "compute.fp8_tflop_per_s") * 1e12
    fp4 = _number(comp.get("fp4_tflop_per_s", fp8 / 1e12), where, "compute.fp4_tflop_per_s") * 1e12
    sm_count = _number(comp.get("sm_count", DEFAULT_SM_COUNT), where, "compute.sm_count")
    if sm_count < 1:
        raise SpecError(f"{where}: field compute.sm_count must be ≥ 1 (streaming multiprocessors per GPU), "
                        f"got {sm_count:g}")
    eff = _efficiency(data.get("efficiency", {}), where)
    stem = str(data.get("name", file.stem))
    link: dict[str, float] = {}
    calib = calibration_file(stem, framework) if calibrated else None
    if calib is not None:
        eff = _apply_calibration(calib, eff, link)
    return Hardware(
        name=stem,
        bf16_flop_per_s=bf16,
        fp8_flop_per_s=fp8,
        fp4_flop_per_s=fp4,
        hbm_bytes=need(mem, "hbm_gb", "memory") * 1e9,
        hbm_bytes_per_s=need(mem, "hbm_tb_per_s", "memory") * 1e12,
        scale_up_gpus=need(up, "gpus", "scale_up"),
        scale_up_bytes_per_s=need(up, "gb_per_s", "scale_up") * 1e9,
        scale_up_latency_s=link.get("scale_up_latency_s", need(up, "latency_us", "scale_up") * 1e-6),
        scale_out_bytes_per_s=need(out, "gbit_per_s", "scale_out") * 1e9 / 8.0,
        scale_out_latency_s=need(out, "latency_us", "scale_out") * 1e-6,
        tdp_watts=need(power, "tdp_watts", "power"),
        sm_count=sm_count,
        eff=eff,
    )


# --------------------------------------------------------------------------------------------------
# Workloads and SLOs
# --------------------------------------------------------------------------------------------------


def _workload_data(name: str) -> tuple[Path, dict[str, Any]]:
    file = _resolve("workloads", name)
    return file, _read_toml(file)


def load_workload(name: str) -> Workload:
    """A workload preset (`chat`, `coding`, `agentic-coding`) or a .toml path."""
    file, data = _workload_data(name)
    tok = _table(data, "tokens", str(file))
    vals = {k: _number(tok.get(k, 0), str(file), f"tokens.{k}") for k in ("prefix", "input", "output")}
    if vals["input"] <= 0 or vals["output"] <= 0:
        raise SpecError(f"{file}: tokens.input and tokens.output must be > 0")
    return Workload(name=str(data.get("name", file.stem)), prefix_tokens=vals["prefix"],
                    input_tokens=vals["input"], output_tokens=vals["output"])


def load_slo(name: str) -> SLO:
    """The SLO that goes with a workload preset."""
    file, data = _workload_data(name)
    slo = _table(data, "slo", str(file))
    ttft = _number(slo.get("ttft_ms", -1), str(file), "slo.ttft_ms")
    tpot = _number(slo.get("tpot_ms", -1), str(file), "slo.tpot_ms")
    return SLO(ttft_s=ttft * 1e-3, tpot_s=tpot * 1e-3)


def make_workload(input_tokens: float, output_tokens: float, prefix_tokens: float = 0.0,
                  model: Model | None = None, name: str = "custom") -> Workload:
    """A workload from token counts, checked: lengths ≥ 0, input and output ≥ 1, fits the context."""
    for label, value in (("input", input_tokens), ("output", output_tokens), ("prefix", prefix_tokens)):
        if not math.isfinite(value) or value < 0:
            raise SpecError(f"{label} length must be a finite number ≥ 0, got {value}")
    if input_tokens < 1 or output_tokens < 1:
        raise SpecError("input and output lengths must be at least 1 token")
    if model is not None:
        total = prefix_tokens + input_tokens + output_tokens
        limit = float(model.max_context)
        if total > limit:
            raise SpecError(f"prefix + input + output = {total:g} tokens exceeds {model.name}'s context of "
                            f"{limit:g} tokens; shorten the prompt or the output")
    return Workload(name=name, prefix_tokens=prefix_tokens, input_tokens=input_tokens, output_tokens=output_tokens)


# --------------------------------------------------------------------------------------------------
# Deployments
# --------------------------------------------------------------------------------------------------


def dtype_bytes(name: str) -> float:
    """Bytes per element of a precision name (bf16, fp8, fp4, ...)."""
    key = name.strip().lower()
    if key not in BYTES_PER_DTYPE:
        raise SpecError(f"unknown precision {name!r}; known: {', '.join(BYTES_PER_DTYPE)}")
    return BYTES_PER_DTYPE[key]


def check_deployment(m: Model, d: Deployment) -> None:
    """Raise `SpecError` naming every reason the deployment cannot run this model (concrete values)."""
    v = {k: float(np.asarray(getattr(d, k))) for k in ("tp", "pp", "dp", "ep", "moe_tp", "nextn", "nextn_accept")}
    problems = []
    for k in ("tp", "pp", "dp", "ep", "moe_tp"):
        if v[k] < 1 or v[k] != int(v[k]):
            problems.append(f"{k} must be a whole number ≥ 1 (got {v[k]:g})")
    if problems:
        raise SpecError("; ".join(problems))
    heads, kv_heads = float(m.n_heads), float(m.n_kv_heads)
    experts, layers = float(m.n_routed_experts), float(m.n_layers)
    if heads % v["tp"]:
        problems.append(f"tp = {v['tp']:g} does not divide {m.name}'s {heads:g} attention heads; "
                        "pick a divisor or move GPUs to attention DP")
    elif m.attention == "gqa" and kv_heads % v["tp"] and v["tp"] % kv_heads:
        problems.append(f"tp = {v['tp']:g} neither divides nor is a multiple of the {kv_heads:g} KV heads")
    if experts > 0:
        if experts % v["ep"]:
            problems.append(f"moe_ep = {v['ep']:g} does not divide {m.name}'s {experts:g} routed experts")
        if float(m.moe_intermediate) % v["moe_tp"]:
            problems.append(f"moe_tp = {v['moe_tp']:g} does not divide the expert width {float(m.moe_intermediate):g}")
        if v["tp"] * v["dp"] != v["ep"] * v["moe_tp"]:
            problems.append(f"tp × dp = {v['tp'] * v['dp']:g} must equal moe_ep × moe_tp = {v['ep'] * v['moe_tp']:g}: "
                            "MoE layers run on the same GPUs as attention")
    elif v["ep"] != 1:
        problems.append(f"{m.name} is dense: moe_ep must be 1")
    if v["pp"] > layers:
        problems.append(f"pp = {v['pp']:g} exceeds the model's {layers:g} layers")
    if v["nextn"] < 0 or v["nextn"] != int(v["nextn"]):
        problems.append(f"nextn must be a whole number ≥ 0 (got {v['nextn']:g})")
    if not 0 <= v["nextn_accept"] <= 1:
        problems.append(f"nextn acceptance must be within [0, 1] (got {v['nextn_accept']:g})")
    if problems:
        raise SpecError("; ".join(problems))


def check_afd(m: Model, d: Deployment, micro_batches: float) -> None:
    """Raise `SpecError` when an AFD instance cannot run this model: attention TP must divide the heads,
    expert parallelism the routed experts; there must be MoE layers, at least one micro-batch, no PP."""
    v = {k: float(np.asarray(getattr(d, k))) for k in ("tp", "pp", "dp", "ep", "moe_tp", "nextn", "nextn_accept")}
    problems = [f"{k} must be a whole number ≥ 1 (got {v[k]:g})" for k in ("tp", "dp", "ep", "moe_tp")
                if v[k] < 1 or v[k] != int(v[k])]
    if float(m.n_routed_experts) <= 0:
        problems.append(f"{m.name} is dense: attention-FFN disaggregation needs MoE layers")
    if problems:
        raise SpecError("; ".join(problems))
    if float(m.n_heads) % v["tp"]:
        problems.append(f"attention tp = {v['tp']:g} does not divide {m.name}'s {float(m.n_heads):g} heads")
    if float(m.n_routed_experts) % v["ep"]:
        problems.append(f"moe_ep = {v['ep']:g} does not divide {m.name}'s {float(m.n_routed_experts):g} routed experts")
    if float(m.moe_intermediate) % v["moe_tp"]:
        problems.append(f"moe_tp = {v['moe_tp']:g} does not divide the expert width {float(m.moe_intermediate):g}")
    if v["pp"] != 1:
        problems.append("AFD with pipeline parallelism is not modelled; use pp = 1")
    if micro_batches < 1 or micro_batches != int(micro_batches):
        problems.append(f"micro-batches must be a whole number ≥ 1 (got {micro_batches:g})")
    if v["nextn"] < 0 or not 0 <= v["nextn_accept"] <= 1:
        problems.append("nextn must be ≥ 0 and its acceptance within [0, 1]")
    if problems:
        raise SpecError("; ".join(problems))


# --------------------------------------------------------------------------------------------------
# Descriptions (for `jaxsim specs show`)
# --------------------------------------------------------------------------------------------------


def _plain(x: Any) -> float | int:
    """A spec number as a plain Python number, without float32 representation noise."""
    f = float(f"{float(np.asarray(x)):.7g}")
    return int(f) if f.is_integer() and abs(f) < 2**53 else f


def describe_model(m: Model) -> dict[str, Any]:
    """Architecture fields plus derived sizes (parameters, KV bytes per token)."""
    out: dict[str, Any] = {"name": m.name, "attention": m.attention}
    out.update({k: _plain(getattr(m, k)) for k in MODEL_FIELDS})
    out["total_params"] = _plain(F.total_params(m))
    out["active_params_per_token"] = _plain(F.active_params(m))
    out["kv_bytes_per_token"] = {"bf16": _plain(F.kv_bytes_per_token(m, 2.0)),
                                 "fp8": _plain(F.kv_bytes_per_token(m, 1.0))}
    return out


def describe_hardware(hw: Hardware) -> dict[str, Any]:
    """Hardware fields in SI units, efficiencies included."""
    out: dict[str, Any] = {"name": hw.name}
    for k in Hardware.__dataclass_fields__:
        if k not in ("name", "eff"):
            out[k] = _plain(getattr(hw, k))
    out["efficiency"] = {k: _plain(getattr(hw.eff, k)) for k in EFFICIENCY_FIELDS}
    return out


def describe_workload(name: str) -> dict[str, Any]:
    """A workload preset's token counts and its SLO."""
    w, s = load_workload(name), load_slo(name)
    return {"name": w.name, "prefix_tokens": _plain(w.prefix_tokens), "input_tokens": _plain(w.input_tokens),
            "output_tokens": _plain(w.output_tokens), "ttft_s": _plain(s.ttft_s), "tpot_s": _plain(s.tpot_s)}

"""Kernel time = roofline bound / shape-dependent efficiency.

The roofline bound of a kernel is max(FLOPs / peak FLOP/s, bytes / HBM bytes/s). Real kernels reach
only a fraction of either rate; that fraction depends on the kernel's shape and is given by the
hardware's `Efficiency` parameters. Every efficiency is clipped into (0, 1], so a predicted time is
never below the roofline bound.
"""

from __future__ import annotations

import jax.numpy as jnp
from jax import Array
from jax.typing import ArrayLike

from jaxsim import smooth
from jaxsim.smooth import HARD, Mode
from jaxsim.spec import Hardware

_MIN_EFF = 1e-6


def peak_flop_per_s(hw: Hardware, operand_bytes: ArrayLike) -> Array:
    """Dense tensor-core peak for operands of `operand_bytes` per element (2 BF16, 1 FP8, 0.5 FP4)."""
    b = jnp.asarray(operand_bytes)
    return jnp.where(b <= 0.5, hw.fp4_flop_per_s, jnp.where(b <= 1.0, hw.fp8_flop_per_s, hw.bf16_flop_per_s))


def saturating_frac(max_frac: ArrayLike, size: ArrayLike, half_size: ArrayLike) -> Array:
    """`max_frac × size / (size + half_size)`, clipped into [1e-6, 1]."""
    size = jnp.maximum(jnp.asarray(size), 0.0)
    frac = max_frac * size / (size + jnp.maximum(half_size, _MIN_EFF))
    return jnp.clip(frac, _MIN_EFF, 1.0)


def roofline_s(flops: ArrayLike, bytes_: ArrayLike, peak: ArrayLike, bw: ArrayLike, mode: Mode = HARD) -> Array:
    """Lower bound of a kernel's time: max(flops / peak, bytes / bw)."""
    return smooth.maximum(flops / peak, bytes_ / bw, mode)


def kernel_s(
    flops: ArrayLike,
    bytes_: ArrayLike,
    peak: ArrayLike,
    bw: ArrayLike,
    compute_frac: ArrayLike,
    memory_frac: ArrayLike,
    mode: Mode = HARD,
) -> Array:
    """Time of one kernel given the achieved fractions of peak compute and of HBM bandwidth."""
    cf = jnp.clip(compute_frac, _MIN_EFF, 1.0)
    mf = jnp.clip(memory_frac, _MIN_EFF, 1.0)
    return smooth.maximum(flops / (peak * cf), bytes_ / (bw * mf), mode)


def gemm_s(hw: Hardware, flops: ArrayLike, bytes_: ArrayLike, rows: ArrayLike, operand_bytes: ArrayLike,
           mode: Mode = HARD) -> Array:
    """A dense GEMM with `rows` tokens (M): compute efficiency falls for small M."""
    e = hw.eff
    cf = saturating_frac(e.gemm_compute_frac, rows, e.gemm_half_rows)
    return kernel_s(flops, bytes_, peak_flop_per_s(hw, operand_bytes), hw.hbm_bytes_per_s, cf,
                    e.gemm_memory_frac, mode)


def grouped_gemm_s(hw: Hardware, flops: ArrayLike, bytes_: ArrayLike, rows_per_expert: ArrayLike,
                   operand_bytes: ArrayLike, mode: Mode = HARD) -> Array:
    """Routed experts as one grouped GEMM: compute efficiency falls with few tokens per expert."""
    e = hw.eff
    cf = saturating_frac(e.moe_compute_frac, rows_per_expert, e.moe_half_tokens)
    return kernel_s(flops, bytes_, peak_flop_per_s(hw, operand_bytes), hw.hbm_bytes_per_s, cf,
                    e.moe_memory_frac, mode)


def attention_s(hw: Hardware, flops: ArrayLike, bytes_: ArrayLike, context: ArrayLike,
                compute_bytes: ArrayLike, mode: Mode = HARD) -> Array:
    """Core attention (FlashAttention / FlashMLA style): bandwidth efficiency falls for short contexts."""
    e = hw.eff
    mf = saturating_frac(e.attn_memory_frac, context, e.attn_half_context)
    return kernel_s(flops, bytes_, peak_flop_per_s(hw, compute_bytes), hw.hbm_bytes_per_s,
                    e.attn_compute_frac, mf, mode)


def memory_bound_s(hw: Hardware, bytes_: ArrayLike) -> Array:
    """Elementwise / normalisation kernels: bytes at the GEMM memory efficiency."""
    return bytes_ / (hw.hbm_bytes_per_s * jnp.clip(hw.eff.gemm_memory_frac, _MIN_EFF, 1.0))

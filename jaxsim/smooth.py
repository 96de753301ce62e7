"""Hard and smooth forms of the non-smooth primitives the cost model uses.

Reports use the hard forms (exact max, min, ceil, step); the optimiser uses the smooth forms, which
converge to the hard ones as the temperature goes to 0. The form is chosen by a static `Mode`, so a
jitted function is compiled once per form and never branches on traced values.

Temperatures are relative: `smooth_max(a, b)` blends over a band of about `temperature × (|a| + |b|)`,
so the same temperature works for seconds and for bytes.
"""

from __future__ import annotations

import dataclasses

import jax.numpy as jnp
from jax import Array
from jax.typing import ArrayLike


@dataclasses.dataclass(frozen=True)
class Mode:
    """Static choice of hard or smooth primitives.

    Args:
        smooth: False for exact (report) forms, True for differentiable relaxations.
        temperature: relative width of the smooth transitions (dimensionless, > 0).
    """

    smooth: bool = False
    temperature: float = 0.05


HARD = Mode(smooth=False)
SMOOTH = Mode(smooth=True, temperature=0.05)


def safe_div(num: ArrayLike, den: ArrayLike) -> Array:
    """`num / den` with `den == 0` mapped to 0 and finite gradients (double-where)."""
    den = jnp.asarray(den)
    ok = den != 0
    return jnp.where(ok, num / jnp.where(ok, den, 1.0), 0.0)


def maximum(a: ArrayLike, b: ArrayLike, mode: Mode = HARD) -> Array:
    """max(a, b); smooth form is a p-norm for non-negative inputs (never below the hard max)."""
    if not mode.smooth:
        return jnp.maximum(a, b)
    p = 1.0 / mode.temperature
    return overlap(a, b, p)


def minimum(a: ArrayLike, b: ArrayLike, mode: Mode = HARD) -> Array:
    """min(a, b) of non-negative inputs; smooth form is a negative p-norm (never above the hard min).

    Written as min · (1 + (min / max)^p)^(-1/p), which equals (a^-p + b^-p)^(-1/p) without overflow.
    """
    if not mode.smooth:
        return jnp.minimum(a, b)
    p = 1.0 / mode.temperature
    lo, hi = jnp.minimum(a, b), jnp.maximum(a, b)
    ratio = safe_div(lo, hi)
    return lo * (1.0 + ratio**p) ** (-1.0 / p)


def overlap(a: ArrayLike, b: ArrayLike, p: ArrayLike) -> Array:
    """Overlapped duration of two non-negative times: (a^p + b^p)^(1/p).

    p = 1 is no overlap (the sum), p → ∞ is perfect overlap (the max). Scaled by the larger term so
    large p does not overflow in float32; the scaled sum is ≥ 1 whenever either time is positive, so
    clipping it at 1 changes nothing but keeps the gradient finite when both are 0.
    """
    hi = jnp.maximum(a, b)
    scale = jnp.where(hi > 0, hi, 1.0)  # double-where: finite gradients when both are 0
    total = jnp.maximum((a / scale) ** p + (b / scale) ** p, 1.0)
    return hi * total ** (1.0 / p)


def ceil(x: ArrayLike, mode: Mode = HARD) -> Array:
    """ceil(x) for x ≥ 0; the smooth form replaces each unit jump by 1 − exp(−frac(x) / T).

    Smooth: floor(x) + 1 − exp(−(x − floor(x)) / T), at least 1 for any x > 0 (so a count of chunks is
    never below one); it equals the hard ceiling at integers and converges to it as T → 0. Its gradient
    is non-zero only just above each integer, like the staircase it stands for.
    """
    x = jnp.asarray(x)
    if not mode.smooth:
        return jnp.ceil(x)
    fl = jnp.floor(x)
    soft = fl + 1.0 - jnp.exp(-(x - fl) / mode.temperature)
    return jnp.where(x > 0, jnp.maximum(soft, 1.0), 0.0)


def step(x: ArrayLike, mode: Mode = HARD) -> Array:
    """1 where x ≥ 0 else 0; smooth form is a logistic of width `temperature`."""
    x = jnp.asarray(x)
    if not mode.smooth:
        return jnp.where(x >= 0, 1.0, 0.0)
    return 1.0 / (1.0 + jnp.exp(-x / mode.temperature))


def relu(x: ArrayLike, mode: Mode = HARD) -> Array:
    """max(x, 0); smooth form is a softplus of width `temperature` (≥ the hard form, equal as T → 0)."""
    x = jnp.asarray(x)
    if not mode.smooth:
        return jnp.maximum(x, 0.0)
    t = mode.temperature
    return t * jnp.logaddexp(x / t, 0.0)

"""Collectives and transfers over the scale-up domain (NVLink) and the scale-out network (NIC).

Each is latency + bytes / achieved bandwidth of the link it crosses, where the achieved bandwidth is
the nominal per-GPU, per-direction rate times the hardware's `scale_up_frac` / `scale_out_frac`.
A group of `n` GPUs fits the scale-up domain when `n ≤ scale_up_gpus`; a larger group's traffic is
limited by the scale-out NICs. Ring algorithms: all-reduce moves 2(n−1)/n of the buffer per GPU,
all-gather and reduce-scatter (n−1)/n; latency terms grow with log2(n) (tree / LL protocols), and every
collective call adds the fixed `collective_latency_s` (launch and synchronisation; 0 unless calibrated), of which
a serving step pays the share `serving_latency_frac` (see `kernels.serving_latency_s`).
All functions take `n` as a float and return 0 for n = 1.
"""

from __future__ import annotations

import jax.numpy as jnp
from jax import Array
from jax.typing import ArrayLike

from jaxsim.spec import Hardware


def _link(hw: Hardware, n: ArrayLike) -> tuple[Array, Array]:
    """(achieved bytes/s, latency s) of the slowest link a group of `n` GPUs uses."""
    inside = jnp.asarray(n) <= hw.scale_up_gpus
    up_bw = hw.scale_up_bytes_per_s * hw.eff.scale_up_frac
    out_bw = hw.scale_out_bytes_per_s * hw.eff.scale_out_frac
    return jnp.where(inside, up_bw, out_bw), jnp.where(inside, hw.scale_up_latency_s, hw.scale_out_latency_s)


def _log2(n: ArrayLike) -> Array:
    return jnp.log2(jnp.maximum(n, 1.0))


def _fixed(hw: Hardware, n: ArrayLike) -> Array:
    """Fixed time of one collective call over `n` GPUs (none for n = 1)."""
    share = jnp.clip(hw.eff.serving_latency_frac, 0.0, 1.0)
    return jnp.where(jnp.asarray(n) > 1.0, jnp.maximum(hw.eff.collective_latency_s, 0.0) * share, 0.0)


def all_reduce_s(hw: Hardware, buffer_bytes: ArrayLike, n: ArrayLike) -> Array:
    """All-reduce of a `buffer_bytes` buffer held by each of `n` GPUs."""
    bw, lat = _link(hw, n)
    return 2.0 * (n - 1.0) / n * buffer_bytes / bw + 2.0 * _log2(n) * lat + _fixed(hw, n)


def all_gather_s(hw: Hardware, buffer_bytes: ArrayLike, n: ArrayLike) -> Array:
    """All-gather producing a `buffer_bytes` result on each of `n` GPUs (each contributes 1/n)."""
    bw, lat = _link(hw, n)
    return (n - 1.0) / n * buffer_bytes / bw + _log2(n) * lat + _fixed(hw, n)


def reduce_scatter_s(hw: Hardware, buffer_bytes: ArrayLike, n: ArrayLike) -> Array:
    """Reduce-scatter of a `buffer_bytes` input on each of `n` GPUs (same traffic as all-gather)."""
    return all_gather_s(hw, buffer_bytes, n)


def all_to_all_s(hw: Hardware, send_bytes: ArrayLike, n: ArrayLike) -> Array:
    """All-to-all where each of `n` GPUs sends `send_bytes` spread evenly over all `n` (itself included).

    Hierarchical when the group spans several scale-up domains: the share bound for GPUs inside the
    sender's domain crosses NVLink, the rest crosses the NICs, both at once; the slower side sets the
    time (DeepEP-style normal and low-latency kernels).
    """
    n = jnp.asarray(n)
    local = jnp.minimum(n, hw.scale_up_gpus)
    intra = send_bytes * (local - 1.0) / n
    inter = send_bytes * (n - local) / n
    t_up = intra / (hw.scale_up_bytes_per_s * hw.eff.scale_up_frac)
    t_out = inter / (hw.scale_out_bytes_per_s * hw.eff.scale_out_frac)
    lat = jnp.where(n > hw.scale_up_gpus, hw.scale_out_latency_s, hw.scale_up_latency_s)
    return jnp.maximum(t_up, t_out) + jnp.where(n > 1.0, lat, 0.0) + _fixed(hw, n)


def p2p_s(hw: Hardware, bytes_: ArrayLike, same_domain: ArrayLike) -> Array:
    """Point-to-point transfer of `bytes_` (PP activations, P/D KV cache), over NVLink or a NIC."""
    inside = jnp.asarray(same_domain) > 0.5
    up = hw.scale_up_latency_s + bytes_ / (hw.scale_up_bytes_per_s * hw.eff.scale_up_frac)
    out = hw.scale_out_latency_s + bytes_ / (hw.scale_out_bytes_per_s * hw.eff.scale_out_frac)
    return jnp.where(inside, up, out)

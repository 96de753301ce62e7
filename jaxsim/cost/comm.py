"""Collectives and transfers over the scale-up domain (NVLink) and the scale-out network (NIC).

Each is latency + bytes / achieved bandwidth of the link it crosses, where the achieved bandwidth is
the nominal per-GPU, per-direction rate times the hardware's `scale_up_frac` / `scale_out_frac`.
A group of `n` GPUs fits the scale-up domain when `n ≤ scale_up_gpus`; a larger group's traffic is
limited by the scale-out NICs. Ring algorithms: all-reduce moves 2(n−1)/n of the buffer per GPU,
all-gather and reduce-scatter (n−1)/n; latency terms grow with log2(n) (tree / LL protocols), and every
collective call adds the fixed `collective_latency_s` (launch and synchronisation; 0 unless calibrated), of which
a serving step pays the share `serving_latency_frac` (see `kernels.serving_latency_s`).
All functions take `n` as a float and return 0 for n = 1.

Calibrated hardware (`Efficiency.collective_regimes` = 1) prices a collective inside one scale-up domain with
the protocol-regime model (`regime_s`) fitted to NCCL's and TRT-LLM's measured collectives instead: each
algorithm / protocol the libraries switch between is a line `latency + traffic / (fraction × nominal rate)`,
and the call takes the smooth minimum of its regimes, never below its bandwidth bound:

- all-gather / reduce-scatter (ring; low-latency, LL128 and simple protocols): traffic (n−1)/n of the buffer,
  latencies growing per peer, bandwidth rising with the number of peers a GPU drives at once
  (ramp (n−1) / (n−1+k));
- all-to-all (low-latency and bulk send/receive);
- all-reduce (custom one-shot: every GPU reads its n−1 peers' buffers; two-shot: reduce-scatter + all-gather;
  NVLS: the switch reduces, (n+1)/n of the buffer per direction).

Bound: the traffic at the nominal rate — (n−1)/n of the buffer, and for all-reduce min(2(n−1)/n, (n+1)/n)
(NVLS moves less than a ring). Regime latencies are fixed per-call time: a serving step pays
`serving_latency_frac` of them like every fitted latency.
"""

from __future__ import annotations

import jax
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


_SOFTMIN = 0.05  # temperature of the smooth minimum over regimes (in log time)
ALL_REDUCE, RING, ALL_TO_ALL = 0, 1, 2


def _softmin(*times: Array) -> Array:
    """Smooth minimum `(Σ t_i^(−1/s))^(−s)` of positive times (s = `_SOFTMIN`); never above the smallest."""
    logs = jnp.stack([jnp.log(t) for t in times])
    return jnp.exp(-_SOFTMIN * jax.nn.logsumexp(-logs / _SOFTMIN, axis=0))


def _ramp(peers: Array, half: ArrayLike) -> Array:
    """Share of the link bandwidth a GPU reaches driving `peers` ≥ 1 peers at once: peers / (peers + half)."""
    safe = jnp.maximum(peers, 1.0)
    return safe / (safe + jnp.maximum(half, 0.0))


def regime_s(hw: Hardware, kind: int, buffer_bytes: ArrayLike, n: ArrayLike) -> Array:
    """Protocol-regime time of one collective inside the scale-up domain (see the module docstring).

    `kind`: `ALL_REDUCE`, `RING` (all-gather / reduce-scatter) or `ALL_TO_ALL`; 0 for n = 1."""
    e = hw.eff
    n = jnp.asarray(n, dtype=jnp.result_type(float))
    peers = jnp.maximum(n - 1.0, 0.0)
    safe_n = jnp.maximum(n, 1.0)
    share = jnp.clip(e.serving_latency_frac, 0.0, 1.0)
    lat = lambda x: jnp.maximum(x, 0.0) * share + 1e-12  # noqa: E731  (positive: a log is taken)
    frac = lambda x: jnp.clip(x, 1e-6, 1.0)  # noqa: E731
    beta = jnp.maximum(jnp.asarray(buffer_bytes), 0.0) / hw.scale_up_bytes_per_s
    ring_traffic = peers / safe_n * beta
    if kind == RING:
        ramp = _ramp(peers, e.coll_peer_half)
        t = _softmin(lat(e.coll_ll_latency_s + e.coll_ll_peer_latency_s * peers) + ring_traffic / frac(e.coll_ll_frac),
                     lat(e.coll_ll128_latency_s + e.coll_ll_peer_latency_s * peers)
                     + ring_traffic / (frac(e.coll_ll128_frac) * ramp),
                     lat(e.coll_simple_latency_s + e.coll_simple_peer_latency_s * peers)
                     + ring_traffic / (frac(e.coll_simple_frac) * ramp))
        bound = ring_traffic
    elif kind == ALL_TO_ALL:
        t = _softmin(lat(e.coll_a2a_ll_latency_s) + ring_traffic / frac(e.coll_a2a_ll_frac),
                     lat(e.coll_a2a_latency_s)
                     + ring_traffic / (frac(e.coll_a2a_frac) * _ramp(peers, e.coll_a2a_peer_half)))
        bound = ring_traffic
    else:
        nvls_traffic = (safe_n + 1.0) / safe_n * beta
        t = _softmin(lat(e.coll_ar_oneshot_latency_s + e.coll_ar_oneshot_peer_latency_s * peers)
                     + peers * beta / frac(e.coll_ar_oneshot_frac),
                     lat(e.coll_ar_twoshot_latency_s)
                     + 2.0 * ring_traffic / (frac(e.coll_ar_twoshot_frac) * _ramp(peers, e.coll_peer_half)),
                     lat(e.coll_ar_nvls_latency_s) + nvls_traffic / frac(e.coll_ar_nvls_frac))
        bound = jnp.minimum(2.0 * ring_traffic, nvls_traffic)
    return jnp.where(n > 1.0, jnp.maximum(t, bound), 0.0)


def _pick(hw: Hardware, kind: int, buffer_bytes: ArrayLike, n: ArrayLike, link: Array) -> Array:
    """The regime model inside one scale-up domain when calibrated (`collective_regimes`, a static switch), else
    the link form."""
    if hw.eff.collective_regimes <= 0.5:
        return link
    return jnp.where(jnp.asarray(n) <= hw.scale_up_gpus, regime_s(hw, kind, buffer_bytes, n), link)


def all_reduce_s(hw: Hardware, buffer_bytes: ArrayLike, n: ArrayLike) -> Array:
    """All-reduce of a `buffer_bytes` buffer held by each of `n` GPUs."""
    bw, lat = _link(hw, n)
    link = 2.0 * (n - 1.0) / n * buffer_bytes / bw + 2.0 * _log2(n) * lat + _fixed(hw, n)
    return _pick(hw, ALL_REDUCE, buffer_bytes, n, link)


def all_gather_s(hw: Hardware, buffer_bytes: ArrayLike, n: ArrayLike) -> Array:
    """All-gather producing a `buffer_bytes` result on each of `n` GPUs (each contributes 1/n)."""
    bw, lat = _link(hw, n)
    link = (n - 1.0) / n * buffer_bytes / bw + _log2(n) * lat + _fixed(hw, n)
    return _pick(hw, RING, buffer_bytes, n, link)


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
    link = jnp.maximum(t_up, t_out) + jnp.where(n > 1.0, lat, 0.0) + _fixed(hw, n)
    return _pick(hw, ALL_TO_ALL, send_bytes, n, link)


def p2p_s(hw: Hardware, bytes_: ArrayLike, same_domain: ArrayLike) -> Array:
    """Point-to-point transfer of `bytes_` (PP activations, P/D KV cache), over NVLink or a NIC."""
    inside = jnp.asarray(same_domain) > 0.5
    up = hw.scale_up_latency_s + bytes_ / (hw.scale_up_bytes_per_s * hw.eff.scale_up_frac)
    out = hw.scale_out_latency_s + bytes_ / (hw.scale_out_bytes_per_s * hw.eff.scale_out_frac)
    return jnp.where(inside, up, out)

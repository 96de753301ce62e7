"""Evaluate a one-configuration function over many configurations.

`blocked_vmap` is `vmap` over the leading axis, run in blocks of `block` configurations with
`lax.map`. The model returns many outputs from shared intermediates; XLA on the CPU materialises
those intermediates per output, and in blocks of a few thousand they stay in cache instead of
streaming through main memory (about 3× faster at 1e6 configurations on 2 cores than one flat vmap).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp

DEFAULT_BLOCK = 4096


def batch_size(*trees: Any) -> int:
    """Length of the leading axis shared by every non-scalar array leaf (1 when all are scalars)."""
    sizes = {int(x.shape[0]) for t in trees for x in jax.tree.leaves(t) if eqx.is_array(x) and x.ndim > 0}
    if len(sizes) > 1:
        raise ValueError(f"batched inputs disagree on the number of configurations: {sorted(sizes)}")
    return sizes.pop() if sizes else 1


def broadcast_batch(tree: Any, n: int) -> Any:
    """Give every array leaf a leading axis of length `n` (scalars are repeated)."""
    return jax.tree.map(lambda x: jnp.broadcast_to(x, (n, *jnp.shape(x)[1:])) if eqx.is_array(x) else x, tree)


def blocked_vmap(fn: Callable[..., Any], block: int = DEFAULT_BLOCK) -> Callable[..., Any]:
    """`vmap(fn)` over the leading axis of every argument, evaluated `block` configurations at a time.

    Arguments are pytrees whose array leaves have a common leading axis (or are scalars, broadcast).
    A last partial block runs as a plain `vmap`; results equal one `vmap` over everything.
    """
    inner = jax.vmap(fn)

    def run(*args: Any) -> Any:
        n = batch_size(*args)
        arrays, static = eqx.partition(broadcast_batch(args, n), eqx.is_array)
        b = min(block, n)
        blocks, rest = divmod(n, b)

        def call(a: Any) -> Any:
            return inner(*eqx.combine(a, static))

        head = jax.tree.map(lambda x: x[: blocks * b].reshape(blocks, b, *x.shape[1:]), arrays)
        out = jax.tree.map(lambda x: x.reshape(blocks * b, *x.shape[2:]), jax.lax.map(call, head))
        if rest:  # the last partial block as one plain vmap
            tail = call(jax.tree.map(lambda x: x[blocks * b:], arrays))
            out = jax.tree.map(lambda x, y: jnp.concatenate([x, y]), out, tail)
        return out

    return run

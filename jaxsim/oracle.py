"""A batched step-cost oracle for other simulators: NumPy arrays in, NumPy arrays out.

A discrete-event simulator written in plain Python (or C++ through Python) asks, many times per simulated
second, "how long does this iteration take?". `StepOracle` answers for a whole batch of iteration
descriptions per call, with the same step model as everything else here (`step_cost`, or `afd_iteration`
for an AFD instance). It is compiled once per (model, hardware, deployment): the specs are baked into
ahead-of-time compiled executables for a few fixed batch sizes (`buckets`), each call pads its batch to
the smallest bucket that holds it, so changing batch contents or sizes never recompiles.

    oracle = StepOracle(js.load_model("deepseek-v3"), js.load_hardware("h200-sxm"), deployment)
    seconds = oracle(decode_requests=np.array([64, 32]), decode_context=np.array([4096, 8000]))
    full = oracle.evaluate(decode_requests=..., prefill_tokens=..., prefill_context=..., prefill_sequences=...)
    full["total_s"], full["interval_s"], full["memory_bytes"]

Every argument is per attention-DP rank, as in `StepBatch`: decode requests and their mean KV length (and
the half-width of a uniform spread of it), prefill tokens in the iteration, the mean number of KV positions
each attends to, and the prompts they belong to (default: 1 where there are prefill tokens). Scalars
broadcast. Results are float64 NumPy arrays of the batch's length.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax import Array
from jax.typing import ArrayLike

from jaxsim.cost import memory as Mem
from jaxsim.presets import SpecError
from jaxsim.serve.afd import afd_iteration
from jaxsim.spec import Deployment, Hardware, Model, StepBatch
from jaxsim.step import step_cost

INPUTS = ("decode_requests", "decode_context", "decode_context_spread", "prefill_tokens", "prefill_context",
          "prefill_sequences")
OUTPUTS = ("total_s", "interval_s", "memory_bytes", "flops")
DEFAULT_BUCKETS = (1, 16, 128, 1024)
# Rows of the packed input for (decode_requests, decode_context, decode_context_spread, prefill_tokens,
# prefill_context) as `evaluate` receives them.
INPUT_ROW = (0, 1, 2, 3, 4)


class StepOracle:
    """Iteration time (and memory, FLOPs) of one deployment for batches of iteration descriptions.

    Args:
        model, hw, deployment: the specs; fixed for the oracle's life.
        micro_batches: `None` prices a regular instance (`step_cost`); a number prices an AFD instance of
            `deployment` (attention on tp × dp GPUs, experts on ep × moe_tp) with that many micro-batches.
        buckets: batch sizes compiled ahead of time; a call takes up to `max(buckets)` descriptions.
        compile_now: compile every bucket in the constructor (else on first use of each).
    """

    def __init__(self, model: Model, hw: Hardware, deployment: Deployment, micro_batches: float | None = None,
                 buckets: Sequence[int] = DEFAULT_BUCKETS, compile_now: bool = True) -> None:
        if not buckets or any(int(b) < 1 for b in buckets):
            raise SpecError(f"buckets must be positive batch sizes, got {list(buckets)}")
        self.model, self.hw, self.deployment, self.micro_batches = model, hw, deployment, micro_batches
        self.buckets = tuple(sorted({int(b) for b in buckets}))
        self.max_batch = self.buckets[-1]
        self._compiled: dict[int, Any] = {}
        self._scratch = {b: np.zeros((len(INPUTS), b), np.float32) for b in self.buckets}
        if compile_now:
            for b in self.buckets:
                self._executable(b)

    # ---- the model, one description at a time ----
    def _one(self, x: Array) -> Array:
        b = StepBatch(*(x[i] for i in range(len(INPUTS))))
        m, hw, d = self.model, self.hw, self.deployment
        if self.micro_batches is None:
            c = step_cost(m, hw, d, b)
            return jnp.stack([c.total_s, c.interval_s, c.memory_bytes, c.flops])
        it = afd_iteration(m, hw, d, jnp.float32(self.micro_batches), b)
        mem = jnp.maximum(it.attention_memory_bytes, it.ffn_memory_bytes)
        return jnp.stack([it.total_s, it.total_s, mem, it.attention_flops + it.ffn_flops])

    def _executable(self, bucket: int) -> Any:
        exe = self._compiled.get(bucket)
        if exe is None:
            fn = jax.jit(lambda x: jax.vmap(self._one, in_axes=1, out_axes=1)(x))
            exe = fn.lower(jax.ShapeDtypeStruct((len(INPUTS), bucket), jnp.float32)).compile()
            self._compiled[bucket] = exe
        return exe

    @property
    def compilations(self) -> int:
        """Executables compiled so far (one per bucket used)."""
        return len(self._compiled)

    def kv_capacity_tokens(self, decode_requests: float = 64.0, prefill_tokens: float = 8192.0) -> float:
        """KV tokens one attention-DP rank can hold beside weights and the activations of such an iteration."""
        d = self.deployment
        return float(Mem.kv_capacity_tokens(self.model, self.hw, d, decode_requests + prefill_tokens,
                                            decode_requests))

    # ---- calls ----
    def evaluate(self, decode_requests: ArrayLike = 0.0, decode_context: ArrayLike = 0.0,
                 prefill_tokens: ArrayLike = 0.0, prefill_context: ArrayLike = 0.0,
                 prefill_sequences: ArrayLike | None = None, decode_context_spread: ArrayLike = 0.0
                 ) -> dict[str, np.ndarray]:
        """`OUTPUTS` for a batch of descriptions (arrays of one length, or scalars), as float64 arrays."""
        vals = (decode_requests, decode_context, decode_context_spread, prefill_tokens, prefill_context)
        n = 1
        for v in vals:
            if np.ndim(v) == 1:
                n = len(v)  # type: ignore[arg-type]
                break
        if n > self.max_batch:
            raise SpecError(f"{n} descriptions in one call; the oracle takes up to {self.max_batch} "
                            "(split the batch, or build it with larger buckets)")
        bucket = self.buckets[0]
        for b in self.buckets:
            if b >= n:
                bucket = b
                break
        x = self._scratch[bucket]
        x[:, n:] = 0.0
        try:
            for i, v in enumerate(vals):
                x[INPUT_ROW[i], :n] = v
            x[5, :n] = (x[3, :n] > 0) if prefill_sequences is None else prefill_sequences
        except ValueError:
            raise SpecError("oracle inputs must be scalars or 1-D arrays of one length; got shapes "
                            f"{[np.shape(v) for v in (*vals, prefill_sequences)]}") from None
        live = x[:, :n]
        if not (np.isfinite(live).all() and (live >= 0).all()):
            bad = [INPUTS[i] for i in range(len(INPUTS)) if not (np.isfinite(live[i]).all() and (live[i] >= 0).all())]
            raise SpecError(f"oracle inputs must be finite and ≥ 0: {', '.join(bad)}")
        out = np.asarray(self._executable(bucket)(x), np.float64)[:, :n]
        return dict(zip(OUTPUTS, out, strict=True))

    def __call__(self, decode_requests: ArrayLike = 0.0, decode_context: ArrayLike = 0.0,
                 prefill_tokens: ArrayLike = 0.0, prefill_context: ArrayLike = 0.0,
                 prefill_sequences: ArrayLike | None = None, decode_context_spread: ArrayLike = 0.0) -> np.ndarray:
        """Iteration latency in seconds for each description (float64 array)."""
        return self.evaluate(decode_requests, decode_context, prefill_tokens, prefill_context, prefill_sequences,
                             decode_context_spread)["total_s"]

    def call_packed(self, x: np.ndarray) -> np.ndarray:
        """The lowest-overhead path: `x` is a float32 array of shape (6, bucket) with rows in `INPUTS` order,
        `bucket` one of `buckets`; returns the (4, bucket) `OUTPUTS` without checks or copies."""
        return np.asarray(self._executable(x.shape[1])(x))

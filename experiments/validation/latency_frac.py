"""Estimate `Efficiency.serving_latency_frac` from the declared calibration split.

    python experiments/validation/latency_frac.py [path/to/silicon_sample.csv]

`serving_latency_frac` is the share of the fitted per-call kernel latencies (measured on isolated kernels, see
`jaxsim.spec.Efficiency`) that a kernel still pays inside a serving iteration. It is estimated on the same
declared split as the request overheads (`jaxsim.validate.in_overhead_split`: agg rows at concurrency ≤ 4
whose id's CRC32 ≡ 0 mod 4, about 3 % of the modelled rows). At that load decode iterations are small, so their
time is weight reads plus fixed per-kernel costs: the regime where the share is identifiable. TPOT does not
depend on the request overhead, so the two estimates do not interact.

For each share on a grid, the split is predicted with every calibrated system's share set to it; the estimate is
where the median signed log error of TPOT (all families of the split) crosses 0, interpolated on the grid.
Every other row is held out; `analyze.py` reports the error on the held-out rows apart.
"""

from __future__ import annotations

import sys
from pathlib import Path

import equinox as eqx
import jax.numpy as jnp
import numpy as np

import jaxsim.validate as V
from jaxsim.spec import Hardware

GRID = tuple(round(0.1 * i, 1) for i in range(11))


class _Share(V.Catalog):
    """The validation catalog with every hardware's `serving_latency_frac` set to `share`."""

    def __init__(self, model_configs: Path | None, share: float) -> None:
        super().__init__(model_configs)
        self.share = share

    def hardware(self, system: str, framework: str | None = None) -> Hardware | V.SkipReason:
        hw = super().hardware(system, framework)
        if isinstance(hw, V.SkipReason):
            return hw
        return eqx.tree_at(lambda h: h.eff.serving_latency_frac, hw, jnp.asarray(self.share, jnp.float32))


def crossing(shares: list[float], medians: list[float]) -> float:
    """The share where the median signed log error crosses 0 (linear on the grid); the nearer end if it does not."""
    for i in range(len(shares) - 1):
        (a, ea), (b, eb) = (shares[i], medians[i]), (shares[i + 1], medians[i + 1])
        if ea == 0.0:
            return a
        if ea * eb < 0.0:
            return a + (b - a) * ea / (ea - eb)
    return shares[int(np.argmin(np.abs(medians)))]


def main(data: str | None) -> None:
    path = data if data is not None else V.find_aiconfigurator() / "systems" / "silicon_sample.csv"  # type: ignore[operator]
    df = V.load_silicon(path)
    split = [V.in_overhead_split(str(i), str(m).strip().lower(), float(c))
             for i, m, c in zip(df["id"], df["mode"], df["concurrency"], strict=True)]
    part = df[split].reset_index(drop=True)
    configs = V.default_model_configs(Path(path))
    medians: list[float] = []
    print("share  rows  TPOT median signed log err  median abs %   (MoE rows: median abs %)")
    for share in GRID:
        result = V.validate(part, catalog=_Share(configs, share))
        ok = result.rows[result.rows["status"] == V.OK]
        log_err = np.log(ok["pred_tpot_ms"].to_numpy(float) / ok["silicon_tpot_ms"].to_numpy(float))
        abs_pct = 100 * np.abs(np.expm1(log_err))
        moe = ok["family"].isin(V.MOE_FAMILIES).to_numpy()
        medians.append(float(np.median(log_err)))
        print(f"{share:5.1f} {len(ok):5d}  {medians[-1]:+8.3f}  {np.median(abs_pct):8.1f}   "
              f"({int(moe.sum())}: {np.median(abs_pct[moe]):.1f})")
    print(f"estimate: serving_latency_frac = {crossing(list(GRID), medians):.2f}")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else None)

"""Plots of sweep results (matplotlib, headless)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

COLORS = {"agg": "tab:blue", "disagg": "tab:orange", "agg+afd": "tab:green", "disagg+afd": "tab:red"}


def pareto_plot(result: Any, path: str | Path, title: str, tpot_target_s: float | None = None) -> Path:
    """Pareto frontier of output tokens/s/GPU vs tokens/s/user, one curve per architecture.

    The TPOT target is drawn as the vertical line tokens/s/user = 1 / TPOT: feasible points lie right of it.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.5, 5.0), dpi=120)
    archs = [a for a in COLORS if (result.columns["arch"] == a).any()]
    drawn = 0
    for arch in archs:
        front = result.pareto(arch)
        if len(front["arch"]) == 0:
            continue
        ax.plot(front["tok_per_s_per_user"], front["out_tok_per_s_per_gpu"], marker="o", ms=3.5, lw=1.6,
                color=COLORS[arch], label=f"{arch} ({len(front['arch'])} Pareto points)")
        drawn += 1
    if tpot_target_s:
        ax.axvline(1.0 / tpot_target_s, color="0.3", ls="--", lw=1.0,
                   label=f"TPOT target {tpot_target_s * 1e3:g} ms (1/TPOT = {1 / tpot_target_s:.0f} tok/s/user)")
    if drawn == 0:
        ax.text(0.5, 0.5, "no SLO-feasible configuration", ha="center", va="center", transform=ax.transAxes)
    ax.set_xlabel("tokens/s/user (output tokens per second per request = 1 / TPOT)")
    ax.set_ylabel("output tokens/s/GPU (all GPUs counted)")
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.set_xlim(left=0)
    ax.set_ylim(bottom=0)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path)
    plt.close(fig)
    return path

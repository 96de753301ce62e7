"""The benchmark scripts still run (tiny sizes, nothing recorded): they are how speed claims are made."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).parent.parent / "benchmarks"


@pytest.mark.parametrize(("script", "extra"), [("step_throughput.py", []),
                                               pytest.param("estimate_throughput.py", ["--archs", "agg,disagg+afd"],
                                                            marks=pytest.mark.slow)])  # 15 s on 2 cores
def test_benchmark_script_runs(script: str, extra: list[str]) -> None:
    out = subprocess.run([sys.executable, str(BENCH / script), "--sizes", "64", "--repeats", "1", "--no-record",
                          *extra], capture_output=True, text=True, timeout=300, check=False)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "evals/s" in out.stdout

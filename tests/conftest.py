"""Shared fixtures: presets loaded once per session."""

from __future__ import annotations

import pytest

import jaxsim as js


@pytest.fixture(scope="session")
def ds3() -> js.Model:
    return js.load_model("deepseek-v3")


@pytest.fixture(scope="session")
def h200() -> js.Hardware:
    return js.load_hardware("h200-sxm")


def x64():
    """Float64 inside a `with` block, without changing the global configuration."""
    import jax

    if callable(getattr(jax, "enable_x64", None)):
        return jax.enable_x64(True)
    from jax.experimental import enable_x64

    return enable_x64()

"""Tests run in float64 by default (the gradient checks need it); float32 is tested explicitly."""

import jax
import pytest

jax.config.update("jax_enable_x64", True)


@pytest.fixture
def key():
    return jax.random.key(0)

"""Fixtures of broker-gateway's tests: a local Alpaca stand-in over real HTTP."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from bsopt_common.testing.standins import alpaca_standin_module


@pytest.fixture
def alpaca_standin() -> Iterator[object]:
    """A fresh stand-in, served on a free 127.0.0.1 port for one test."""
    standin = alpaca_standin_module().AlpacaStandin()
    with standin.serving():
        yield standin

"""Fixtures of broker-gateway's tests: a local Alpaca stand-in over real HTTP."""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest


def _standin_module():  # the tests run with --import-mode=importlib: load it by path
    name = "bsopt_broker_tests_alpaca_standin"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, Path(__file__).with_name("alpaca_standin.py"))
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


@pytest.fixture
def alpaca_standin() -> Iterator[object]:
    """A fresh stand-in, served on a free 127.0.0.1 port for one test."""
    standin = _standin_module().AlpacaStandin()
    with standin.serving():
        yield standin

"""Local stand-ins of external APIs that live in this source checkout (test-only; the
production wheel of the libs leaves ``bsopt_common.testing`` out)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

#: The local Alpaca stand-in (Trading API, Market Data bars, OAuth), beside broker-gateway's tests.
ALPACA_STANDIN_FILE = Path(__file__).resolve().parents[4] / "services" / "broker-gateway" / "tests" / \
    "alpaca_standin.py"
_MODULE_NAME = "bsopt_broker_tests_alpaca_standin"


def alpaca_standin_module() -> ModuleType:
    """The stand-in module, loaded once by path (the tests run with
    ``--import-mode=importlib``, so it is not importable by name), shared by every test
    module that uses it. FileNotFoundError outside a source checkout."""
    if _MODULE_NAME not in sys.modules:
        if not ALPACA_STANDIN_FILE.is_file():
            raise FileNotFoundError(f"the Alpaca stand-in is not here: {ALPACA_STANDIN_FILE}")
        spec = importlib.util.spec_from_file_location(_MODULE_NAME, ALPACA_STANDIN_FILE)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[_MODULE_NAME] = module
        spec.loader.exec_module(module)
    return sys.modules[_MODULE_NAME]


__all__ = ["ALPACA_STANDIN_FILE", "alpaca_standin_module"]

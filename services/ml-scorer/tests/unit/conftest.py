"""Test setup for the ml-scorer domain unit tests.

- Makes ``bsopt_scorer`` importable from the source tree when the editable install does
  not expose it yet (the package directory was empty when the venv was built).
- Puts this folder on ``sys.path`` so the tests can import the independent reference
  implementations in ``scorer_reference.py`` (pytest runs with ``--import-mode=importlib``,
  which does not add test folders to ``sys.path``).
"""

import importlib.util
import sys
from pathlib import Path

_HERE = Path(__file__).resolve().parent
_SRC = _HERE.parents[1] / "src"
if importlib.util.find_spec("bsopt_scorer") is None and str(_SRC) not in sys.path:
    sys.path.insert(0, str(_SRC))
if str(_HERE) not in sys.path:
    sys.path.insert(0, str(_HERE))

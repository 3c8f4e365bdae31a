"""Test setup for the ml-scorer domain unit tests: puts this folder on ``sys.path`` so
the tests can import the independent reference implementations in
``scorer_reference.py`` (pytest runs with ``--import-mode=importlib``, which does not add
test folders to ``sys.path``)."""

import sys
from pathlib import Path

_HERE = Path(__file__).resolve().parent
if str(_HERE) not in sys.path:
    sys.path.insert(0, str(_HERE))

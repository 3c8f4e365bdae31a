"""Make ``bsopt_digest`` importable from the source tree when the editable install does
not expose it yet (the package directory was empty when the venv was built)."""

import importlib.util
import sys
from pathlib import Path

_SRC = Path(__file__).resolve().parents[2] / "src"
if importlib.util.find_spec("bsopt_digest") is None and str(_SRC) not in sys.path:
    sys.path.insert(0, str(_SRC))

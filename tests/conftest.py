"""Make ``tests`` mean this directory.

mutmut 3.3.1's wheel installs a stray top-level ``tests`` package into site-packages; a regular
package there beats this directory (a namespace package), so ``from tests.netns import ...``
would fail wherever mutmut is installed. Point ``tests`` at this directory before any test
module imports it.
"""

from __future__ import annotations

import sys
import types
from pathlib import Path

_HERE = Path(__file__).resolve().parent
_mod = sys.modules.get("tests")
if _mod is None or [str(p) for p in getattr(_mod, "__path__", [])] != [str(_HERE)]:
    _pkg = types.ModuleType("tests")
    _pkg.__path__ = [str(_HERE)]
    sys.modules["tests"] = _pkg

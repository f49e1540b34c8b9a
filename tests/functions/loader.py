"""Import a function's plain-Python modules under CPython, as componentize-py would see them."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path
from types import ModuleType

FUNCTIONS = Path(__file__).resolve().parents[2] / "functions"


def load(function: str, module: str) -> ModuleType:
    """`functions/<function>/<module>.py`, with its siblings and the shared guest modules importable as they
    are inside the component."""
    for directory in (str(FUNCTIONS / "_shared"), str(FUNCTIONS / function)):
        if directory not in sys.path:
            sys.path.insert(0, directory)
    return importlib.import_module(module)

"""Lazy imports of optional packages with an install hint naming the extra that provides them."""

from __future__ import annotations

import importlib
from types import ModuleType


def require(package: str, hint: str) -> ModuleType:
    """Import ``package`` or raise an ``ImportError`` that says how to install it (``hint``)."""
    try:
        return importlib.import_module(package)
    except ImportError as err:
        raise ImportError(f"this adapter needs the '{package}' package: {hint}") from err

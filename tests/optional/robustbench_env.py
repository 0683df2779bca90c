"""Shared by the optional robustbench tests (a module, not a conftest: tests/conftest.py is imported by name): the ``autoattack`` alias robustbench imports, and a CPU-only
fixture for its constructors."""

from __future__ import annotations

import sys

import pytest
import torch

try:  # robustbench imports `autoattack`; the attack authors' package on PyPI is `pyautoattack`
    import autoattack  # noqa: F401
except ImportError:
    try:
        import pyautoattack

        sys.modules["autoattack"] = pyautoattack
    except ImportError:
        pass


@pytest.fixture
def cpu_only(monkeypatch):
    """robustbench's constructors call .cuda(); on a CPU machine these become no-ops for this test."""
    monkeypatch.setattr(torch.Tensor, "cuda", lambda self, *a, **k: self)
    monkeypatch.setattr(torch.nn.Module, "cuda", lambda self, *a, **k: self)

"""Module paths of robustmix 0.1 that moved in the layered package, kept importable for one release.

Importing an old path (``robustmix.policy``, ``robustmix.zoo``, ``robustmix.adapters.normalize``, ...) gives a
thin module re-exporting the names of the module that holds them now, with a ``DeprecationWarning`` naming
the new path. The names are the same objects, so ``isinstance`` checks keep working.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import sys
import warnings
from types import ModuleType

__all__ = ["MOVED", "install"]

#: old module path -> the module that holds its public names now
MOVED: dict[str, str] = {
    "robustmix.policy": "robustmix._compat.policy",
    "robustmix.release": "robustmix._compat.release",
    "robustmix.zoo": "robustmix._compat.zoo",
    "robustmix.bounds": "robustmix.certify.bounds",
    "robustmix.randomized": "robustmix.certify.randomized",
    "robustmix.data": "robustmix.demo.data",
    "robustmix.demo_models": "robustmix._compat.demo_models",
    "robustmix.digest": "robustmix._utils.digest",
    "robustmix.convert_cmd": "robustmix._compat.convert_cmd",
    "robustmix.eval_cmd": "robustmix.cli.evaluate",
    "robustmix.train_cmd": "robustmix.cli.train",
    "robustmix.certify_cmd": "robustmix.cli.certify",
    "robustmix.adapters.normalize": "robustmix.nn.layers",
    "robustmix.adapters.outputs": "robustmix.nn.layers",
    "robustmix.adapters.taps": "robustmix._compat.taps",
    "robustmix.adapters._optional": "robustmix._utils.optional",
}


class _MovedModuleFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Resolves the old paths in :data:`MOVED` to their new modules, warning once per import."""

    def find_spec(self, fullname: str, path: object = None, target: object = None) -> importlib.machinery.ModuleSpec | None:
        if fullname not in MOVED:
            return None
        return importlib.machinery.ModuleSpec(fullname, self)

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> None:
        return None  # a fresh module object, filled by exec_module

    def exec_module(self, module: ModuleType) -> None:
        target = MOVED[module.__name__]
        warnings.warn(
            f"{module.__name__} moved to {target.replace('robustmix._compat.', 'robustmix.')}; the old path works "
            "for this release only. Import the public names from robustmix or their new module.",
            DeprecationWarning,
            stacklevel=4,
        )
        new = importlib.import_module(target)
        module.__dict__.update({k: v for k, v in vars(new).items() if not (k.startswith("__") and k.endswith("__"))})
        module.__all__ = list(getattr(new, "__all__", []))
        module.__doc__ = f"Deprecated alias of {target}."


def install() -> None:
    """Put the finder on ``sys.meta_path`` (once)."""
    if not any(isinstance(f, _MovedModuleFinder) for f in sys.meta_path):
        sys.meta_path.insert(0, _MovedModuleFinder())

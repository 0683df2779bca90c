"""The package's layering, read from docs/design.md and checked against the source: every module is in one
layer, imports only go down (or to siblings in its package), imports inside functions of first-party modules
happen only in the command line, and the import graph has no cycle."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from fnmatch import fnmatchcase
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "robustmix"


def layer_patterns() -> list[tuple[int, list[str]]]:
    """``(layer, module patterns)`` rows of the table under "## Layers" in docs/design.md."""
    text = (ROOT / "docs" / "design.md").read_text()
    section = text.split("## Layers", 1)[1].split("\n## ", 1)[0]
    rows = []
    for line in section.splitlines():
        match = re.match(r"\|\s*(\d+)\s*\|([^|]*)\|", line)
        if match:
            rows.append((int(match[1]), re.findall(r"`([^`]+)`", match[2])))
    return rows


def module_names() -> dict[str, Path]:
    names = {}
    for path in PACKAGE.rglob("*.py"):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        names[".".join(parts)] = path
    return names


def layer_of(module: str, rows: list[tuple[int, list[str]]]) -> list[int]:
    found = []
    for layer, patterns in rows:
        for pattern in patterns:
            if module == pattern or (pattern.endswith("*") and (module == pattern[:-1] or fnmatchcase(module, pattern))):
                found.append(layer)
    return found


def _resolve(module: str, is_package: bool, level: int, target: str | None) -> str:
    if level == 0:
        return target or ""
    base = module.split(".") if is_package else module.split(".")[:-1]
    base = base[: len(base) - (level - 1)]
    return ".".join(base + ([target] if target else []))


def imports(modules: dict[str, Path]) -> list[tuple[str, str, bool]]:
    """``(importer, imported module, inside a function)`` for every first-party import, with the parent
    packages each import runs first (except the root and the importer's own packages)."""
    edges = []
    for module, path in modules.items():
        tree = ast.parse(path.read_text(), filename=str(path))
        is_package = path.name == "__init__.py"
        functions = [n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))]
        nested = {id(n) for f in functions for n in ast.walk(f)}
        for node in ast.walk(tree):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = _resolve(module, is_package, node.level, node.module)
                for alias in node.names:
                    sub = f"{base}.{alias.name}"
                    targets.append(sub if sub in modules else base)
            for target in targets:
                if target != "robustmix" and not target.startswith("robustmix."):
                    continue
                parts = target.split(".")
                for k in range(2, len(parts) + 1):
                    name = ".".join(parts[:k])
                    if name in modules and not (module == name or module.startswith(name + ".")):
                        edges.append((module, name, id(node) in nested))
    return edges


def violations(edges: list[tuple[str, str, bool]], rows: list[tuple[int, list[str]]]) -> list[str]:
    problems = []
    for importer, target, in_function in edges:
        (a,), (b,) = layer_of(importer, rows), layer_of(target, rows)
        same_package = importer.rsplit(".", 1)[0] == target.rsplit(".", 1)[0] or target.startswith(importer + ".")
        if b > a or (b == a and not same_package and importer != "robustmix"):
            problems.append(f"{importer} (layer {a}) imports {target} (layer {b})")
        if in_function and not importer.startswith("robustmix.cli"):
            problems.append(f"{importer} imports {target} inside a function (only robustmix.cli defers imports)")
    return problems


def cycles(edges: list[tuple[str, str, bool]]) -> list[list[str]]:
    graph: dict[str, set[str]] = {}
    for a, b, _ in edges:
        graph.setdefault(a, set()).add(b)
    found, state, stack = [], {}, []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                found.append(stack[stack.index(nxt):] + [nxt])
            elif nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node)
    return found


def test_every_module_is_in_exactly_one_layer():
    rows = layer_patterns()
    assert len(rows) >= 10
    wrong = {m: layer_of(m, rows) for m in module_names() if len(layer_of(m, rows)) != 1}
    assert not wrong, f"modules in no layer or in several (update docs/design.md): {wrong}"


def test_imports_only_go_down_and_have_no_cycle():
    rows, edges = layer_patterns(), imports(module_names())
    assert len(edges) > 100  # the walk finds the real imports
    assert violations(edges, rows) == []
    assert cycles(edges) == []


@pytest.mark.parametrize(
    "edge, message",
    [
        (("robustmix.smoothing", "robustmix.evaluate.suite", False), "imports robustmix.evaluate.suite"),
        (("robustmix.registry", "robustmix.nn.policies", False), "layer 3) imports robustmix.nn.policies (layer 4"),
        (("robustmix.hub.config", "robustmix.smoothing", True), "inside a function"),
        (("robustmix.training.trainer", "robustmix.evaluate.accuracy", False), "(layer 9) imports"),
    ],
)
def test_an_upward_or_sideways_import_is_reported(edge, message):
    """The check can fail: one deliberate bad import added to the real graph is named."""
    rows, edges = layer_patterns(), imports(module_names())
    problems = violations([*edges, edge], rows)
    assert any(message in p for p in problems), problems


def test_a_cycle_is_reported():
    edges = [("robustmix.a", "robustmix.b", False), ("robustmix.b", "robustmix.c", False), ("robustmix.c", "robustmix.a", False)]
    assert cycles(edges) == [["robustmix.a", "robustmix.b", "robustmix.c", "robustmix.a"]]


def test_import_robustmix_loads_neither_the_demo_nor_the_adapters_nor_matplotlib():
    code = (
        "import sys, robustmix\n"
        "bad = [m for m in sys.modules if m.startswith(('robustmix.demo', 'robustmix.adapters', 'robustmix.cli'))"
        " or m.split('.')[0] in ('matplotlib', 'sklearn', 'torchvision', 'timm', 'huggingface_hub', 'pyautoattack')]\n"
        "print(bad)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert out.stdout.strip() == "[]"


OLD_PATHS = {
    "robustmix.policy": ("PolicyNet", "robustmix.nn.policies"),
    "robustmix.release": ("MixingNetPolicy", "robustmix.nn.policies"),
    "robustmix.zoo": ("ZOO", "robustmix.hub.zoo"),
    "robustmix.bounds": ("compile_network", "robustmix.certify.bounds"),
    "robustmix.randomized": ("RandomizedSmoothing", "robustmix.certify.randomized"),
    "robustmix.data": ("load_digits_split", "robustmix.demo.data"),
    "robustmix.demo_models": ("get_demo_models", "robustmix.demo.models"),
    "robustmix.convert_cmd": ("convert_release", "robustmix.convert.release"),
    "robustmix.adapters.normalize": ("Normalized", "robustmix.nn.layers"),
    "robustmix.adapters.taps": ("default_taps", "robustmix.nn.taps"),
    "robustmix.adapters.outputs": ("ExtractLogits", "robustmix.nn.layers"),
}


def test_old_module_paths_warn_and_give_the_same_objects():
    code = (
        "import importlib, warnings\n"
        f"for old, (name, new) in {OLD_PATHS!r}.items():\n"
        "    with warnings.catch_warnings(record=True) as caught:\n"
        "        warnings.simplefilter('always')\n"
        "        module = importlib.import_module(old)\n"
        "    assert getattr(module, name) is getattr(importlib.import_module(new), name), old\n"
        "    assert any(issubclass(w.category, DeprecationWarning) and 'moved to' in str(w.message) for w in caught), old\n"
        "print('ok')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr

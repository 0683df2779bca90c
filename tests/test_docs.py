"""Every ```python block in README.md and docs/*.md runs as written, in order within its file.

Blocks fenced as ```python no-run are illustrative (they need data, a GPU or a download) and are skipped
with that reason. Blocks of one file share a namespace, so a page may build on its earlier blocks.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
FENCE = re.compile(r"^```python([^\n]*)\n(.*?)^```", flags=re.S | re.M)


def blocks(page: Path) -> list[tuple[str, str]]:
    return [(info.strip(), code) for info, code in FENCE.findall(page.read_text())]


def test_docs_pages_exist():
    names = {p.name for p in PAGES}
    assert {"index.md", "guide.md", "api.md", "reproducing.md"} <= names


@pytest.mark.parametrize("page", PAGES, ids=[p.relative_to(ROOT).as_posix() for p in PAGES])
def test_python_blocks_run(page, tmp_path, monkeypatch):
    found = blocks(page)
    runnable = [code for info, code in found if info != "no-run"]
    if not runnable:
        pytest.skip(f"illustrative: {page.name} has no runnable python block")
    unknown = {info for info, _ in found} - {"", "no-run"}
    assert not unknown, f"unknown fence options {unknown} in {page.name}; use ```python or ```python no-run"
    monkeypatch.chdir(tmp_path)  # blocks that write files write them here
    namespace: dict = {"__name__": f"__docs_{page.stem}__"}
    for i, code in enumerate(runnable):
        try:
            exec(compile(code, f"{page.name}[block {i}]", "exec"), namespace)
        except Exception as err:
            raise AssertionError(f"{page.name} block {i} failed: {err!r}\n{code}") from err


def test_no_placeholders_in_docs_and_examples():
    texts = [*PAGES, *sorted((ROOT / "examples").glob("*.py"))]
    for path in texts:
        text = path.read_text()
        for marker in ("TODO", "TBD", "FIXME", "XXX", "lorem ipsum"):
            assert marker not in text, f"{path.name} contains {marker!r}"


def test_api_reference_is_generated_from_the_package_and_covers_every_public_name():
    import importlib
    import sys

    sys.path.insert(0, str(ROOT / "docs"))
    try:
        generate_api = importlib.import_module("generate_api")
    finally:
        sys.path.pop(0)
    assert (ROOT / "docs" / "api.md").read_text() == generate_api.render(), "run: python docs/generate_api.py"
    text = (ROOT / "docs" / "api.md").read_text()
    names = set()
    for module in ["robustmix", *generate_api.public_modules()]:
        names |= set(getattr(importlib.import_module(module), "__all__", ()))
    missing = sorted(n for n in names if f"`{n}`" not in text)
    assert not missing, f"docs/api.md does not document {missing}"


def test_readme_between_claim_names_its_exception():
    """The README's "entries lie between g's and h's" must say that jacobian mode in prob space renormalises."""
    text = " ".join((ROOT / "README.md").read_text().split())
    claim = text.index("lies entry by entry between the two")
    assert 'except with `mode="jacobian", space="prob"`' in text[claim : claim + 200]
    assert "renormalised" in text[claim : claim + 300]

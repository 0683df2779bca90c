"""The radius search (secant on the margin bounds, halving as the fallback) on synthetic checks: it only
returns verified radii, reaches the precision of ``steps`` halvings, and never takes more than ``2 * steps``
tries, whatever the checks report."""

from __future__ import annotations

import importlib
import math

from hypothesis import given, settings
from hypothesis import strategies as st

radius = importlib.import_module("robustmix.certify.radius")


def run_search(truth: float, end: float, steps: int, score, grow: bool, scored: bool = True):
    """Drive ``_search`` with a check that verifies exactly the ε ≤ ``truth``; returns (radius, tries)."""
    tries = []

    def check(eps: float):
        yield eps
        tries.append(eps)
        f = score(eps)
        if eps <= truth:
            return {"margin_lower[1]": f} if f is not None and f > 0 else {"verified": 1.0}
        return f if f is not None and f <= 0 else None

    search = radius._search(check, end, steps, score(0.0) or 1.0, scored=scored, grow=grow)
    try:
        while True:
            search.send(None)
    except StopIteration as done:
        r, _ = done.value
    return r, tries


@settings(max_examples=300, deadline=None)
@given(
    truth=st.floats(1e-4, 0.999),
    power=st.floats(0.3, 4.0),
    steps=st.integers(1, 16),
    margin=st.floats(1e-6, 1e3),
    wobble=st.floats(0.0, 0.5),
    scored=st.booleans(),
)
def test_search_returns_a_verified_radius_within_the_precision_of_halving(truth, power, steps, margin, wobble, scored):
    def score(eps: float) -> float:
        # decreasing through 0 at the truth, with a wobble that keeps its sign (no smoothness promised)
        base = margin * (1 - (eps / truth) ** power)
        return base * (1 + wobble * math.sin(40 * eps / truth))

    r, tries = run_search(truth, 1.0, steps, score, grow=False, scored=scored)
    assert r <= truth
    assert truth - r <= 1.0 / 2**steps * (1 + 1e-9)
    assert len(tries) <= 2 * steps + 1
    assert r == 0.0 or r in tries  # only a tried (so verified) ε is returned


@given(truth=st.floats(1.5, 500.0), steps=st.integers(4, 12))
def test_search_grows_its_end_where_the_end_verifies(truth, steps):
    r, tries = run_search(truth, 1.0, steps, lambda e: 1 - e / truth, grow=True)
    assert r <= truth and r in tries
    if truth >= 2**steps:  # grown ``steps`` times, and still verified
        assert r == 2**steps
        return
    assert truth - r <= 2 ** math.ceil(math.log2(truth)) / 2**steps * (1 + 1e-9)
    # without growing, the end is the answer
    assert run_search(truth, 1.0, steps, lambda e: 1 - e / truth, grow=False)[0] == 1.0


def test_search_halves_where_no_margin_bound_is_reported():
    r, tries = run_search(0.3, 1.0, 10, lambda e: None, grow=False)
    assert tries[1:4] == [0.5, 0.25, 0.375]
    assert 0.3 - 1 / 2**10 <= r <= 0.3

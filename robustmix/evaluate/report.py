"""Table-1-style text reports of an evaluation."""

from __future__ import annotations

from .accuracy import EvalReport

__all__ = ["format_table"]


def format_table(report: EvalReport, title: str | None = None) -> str:
    """A Table-1-style text table: clean and worst-case robust accuracy (%) per model, and the suite."""
    width = max([len("model")] + [len(s.name) for s in report.scores])
    lines = [title] if title else []
    lines.append(f"{'model':<{width}}  {'clean':>7}  {'robust':>7}")
    lines.append("-" * (width + 18))
    for s in report.scores:
        lines.append(f"{s.name:<{width}}  {100 * s.clean:>6.1f}%  {100 * s.robust:>6.1f}%")
    n = report.scores[0].n if report.scores else 0
    classes = report.scores[0].num_classes if report.scores else None
    lines.append(f"n = {n} test examples; robust = per-example worst case over {report.suite.describe(classes)}")
    if report.transfer:
        lines.append("every adversarial input that broke one row was also tried on every other row")
    return "\n".join(lines)

"""Clean and worst-case robust accuracy over an attack suite, Table-1-style reports and the α-sweep plot.

An example counts as robust only if it is classified correctly clean *and* after every attack of the suite
(the per-example worst case): for an :class:`~robustmix.smoothing.AdaptiveSmoothing` mixture, PGD on the
mixture at every fixed α_t (eq. 6, section 6.3), the adaptive PGD through the policy and R (section 5.1),
and AutoAttack when enabled; for a single model, PGD with restarts and AutoAttack when enabled. Each attack
only runs on the examples that survived the previous ones, which gives the same answer as attacking every
example with every attack and taking the AND.

The examples are processed in chunks of ``suite.batch_size``; chunk ``k`` draws its random starts from a
generator seeded with ``(suite.seed, k)``, so a chunk's result does not depend on which process runs it.
With ``distributed=True`` (under ``torchrun``, after :func:`robustmix.distributed.init_from_env`) rank ``r``
of ``W`` runs chunks ``r, r + W, r + 2W, ...`` and the per-example results are summed over the ranks: every
rank returns the same full result, equal to the single-process one. (Round-robin over whole chunks rather
than ``DistributedSampler`` over examples: the sampler pads the last round with repeated examples, which
would cost work here and change batch composition, hence the random starts, with the world size.)
"""

from __future__ import annotations

import importlib.util
import math
import sys
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from .attacks import (
    AUTOATTACK_VERSIONS,
    PAPER_ALPHAS,
    adaptive_pgd,
    autoattack,
    autoattack_parts,
    composite_pgd,
    pgd,
)
from .digest import tensor_digest
from .distributed import all_reduce, require_process_group
from .sensitivity import check_choice
from .smoothing import AdaptiveSmoothing

__all__ = [
    "AttackSuite",
    "Score",
    "EvalReport",
    "robust_accuracy",
    "clean_accuracy",
    "evaluate_models",
    "alpha_sweep",
    "format_table",
    "plot_alpha_sweep",
]

#: An attack as the suite runs it: (inputs, labels, generator) -> adversarial inputs.
Attack = Callable[[Tensor, Tensor, torch.Generator], Tensor]


@dataclass(frozen=True)
class AttackSuite:
    """The attacks a robust accuracy is the per-example worst case over.

    Args:
        eps: attack radius; norm: ``"linf"`` or ``"l2"``.
        steps, restarts, step_size, random_start: PGD settings (default step ``2.5 * eps / steps``).
        alphas: the fixed α_t the mixture is attacked at (eq. 6; default the paper's, section 6.3).
        adaptive: also attack the mixture itself, through its policy (section 5.1).
        autoattack: run AutoAttack as well; ``None`` (default) runs it when ``pyautoattack`` is installed.
        autoattack_version: ``"standard"``, ``"plus"``, ``"rand"`` or ``"apgd"`` (see :func:`autoattack`).
        batch_size: examples per attacked batch; data_range: the valid input range.
        seed: seeds the random starts (and AutoAttack), so a run is reproducible.
    """

    eps: float
    norm: str = "linf"
    steps: int = 20
    restarts: int = 3
    step_size: float | None = None
    random_start: bool = True
    alphas: tuple[float, ...] = PAPER_ALPHAS
    adaptive: bool = True
    autoattack: bool | None = None
    autoattack_version: str = "standard"
    batch_size: int = 256
    data_range: tuple[float, float] = (0.0, 1.0)
    seed: int = 0

    def __post_init__(self) -> None:
        check_choice("norm", self.norm, ("linf", "l2"))
        check_choice("autoattack_version", self.autoattack_version, AUTOATTACK_VERSIONS)
        if not (math.isfinite(self.eps) and self.eps >= 0):
            raise ValueError(f"eps must be a finite number >= 0, got {self.eps!r}")
        for name in ("steps", "restarts", "batch_size"):
            value = getattr(self, name)
            if int(value) != value or value < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
        if self.restarts > 1 and not self.random_start:
            raise ValueError("restarts > 1 needs random_start=True: without a random start every restart is the same")
        alphas = tuple(float(a) for a in self.alphas)
        if any(math.isnan(a) or a < 0 for a in alphas):
            raise ValueError(f"alphas must be >= 0 (math.inf for h alone), got {self.alphas!r}")
        object.__setattr__(self, "alphas", alphas)
        if self.use_autoattack and tuple(self.data_range) != (0.0, 1.0):
            raise ValueError("AutoAttack assumes inputs in [0, 1]; use data_range=(0, 1) or autoattack=False")

    @property
    def use_autoattack(self) -> bool:
        """Whether AutoAttack is part of the suite (``autoattack=None`` resolves to "if installed")."""
        if self.autoattack is None:
            return importlib.util.find_spec("pyautoattack") is not None
        return self.autoattack

    def _pgd_kwargs(self) -> dict:
        return dict(
            eps=self.eps, norm=self.norm, steps=self.steps, step_size=self.step_size,
            restarts=self.restarts, random_start=self.random_start, data_range=self.data_range,
        )

    def attacks_for(self, model: nn.Module) -> list[tuple[str, Attack]]:
        """The named attacks run against ``model``, in order."""
        kw = self._pgd_kwargs()
        attacks: list[tuple[str, Attack]] = []
        if isinstance(model, AdaptiveSmoothing):
            # The attack on the deployed model itself goes first: it usually breaks the most examples, and
            # every later attack only runs on the survivors (the AND over attacks does not depend on order).
            if self.adaptive:
                attacks.append(("adaptive PGD", lambda x, y, gen: adaptive_pgd(model, x, y, generator=gen, **kw)))
            for a in self.alphas:
                attacks.append((f"PGD at α_t={a:g}", _composite(model, a, kw)))
        else:
            attacks.append(("PGD", lambda x, y, gen: pgd(model, x, y, generator=gen, **kw)))
        if self.use_autoattack:
            attacks.append(("AutoAttack", lambda x, y, gen: autoattack(
                model, x, y, self.eps, self.norm, self.autoattack_version, seed=self.seed,
                batch_size=self.batch_size,
            )))
        return attacks

    def describe(self, num_classes: int | None = None) -> str:
        """One line saying what the robust numbers are the worst case over; with ``num_classes``, which
        AutoAttack parts are defined for that many classes (the others are left out and named)."""
        norm = "l_inf" if self.norm == "linf" else "l_2"
        pgd_name = f"PGD-{self.steps}" + (f" x{self.restarts} restarts" if self.restarts > 1 else "")
        alphas = ", ".join(f"{a:g}" for a in self.alphas)
        parts = [f"{pgd_name} (mixtures: at α_t ∈ {{{alphas}}}"
                 + (", and adaptive: the deployed model itself, through its policy)" if self.adaptive else ")")]
        if not self.use_autoattack:
            parts.append("no AutoAttack")
        elif num_classes is None:
            parts.append(f"AutoAttack ({self.autoattack_version})")
        else:
            run, skipped = autoattack_parts(self.autoattack_version, num_classes)
            text = f"AutoAttack ({self.autoattack_version}: {', '.join(p.upper() for p in run)}"
            if skipped:
                text += f"; {', '.join(p.upper() for p in skipped)} left out: not defined for {num_classes} classes"
            parts.append(text + ")")
        return f"{norm} eps={self.eps:g}: " + "; ".join(parts)


def _composite(model: AdaptiveSmoothing, alpha_t: float, kw: dict) -> Attack:
    return lambda x, y, gen: composite_pgd(model, x, y, alpha_t, generator=gen, **kw)


def _check_data(x: Tensor, y: Tensor) -> None:
    if not isinstance(x, Tensor) or not x.is_floating_point() or x.dim() < 2:
        raise ValueError(f"x must be a batched floating-point tensor [N, ...], got {_describe(x)}")
    if not isinstance(y, Tensor) or y.dtype != torch.long or y.shape != (x.shape[0],):
        raise ValueError(f"y must be int64 labels of shape [{x.shape[0]}], got {_describe(y)}")
    if not torch.isfinite(x).all():
        raise ValueError("x contains NaN or Inf values; clean the data before evaluating on it")


def _describe(t: object) -> str:
    return f"{t.dtype} of shape {tuple(t.shape)}" if isinstance(t, Tensor) else type(t).__name__


def _num_classes(model: nn.Module, x: Tensor) -> int:
    """The model's class count, from one example."""
    with torch.no_grad():
        return int(model(x[:1]).shape[1])


def _check_labels(model: nn.Module, x: Tensor, y: Tensor) -> int:
    """Refuse labels outside the model's classes (they would silently count as errors); returns c."""
    c = _num_classes(model, x)
    if len(y) and (int(y.min()) < 0 or int(y.max()) >= c):
        raise ValueError(
            f"labels must lie in [0, {c}) for a model with {c} classes; got {int(y.min())}..{int(y.max())}"
        )
    return c


def _warn_norm_mismatch(model: nn.Module, suite: AttackSuite) -> None:
    if isinstance(model, AdaptiveSmoothing) and model.mode != "none" and model.norm != suite.norm:
        warnings.warn(
            f"the mixture was built for norm={model.norm!r} (R uses that norm's dual) but the suite attacks in "
            f"{suite.norm!r}; build the mixture with norm={suite.norm!r} to evaluate the matching model",
            UserWarning,
            stacklevel=3,
        )


def _show_progress(progress: bool | None) -> bool:
    return sys.stderr.isatty() if progress is None else progress


def _correct(model: nn.Module, x: Tensor, y: Tensor) -> Tensor:
    with torch.no_grad():
        return model(x).argmax(dim=1) == y


def _fingerprint(x: Tensor, y: Tensor, batch_size: int, setup: str) -> Tensor:
    """A 56-bit digest (int64) of the bytes, shapes and dtypes of ``x`` and ``y``, the batch size and
    ``setup``: exact, so ranks agree on it whatever their devices."""
    digest = tensor_digest(x, y, extra=f"{batch_size} {setup}", size=7)
    return torch.tensor([int(digest, 16)], dtype=torch.int64)


class _Chunks:
    """The chunks of ``batch_size`` examples this process handles, and the merge of per-rank results."""

    def __init__(
        self, x: Tensor, y: Tensor, batch_size: int, distributed: bool, what: str, setup: str = ""
    ) -> None:
        self.n, self.batch_size = len(y), batch_size
        self.rank, self.world_size = require_process_group(what) if distributed else (0, 1)
        if self.world_size > 1:
            # Every rank must hold the same examples and run the same attacks, or the merged result would
            # be silently wrong.
            mine = _fingerprint(x, y, batch_size, setup)
            high_low = all_reduce(torch.cat([mine, -mine]), op="max")  # the same on every rank
            if not torch.equal(high_low[:1], -high_low[1:]):
                raise ValueError(
                    f"{what}: ranks disagree on the examples (x, y), the batch size or the attacks; "
                    "give every rank the same x, y and suite (AutoAttack installed everywhere or nowhere)"
                )
        self.starts = range(self.rank * batch_size, self.n, self.world_size * batch_size)

    def __iter__(self):
        """``(chunk index, slice)`` of each of this rank's chunks."""
        for start in self.starts:
            yield start // self.batch_size, slice(start, start + self.batch_size)

    def merge(self, result: Tensor) -> Tensor:
        """The full ``[N]`` bool result from each rank's part (entries outside its chunks are False)."""
        if self.world_size == 1:
            return result
        return all_reduce(result.to(torch.int32)) > 0


def clean_accuracy(
    model: nn.Module, x: Tensor, y: Tensor, batch_size: int = 256, distributed: bool = False
) -> Tensor:
    """Per-example clean correctness ``[N]`` (bool), batched; ``distributed``: split over the ranks."""
    _check_data(x, y)
    if len(y):
        _check_labels(model, x, y)
    chunks = _Chunks(x, y, batch_size, distributed, "clean_accuracy")
    correct = torch.zeros(len(y), dtype=torch.bool, device=y.device)
    for _, part in chunks:
        correct[part] = _correct(model, x[part], y[part])
    return chunks.merge(correct)


def robust_accuracy(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    suite: AttackSuite,
    progress: bool | None = None,
    desc: str = "attacks",
    distributed: bool = False,
) -> Tensor:
    """Per-example robustness ``[N]`` (bool): correct clean and after every attack of ``suite``.

    The mean is the worst-case robust accuracy. ``progress``: a tqdm bar (``None``: when stderr is a TTY;
    rank 0 only). ``distributed``: split the chunks over the ranks of the initialised process group (call it
    on every rank with the same data); every rank gets the full result, equal to the single-process one.
    The model's weights and train/eval mode are left untouched; put BatchNorm/Dropout models in eval first.
    """
    _check_data(x, y)
    if len(y):
        _check_labels(model, x, y)
    _warn_norm_mismatch(model, suite)
    attacks = suite.attacks_for(model)
    chunks = _Chunks(x, y, suite.batch_size, distributed, "robust_accuracy",
                     setup=f"{suite!r} {[name for name, _ in attacks]}")
    robust = torch.zeros(len(y), dtype=torch.bool, device=y.device)
    show = _show_progress(progress) and chunks.rank == 0
    with tqdm(total=len(chunks.starts) * len(attacks), desc=desc, disable=not show, leave=False) as bar:
        for k, part in chunks:
            generator = torch.Generator().manual_seed(suite.seed * 1_000_003 + k)
            xb, yb = x[part], y[part]
            alive = _correct(model, xb, yb)
            for _, attack in attacks:
                idx = alive.nonzero().flatten()
                if len(idx):
                    alive[idx] = _correct(model, attack(xb[idx], yb[idx], generator), yb[idx])
                bar.update()
            robust[part] = alive
    return chunks.merge(robust)


@dataclass(frozen=True)
class Score:
    """Clean and worst-case robust accuracy (fractions in [0, 1]) of one model on ``n`` examples."""

    name: str
    clean: float
    robust: float
    n: int
    alpha: float | None = None
    num_classes: int | None = None


@dataclass
class EvalReport:
    """Scores of several models under one attack suite."""

    scores: list[Score]
    suite: AttackSuite

    def __getitem__(self, name: str) -> Score:
        for s in self.scores:
            if s.name == name:
                return s
        raise KeyError(f"no model named {name!r}; have {[s.name for s in self.scores]}")


def _score(name: str, model: nn.Module, x: Tensor, y: Tensor, suite: AttackSuite, progress: bool | None,
           distributed: bool, alpha: float | None = None) -> Score:
    clean = clean_accuracy(model, x, y, suite.batch_size, distributed=distributed)
    robust = robust_accuracy(model, x, y, suite, progress=progress, desc=name, distributed=distributed)
    c = _num_classes(model, x) if len(y) else None
    return Score(name, float(clean.float().mean()), float(robust.float().mean()), len(y), alpha, c)


def evaluate_models(
    models: Mapping[str, nn.Module],
    x: Tensor,
    y: Tensor,
    suite: AttackSuite,
    progress: bool | None = None,
    distributed: bool = False,
) -> EvalReport:
    """Clean and worst-case robust accuracy of each named model (g, h, mixtures) on ``(x, y)``.

    ``distributed``: split the work over the ranks of the initialised process group (see
    :func:`robust_accuracy`); every rank gets the same report.
    """
    return EvalReport([_score(name, m, x, y, suite, progress, distributed) for name, m in models.items()], suite)


def alpha_sweep(
    model: AdaptiveSmoothing,
    x: Tensor,
    y: Tensor,
    suite: AttackSuite,
    alphas: Sequence[float] | None = None,
    progress: bool | None = None,
    distributed: bool = False,
) -> list[Score]:
    """Scores of fixed-α mixtures of ``model.g`` and ``model.h`` with ``model``'s settings (mode, norm,
    space, eps_c, detach_R), one per α (default ``suite.alphas``): the trade-off curve a policy must beat.
    ``distributed``: as in :func:`robust_accuracy`."""
    if not isinstance(model, AdaptiveSmoothing):
        raise ValueError(f"alpha_sweep needs an AdaptiveSmoothing model, got {type(model).__name__}")
    points = []
    for a in suite.alphas if alphas is None else alphas:
        fixed = AdaptiveSmoothing(
            model.g, model.h, alpha=float(a), mode=model.mode, norm=model.norm, eps_c=model.eps_c,
            space=model.space, detach_R=model.detach_R, jacobian_method=model.jacobian_method,
            chunk_size=model.chunk_size,
        )
        points.append(_score(f"mixture α={float(a):g}", fixed, x, y, suite, progress, distributed, alpha=float(a)))
    return points


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
    return "\n".join(lines)


def plot_alpha_sweep(
    points: Sequence[Score], adaptive_point: Score | None, path: str | Path, title: str | None = None
) -> Path:
    """Write a PNG of clean vs worst-case robust accuracy: the fixed-α curve, and the adaptive mixture as a
    separately marked point (it earns its place when it lies above the curve). Uses the Agg canvas only
    (no global backend change). Needs matplotlib (``robustmix[plot]``)."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as err:
        raise ImportError("plotting needs matplotlib: pip install 'robustmix[plot]'") from err
    if not points:
        raise ValueError("plot_alpha_sweep needs at least one fixed-α point")
    fig = Figure(figsize=(6, 4.5))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    ordered = sorted(points, key=lambda p: math.inf if p.alpha is None else p.alpha)
    ax.plot([100 * p.clean for p in ordered], [100 * p.robust for p in ordered], "o-", color="tab:blue",
            label="fixed α (eq. 5)")
    for p in ordered:
        label = p.name if p.alpha is None else ("α=∞" if math.isinf(p.alpha) else f"α={p.alpha:g}")
        ax.annotate(label, (100 * p.clean, 100 * p.robust), textcoords="offset points", xytext=(4, 4), fontsize=7)
    if adaptive_point is not None:
        ax.plot([100 * adaptive_point.clean], [100 * adaptive_point.robust], "*", color="tab:red", markersize=16,
                label=f"{adaptive_point.name} (policy, eq. 7)")
    ax.set_xlabel("clean accuracy (%)")
    ax.set_ylabel("worst-case robust accuracy (%)")
    ax.set_title(title or "accuracy-robustness trade-off")
    ax.grid(True, alpha=0.3)
    ax.legend(loc="best", fontsize=8)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    return path

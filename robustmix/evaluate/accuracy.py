"""Clean and per-example worst-case robust accuracy over an attack suite, for one model, several, and the α sweep.

An example counts as robust only if it is classified correctly clean *and* after every attack of the suite
(the per-example worst case): for an :class:`~robustmix.smoothing.AdaptiveSmoothing` mixture, PGD on the
mixture at every fixed α_t (eq. 6, section 6.3), the adaptive PGD through the policy and R (section 5.1),
and AutoAttack when enabled; for a single model, PGD with restarts and AutoAttack when enabled. Each attack
only runs on the examples that survived the previous ones, which gives the same answer as attacking every
example with every attack and taking the AND. :func:`evaluate_models` also tries every adversarial input
that broke one model of the table on every other model (``transfer``), so all rows face the same attacks.

The examples are processed in chunks of ``suite.batch_size``; chunk ``k`` draws its random starts from a
generator seeded with ``(suite.seed, k)``, so a chunk's result does not depend on which process runs it.
With ``distributed=True`` (under ``torchrun``, after :func:`robustmix.distributed.init_from_env`) rank ``r``
of ``W`` runs chunks ``r, r + W, r + 2W, ...`` and the per-example results are summed over the ranks: every
rank returns the same full result, equal to the single-process one. (Round-robin over whole chunks rather
than ``DistributedSampler`` over examples: the sampler pads the last round with repeated examples, which
would cost work here and change batch composition, hence the random starts, with the world size.)
"""

from __future__ import annotations

import sys
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from .._utils.checks import check_data
from .._utils.digest import tensor_digest
from ..distributed import all_reduce, require_process_group
from ..smoothing import AdaptiveSmoothing
from .suite import AttackSuite

__all__ = [
    "Score", "EvalReport", "clean_accuracy", "robust_accuracy", "evaluate_models", "alpha_sweep",
    "fixed_alpha_mixtures",
]


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
    check_data(x, y, "the evaluation")
    if len(y):
        _check_labels(model, x, y)
    chunks = _Chunks(x, y, batch_size, distributed, "clean_accuracy")
    correct = torch.zeros(len(y), dtype=torch.bool, device=y.device)
    for _, part in chunks:
        correct[part] = _correct(model, x[part], y[part])
    return chunks.merge(correct)


def _attack_chunk(
    model: nn.Module,
    attacks: list,
    xb: Tensor,
    yb: Tensor,
    generator: torch.Generator,
    bar: tqdm,
    known: Sequence[tuple[Tensor, Tensor]] = (),
) -> tuple[Tensor, Tensor]:
    """``(alive, breaks)`` for one chunk: whether each example survives every attack (and is correct clean),
    and for each example that an attack broke, the adversarial input that did (``xb`` elsewhere).

    ``known``: ``(alive, breaks)`` of models attacked before; their adversarial inputs are tried first (one
    forward pass), so the attacks run only on the examples those did not already break."""
    alive = _correct(model, xb, yb)
    _try_breaks(model, alive, known, yb)
    breaks = xb.clone()
    for _, attack in attacks:
        idx = alive.nonzero().flatten()
        if len(idx):
            adv = attack(xb[idx], yb[idx], generator)
            survived = _correct(model, adv, yb[idx])
            breaks[idx[~survived]] = adv[~survived]
            alive[idx] = survived
        bar.update()
    return alive, breaks


def _try_breaks(model: nn.Module, alive: Tensor, known: Sequence[tuple[Tensor, Tensor]], yb: Tensor) -> None:
    """Clear ``alive`` where an adversarial input that broke another model also breaks ``model``."""
    for other_alive, breaks in known:
        idx = (alive & ~other_alive).nonzero().flatten()
        if len(idx):
            alive[idx] = _correct(model, breaks[idx], yb[idx])


def _chunk_generator(suite: AttackSuite, k: int) -> torch.Generator:
    return torch.Generator().manual_seed(suite.seed * 1_000_003 + k)


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
    return _robust_together({desc: model}, x, y, suite, progress, distributed, transfer=False)[desc]


def _robust_together(
    models: Mapping[str, nn.Module],
    x: Tensor,
    y: Tensor,
    suite: AttackSuite,
    progress: bool | None,
    distributed: bool,
    transfer: bool,
) -> dict[str, Tensor]:
    """Per-example robustness of each model; with ``transfer``, also against every adversarial input that
    broke another of the models (tried on each model where it is still alive)."""
    check_data(x, y, "the evaluation")
    attacks = {}
    for name, model in models.items():
        if len(y):
            _check_labels(model, x, y)
        _warn_norm_mismatch(model, suite)
        attacks[name] = suite.attacks_for(model)
    setup = f"{suite!r} {transfer} " + " ".join(f"{n}: {[a for a, _ in att]}" for n, att in attacks.items())
    chunks = _Chunks(x, y, suite.batch_size, distributed, "robust_accuracy", setup=setup)
    robust = {name: torch.zeros(len(y), dtype=torch.bool, device=y.device) for name in models}
    show = _show_progress(progress) and chunks.rank == 0
    total = len(chunks.starts) * sum(len(a) for a in attacks.values())
    desc = next(iter(models)) if len(models) == 1 else f"{len(models)} models"
    with tqdm(total=total, desc=desc, disable=not show, leave=False) as bar:
        for k, part in chunks:
            xb, yb = x[part], y[part]
            found: dict[str, tuple[Tensor, Tensor]] = {}
            for name, model in models.items():
                known = list(found.values()) if transfer else []
                found[name] = _attack_chunk(model, attacks[name], xb, yb, _chunk_generator(suite, k), bar, known)
            for name, model in models.items():
                alive = found[name][0].clone()
                if transfer:  # the inputs found against the models attacked later
                    _try_breaks(model, alive, [f for other, f in found.items() if other != name], yb)
                robust[name][part] = alive
    return {name: chunks.merge(r) for name, r in robust.items()}


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
    """Scores of several models under one attack suite. ``transfer``: every adversarial input that broke
    one of the models was also tried on every other (the rows are comparable)."""

    scores: list[Score]
    suite: AttackSuite
    transfer: bool = False
    #: Per-example robustness ``[N]`` (bool) of each row, by name (filled by :func:`evaluate_models`).
    masks: dict[str, Tensor] = field(default_factory=dict, repr=False)

    def __getitem__(self, name: str) -> Score:
        for s in self.scores:
            if s.name == name:
                return s
        raise KeyError(f"no model named {name!r}; have {[s.name for s in self.scores]}")


def evaluate_models(
    models: Mapping[str, nn.Module],
    x: Tensor,
    y: Tensor,
    suite: AttackSuite,
    progress: bool | None = None,
    distributed: bool = False,
    transfer: bool = True,
    alphas: Mapping[str, float] | None = None,
) -> EvalReport:
    """Clean and worst-case robust accuracy of each named model (g, h, mixtures) on ``(x, y)``.

    Every model faces the suite's attacks that apply to it and, with ``transfer`` (default), every
    adversarial input that broke any other model of the table: the rows then face the same attacks, so a
    model and a mixture that computes the same function (h and α = ∞) get the same number.
    ``distributed``: split the work over the ranks of the initialised process group (see
    :func:`robust_accuracy`); every rank gets the same report. ``alphas``: the α to record per name.
    """
    if not models:
        raise ValueError("evaluate_models needs at least one model")
    robust = _robust_together(models, x, y, suite, progress, distributed, transfer and len(models) > 1)
    scores = []
    for name, model in models.items():
        clean = clean_accuracy(model, x, y, suite.batch_size, distributed=distributed)
        c = _num_classes(model, x) if len(y) else None
        alpha = None if alphas is None else alphas.get(name)
        scores.append(Score(name, float(clean.float().mean()), float(robust[name].float().mean()), len(y), alpha, c))
    return EvalReport(scores, suite, transfer=transfer and len(models) > 1, masks=robust)


def fixed_alpha_mixtures(model: AdaptiveSmoothing, alphas: Sequence[float]) -> dict[str, AdaptiveSmoothing]:
    """Fixed-α mixtures of ``model.g`` and ``model.h`` with ``model``'s settings (mode, norm, space, eps_c,
    detach_R, logit scales; no output maps), named ``"mixture α=<a>"``: the linear trade-off curve."""
    if not isinstance(model, AdaptiveSmoothing):
        raise ValueError(f"alpha_sweep needs an AdaptiveSmoothing model, got {type(model).__name__}")
    return {
        f"mixture α={float(a):g}": AdaptiveSmoothing(
            model.g, model.h, alpha=float(a), mode=model.mode, norm=model.norm, eps_c=model.eps_c,
            space=model.space, detach_R=model.detach_R, jacobian_method=model.jacobian_method,
            chunk_size=model.chunk_size, logit_scales=model.logit_scales,
        )
        for a in alphas
    }


def alpha_sweep(
    model: AdaptiveSmoothing,
    x: Tensor,
    y: Tensor,
    suite: AttackSuite,
    alphas: Sequence[float] | None = None,
    progress: bool | None = None,
    distributed: bool = False,
) -> list[Score]:
    """Scores of fixed-α mixtures of ``model.g`` and ``model.h`` (:func:`fixed_alpha_mixtures`), one per α
    (default ``suite.alphas``), evaluated together (adversarial inputs shared between the points): the
    trade-off curve a policy must beat. ``distributed``: as in :func:`robust_accuracy`."""
    values = [float(a) for a in (suite.alphas if alphas is None else alphas)]
    mixtures = fixed_alpha_mixtures(model, values)
    names = dict(zip(mixtures, values, strict=True))
    return evaluate_models(mixtures, x, y, suite, progress, distributed, alphas=names).scores

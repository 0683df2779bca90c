"""Named checkpoints (data only): the paper's configurations (Table 1) and the authors' later public release.

Each :class:`ZooEntry` names its components (by their public RobustBench names where RobustBench lists
them), the Hub repo id the converted weights live under, and the metrics reported for it (paper Table 1:
PGD_20 / PGD_100 on the adaptive model; RobustBench: AutoAttack). ``from_pretrained("cifar10-linf")``
(:meth:`robustmix.hub.HubMixin.from_pretrained`) loads an entry from the Hub or the local Hugging Face
cache. Weights cannot be published from this project, so an entry that is in neither place raises
:class:`~robustmix.errors.PretrainedUnavailableError` whose message (:func:`unavailable`) says how to
build the model locally with ``robustmix convert``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..errors import ConfigError, PretrainedUnavailableError

__all__ = ["ZooEntry", "Component", "Metric", "ZOO", "PretrainedUnavailableError", "list_models", "entry", "unavailable"]

_REPO = "https://github.com/Bai-YT/AdaptiveSmoothing"


@dataclass(frozen=True)
class Component:
    """A base model or policy: what it is, and its RobustBench name when RobustBench lists it."""

    description: str
    robustbench_name: str | None = None


@dataclass(frozen=True)
class Metric:
    """Accuracy in percent, the attack that measured it (``None``: clean data) and where it is reported."""

    name: str
    value: float
    attack: str | None
    source: str


@dataclass(frozen=True)
class ZooEntry:
    name: str
    description: str
    dataset: str
    threat_model: dict[str, Any]
    g: Component
    h: Component
    repo_id: str
    metrics: tuple[Metric, ...]
    build: str
    beta0: float | None = None
    robustbench_name: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def card_metrics(self) -> list[dict[str, Any]]:
        """Metrics in the ``save_pretrained(metrics=...)`` format."""
        return [{"name": m.name, "value": m.value, "attack": m.attack} for m in self.metrics]


_TABLE1 = "paper Table 1"
_PAIR_BUILD = (
    "robustmix convert pair --g-checkpoint G.pt --g-arch {g_arch} --h-checkpoint H.pt --h-arch {h_arch} "
    "[--alpha A | --policy-type PolicyNet --policy-config '{{...}}' --policy-checkpoint POLICY.pt] --dataset {dataset} "
    "--norm {norm} --eps {eps} --zoo-entry {name} --output DIR"
)
_RELEASE_BUILD = (
    "download the RobustBench checkpoints of {rb} (robustbench.utils.load_model(model_name='{rb}', "
    "dataset='{dataset}', threat_model='Linf') stores them as models/{dataset}/Linf/{rb}_m0.pt, _m1.pt, _m2.pt), "
    "then run: robustmix convert release --checkpoint {rb}_m0.pt {rb}_m1.pt {rb}_m2.pt --variant {variant} "
    "--dataset {dataset} --zoo-entry {name} --output DIR"
)


def _paper_entry(
    name: str, dataset: str, norm: str, eps: float, g: Component, h: Component, beta0: float,
    g_clean: float, g_pgd: float, h_clean: float, h_pgd: float, clean: float, pgd20: float, pgd100: float,
    g_arch: str, h_arch: str,
) -> ZooEntry:
    return ZooEntry(
        name=name,
        description=f"Adaptive smoothing on {dataset}, {norm} ε = {eps}: {g.description} + {h.description}, "
        "policy of Fig. 1 trained with eq. 9 (paper Table 1).",
        dataset=dataset,
        threat_model={"norm": norm, "eps": eps},
        g=g,
        h=h,
        repo_id=f"robustmix/adaptive-smoothing-{name}",
        beta0=beta0,
        metrics=(
            Metric("clean accuracy", clean, None, _TABLE1),
            Metric("robust accuracy", pgd20, f"PGD-20 {norm} eps={eps}", _TABLE1),
            Metric("robust accuracy", pgd100, f"PGD-100 {norm} eps={eps}", _TABLE1),
            Metric("g clean accuracy", g_clean, None, _TABLE1),
            Metric("g robust accuracy", g_pgd, f"PGD-20 {norm} eps={eps}", _TABLE1),
            Metric("h clean accuracy", h_clean, None, _TABLE1),
            Metric("h robust accuracy", h_pgd, f"PGD-20 {norm} eps={eps}", _TABLE1),
        ),
        build=(
            f"the paper's g/h/policy checkpoints are distributed by the authors ({_REPO}); convert them with: "
            + _PAIR_BUILD.format(g_arch=g_arch, h_arch=h_arch, dataset=dataset, norm=norm, eps=eps, name=name)
        ),
    )


def _release_entry(name: str, dataset: str, variant: str, rb: str, h: Component, clean: float, aa: float) -> ZooEntry:
    return ZooEntry(
        name=name,
        description=f"The authors' public release on {dataset} (RobustBench {rb}): probability mixing with "
        "α = sigmoid(γ) in a fixed range, a batch-normalised mixing-network output and per-model logit scales.",
        dataset=dataset,
        threat_model={"norm": "linf", "eps": 8 / 255},
        g=Component("BiT-M-R152x2 fine-tuned (standard), inputs resized to 128x128"),
        h=h,
        repo_id=f"robustmix/{rb}-{dataset}",
        robustbench_name=rb,
        metrics=(
            Metric("clean accuracy", clean, None, "RobustBench"),
            Metric("robust accuracy", aa, "AutoAttack (standard) linf eps=8/255", "RobustBench"),
        ),
        build=_RELEASE_BUILD.format(rb=rb, dataset=dataset, variant=variant, name=name),
    )


_RN18 = Component("ResNet-18, standard training")
ZOO: dict[str, ZooEntry] = {
    e.name: e
    for e in (
        _paper_entry(
            "cifar10-linf", "cifar10", "linf", 0.031, _RN18, Component("ResNet-18, PGD adversarial training"), 4.0,
            95.28, 0.12, 83.53, 45.15, 94.92, 45.94, 45.05, "cifar_resnet18", "cifar_resnet18",
        ),
        _paper_entry(
            "cifar10-l2", "cifar10", "l2", 0.5, _RN18, Component("ResNet-18, l2 PGD adversarial training"), 2.8,
            95.28, 2.57, 85.37, 64.92, 93.53, 64.55, 64.17, "cifar_resnet18", "cifar_resnet18",
        ),
        _paper_entry(
            "cifar10-linf-trades", "cifar10", "linf", 0.031, _RN18,
            Component("TRADES WideResNet-34-10", robustbench_name="Zhang2019Theoretically"), 5.7,
            95.28, 0.12, 84.92, 57.16, 95.04, 57.93, 56.60, "cifar_resnet18", "wide_resnet --h-kwargs '{\"depth\": 34, \"widen_factor\": 10, \"sub_block1\": true}'",
        ),
        _paper_entry(
            "cifar100-linf", "cifar100", "linf", 0.031, Component("PreActResNet-18, mixup training"),
            Component("ResNet-18, PGD adversarial training"), 3.8,
            78.46, 0.00, 50.37, 25.71, 78.01, 24.45, 24.32, "<name you registered for PreActResNet-18>", "cifar_resnet18",
        ),
        _release_entry(
            "cifar10-linf-edm", "cifar10", "edm", "Bai2023Improving_edm",
            Component("WideResNet-70-16 (SiLU) trained with EDM-generated data", "Wang2023Better_WRN-70-16"),
            95.23, 68.06,
        ),
        _release_entry(
            "cifar100-linf-edm", "cifar100", "edm", "Bai2023Improving_edm",
            Component("WideResNet-70-16 (SiLU) trained with EDM-generated data", "Wang2023Better_WRN-70-16"),
            85.21, 38.72,
        ),
        _release_entry(
            "cifar100-linf-trades", "cifar100", "trades", "Bai2023Improving_trades",
            Component("WideResNet-70-16 (Swish) trained with TRADES"), 80.18, 35.15,
        ),
    )
}


def list_models() -> list[str]:
    """The zoo's entry names."""
    return list(ZOO)


def entry(name: str) -> ZooEntry:
    """The zoo entry called ``name``; a :class:`ConfigError` listing the entries otherwise."""
    if name not in ZOO:
        raise ConfigError(f"unknown zoo entry {name!r}; available: {', '.join(ZOO)}")
    return ZOO[name]


def unavailable(name: str, err: Exception) -> PretrainedUnavailableError:
    """The error for a zoo entry whose weights could not be found: it says how to build them."""
    e = entry(name)
    return PretrainedUnavailableError(
        f"the weights of zoo entry {name!r} ({e.description}) are not available here: they are not "
        f"published on the Hub by this project and {e.repo_id!r} is not in the local Hugging Face cache "
        f"({type(err).__name__}). Build them yourself: {e.build}. Then load the directory with "
        "AdaptiveSmoothing.from_pretrained('DIR'), or upload it to the Hub with model.push_to_hub"
        f"('{e.repo_id}')."
    )

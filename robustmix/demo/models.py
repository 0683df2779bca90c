"""The demo's base models on scikit-learn digits: a standard CNN ``g`` and a PGD-trained CNN ``h``, both
:func:`~robustmix.nn.architectures.digits.digits_cnn` (ELU and average pooling: smooth, so R (eq. 5) and
the bounds of Theorem 2 are well defined everywhere).

``h`` is trained with PGD adversarial training in l_inf (Madry et al.), the robust model of section 4.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm.auto import tqdm

from ..attacks import pgd
from ..distributed import DistContext, broadcast_module
from ..nn.architectures.digits import digits_cnn
from .data import Split, load_digits_split

__all__ = [
    "train_standard",
    "train_adversarial",
    "get_demo_models",
    "get_demo_models_on_every_rank",
    "DEMO_EPS",
    "accuracy",
]

#: l_inf radius of the demo (pixels in [0, 1]); at 0.3 the trade-off on digits is real (docs/design.md).
DEMO_EPS = 0.3
#: Bumped whenever the recipe below changes, so stale cached weights are not reused.
_RECIPE_VERSION = 1


def _batches(n: int, batch_size: int, generator: torch.Generator) -> list[Tensor]:
    return list(torch.randperm(n, generator=generator).split(batch_size))


def train_standard(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    epochs: int = 15,
    lr: float = 3e-3,
    batch_size: int = 64,
    seed: int = 0,
    progress: bool = True,
) -> nn.Module:
    """Standard training with cross-entropy, Adam and a cosine learning-rate schedule; returns ``model`` in eval mode."""
    generator = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, epochs)
    model.train()
    for _ in tqdm(range(epochs), desc="train g (standard)", disable=not progress, leave=False):
        for idx in _batches(len(y), batch_size, generator):
            opt.zero_grad()
            F.cross_entropy(model(x[idx]), y[idx]).backward()
            opt.step()
        sched.step()
    return model.eval()


def train_adversarial(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    eps: float = DEMO_EPS,
    steps: int = 7,
    step_size: float | None = None,
    epochs: int = 30,
    lr: float = 3e-3,
    batch_size: int = 64,
    seed: int = 0,
    progress: bool = True,
) -> nn.Module:
    """PGD adversarial training in l_inf (random start, ``steps`` steps, inputs kept in [0, 1]).

    Adam at a constant learning rate (a cosine schedule measured worse here). Each batch is attacked with the model in eval mode and trained on in train mode; returns ``model`` in
    eval mode.
    """
    generator = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    step_size = 2.5 * eps / steps if step_size is None else step_size
    for _ in tqdm(range(epochs), desc="train h (PGD adversarial)", disable=not progress, leave=False):
        for idx in _batches(len(y), batch_size, generator):
            model.eval()
            x_adv = pgd(
                model, x[idx], y[idx], eps, norm="linf", steps=steps, step_size=step_size, generator=generator
            )
            model.train()
            opt.zero_grad()
            F.cross_entropy(model(x_adv), y[idx]).backward()
            opt.step()
    return model.eval()


def accuracy(model: nn.Module, x: Tensor, y: Tensor) -> float:
    """Fraction of ``x`` classified as ``y`` (no gradients)."""
    with torch.no_grad():
        return (model(x).argmax(dim=1) == y).float().mean().item()


def _recipe(quick: bool) -> dict[str, int]:
    return {"g_epochs": 4 if quick else 15, "h_epochs": 5 if quick else 30, "h_steps": 5 if quick else 7}


def get_demo_models(
    quick: bool = False, seed: int = 0, cache_dir: str | Path | None = None, progress: bool = True
) -> tuple[nn.Module, nn.Module, Split]:
    """The demo's standard ``g`` and adversarially trained ``h`` on digits, and the data split.

    Trained from ``seed`` (deterministic on CPU); with ``cache_dir`` the weights are stored as safetensors
    and reused when the recipe, seed and ``quick`` flag match. Both models are returned in eval mode.
    """
    from safetensors.torch import load_file, save_file

    split = load_digits_split(seed=seed)
    recipe = {**_recipe(quick), "version": _RECIPE_VERSION, "seed": seed, "eps": DEMO_EPS}
    g, h = digits_cnn(), digits_cnn()
    path = None
    if cache_dir is not None:
        tag = "quick" if quick else "full"
        path = Path(cache_dir) / f"digits_demo_{tag}_seed{seed}_v{_RECIPE_VERSION}.safetensors"
        if path.exists():
            tensors = load_file(path)
            g.load_state_dict({k[2:]: v for k, v in tensors.items() if k.startswith("g.")})
            h.load_state_dict({k[2:]: v for k, v in tensors.items() if k.startswith("h.")})
            return g.eval(), h.eval(), split
    torch.manual_seed(seed)
    g, h = digits_cnn(), digits_cnn()
    train_standard(g, split.x_train, split.y_train, epochs=recipe["g_epochs"], seed=seed, progress=progress)
    train_adversarial(
        h,
        split.x_train,
        split.y_train,
        eps=DEMO_EPS,
        steps=recipe["h_steps"],
        epochs=recipe["h_epochs"],
        seed=seed + 1,
        progress=progress,
    )
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tensors = {f"g.{k}": v.contiguous() for k, v in g.state_dict().items()}
        tensors.update({f"h.{k}": v.contiguous() for k, v in h.state_dict().items()})
        tmp = path.with_suffix(".tmp")
        save_file(tensors, str(tmp), metadata={"recipe": json.dumps(recipe)})
        tmp.replace(path)
    return g, h, split


def get_demo_models_on_every_rank(
    ctx: DistContext, quick: bool = False, seed: int = 0, cache_dir: str | Path | None = None, progress: bool = True
) -> tuple[nn.Module, nn.Module, Split]:
    """:func:`get_demo_models` under ``torchrun``: rank 0 trains (or loads from ``cache_dir``) g and h, and
    broadcasts their weights to the other ranks, which only build the architectures. For one process this
    is :func:`get_demo_models`."""
    if ctx.is_main:
        g, h, split = get_demo_models(quick=quick, seed=seed, cache_dir=cache_dir, progress=progress)
    else:
        g, h, split = digits_cnn().eval(), digits_cnn().eval(), load_digits_split(seed=seed)
    return broadcast_module(g), broadcast_module(h), split

"""The paper's CIFAR-10 l_inf setting (Table 1, row 1): ResNet-18 g, PGD-trained ResNet-18 h, ε = 8/255.

    python examples/cifar10.py --data-dir data --device cuda --amp --save-dir runs/cifar10
    python examples/cifar10.py --g-checkpoint g.pt --h-checkpoint h.pt --normalize ...   # your own weights
    python examples/cifar10.py --smoke      # CI: random CIFAR-sized tensors, a few steps, any device

Steps: download CIFAR-10 with torchvision; train g (standard) and h (PGD-10 adversarial training, Madry et
al.) unless checkpoints are given (saved as safetensors in ``--save-dir``); train the Fig. 1 policy with
eq. 9 (PGD-10 at the paper's nine α_t plus the adaptive attack, β0 = 4 as in Table 1, resumable with
``--resume``); report clean and per-example worst-case robust accuracy of g, h and the mixture. Training
everything takes GPU hours; the ``--*-epochs`` options trade quality for time.
"""

from __future__ import annotations

import argparse
import math
import time
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from robustmix.adapters import (
    CIFAR10_MEAN,
    CIFAR10_STD,
    Normalized,
    auto_policy,
    cifar_resnet18,
    load_checkpoint,
)
from robustmix.attacks import PAPER_ALPHAS, pgd
from robustmix.evaluate import AttackSuite, evaluate_models, format_table
from robustmix.smoothing import AdaptiveSmoothing
from robustmix.training import PolicyTrainer

EPS = 8 / 255


def load_cifar10(data_dir: Path, smoke: bool) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Train and test images ``[n, 3, 32, 32]`` in [0, 1] and labels; random tensors of that shape for smoke."""
    if smoke:
        gen = torch.Generator().manual_seed(0)
        return (torch.rand(16, 3, 32, 32, generator=gen), torch.randint(0, 10, (16,), generator=gen),
                torch.rand(2, 3, 32, 32, generator=gen), torch.randint(0, 10, (2,), generator=gen))
    from torchvision.datasets import CIFAR10

    def tensors(train: bool) -> tuple[Tensor, Tensor]:
        ds = CIFAR10(str(data_dir), train=train, download=True)
        x = torch.from_numpy(ds.data).permute(0, 3, 1, 2).float().div(255)
        return x, torch.tensor(ds.targets, dtype=torch.long)

    return (*tensors(True), *tensors(False))


def augment(x: Tensor, gen: torch.Generator) -> Tensor:
    """Random crop with 4-pixel zero padding and random horizontal flip (the standard CIFAR recipe)."""
    n = x.shape[0]
    padded = F.pad(x, (4, 4, 4, 4))
    dx, dy = torch.randint(0, 9, (2, n), generator=gen).tolist()
    out = torch.stack([padded[i, :, dy[i]:dy[i] + 32, dx[i]:dx[i] + 32] for i in range(n)])
    flip = torch.rand(n, generator=gen) < 0.5
    return torch.where(flip[:, None, None, None], out.flip(3), out)


def train_base(
    model: nn.Module, x: Tensor, y: Tensor, epochs: int, adversarial: bool, device: torch.device,
    amp: AbstractContextManager, batch_size: int, max_batches: int | None, seed: int, pgd_steps: int = 10,
) -> nn.Module:
    """SGD (momentum 0.9, weight decay 5e-4, one-cycle schedule peaking at 0.1); PGD adversarial training
    (``pgd_steps`` steps of 2/255 within ε = 8/255, random start) when ``adversarial``."""
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4, nesterov=True)
    per_epoch = math.ceil(len(y) / batch_size) if max_batches is None else max_batches
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, 0.1, total_steps=max(1, epochs * per_epoch))
    for epoch in range(epochs):
        start = time.perf_counter()
        for idx in torch.randperm(len(y), generator=gen).split(batch_size)[:per_epoch]:
            xb, yb = augment(x[idx], gen).to(device), y[idx].to(device)
            if adversarial:
                model.eval()
                with amp:
                    xb = pgd(model, xb, yb, EPS, steps=pgd_steps, step_size=2 / 255, generator=gen)
            model.train()
            with amp:
                loss = F.cross_entropy(model(xb), yb)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
        kind = "h (PGD-10 AT)" if adversarial else "g (standard)"
        print(f"{kind} epoch {epoch + 1}/{epochs}: loss {loss.item():.3f} ({time.perf_counter() - start:.0f} s)")
    return model.eval()


def base_model(
    name: str, checkpoint: Path | None, args: argparse.Namespace, data: tuple[Tensor, Tensor], adversarial: bool,
    device: torch.device, amp: AbstractContextManager,
) -> nn.Module:
    """A checkpoint (``--normalize``: it expects standardised inputs) or a freshly trained ResNet-18."""
    model = cifar_resnet18().to(device)
    if checkpoint is not None:
        load_checkpoint(model, checkpoint)
        return (Normalized(model, CIFAR10_MEAN, CIFAR10_STD) if args.normalize else model).to(device).eval()
    epochs = 1 if args.smoke else (args.h_epochs if adversarial else args.g_epochs)
    train_base(model, *data, epochs, adversarial, device, amp, 4 if args.smoke else args.batch_size,
               1 if args.smoke else None, args.seed + int(adversarial), pgd_steps=1 if args.smoke else 10)
    if args.save_dir is not None:
        from safetensors.torch import save_file

        args.save_dir.mkdir(parents=True, exist_ok=True)
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(args.save_dir / f"{name}.safetensors"))
    return model


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", type=Path, default=Path("data"), help="CIFAR-10 is downloaded here")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--amp", action="store_true", help="bfloat16 autocast (R and the mix stay float32)")
    parser.add_argument("--g-checkpoint", type=Path, default=None, help="weights of g (.safetensors or .pt)")
    parser.add_argument("--h-checkpoint", type=Path, default=None, help="weights of h (.safetensors or .pt)")
    parser.add_argument("--normalize", action="store_true", help="checkpoints expect CIFAR-10-standardised input")
    parser.add_argument("--g-epochs", type=int, default=30)
    parser.add_argument("--h-epochs", type=int, default=30)
    parser.add_argument("--policy-epochs", type=float, default=1.0)
    parser.add_argument("--beta0", type=float, default=4.0, help="β0 of eq. 9 (Table 1: 4 for this row)")
    parser.add_argument("--mode", choices=("argmax", "jacobian"), default="argmax",
                        help="R of eq. 10 (one gradient per model) or eq. 5 (one per class, 10x the cost)")
    parser.add_argument("--detach-R", action="store_true", help="attacks treat R as a constant (cheaper)")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--eval-n", type=int, default=1000, help="test images to evaluate on")
    parser.add_argument("--save-dir", type=Path, default=None, help="base-model weights and policy checkpoints")
    parser.add_argument("--resume", action="store_true", help="resume policy training from --save-dir")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--smoke", action="store_true", help="tiny run on random CIFAR-sized tensors (CI)")
    args = parser.parse_args(argv)
    if args.resume and args.save_dir is None:
        parser.error("--resume needs --save-dir")

    device = torch.device(args.device)
    amp = torch.autocast(device.type, dtype=torch.bfloat16) if args.amp else nullcontext()
    torch.manual_seed(args.seed)
    x_train, y_train, x_test, y_test = load_cifar10(args.data_dir, args.smoke)
    g = base_model("g", args.g_checkpoint, args, (x_train, y_train), False, device, amp)
    h = base_model("h", args.h_checkpoint, args, (x_train, y_train), True, device, amp)

    policy = auto_policy(g, h).to(device)  # Fig. 1 taps: layer1 and layer2 of each ResNet-18
    # Attacks differentiate through R by default (section 4.2); --detach-R treats R as a constant (no double
    # backward through both ResNets: several times cheaper, a weaker attack on R's path).
    model = AdaptiveSmoothing(g, h, policy=policy, mode=args.mode, detach_R=args.detach_R or args.smoke)
    alphas = (math.inf,) if args.smoke else PAPER_ALPHAS
    trainer = PolicyTrainer(
        model, x_train, y_train, eps=EPS, alphas=alphas, beta0=args.beta0,
        attack_steps=1 if args.smoke else 10, adaptive_steps=1 if args.smoke else 10,
        step_size=None if args.smoke else 2 / 255, batch_size=2 if args.smoke else args.batch_size,
        seed=args.seed, progress=not args.smoke, resume=args.resume,
        checkpoint_dir=None if args.save_dir is None else args.save_dir / "policy",
    )
    with amp:
        trainer.fit(steps=1) if args.smoke else trainer.fit(epochs=args.policy_epochs)
    model.eval()

    n = len(y_test) if args.smoke else min(args.eval_n, len(y_test))
    suite = AttackSuite(eps=EPS, steps=1 if args.smoke else 20, restarts=1, alphas=alphas, adaptive=True,
                        autoattack=False, batch_size=args.batch_size, seed=args.seed)
    with amp:
        report = evaluate_models({"g (ResNet-18)": g, "h (PGD-AT ResNet-18)": h, "adaptive mixture": model},
                                 x_test[:n].to(device), y_test[:n].to(device), suite, progress=not args.smoke)
    print(format_table(report, title="CIFAR-10, l_inf eps=8/255" + (" (smoke: random data)" if args.smoke else "")))


if __name__ == "__main__":
    main()

"""Training the policy β_θ of the adaptive mixture with the composite loss (eq. 9, section 5.3 and 6.3).

Per batch the trainer builds the paper's training inputs: the clean batch, PGD against the mixture at
each fixed α_t (eq. 6), and an adaptive PGD through the policy with a random number of steps. Clean data
and fixed-α_t attacks use the composite loss (eq. 9)

    (ℓ_CE(g^θ(x), y) + c1) · (c2 + (c3 − sgn(log α*(x) − β0) · β_θ(x))_+),

with the label α* = +inf (prefer h) for attacks with α_t <= exp(β0) and α* = 0 (prefer g) otherwise and
for clean inputs; the adaptive attacks use ℓ_CE alone (eq. 8). Only the policy's parameters are updated
(Adam); g and h are never modified.

Checkpoints (``checkpoint_dir``) hold one safetensors file (policy weights, optimizer tensors, RNG states)
and ``trainer_state.json`` (step, optimizer hyper-parameters, Python RNG state, loss history), written
atomically with the JSON file last, so a run killed at any moment resumes (``resume=True``) from the last
complete checkpoint and continues bit-identically to an uninterrupted run.

For distributed data-parallel use, every piece of state is held by the trainer (no globals beyond the
RNG states it saves), the data order of epoch ``e`` is a pure function of ``(seed, e)`` sharded by
``rank``/``world_size`` with ``torch.utils.data.DistributedSampler``, and one optimisation step is the
public method :meth:`PolicyTrainer.training_step`.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import random
import warnings
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DistributedSampler
from tqdm.auto import tqdm

from .._utils.checks import check_data
from .._utils.digest import tensor_digest
from ..attacks import PAPER_ALPHAS, adaptive_pgd, composite_pgd
from ..distributed import all_reduce, broadcast_module
from ..smoothing import AdaptiveSmoothing
from .loss import alpha_star_sign, composite_loss

__all__ = ["PolicyTrainer", "frozen", "STATE_FILE"]

STATE_FILE = "trainer_state.json"


@contextlib.contextmanager
def frozen(*modules: nn.Module) -> Iterator[None]:
    """Turn off ``requires_grad`` of the modules' parameters for the block and restore the flags after."""
    params = [p for m in modules for p in m.parameters()]
    flags = [p.requires_grad for p in params]
    try:
        for p in params:
            p.requires_grad_(False)
        yield
    finally:
        for p, flag in zip(params, flags, strict=True):
            p.requires_grad_(flag)


class PolicyTrainer:
    """Train ``model.policy`` of an :class:`AdaptiveSmoothing` model with eq. 9 (section 5.3).

    Args:
        model: an ``AdaptiveSmoothing`` built with ``policy=``; g and h should be in eval mode.
        x_train, y_train: training inputs ``[n, ...]`` in ``data_range`` and integer labels ``[n]``.
        eps, norm: the attack radius and norm of the training attacks.
        alphas: the α_t of the fixed-α attacks (default: the paper's nine values).
        beta0: threshold β0 = log α0 of the α* label (the paper uses 2.8–5.7).
        c1, c2, c3: eq. 9 constants (paper: 0.5, 0.8, 3.2).
        attack_steps, step_size: PGD steps and step size of the fixed-α_t attacks (paper: PGD-10).
        adaptive_steps: the adaptive attack runs a uniformly random number of steps in [1, adaptive_steps].
        alphas_per_batch: attack only this many α_t per batch, drawn at random without replacement
            (cheaper steps; ``None`` attacks at every α_t as the paper does).
        eps_scale_range: per batch the attack radius is ``eps`` times a uniform draw from this range
            (randomised attack strength; ``(1, 1)`` keeps ``eps`` fixed).
        batch_size, lr: clean examples per step and Adam's learning rate.
        seed: seeds the data order and the attacks' random starts.
        checkpoint_dir, checkpoint_every, resume: periodic checkpoints and resuming from the last one.
        rank, world_size: shard of each epoch this process trains on (data-parallel training).
        progress: show a tqdm progress bar.
    """

    def __init__(
        self,
        model: AdaptiveSmoothing,
        x_train: Tensor,
        y_train: Tensor,
        *,
        eps: float,
        norm: str = "linf",
        alphas: Sequence[float] = PAPER_ALPHAS,
        beta0: float = 4.0,
        c1: float = 0.5,
        c2: float = 0.8,
        c3: float = 3.2,
        attack_steps: int = 10,
        step_size: float | None = None,
        adaptive_steps: int = 10,
        eps_scale_range: tuple[float, float] = (1.0, 1.0),
        alphas_per_batch: int | None = None,
        batch_size: int = 64,
        lr: float = 1e-3,
        seed: int = 0,
        data_range: tuple[float, float] = (0.0, 1.0),
        checkpoint_dir: str | Path | None = None,
        checkpoint_every: int = 50,
        resume: bool = False,
        rank: int = 0,
        world_size: int = 1,
        progress: bool = True,
    ) -> None:
        if not isinstance(model, AdaptiveSmoothing) or model.policy is None:
            raise ValueError(
                "model must be an AdaptiveSmoothing built with policy=...; there is nothing to train"
            )
        if model.g.training or model.h.training:
            raise ValueError("put g and h in eval mode (g.eval(), h.eval()) before training the policy")
        check_data(x_train, y_train, "the training data")
        if not eps > 0 or not math.isfinite(eps):
            raise ValueError(f"eps must be a positive finite radius, got {eps}")
        if norm not in ("linf", "l2"):
            raise ValueError(f"unknown norm {norm!r}; expected one of 'linf', 'l2'")
        if any(not a >= 0 for a in alphas):
            raise ValueError(f"every alpha_t must be >= 0 (math.inf allowed), got {list(alphas)}")
        if attack_steps < 1 or adaptive_steps < 0 or batch_size < 1 or checkpoint_every < 1:
            raise ValueError(
                "attack_steps, batch_size and checkpoint_every must be >= 1 and adaptive_steps >= 0"
            )
        low, high = eps_scale_range
        if not 0 < low <= high:
            raise ValueError(f"eps_scale_range must satisfy 0 < low <= high, got {eps_scale_range}")
        if not 0 <= rank < world_size:
            raise ValueError(f"need 0 <= rank < world_size, got rank={rank}, world_size={world_size}")
        if alphas_per_batch is not None and not 1 <= alphas_per_batch <= len(alphas):
            raise ValueError(
                f"alphas_per_batch must be in [1, {len(alphas)}] (the number of alphas), got {alphas_per_batch}"
            )
        if resume and checkpoint_dir is None:
            raise ValueError("resume=True needs checkpoint_dir (where the checkpoints are)")
        self.model = model
        self.policy: nn.Module = model.policy
        self.x_train, self.y_train = x_train, y_train
        self.eps, self.norm, self.alphas, self.beta0 = (
            float(eps),
            norm,
            [float(a) for a in alphas],
            float(beta0),
        )
        self.c1, self.c2, self.c3 = float(c1), float(c2), float(c3)
        self.attack_steps, self.step_size, self.adaptive_steps = attack_steps, step_size, adaptive_steps
        self.eps_scale_range = (float(low), float(high))
        self.alphas_per_batch = alphas_per_batch
        self.batch_size, self.seed, self.data_range = batch_size, seed, data_range
        self.rank, self.world_size = rank, world_size
        self.checkpoint_dir = None if checkpoint_dir is None else Path(checkpoint_dir)
        self.checkpoint_every = checkpoint_every
        self.lr = float(lr)
        self._data_digest = tensor_digest(x_train, y_train)
        self.progress = progress
        self.step = 0
        self.history: list[dict[str, float]] = []
        self.generator = torch.Generator().manual_seed(seed)
        self._materialize()
        self.optimizer = torch.optim.Adam(self.policy.parameters(), lr=lr)
        self._check_process_group_matches()
        self._data_parallel: DistributedDataParallel | None = None
        if self._in_process_group():
            broadcast_module(self.policy)  # every rank starts from rank 0's initial policy
        if resume and self.checkpoint_dir is not None and (self.checkpoint_dir / STATE_FILE).exists():
            self.load_checkpoint(self.checkpoint_dir)
        self._check_ranks_agree_on_step()

    def _in_process_group(self) -> bool:
        return self.world_size > 1 and dist.is_available() and dist.is_initialized()

    def _check_ranks_agree_on_step(self) -> None:
        """Under torchrun every rank must start at the same step (e.g. all found rank 0's checkpoint), or
        the ranks would run different numbers of synchronised steps and hang; fail on every rank instead."""
        if not self._in_process_group():
            return
        step = torch.tensor([self.step, -self.step], dtype=torch.float64)
        high, neg_low = all_reduce(step, op="max").tolist()
        if high != -neg_low:
            raise ValueError(
                f"ranks start at different steps ({-neg_low:g} to {high:g}): every rank must see the same "
                "checkpoint_dir (a shared filesystem) to resume"
            )

    def _check_process_group_matches(self) -> None:
        if self._in_process_group() and (dist.get_world_size() != self.world_size or dist.get_rank() != self.rank):
            raise ValueError(
                f"rank/world_size ({self.rank}/{self.world_size}) disagree with torch.distributed "
                f"({dist.get_rank()}/{dist.get_world_size()})"
            )

    def _synced_policy(self) -> nn.Module:
        """The policy wrapped in DistributedDataParallel when torch.distributed is initialised.

        Only the forward that the policy's loss is differentiated through goes via the wrapper (its
        backward averages the gradients over ranks); the attacks use the bare policy, since they
        differentiate with respect to the input only. Buffers are not broadcast by the wrapper: every
        ``training_step`` ends with rank 0's. The wrapper is built on the first step (every rank takes that
        step together) and dropped by :meth:`close` (``fit`` calls it), so it does not keep the process
        group alive: ``destroy_process_group`` can then stop the backend's threads before the interpreter
        exits.
        """
        if not self._in_process_group():
            if self.world_size > 1:
                raise ValueError(
                    f"world_size={self.world_size} but torch.distributed is not initialised: each rank would "
                    "train alone on its shard; launch with torchrun and call "
                    "robustmix.distributed.init_from_env() first"
                )
            return self.policy
        if self._data_parallel is None:
            self._data_parallel = DistributedDataParallel(self.policy, broadcast_buffers=False)
        return self._data_parallel

    def close(self) -> None:
        """Drop the DistributedDataParallel wrapper (rebuilt by the next step, if any).

        ``fit`` does this when it returns; after a loop of your own over :meth:`training_step` under
        torchrun, call it before ``robustmix.distributed.close_process_group()``.
        """
        self._data_parallel = None

    # -- data -----------------------------------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        return next(self.policy.parameters()).device

    def _shard(self, epoch: int) -> Tensor:
        """This rank's indices of epoch ``epoch``: torch's ``DistributedSampler`` (shuffled with ``seed``,
        the tail that does not divide evenly over the ranks dropped), so the union over the ranks of
        every global batch is the batch one process would train on."""
        sampler = DistributedSampler(
            range(len(self.y_train)), num_replicas=self.world_size, rank=self.rank, shuffle=True,
            seed=self.seed * 100_003, drop_last=True,  # the sampler adds the epoch: seeds never overlap
        )
        sampler.set_epoch(epoch)
        return torch.tensor(list(sampler), dtype=torch.long)

    @property
    def batches_per_epoch(self) -> int:
        n = len(self._shard(0))
        return max(1, n // self.batch_size)

    def batch_indices(self, epoch: int) -> list[Tensor]:
        """Index batches of ``epoch`` for this rank: a seeded permutation, full batches only."""
        shard = self._shard(epoch)
        if len(shard) < self.batch_size:
            return [shard]
        return list(shard.split(self.batch_size))[: self.batches_per_epoch]

    def _materialize(self) -> None:
        """Run one batch through the model (no gradients, policy in eval mode) to size lazy layers."""
        if not any(isinstance(p, nn.parameter.UninitializedParameter) for p in self.policy.parameters()):
            return
        was_training = self.policy.training
        self.policy.eval()
        x = self.x_train[: min(2, len(self.x_train))].to(next(self.model.g.parameters()).device)
        with torch.no_grad():
            self.model(x)
        self.policy.train(was_training)

    # -- one step -------------------------------------------------------------------------------------
    def attack_batch(self, x: Tensor, y: Tensor) -> tuple[list[Tensor], list[float], Tensor | None]:
        """The training inputs of one batch (section 6.3): PGD at each α_t and one adaptive attack.

        Returns the fixed-α_t adversarial batches, their ``sgn(log α* − β0)`` labels, and the adaptive
        batch (``None`` when ``adaptive_steps == 0``). The policy is in eval mode while attacking.
        """
        was_training = self.policy.training
        self.policy.eval()
        low, high = self.eps_scale_range
        scale = low + (high - low) * torch.rand((), generator=self.generator).item()
        kwargs: dict[str, Any] = {
            "eps": self.eps * scale,
            "norm": self.norm,
            "step_size": None if self.step_size is None else self.step_size * scale,
            "data_range": self.data_range,
            "generator": self.generator,
        }
        alphas = self.alphas
        if self.alphas_per_batch is not None:
            pick = torch.randperm(len(alphas), generator=self.generator)[: self.alphas_per_batch]
            alphas = [alphas[i] for i in sorted(pick.tolist())]
        fixed, signs = [], []
        for alpha_t in alphas:
            fixed.append(composite_pgd(self.model, x, y, alpha_t, steps=self.attack_steps, **kwargs).detach())
            signs.append(alpha_star_sign(alpha_t, self.beta0))
        adaptive = None
        if self.adaptive_steps > 0:
            steps = int(torch.randint(1, self.adaptive_steps + 1, (), generator=self.generator).item())
            adaptive = adaptive_pgd(self.model, x, y, steps=steps, **kwargs).detach()
        self.policy.train(was_training)
        return fixed, signs, adaptive

    def loss(self, x: Tensor, y: Tensor) -> tuple[Tensor, dict[str, float]]:
        """The batch loss: eq. 9 on clean and fixed-α_t inputs, CE (eq. 8) on the adaptive inputs.

        It draws the attacks' randomness from the trainer's generator, and under torchrun its forward goes
        through the DistributedDataParallel wrapper: call it on every rank, as part of a step.
        """
        fixed, signs, adaptive = self.attack_batch(x, y)
        inputs = [x, *fixed] + ([adaptive] if adaptive is not None else [])
        n = x.shape[0]
        sign = torch.cat([torch.full((n,), s, device=x.device) for s in [-1.0, *signs]])
        details = self._forward_for_policy_gradient(torch.cat(inputs))
        assert details.beta is not None
        labels = y.repeat(len(inputs))
        supervised = len(sign)
        per_example = composite_loss(
            details.output[:supervised],
            labels[:supervised],
            details.beta[:supervised],
            sign,
            self.c1,
            self.c2,
            self.c3,
        )
        if adaptive is not None:
            per_example = torch.cat(
                [per_example, F.cross_entropy(details.output[supervised:], y, reduction="none")]
            )
        loss = per_example.mean()
        with torch.no_grad():
            correct = details.output.argmax(dim=1) == labels
            metrics = {
                "loss": loss.item(),
                "acc_clean": correct[:n].float().mean().item(),
                "acc_attacked": correct[n:].float().mean().item() if len(inputs) > 1 else float("nan"),
                "beta_clean": details.beta[:n].mean().item(),
            }
        return loss, metrics

    def _forward_for_policy_gradient(self, x: Tensor) -> Any:
        """``forward_details`` with the graphs of g and h kept, so the loss can reach the policy's weights.

        The wrapper keeps those graphs only when ``x`` needs gradients; R is held constant meanwhile (it does
        not depend on the policy's weights, so their gradient is unchanged and no double backward is built).
        """
        detach_r = self.model.detach_R
        self.model.detach_R = True
        self.model.policy = self._synced_policy()
        try:
            return self.model.forward_details(x.detach().requires_grad_(True))
        finally:
            self.model.detach_R = detach_r
            self.model.policy = self.policy

    def training_step(self, x: Tensor, y: Tensor) -> dict[str, float]:
        """One Adam step on the policy for the clean batch ``(x, y)``; returns the batch's metrics.

        Usable in a user's own loop; the trainer's ``step`` counter and history are advanced too.
        """
        check_data(x, y, "the batch")
        device = self.device
        x, y = x.to(device), y.to(device)
        self.policy.train()
        with frozen(self.model.g, self.model.h):
            loss, metrics = self.loss(x, y)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
        if self._in_process_group():
            # DDP keeps the weights in step; buffers (BatchNorm running statistics) saw each rank's own
            # batch: take rank 0's, so the next attacks and every checkpoint see the same policy everywhere.
            broadcast_module(self.policy, buffers_only=True)
        self.step += 1
        self.history.append({"step": self.step, **metrics})
        return metrics

    # -- loop -----------------------------------------------------------------------------------------
    def fit(
        self,
        steps: int | None = None,
        epochs: float | None = None,
        callback: Callable[[PolicyTrainer, dict[str, float]], None] | None = None,
    ) -> list[dict[str, float]]:
        """Train until the global step reaches ``steps`` (or ``epochs`` × batches per epoch).

        After a resume, the remaining steps run in the same order with the same random draws. ``callback``
        is called after every step with the trainer and the step's metrics. Returns the loss history.
        """
        if (steps is None) == (epochs is None):
            raise ValueError("give exactly one of steps= or epochs=")
        target = int(steps) if steps is not None else int(math.ceil(float(epochs) * self.batches_per_epoch))
        bar = tqdm(total=target, initial=min(self.step, target), desc="policy", disable=not self.progress)
        try:
            while self.step < target:
                epoch, index = divmod(self.step, self.batches_per_epoch)
                idx = self.batch_indices(epoch)[index]
                metrics = self.training_step(self.x_train[idx], self.y_train[idx])
                bar.update(1)
                bar.set_postfix(loss=f"{metrics['loss']:.3f}", beta=f"{metrics['beta_clean']:.2f}")
                if callback is not None:
                    callback(self, metrics)
                if self.checkpoint_dir is not None and self.step % self.checkpoint_every == 0:
                    self.save_checkpoint(self.checkpoint_dir)
        finally:
            bar.close()
            self.close()
        if self.checkpoint_dir is not None:
            self.save_checkpoint(self.checkpoint_dir)
        self.policy.eval()
        return self.history

    def settings(self) -> dict[str, Any]:
        """Everything that shapes the training run (JSON data): the trainer's options, the mixture's settings,
        the policy's architecture and a digest of the training data. Checkpoints store it, and resuming
        with any difference is refused."""
        model = self.model
        policy_config = self.policy.get_config() if callable(getattr(self.policy, "get_config", None)) else None
        settings = {
            "eps": self.eps, "norm": self.norm, "alphas": self.alphas, "beta0": self.beta0,
            "c1": self.c1, "c2": self.c2, "c3": self.c3, "attack_steps": self.attack_steps,
            "step_size": self.step_size, "adaptive_steps": self.adaptive_steps,
            "eps_scale_range": list(self.eps_scale_range), "alphas_per_batch": self.alphas_per_batch,
            "batch_size": self.batch_size, "lr": self.lr, "seed": self.seed, "data_range": list(self.data_range),
            "world_size": self.world_size,
            "training_data": self._data_digest,
            "mixture": {
                "mode": model.mode, "norm": model.norm, "eps_c": model.eps_c, "space": model.space,
                "detach_R": model.detach_R, "logit_scales": list(model.logit_scales),
                "alpha_transform": model.alpha_transform, "alpha_range": list(model.alpha_range),
            },
            "policy": {"type": type(self.policy).__name__, "config": policy_config},
        }
        return json.loads(json.dumps(_json_numbers(settings)))

    # -- checkpoints ----------------------------------------------------------------------------------
    def save_checkpoint(self, directory: str | Path) -> Path:
        """Write the policy, optimizer and RNG state at the current step; returns the JSON state path."""
        from safetensors.torch import save_file

        directory = Path(directory)
        if self.rank != 0:  # every rank holds the same state after a synchronised step
            return directory / STATE_FILE
        directory.mkdir(parents=True, exist_ok=True)
        tensors = {f"policy.{k}": v.detach().cpu().contiguous() for k, v in self.policy.state_dict().items()}
        opt_state = self.optimizer.state_dict()
        scalars: dict[str, dict[str, Any]] = {}
        for pid, state in opt_state["state"].items():
            for key, value in state.items():
                if isinstance(value, Tensor):
                    tensors[f"optimizer.{pid}.{key}"] = value.detach().cpu().contiguous()
                else:
                    scalars.setdefault(str(pid), {})[key] = value
        tensors["rng.generator"] = self.generator.get_state()
        tensors["rng.torch"] = torch.get_rng_state()
        name = f"checkpoint-{self.step:08d}.safetensors"
        _atomic(directory / name, lambda tmp: save_file(tensors, str(tmp)))
        state = {
            "step": self.step,
            "file": name,
            "optimizer": {"param_groups": opt_state["param_groups"], "scalars": scalars},
            "python_random": _jsonable(random.getstate()),
            "seed": self.seed,
            "settings": self.settings(),
            "history": self.history,
        }
        path = directory / STATE_FILE
        _atomic(path, lambda tmp: tmp.write_text(json.dumps(state)))
        for old in directory.glob("checkpoint-*.safetensors"):
            if old.name != name:
                old.unlink()
        return path

    def _check_same_settings(self, state: dict[str, Any], directory: Path) -> None:
        """Refuse to resume a run whose checkpoint was written with other settings, listing every difference."""
        saved = state.get("settings")
        if saved is None:
            warnings.warn(
                f"the checkpoint in {directory} predates stored training settings; resuming without checking "
                "that eps, alphas, batch size, learning rate and the data match",
                UserWarning,
                stacklevel=3,
            )
            if state.get("seed") != self.seed:
                raise ValueError(f"checkpoint was trained with seed {state.get('seed')} but this trainer has {self.seed}")
            return
        current = self.settings()
        differences = [
            f"{key}: checkpoint {saved.get(key)!r}, now {current.get(key)!r}"
            for key in sorted(set(saved) | set(current))
            if saved.get(key) != current.get(key)
        ]
        if differences:
            raise ValueError(
                f"cannot resume from {directory}: the checkpoint was written with other settings ("
                + "; ".join(differences)
                + "). Resume with the same settings, or start a new run in another checkpoint_dir"
            )

    def load_checkpoint(self, directory: str | Path) -> None:
        """Restore the state written by :meth:`save_checkpoint` (weights, optimizer, RNG, step, history)."""
        from safetensors.torch import load_file

        directory = Path(directory)
        state = json.loads((directory / STATE_FILE).read_text())
        self._check_same_settings(state, directory)
        tensors = load_file(str(directory / state["file"]))
        device = self.device
        self.policy.load_state_dict({k[7:]: v for k, v in tensors.items() if k.startswith("policy.")})
        opt_state: dict[str, Any] = {"state": {}, "param_groups": state["optimizer"]["param_groups"]}
        for group in opt_state["param_groups"]:
            if "betas" in group:
                group["betas"] = tuple(group["betas"])
        for key, value in tensors.items():
            if key.startswith("optimizer."):
                _, pid, name = key.split(".", 2)
                opt_state["state"].setdefault(int(pid), {})[name] = value.to(device)
        for pid, extra in state["optimizer"]["scalars"].items():
            opt_state["state"].setdefault(int(pid), {}).update(extra)
        self.optimizer.load_state_dict(opt_state)
        self.generator.set_state(tensors["rng.generator"])
        torch.set_rng_state(tensors["rng.torch"])
        random.setstate(_tuplify(state["python_random"]))
        self.step = int(state["step"])
        self.history = list(state["history"])


def _json_numbers(obj: Any) -> Any:
    """``inf`` as the string "inf" (JSON has no infinity), recursively."""
    if isinstance(obj, float) and math.isinf(obj):
        return "inf" if obj > 0 else "-inf"
    if isinstance(obj, dict):
        return {k: _json_numbers(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_numbers(v) for v in obj]
    return obj


def _atomic(path: Path, write: Callable[[Path], Any]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    write(tmp)
    os.replace(tmp, path)


def _jsonable(obj: Any) -> Any:
    return [_jsonable(o) for o in obj] if isinstance(obj, (tuple, list)) else obj


def _tuplify(obj: Any) -> Any:
    return tuple(_tuplify(o) for o in obj) if isinstance(obj, list) else obj

"""K-nearest-neighbour direction oracle ``h`` of eq. 2 (section 3) and its distance-weighted variant (A.3).

``h_i(x) = 2 * (1/K) * sum_k 1[y_k = i] - 1`` over the K training points nearest to ``x`` in l_p distance,
so each entry lies in [-1, 1]. The distance-weighted variant replaces the uniform 1/K by weights
proportional to ``1 / (d_k + eps)`` (normalised to sum to one), which rarely ties.

Distances are computed block by block so that no distance matrix larger than ``max_block_elements``
entries is materialised; neighbours are merged across blocks with ties broken by the lower training index.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from torch import Tensor, nn

__all__ = ["KNNClassifier", "Weighting"]

Weighting = Literal["uniform", "distance"]


class KNNClassifier(nn.Module):
    """Scaled K-NN vote fractions in [-1, 1] (eq. 2's oracle ``h``), usable as ``h`` in AdaptiveSmoothing.

    Args:
        train_x: training inputs ``[n, ...]`` (flattened internally).
        train_y: integer labels ``[n]``.
        k: number of neighbours K.
        p: the distance's norm: 1, 2 or ``math.inf``.
        num_classes: c; defaults to ``max(train_y) + 1``.
        weighting: ``"uniform"`` (eq. 2) or ``"distance"`` (appendix A.3).
        max_block_elements: the largest query x train distance block computed at once.

    The oracle has no useful input gradient (it is piecewise constant), so ``differentiable = False``:
    AdaptiveSmoothing then uses ``R_i = ||∇g_i||_{p*}`` as in eq. 2.
    """

    differentiable = False

    def __init__(
        self,
        train_x: Tensor,
        train_y: Tensor,
        k: int = 1,
        p: float = 2.0,
        num_classes: int | None = None,
        weighting: Weighting = "uniform",
        max_block_elements: int = 2**24,
        distance_eps: float = 1e-12,
    ) -> None:
        super().__init__()
        train_y = torch.as_tensor(train_y)
        if train_x.shape[0] != train_y.shape[0] or train_y.dim() != 1:
            raise ValueError(
                f"train_x has {train_x.shape[0]} rows but train_y has shape {tuple(train_y.shape)}; "
                "expected one integer label per row"
            )
        if train_y.is_floating_point():
            raise ValueError(f"train_y must hold integer labels, got dtype {train_y.dtype}")
        if not 1 <= k <= train_x.shape[0]:
            raise ValueError(f"k must be in [1, {train_x.shape[0]}] (the training set size), got {k}")
        if p not in (1, 2, math.inf):
            raise ValueError(f"p must be 1, 2 or math.inf, got {p}")
        if weighting not in ("uniform", "distance"):
            raise ValueError(f"weighting must be 'uniform' or 'distance', got {weighting!r}")
        if max_block_elements < 1:
            raise ValueError("max_block_elements must be positive")
        inferred = int(train_y.max()) + 1
        self.num_classes = inferred if num_classes is None else int(num_classes)
        if self.num_classes < inferred or int(train_y.min()) < 0:
            raise ValueError(f"labels must lie in [0, {self.num_classes}); found {int(train_y.min())}..{inferred - 1}")
        self.k = int(k)
        self.p = float(p)
        self.weighting: Weighting = weighting
        self.max_block_elements = int(max_block_elements)
        self.distance_eps = float(distance_eps)
        self.register_buffer("train_x", train_x.detach().flatten(start_dim=1).clone())
        self.register_buffer("train_y", train_y.detach().long().clone())

    def neighbours(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Distances ``[m, k]`` (ascending) and training indices ``[m, k]`` of the K nearest points."""
        q = x.flatten(start_dim=1).to(self.train_x.dtype)
        if q.shape[1] != self.train_x.shape[1]:
            raise ValueError(f"input has {q.shape[1]} features per sample, training data has {self.train_x.shape[1]}")
        n = self.train_x.shape[0]
        cols = min(n, self.max_block_elements)
        rows = max(1, self.max_block_elements // cols)
        dists, idxs = [], []
        for q_block in q.split(rows):
            best_d = q_block.new_empty(q_block.shape[0], 0)
            best_i = torch.empty(q_block.shape[0], 0, dtype=torch.long, device=q.device)
            for start in range(0, n, cols):
                block = self.train_x[start : start + cols]
                d = torch.cdist(q_block, block, p=self.p, compute_mode="donot_use_mm_for_euclid_dist")
                i = torch.arange(start, start + block.shape[0], device=q.device).expand_as(d)
                cand_d, cand_i = torch.cat([best_d, d], dim=1), torch.cat([best_i, i], dim=1)
                order = cand_d.sort(dim=1, stable=True).indices[:, : self.k]
                best_d, best_i = cand_d.gather(1, order), cand_i.gather(1, order)
            dists.append(best_d)
            idxs.append(best_i)
        return torch.cat(dists), torch.cat(idxs)

    @torch.no_grad()
    def forward(self, x: Tensor) -> Tensor:
        """Scaled votes ``2 * fraction - 1`` per class, ``[B, c]`` in [-1, 1]."""
        d, i = self.neighbours(x)
        labels = self.train_y[i]
        if self.weighting == "uniform":
            weights = torch.full_like(d, 1.0 / self.k)
        else:
            inv = 1.0 / (d + self.distance_eps)
            weights = inv / inv.sum(dim=1, keepdim=True)
        votes = torch.zeros(x.shape[0], self.num_classes, dtype=d.dtype, device=d.device)
        votes.scatter_add_(1, labels, weights)
        return (2 * votes - 1).to(x.dtype if x.is_floating_point() else votes.dtype)

    def extra_repr(self) -> str:
        return f"n={self.train_x.shape[0]}, k={self.k}, p={self.p}, classes={self.num_classes}, weighting={self.weighting!r}"

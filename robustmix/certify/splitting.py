"""Input splitting (branch and bound over the ball) for the margin check of Theorem 2's mixture.

The certificate of the adaptive mixture needs h's weight ``w_k = αR_k / (1 + αR_k)`` (eq. 5) over the whole
ball, and the bounds on ``R_k = ||∇g_k||_{p*} / (||∇h_k||_{p*} + eps_c)`` come from elementwise intervals of
the gradients, which widen quickly with the radius: on a ball a few times smaller than the attack radius
the lower bound of ``||∇h_k||`` already reaches 0 and ``w_k`` is only known to lie in ``[w_lo, 1]``. Bounds
on small balls are much tighter, so the ball is covered with l_inf boxes, and the margin ``out_i - out_j``
is checked on each box with the weights bounded on that box (as ``radius._margin_check`` does on the whole
ball): a box that fails is cut in two across the coordinate where its width times the outputs'
sensitivity is largest, until every box passes or the budget of boxes is spent. The number of boxes
needed grows quickly with the input dimension, so this pays for inputs of a few dimensions.

For l_2 the bounds on each box are taken over the box cut to the ball (:class:`~.regions.BoxInBall`):
the box that holds a 10-D ball reaches √10 times farther, so bounds over whole boxes are looser than the
ball's own until the boxes are small, while bounds over ``box ∩ ball`` never are.

Sound: the boxes always cover the ball (for l_2, boxes that do not meet the ball are dropped), and the
check on each box is sound for every point of it in the ball (linear bounds of g and h over the box, or
box ∩ ball, with each ``w_k`` anywhere in its range there: the margin is affine in ``(w_i, w_j)``, so its
minimum over those ranges is at one of the four corners).
"""

from __future__ import annotations

import torch
from torch import Tensor

from .._utils.norms import Norm
from .bounds import BallBounds, CompiledNetwork, _abs_max, _down
from .linear import backward, ball_min
from .regions import BoxInBall
from .theorems import weight_on_h

__all__ = ["split_margin_check", "corner_rows", "interval_lower"]

_F64 = torch.float64


def split_margin_check(
    g: CompiledNetwork,
    h: CompiledNetwork,
    x: Tensor,
    eps: float,
    norm: Norm,
    i: int,
    others: tuple[int, ...],
    alpha: float,
    eps_c: float,
    prob: bool,
    budget: int,
) -> dict[str, float] | None:
    """Certify ``out_i > out_j`` for every ``j`` in ``others`` on ``B_p(x, eps)`` by checking the margin on
    l_inf boxes that cover the ball, splitting the boxes that fail; at most ``budget`` boxes are checked.

    ``g``, ``h``: the compiled networks (logits, or probabilities when ``prob``); ``x`` one example. Returns
    the smallest margin lower bound per rival and the number of boxes checked, or None when some box could
    not be certified within the budget.
    """
    d = x.numel()
    centre = x.reshape(d).to(_F64)
    # boxes: centres [B, d] and half-widths [B, d]; the first covers the ball (for l_inf it is the ball)
    centres, halves = centre[None], torch.full((1, d), float(eps), dtype=_F64)
    lowest = torch.full((len(others),), torch.inf, dtype=_F64)
    checked = 0
    while centres.shape[0]:
        checked += centres.shape[0]
        if checked > budget:
            return None
        region = BoxInBall(halves, centre - centres, torch.full((len(centres),), float(eps), dtype=_F64)) if norm == "l2" else halves
        passed, low, influence = _boxes_pass(g, h, centres, region, norm, i, others, alpha, eps_c, prob)
        if bool(passed.any()):
            lowest = torch.minimum(lowest, low[passed].min(0).values)
        failed = ~passed
        centres, halves = _split(centres[failed], halves[failed], influence[failed])
        if norm == "l2":
            keep = _meets_l2_ball(centres, halves, centre, eps)
            centres, halves = centres[keep], halves[keep]
    return {"boxes_checked": float(checked), **{f"margin_lower[{j}]": float(v) for j, v in zip(others, lowest, strict=True)}}


def _split(centres: Tensor, halves: Tensor, influence: Tensor) -> tuple[Tensor, Tensor]:
    """Each box as two halves, cut across the coordinate where its width times the outputs' sensitivity
    to that coordinate (``influence`` ``[B, d]``, from the gradient bounds on the box) is largest."""
    k = (halves * influence).argmax(1)
    rows = torch.arange(centres.shape[0])
    step = torch.zeros_like(centres)
    step[rows, k] = halves[rows, k] / 2
    new_halves = halves.clone()
    # a few ulps wider than half, so that the two halves still overlap after rounding c ± h/2
    slack = 4 * torch.finfo(_F64).eps * (centres[rows, k].abs() + halves[rows, k])
    new_halves[rows, k] = halves[rows, k] / 2 + slack
    return torch.cat([centres - step, centres + step]), torch.cat([new_halves, new_halves])


def _meets_l2_ball(centres: Tensor, halves: Tensor, x: Tensor, eps: float) -> Tensor:
    """Boxes whose nearest point to ``x`` lies within l_2 distance ``eps`` (with room for rounding)."""
    gap = ((centres - x).abs() - halves).clamp(min=0)
    return gap.norm(dim=1) <= eps * (1 + 1e-9) + 1e-12


def _boxes_pass(
    g: CompiledNetwork, h: CompiledNetwork, centres: Tensor, region: Tensor | BoxInBall, norm: Norm, i: int,
    others: tuple[int, ...], alpha: float, eps_c: float, prob: bool,
) -> tuple[Tensor, Tensor, Tensor]:
    """Per box: whether the margin against every rival is positive, its lower bounds ``[B, n_rivals]``, and
    how strongly g's and h's outputs can move with each coordinate (summed gradient magnitudes ``[B, d]``)."""
    space = "l2" if isinstance(region, BoxInBall) else "linf"
    gb = g.batch_bounds(centres, region, space, method="linear")
    hb = h.batch_bounds(centres, region, space, method="linear")
    # ||∇f_k||_{p*} of the certificate's norm, bounded on each box from the gradient intervals
    gm, gM, hm, hM = gb.grad_norm_min(norm), gb.grad_norm_max(norm), hb.grad_norm_min(norm), hb.grad_norm_max(norm)
    w_lo, w_hi = weight_on_h(alpha, gm / (hM + eps_c)), weight_on_h(alpha, gM / (hm + eps_c))  # [B, c]
    Cg, Ch = corner_rows(w_lo, w_hi, i, others)  # [B, 4 n_rivals, c]
    if prob:
        low = interval_lower(Cg, gb) + interval_lower(Ch, hb)
    else:
        assert gb.relaxations is not None and hb.relaxations is not None
        form = backward(Cg, g.stages, gb.relaxations) + backward(Ch, h.stages, hb.relaxations)
        low = _down(ball_min(form.A_lo, form.c_lo, centres, region, space))
    per_rival = low.reshape(centres.shape[0], len(others), 4).min(-1).values
    smooth = torch.as_tensor(gb.smooth) & torch.as_tensor(hb.smooth)
    influence = (_abs_max(gb.grad_lo, gb.grad_hi) + _abs_max(hb.grad_lo, hb.grad_hi)).sum(1)
    return smooth & (per_rival > 0).all(-1), per_rival, influence


def corner_rows(w_lo: Tensor, w_hi: Tensor, i: int, others: tuple[int, ...]) -> tuple[Tensor, Tensor]:
    """The margins ``out_i - out_j = (1 - w_i) g_i + w_i h_i - (1 - w_j) g_j - w_j h_j`` at the four corners
    of h's weights ``(w_i, w_j)`` for each rival ``j``, as rows ``C_g``, ``C_h`` ``[..., 4 n_rivals, c]`` of g's
    and h's outputs (weights ``[..., c]``, optionally batched; rival by rival, four corners each)."""
    eye = torch.eye(w_lo.shape[-1], dtype=w_lo.dtype)
    rows_g, rows_h = [], []
    for j in others:
        for wi in (w_lo[..., i], w_hi[..., i]):
            for wj in (w_lo[..., j], w_hi[..., j]):
                rows_g.append((1 - wi)[..., None] * eye[i] - (1 - wj)[..., None] * eye[j])
                rows_h.append(wi[..., None] * eye[i] - wj[..., None] * eye[j])
    return torch.stack(rows_g, -2), torch.stack(rows_h, -2)


def interval_lower(C: Tensor, b: BallBounds) -> Tensor:
    """Lower bound of ``C f`` from the intervals of ``f`` (``C`` ``[..., K, c]``, intervals ``[..., c]``)."""
    return (C.clamp(min=0) @ b.value_lo[..., None] + C.clamp(max=0) @ b.value_hi[..., None])[..., 0]

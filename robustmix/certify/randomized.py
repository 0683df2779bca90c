"""Randomized-smoothing oracle ``h`` and l_2 certificates of the probability-space mixture (scales to CIFAR).

``h_k(x) = P_{N ~ N(0, σ² I)}[argmax base(x + N) = k]`` (Cohen et al.'s smoothed classifier) is a robust
oracle whose regularity is known without looking inside ``base``:

* (Lipschitz) each ``h_k`` is ``sqrt(2/π)/σ``-Lipschitz in l_2 (Salman et al., 2019): for a unit vector u,
  ``u^T ∇h_k(x) = E[1{f(x+N)=k} u^T N] / σ² ≤ E[|u^T N|] / σ² · ... = sqrt(2/π)/σ`` at most, since the
  indicator lies in [0, 1] and ``u^T N ~ N(0, σ²)``.
* (Gaussian) for every ``s: R^d -> [0, 1]``, ``x ↦ Φ⁻¹(E[s(x + N)])`` is ``1/σ``-Lipschitz (Salman et al.,
  2019, Lemma 2; Levine et al.). With ``s = 1{f = i}/(1 + μ)`` and ``s = (1{f = j} + μ)/(1 + μ)``, both in
  [0, 1], the maps ``A(x) = Φ⁻¹(h_i(x)/(1+μ))`` and ``B(x) = Φ⁻¹((h_j(x)+μ)/(1+μ))`` are ``1/σ``-Lipschitz.

**The mixture.** ``F_k = (1 - w) p^g_k + w h_k`` with ``p^g = softmax(g)`` (``AdaptiveSmoothing(g, h,
alpha=w/(1-w), mode="none", space="prob")``: the form of the authors' later release). Because ``p^g_i - p^g_j
≥ -1`` at every input, ``F_i - F_j ≥ w (h_i - h_j) - (1 - w)``, so class i beats j at ``x + δ`` whenever
``h_i(x+δ) - h_j(x+δ) > μ := (1 - w)/w``. For ``||δ||_2 < r``:

* Lipschitz radius: ``h_i - h_j`` drops by less than ``2 sqrt(2/π) r/σ``, so
  ``r_lip = (w (h_i - h_j) - (1 - w)) / (2 w sqrt(2/π)/σ)``;
* RS radius: ``h_i - h_j > μ ⟺ A > B``; A drops and B rises by less than ``r/σ`` each, so
  ``r_rs = σ/2 · (Φ⁻¹(h_i/(1+μ)) - Φ⁻¹((h_j + μ)/(1+μ)))``.

Both are monotone (increasing in ``h_i``, decreasing in ``h_j``), so plugging a lower confidence bound of
``h_i`` and upper bounds of every ``h_j`` gives radii valid with the joint confidence. The reported radius
is the larger of the two (each is sound). It does not depend on g: the certificate holds for any g.

**Confidence.** One-sided Clopper–Pearson bounds (exact binomial tails, computed here by bisection in
float64) at level ``a/2`` for ``h_i`` and ``a/(2(c-1))`` for each other class (Bonferroni), so all bounds
hold together with probability ≥ ``1 - a``; additionally ``h_j ≤ 1 - h_i``. When the class to certify is
not given, it is selected on ``n0`` separate samples, so the estimation samples stay independent of it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn

__all__ = [
    "RandomizedSmoothing",
    "RSCertificate",
    "clopper_pearson_lower",
    "clopper_pearson_upper",
    "rs_radii",
    "certify_mixture",
    "LIPSCHITZ_CONSTANT",
]

#: ``h_k`` is ``LIPSCHITZ_CONSTANT / σ``-Lipschitz in l_2.
LIPSCHITZ_CONSTANT = math.sqrt(2 / math.pi)
_F64 = torch.float64


class RandomizedSmoothing(nn.Module):
    """Monte Carlo estimate of Gaussian randomized smoothing of ``base`` (hard votes), usable as ``h``.

    ``forward(x)`` returns ``log`` of the vote frequencies over ``n`` noisy copies (``[B, c]``, floored at the
    dtype's smallest normal number), so ``AdaptiveSmoothing(..., space="prob")`` mixes the frequencies.
    The oracle has no input gradient (``differentiable = False``). ``seed`` makes the noise reproducible.
    """

    differentiable = False

    def __init__(self, base: nn.Module, sigma: float, n: int = 1000, batch: int = 200, seed: int | None = None) -> None:
        super().__init__()
        if not (math.isfinite(sigma) and sigma > 0):
            raise ValueError(f"sigma must be finite and positive, got {sigma}")
        if n < 1 or batch < 1:
            raise ValueError(f"n and batch must be positive, got n={n}, batch={batch}")
        self.base, self.sigma, self.n, self.batch, self.seed = base, float(sigma), int(n), int(batch), seed

    def _generator(self, generator: torch.Generator | None) -> torch.Generator | None:
        if generator is not None or self.seed is None:
            return generator
        return torch.Generator().manual_seed(self.seed)

    @torch.no_grad()
    def counts(self, x: Tensor, n: int | None = None, generator: torch.Generator | None = None) -> Tensor:
        """Votes ``[B, c]`` (int64) of ``base`` on ``n`` Gaussian-noised copies of each input."""
        if not isinstance(x, Tensor) or not x.is_floating_point() or not torch.isfinite(x).all():
            raise ValueError("x must be a finite floating-point tensor [B, ...]")
        n = self.n if n is None else int(n)
        gen = self._generator(generator)
        out: list[Tensor] = []
        for xs in x:
            votes: Tensor | None = None
            left = n
            while left > 0:
                m = min(self.batch, left)
                noise = torch.randn((m, *xs.shape), generator=gen, dtype=xs.dtype).to(xs.device) * self.sigma
                pred = self.base(xs[None] + noise).argmax(1)
                c = self.base(xs[None]).shape[1] if votes is None else votes.numel()
                v = torch.bincount(pred, minlength=c)
                votes = v if votes is None else votes + v
                left -= m
            assert votes is not None
            out.append(votes)
        return torch.stack(out).long()

    def forward(self, x: Tensor) -> Tensor:
        freq = self.counts(x).to(x.dtype) / self.n
        return freq.clamp_min(torch.finfo(x.dtype).tiny).log()

    def extra_repr(self) -> str:
        return f"sigma={self.sigma}, n={self.n}, batch={self.batch}"


# -- Clopper–Pearson ---------------------------------------------------------------------------------------
def _log_pmf(n: int, p: float) -> Tensor:
    k = torch.arange(n + 1, dtype=_F64)
    logc = torch.lgamma(torch.tensor(n + 1.0, dtype=_F64)) - torch.lgamma(k + 1) - torch.lgamma(n - k + 1)
    if p <= 0:
        return torch.where(k == 0, 0.0, -math.inf).to(_F64)
    if p >= 1:
        return torch.where(k == n, 0.0, -math.inf).to(_F64)
    return logc + k * math.log(p) + (n - k) * math.log1p(-p)


def _upper_tail(k: int, n: int, p: float) -> float:
    """``P(Bin(n, p) >= k)``."""
    return float(_log_pmf(n, p)[k:].logsumexp(0).exp())


def _check_counts(k: int, n: int, alpha: float) -> None:
    if not (0 <= k <= n and n >= 1):
        raise ValueError(f"need 0 <= k <= n and n >= 1, got k={k}, n={n}")
    if not 0 < alpha < 1:
        raise ValueError(f"alpha (the failure probability) must be in (0, 1), got {alpha}")


def clopper_pearson_lower(k: int, n: int, alpha: float) -> float:
    """One-sided lower bound ``p_lo`` with ``P(p ≥ p_lo) ≥ 1 - alpha``: ``P(Bin(n, p_lo) ≥ k) = alpha``.

    Equals the ``alpha`` quantile of Beta(k, n - k + 1); 0 when ``k = 0``. Bisection keeps the end whose tail
    is ``≤ alpha``, so rounding only lowers the bound.
    """
    _check_counts(k, n, alpha)
    if k == 0:
        return 0.0
    lo, hi = 0.0, 1.0
    for _ in range(100):
        mid = (lo + hi) / 2
        if _upper_tail(k, n, mid) <= alpha:
            lo = mid
        else:
            hi = mid
    return lo


def clopper_pearson_upper(k: int, n: int, alpha: float) -> float:
    """One-sided upper bound: ``1 - clopper_pearson_lower(n - k, n, alpha)`` (the 1 - alpha quantile of
    Beta(k + 1, n - k)); 1 when ``k = n``."""
    _check_counts(k, n, alpha)
    return 1.0 - clopper_pearson_lower(n - k, n, alpha)


# -- radii ----------------------------------------------------------------------------------------------------
def rs_radii(p_i: float, p_j: float, w: float, sigma: float) -> tuple[float, float]:
    """``(r_lip, r_rs)`` for the mixture with weight ``w`` on h, from (bounds on) ``h_i``, ``h_j``; 0 if negative.

    See the module docstring for the proofs. ``w = 1`` gives h alone (Cohen et al.'s radius for r_rs).
    """
    if not (0 < w <= 1):
        raise ValueError(f"w (the weight on h) must be in (0, 1], got {w}")
    if not (0 <= p_i <= 1 and 0 <= p_j <= 1):
        raise ValueError(f"probabilities must lie in [0, 1], got {p_i}, {p_j}")
    if not sigma > 0:
        raise ValueError(f"sigma must be positive, got {sigma}")
    r_lip = (w * (p_i - p_j) - (1 - w)) / (2 * w * LIPSCHITZ_CONSTANT / sigma)
    mu = (1 - w) / w
    a = torch.special.ndtri(torch.tensor(p_i / (1 + mu), dtype=_F64))
    b = torch.special.ndtri(torch.tensor(min(1.0, (p_j + mu) / (1 + mu)), dtype=_F64))
    gap = float(a - b)
    r_rs = 0.0 if math.isnan(gap) else sigma / 2 * gap
    return max(0.0, r_lip), max(0.0, r_rs)


@dataclass
class RSCertificate:
    """An l_2 certificate that holds with probability ≥ ``confidence`` over the Monte Carlo noise.

    ``radius = max(radius_lipschitz, radius_rs)``; ``abstain`` when it is 0 (nothing could be certified).
    """

    label: int
    radius: float
    radius_lipschitz: float
    radius_rs: float
    p_lower: float
    p_upper: float
    abstain: bool
    confidence: float
    w: float
    sigma: float
    n: int
    norm: str = "l2"
    certified: bool = True


def _mixture_parts(model: nn.Module) -> tuple[nn.Module, RandomizedSmoothing, float]:
    if not all(hasattr(model, a) for a in ("g", "h", "alpha", "mode", "space", "policy")) or not isinstance(
        model.h, RandomizedSmoothing
    ):
        raise ValueError("model must be an AdaptiveSmoothing whose h is a RandomizedSmoothing")
    if model.mode != "none" or model.space != "prob" or model.policy is not None:
        raise ValueError(
            "RS certificates cover the fixed probability-space convex mix: AdaptiveSmoothing(g, h, alpha=w/(1-w), "
            f"mode='none', space='prob'); got mode={model.mode!r}, space={model.space!r}, policy={model.policy is not None}"
        )
    if model.logit_scales[1] != 1.0 or getattr(model, "h_map", None) is not None:
        raise ValueError(
            "a logit scale or output map on h changes its smoothed probabilities; use logit_scales=(s_g, 1) "
            "and no h_map (g may have any map: the certificate holds for any g)"
        )
    alpha = model.alpha
    if isinstance(alpha, Tensor):
        if alpha.numel() != 1:
            raise ValueError("RS certificates need a scalar α")
        alpha = float(alpha.reshape(()))
    alpha = float(alpha)  # type: ignore[arg-type]
    w = 1.0 if math.isinf(alpha) else alpha / (1 + alpha)
    return model.g, model.h, w


def certify_mixture(
    model: nn.Module,
    x: Tensor,
    label: int | None = None,
    confidence: float = 0.999,
    n: int | None = None,
    n0: int = 100,
    generator: torch.Generator | None = None,
) -> RSCertificate:
    """Certify the mixture's decision at one input ``x`` (``[1, ...]``) in l_2, with probability ≥ ``confidence``.

    ``label``: the class to certify (e.g. the true label, fixed in advance); ``None`` selects the mixture's
    predicted class on ``n0`` separate samples. ``n`` defaults to ``h.n``. Abstains (radius 0) when the
    lower confidence bounds do not prove the decision even at x.
    """
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    g, h, w = _mixture_parts(model)
    if w == 0:
        raise ValueError("α = 0 puts no weight on h: nothing can be certified without bounds on g")
    if x.dim() < 2 or x.shape[0] != 1:
        x = x[None]
    n = h.n if n is None else int(n)
    with torch.no_grad():
        c = g(x).shape[1]
        if label is None:
            votes0 = h.counts(x, n0, generator)[0].to(_F64) / n0
            g_logits = g(x) * model.logit_scales[0]
            if getattr(model, "g_map", None) is not None:
                g_logits = model.g_map(g_logits)
            mixed = (1 - w) * g_logits.softmax(1)[0].to(_F64) + w * votes0
            label = int(mixed.argmax())
    if not 0 <= label < c:
        raise ValueError(f"label must be in [0, {c}), got {label}")
    counts = h.counts(x, n, generator)[0]
    a = 1 - confidence
    p_lo = clopper_pearson_lower(int(counts[label]), n, a / 2)
    others = [int(counts[k]) for k in range(c) if k != label]
    p_hi = max(clopper_pearson_upper(k, n, a / (2 * max(c - 1, 1))) for k in others) if others else 0.0
    p_hi = min(p_hi, 1 - p_lo)
    r_lip, r_rs = rs_radii(p_lo, p_hi, w, h.sigma)
    radius = max(r_lip, r_rs)
    return RSCertificate(label, radius, r_lip, r_rs, p_lo, p_hi, radius <= 0, confidence, w, h.sigma, n)

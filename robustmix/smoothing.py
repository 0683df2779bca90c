"""Adaptive smoothing of a standard classifier ``g`` and a robust classifier ``h`` (eq. 2, 5, 7, 10).

For each class ``i`` the mixture is (eq. 5)

    out_i(x) = (g_i(x) + α R_i(x) h_i(x)) / (1 + α R_i(x)),
    R_i(x)   = ||∇g_i(x)||_{p*} / (||∇h_i(x)||_{p*} + eps_c),

with α fixed or produced per input by a policy as α = exp(β(x)), β clamped to [-14, 14] (eq. 7).
The authors' later public release is also expressible: ``alpha_transform="sigmoid"`` maps the policy
output γ to the weight on h, ``w = low + (high - low)·sigmoid(γ)`` (α = w / (1 - w), so that
α/(1+α) = w), and ``logit_scales`` multiplies each model's logits by a fixed factor before mixing.
``mode="argmax"`` uses one R per input from the predicted classes of each model (eq. 10);
``mode="none"`` uses R = 1, a fixed convex mix with weight α/(1+α) on h. When ``h`` has no input
gradients (the K-NN oracle of eq. 2), R_i = ||∇g_i||_{p*}.

Output maps (``g_map``, ``h_map``, :mod:`robustmix.nn.maps`) transform each model's logits before mixing:
with ``space="prob"`` the mixture is ``(1 - w)·softmax(map_g(g(x))) + w·softmax(map_h(h(x)))``, the
MixedNUTS form. R is always computed on the models' own outputs (the maps are fixed post-processing).
"""

from __future__ import annotations

import copy
import itertools
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import Tensor, nn

from ._utils.checks import check_choice
from ._utils.norms import Norm, upcast
from ._utils.transforms import in_transform, is_transformed
from .certify.radius import CertifiableMixin
from .errors import ConfigError
from .hub.mixin import HubMixin
from .nn.maps import map_config, map_from_config
from .nn.policies import BETA_CLAMP
from .sensitivity import (
    JacobianMethod,
    ModelGradients,
    Space,
    outputs_and_class_gradient_norms,
    outputs_and_predicted_gradient_norm,
    run_model,
)

__all__ = ["AdaptiveSmoothing", "SmoothingOutput", "mix", "mixing_weight", "BETA_CLAMP", "Mode"]

Mode = Literal["jacobian", "argmax", "none"]
_MODES = ("jacobian", "argmax", "none")

#: A policy maps (x, g's output, h's output) to β of shape [B]. ``PolicyNet`` also reads features of
#: g and h captured by forward hooks during the same forward pass.
Policy = Callable[[Tensor, Tensor, Tensor], Tensor]


def mixing_weight(alpha: Tensor | float, R: Tensor | float) -> Tensor:
    """Weight on h, ``w = αR / (1 + αR)`` in [0, 1]; exactly 1 where α = inf (the paper's convention).

    Computed without NaN values or NaN gradients for α = inf, R = 0 and αR overflowing.
    """
    alpha = torch.as_tensor(alpha)
    R = torch.as_tensor(R, dtype=alpha.dtype, device=alpha.device)
    infinite = torch.isinf(alpha)
    t = torch.where(infinite, torch.zeros_like(alpha), alpha) * R
    small = t.clamp(max=1.0)
    w = torch.where(t <= 1, small / (1 + small), 1 - 1 / (1 + t))
    return torch.where(infinite, torch.ones_like(w), w)


def _broadcast_alpha(alpha: Tensor | float, like: Tensor) -> Tensor:
    """A per-sample α of shape [B] (or a scalar) becomes [B, 1] so it broadcasts over classes."""
    alpha = torch.as_tensor(alpha, dtype=like.dtype, device=like.device)
    if alpha.dim() == 1:
        alpha = alpha.unsqueeze(1)
    return alpha


def _broadcast_R(R: Tensor | float, like: Tensor) -> Tensor:
    R = torch.as_tensor(R, dtype=like.dtype, device=like.device)
    if R.dim() == 1:
        R = R.unsqueeze(1)
    return R


def mix(
    g_out: Tensor,
    h_out: Tensor,
    alpha: Tensor | float,
    R: Tensor | float = 1.0,
    space: Space = "logit",
) -> Tensor:
    """The smoothing formula, eq. 5: ``(g_i + αR_i h_i) / (1 + αR_i)``, as a pure function.

    ``g_out``/``h_out``: ``[B, c]``; in ``logit`` space they are logits, in ``prob`` space they are
    log-probabilities and the convex mix is formed on probabilities, returning its log (computed stably
    as ``logaddexp(log(1-w) + log p_g, log(w) + log p_h)``). ``alpha``: scalar or ``[B]``, ``0 <= α <= inf``.
    ``R``: scalar, ``[B]`` (eq. 10) or ``[B, c]`` (eq. 5). α = 0 returns ``g_out`` exactly and α = inf
    returns ``h_out`` exactly; every entry lies between ``g_out`` and ``h_out``.
    """
    w = mixing_weight(_broadcast_alpha(alpha, g_out), _broadcast_R(R, g_out))
    if space == "logit":
        mixed = g_out + w * (h_out - g_out)
    else:
        check_choice("space", space, ("logit", "prob"))
        tiny = torch.finfo(w.dtype).tiny
        log_w = torch.log(w.clamp(min=tiny))
        log_1mw = torch.log1p(-w.clamp(max=1 - torch.finfo(w.dtype).eps))
        mixed = torch.logaddexp(log_1mw + g_out, log_w + h_out)
    mixed = torch.where(w == 0, g_out, torch.where(w == 1, h_out, mixed))
    # Rounding must never take an entry outside [min(g_i, h_i), max(g_i, h_i)].
    return torch.minimum(torch.maximum(mixed, torch.minimum(g_out, h_out)), torch.maximum(g_out, h_out))


@dataclass
class SmoothingOutput:
    """Everything a forward pass of :class:`AdaptiveSmoothing` computed, for training and analysis.

    ``output`` is what ``forward`` returns (mixed logits, or mixed log-probabilities in ``prob`` space);
    ``g_out``/``h_out`` are the mixed quantities of each model (logits or log-probabilities);
    ``alpha`` is ``[B]``; ``beta`` is the clamped policy output (``None`` for fixed α); ``R`` is ``[B, c]``
    (jacobian), ``[B]`` (argmax) or a scalar tensor (none).
    """

    output: Tensor
    g_out: Tensor
    h_out: Tensor
    alpha: Tensor
    R: Tensor
    beta: Tensor | None = None


class AdaptiveSmoothing(nn.Module, HubMixin, CertifiableMixin):
    """Mix a standard classifier ``g`` and a robust classifier ``h`` (eq. 5; eq. 7 with a policy).

    Args:
        g: the accurate (standard) model, returning logits ``[B, c]``.
        h: the robust model, returning logits ``[B, c]``; or a model without input gradients (set
            ``h.differentiable = False``, as :class:`~robustmix.KNNClassifier` does) for eq. 2.
        alpha: fixed trade-off α >= 0 (float, ``math.inf``, or a per-sample tensor ``[B]``).
        policy: alternatively a module mapping ``(x, g_logits, h_logits)`` to β ``[B]``; α = exp(β) with β
            clamped to [-14, 14] (eq. 7).
        mode: ``"jacobian"`` (per-class R_i, eq. 5), ``"argmax"`` (one R from the predicted classes, eq. 10,
            default: one backward pass per model) or ``"none"`` (R = 1, no gradients needed).
        norm: the attack norm ``"linf"`` or ``"l2"``; R uses its dual (l_1 or l_2).
        eps_c: the small constant added to ``||∇h||`` (section 4).
        space: ``"logit"`` mixes logits (the paper's eq. 5) and returns mixed logits; ``"prob"`` mixes softmax
            probabilities and returns their log (the form of the authors' later release). R is computed on
            the mixed quantities. In ``prob`` space with ``mode="jacobian"`` the per-class weights differ,
            so the mixture is renormalised to a distribution.
        detach_R: gradients flow through R by default (the adversary's extra gradient path, section 4.2);
            ``True`` treats R as a constant, which is cheaper (no double backward).
        jacobian_method / chunk_size: how the input gradients are computed (``"auto"``, ``"vmap"``,
            ``"loop"`` or ``"func"``), see :func:`robustmix.sensitivity.class_gradient_norms`. Inside a
            ``torch.func`` transform the ``"func"`` path is always used.
        validate: check inputs (finite, floating, on the models' device) on every call.
        logit_scales: ``(s_g, s_h)``, fixed positive factors applied to g's and h's logits before mixing
            (inverse temperatures of the authors' later release). Needs ``mode="none"``, because R is
            computed on the models' own outputs; wrap the models instead for gradient-based modes.
        alpha_transform: how a policy's output becomes α: ``"exp"`` (eq. 7, default: α = exp(β), β
            clamped to [-14, 14]) or ``"sigmoid"`` (the later release: weight on h
            ``w = low + (high - low)·sigmoid(γ)`` with ``(low, high) = alpha_range``, α = w/(1 - w)).
            Fixed α is never transformed. ``SmoothingOutput.beta`` holds β or γ respectively.
        alpha_range: ``(low, high)`` with ``0 <= low < high <= 1``, used by ``alpha_transform="sigmoid"``.
        g_map / h_map: output maps applied to g's / h's logits (after ``logit_scales``) before mixing, e.g.
            ``HardMax()`` and ``NonlinearMap(s, p, c)`` for the MixedNUTS form; saved in config.json.
            Attacks take gradients through :meth:`surrogate` as well, where the maps are relaxed.

    ``forward`` works under ``torch.no_grad()``/``torch.inference_mode()`` (gradients for R are taken
    internally) and is differentiable end to end when the caller tracks gradients. It composes with
    ``torch.func`` (``grad``, ``vmap``, ``jacrev``, ``functional_call``): inside a transform R is taken with
    ``torch.func.vjp`` and the checks that need tensor values (finite input, α >= 0) are skipped, since a
    transform cannot branch on them; they run in eager mode. g and h are never
    switched between train and eval mode by this wrapper.

    ``save_pretrained`` / ``from_pretrained`` / ``push_to_hub`` come from
    :class:`~robustmix.hub.HubMixin` and ``certified_radius(x, i, j)`` from
    :class:`~robustmix.certify.CertifiableMixin`.
    """

    def __init__(
        self,
        g: nn.Module,
        h: nn.Module,
        alpha: float | Tensor | None = None,
        policy: nn.Module | None = None,
        mode: Mode = "argmax",
        norm: Norm = "linf",
        eps_c: float = 1e-6,
        space: Space = "logit",
        detach_R: bool = False,
        jacobian_method: JacobianMethod = "auto",
        chunk_size: int | None = None,
        validate: bool = True,
        logit_scales: tuple[float, float] = (1.0, 1.0),
        alpha_transform: Literal["exp", "sigmoid"] = "exp",
        alpha_range: tuple[float, float] = (0.0, 1.0),
        g_map: nn.Module | None = None,
        h_map: nn.Module | None = None,
    ) -> None:
        super().__init__()
        check_choice("mode", mode, _MODES)
        check_choice("norm", norm, ("linf", "l2"))
        check_choice("space", space, ("logit", "prob"))
        if (alpha is None) == (policy is None):
            raise ValueError("give exactly one of alpha= (a fixed trade-off) or policy= (an adaptive one)")
        if not eps_c > 0:
            raise ValueError(f"eps_c must be positive, got {eps_c}")
        check_choice("alpha_transform", alpha_transform, ("exp", "sigmoid"))
        scales = tuple(float(s) for s in logit_scales)
        if len(scales) != 2 or not all(math.isfinite(s) and s > 0 for s in scales):
            raise ValueError(f"logit_scales must be two finite positive numbers (s_g, s_h), got {logit_scales}")
        if scales != (1.0, 1.0) and mode != "none":
            raise ValueError("logit_scales other than (1, 1) need mode='none'; wrap g and h to scale them otherwise")
        low, high = (float(v) for v in alpha_range)
        if not 0.0 <= low < high <= 1.0:
            raise ValueError(f"alpha_range must be (low, high) with 0 <= low < high <= 1, got {alpha_range}")
        self.logit_scales: tuple[float, float] = (scales[0], scales[1])
        self.alpha_transform = alpha_transform
        self.alpha_range: tuple[float, float] = (low, high)
        for who, output_map in (("g_map", g_map), ("h_map", h_map)):
            if output_map is not None and not callable(output_map):
                raise ValueError(f"{who} must be a module mapping logits [B, c] to logits [B, c], got {output_map!r}")
        self.g_map = g_map
        self.h_map = h_map
        self.g = g
        self.h = h
        self.policy = policy
        self.mode: Mode = mode
        self.norm: Norm = norm
        self.eps_c = float(eps_c)
        self.space: Space = space
        self.detach_R = detach_R
        self.jacobian_method: JacobianMethod = jacobian_method
        self.chunk_size = chunk_size
        self.validate = validate
        self._alpha: float | Tensor | None = None
        if alpha is not None:
            self.alpha = alpha

    # -- α --------------------------------------------------------------------------------------------
    @property
    def alpha(self) -> float | Tensor | None:
        """The fixed trade-off α (``None`` when a policy decides α per input)."""
        return self._alpha

    @alpha.setter
    def alpha(self, value: float | Tensor) -> None:
        self._alpha = _checked_alpha(value)

    @property
    def h_differentiable(self) -> bool:
        return bool(getattr(self.h, "differentiable", True))

    # -- forward --------------------------------------------------------------------------------------
    def forward(self, x: Tensor) -> Tensor:
        """Mixed logits ``[B, c]`` (or mixed log-probabilities in ``prob`` space)."""
        return self.forward_details(x).output

    def forward_details(self, x: Tensor, alpha: float | Tensor | None = None) -> SmoothingOutput:
        """Forward pass returning α, β, R and both models' outputs along with the mixture.

        ``alpha`` overrides the wrapper's own α (fixed or policy) for this call only; attacks use it to
        target a fixed α_t (eq. 6).
        """
        if torch.is_inference_mode_enabled():
            with torch.inference_mode(False):
                return self._forward_details(x.clone(), alpha, caller_grad=False)
        return self._forward_details(x, alpha, caller_grad=torch.is_grad_enabled())

    def _forward_details(self, x: Tensor, alpha: float | Tensor | None, caller_grad: bool) -> SmoothingOutput:
        if self.validate:
            self._check_input(x)
        override = None if alpha is None else _checked_alpha(alpha)
        g_res, h_res = self._model_outputs(x, caller_grad)
        if g_res.output.shape[1] != h_res.output.shape[1]:
            raise ValueError(
                f"g predicts {g_res.output.shape[1]} classes but h predicts {h_res.output.shape[1]}; "
                "both models must share one label space"
            )
        R = self._ratio(g_res, h_res)
        beta = None
        if override is not None:
            alpha_t = _as_batch_alpha(override, x)
        elif self.policy is not None and self.alpha_transform == "sigmoid":
            beta = self.policy(x, g_res.output, h_res.output).reshape(-1)
            low, high = self.alpha_range
            w = low + (high - low) * torch.sigmoid(beta)
            alpha_t = w / (1 - w)
        elif self.policy is not None:
            beta = self.policy(x, g_res.output, h_res.output).reshape(-1).clamp(*BETA_CLAMP)
            alpha_t = beta.exp()
        else:
            alpha_t = _as_batch_alpha(self._alpha, x)
        g_mix, h_mix = self._mixed_inputs(g_res, h_res)
        out = mix(g_mix, h_mix, alpha_t, R, self.space)
        if self.space == "prob" and self.mode == "jacobian":
            # Per-class weights break normalisation; renormalise where the mix is strictly inside (0, inf).
            inside = ((alpha_t > 0) & ~torch.isinf(alpha_t)).unsqueeze(1)
            out = torch.where(inside, out - out.logsumexp(dim=1, keepdim=True), out)
        result = SmoothingOutput(output=out, g_out=g_mix, h_out=h_mix, alpha=alpha_t, R=R, beta=beta)
        if not caller_grad:
            result = SmoothingOutput(
                *(None if t is None else t.detach() for t in (out, g_mix, h_mix, alpha_t, R, beta))
            )
        return result

    def _mixed_inputs(self, g_res: ModelGradients, h_res: ModelGradients) -> tuple[Tensor, Tensor]:
        g_out, h_out = upcast(g_res.output), upcast(h_res.output)  # mix in fp32 under autocast
        if self.logit_scales != (1.0, 1.0):
            g_out, h_out = g_out * self.logit_scales[0], h_out * self.logit_scales[1]
        g_out, h_out = _apply_map(self.g_map, g_out, "g_map"), _apply_map(self.h_map, h_out, "h_map")
        if self.space == "logit":
            return g_out, h_out
        return g_out.log_softmax(dim=1), h_out.log_softmax(dim=1)

    def _model_outputs(self, x: Tensor, caller_grad: bool) -> tuple[ModelGradients, ModelGradients]:
        if self.mode == "none":
            return _plain(self.g, x, caller_grad, "g"), _plain(self.h, x, caller_grad, "h")
        g_res = self._with_gradients(self.g, x, caller_grad, "g")
        h_res = (
            self._with_gradients(self.h, x, caller_grad, "h")
            if self.h_differentiable
            else _plain(self.h, x, False, "h")
        )
        return g_res, h_res

    def _with_gradients(self, model: nn.Module, x: Tensor, caller_grad: bool, who: str) -> ModelGradients:
        tracks = caller_grad and (
            in_transform() or x.requires_grad or any(p.requires_grad for p in model.parameters())
        )
        create_graph = tracks and not self.detach_R
        if self.mode == "argmax":
            res = outputs_and_predicted_gradient_norm(
                model,
                x,
                self.norm,
                self.space,
                create_graph=create_graph,
                keep_graph=tracks,
                who=who,
                method=self.jacobian_method,
            )
        else:
            res = outputs_and_class_gradient_norms(
                model,
                x,
                self.norm,
                self.space,
                chunk_size=self.chunk_size,
                method=self.jacobian_method,
                create_graph=create_graph,
                keep_graph=tracks,
                who=who,
            )
        if tracks:
            return res
        # This model's graph was freed: its outputs are constants for the caller (e.g. a frozen g while
        # the caller trains h through the mixture), so no later backward may try to enter that graph.
        return ModelGradients(res.output.detach(), res.mixed.detach(), res.norms.detach(), res.predicted)

    def _ratio(self, g_res: ModelGradients, h_res: ModelGradients) -> Tensor:
        if self.mode == "none":
            return torch.ones((), dtype=upcast(g_res.output).dtype, device=g_res.output.device)
        R = g_res.norms
        if self.h_differentiable:
            R = R / (h_res.norms + self.eps_c)
        return R.detach() if self.detach_R else R

    def _check_input(self, x: Tensor) -> None:
        if not isinstance(x, Tensor):
            raise ValueError(f"expected a torch.Tensor input, got {type(x).__name__}")
        if not x.is_floating_point():
            raise ValueError(
                f"expected a floating-point input, got dtype {x.dtype}; convert images with x.float() / 255"
            )
        if x.dim() < 2:
            raise ValueError(f"expected a batched input [B, ...], got shape {tuple(x.shape)}")
        for who, module in (("g", self.g), ("h", self.h), ("the policy", self.policy)):
            if isinstance(module, nn.Module):
                _check_placement(module, who, x, dtype=who != "the policy")
        if not is_transformed(x) and not torch.isfinite(x).all():
            raise ValueError("input contains NaN or Inf values; clean the batch before classifying it")

    @property
    def has_maps(self) -> bool:
        """Whether an output map transforms g's or h's logits before mixing."""
        return self.g_map is not None or self.h_map is not None

    def surrogate(self) -> AdaptiveSmoothing:
        """The same mixture (sharing g, h and the policy) with each output map replaced by its
        differentiable stand-in (:meth:`robustmix.nn.maps.OutputMap.surrogate`): what gradient-based
        attacks follow when steep maps or hard maxima would mask the gradient. ``self`` without maps."""
        if not self.has_maps:
            return self
        twin = copy.copy(self)  # shallow: the same g, h and policy modules
        twin._modules = dict(self._modules)
        twin.g_map, twin.h_map = (_surrogate_of(m) for m in (self.g_map, self.h_map))
        return twin

    def extra_repr(self) -> str:
        alpha = "policy" if self.policy is not None else self._alpha
        return f"alpha={alpha}, mode={self.mode!r}, norm={self.norm!r}, space={self.space!r}, eps_c={self.eps_c}"

    # -- saving (HubMixin: save_pretrained, from_pretrained, push_to_hub) -----------------------------
    #: The settings a saved model records in config.json, with their JSON types.
    hub_settings_types = {
        "alpha": (int, float, str, type(None)),
        "mode": (str,),
        "norm": (str,),
        "eps_c": (int, float),
        "space": (str,),
        "detach_R": (bool,),
        "logit_scales": (list,),
        "alpha_transform": (str,),
        "alpha_range": (list,),
        "g_map": (dict, type(None)),
        "h_map": (dict, type(None)),
    }
    #: Options that do not change the function computed, so they are not saved; from_pretrained takes them.
    hub_runtime_options = ("jacobian_method", "chunk_size", "validate")

    def hub_settings(self) -> dict[str, Any]:
        """The mixture's settings as JSON data (α as a number or ``"inf"``; ``None`` with a policy)."""
        alpha = self._alpha
        if isinstance(alpha, Tensor):
            if alpha.numel() != 1:
                raise ConfigError("a per-sample alpha tensor cannot be saved; set a scalar alpha before saving")
            alpha = float(alpha.item())
        return {
            "alpha": None if alpha is None else ("inf" if math.isinf(alpha) else float(alpha)),
            "mode": self.mode,
            "norm": self.norm,
            "eps_c": self.eps_c,
            "space": self.space,
            "detach_R": bool(self.detach_R),
            "logit_scales": list(self.logit_scales),
            "alpha_transform": self.alpha_transform,
            "alpha_range": list(self.alpha_range),
            "g_map": map_config(self.g_map),
            "h_map": map_config(self.h_map),
        }

    @classmethod
    def from_hub_settings(
        cls, g: nn.Module, h: nn.Module, policy: nn.Module | None, settings: Mapping[str, Any], **runtime: Any
    ) -> AdaptiveSmoothing:
        """The mixture a saved config describes (the inverse of :meth:`hub_settings`)."""
        options = dict(settings)
        alpha = options.pop("alpha", None)
        if isinstance(alpha, str) and alpha != "inf":
            raise ConfigError(f"config 'alpha' must be a number or the string 'inf', got {alpha!r}")
        if (alpha is None) == (policy is None):
            raise ConfigError("config must give exactly one of 'alpha' (fixed trade-off) and 'policy'")
        for key in ("logit_scales", "alpha_range"):
            if key in options:
                options[key] = tuple(options[key])
        for key in ("g_map", "h_map"):
            if key in options:
                options[key] = map_from_config(options[key])
        return cls(g, h, alpha=math.inf if alpha == "inf" else alpha, policy=policy, **options, **runtime)


def _apply_map(output_map: Callable[[Tensor], Tensor] | None, z: Tensor, who: str) -> Tensor:
    if output_map is None:
        return z
    out = output_map(z)
    if not isinstance(out, Tensor) or out.shape != z.shape:
        raise ValueError(f"{who} returned {getattr(out, 'shape', type(out).__name__)} for logits of shape "
                         f"{tuple(z.shape)}; an output map must keep the shape")
    return upcast(out)


def _surrogate_of(output_map: nn.Module | None) -> nn.Module | None:
    if output_map is None:
        return None
    relax = getattr(output_map, "surrogate", None)
    return relax() if callable(relax) else output_map


def _plain(model: Callable[[Tensor], Tensor], x: Tensor, caller_grad: bool, who: str) -> ModelGradients:
    with torch.set_grad_enabled(caller_grad):
        out = run_model(model, x, who)
    return ModelGradients(output=out, mixed=out, norms=torch.ones((), device=out.device))


def _first_tensor(module: nn.Module, floating_parameters: bool) -> Tensor | None:
    """The first initialised floating-point parameter (or, for devices, also buffer) of ``module``."""
    tensors = module.parameters() if floating_parameters else itertools.chain(module.parameters(), module.buffers())
    for t in tensors:
        if not isinstance(t, nn.parameter.UninitializedParameter | nn.parameter.UninitializedBuffer) and (
            t.is_floating_point() or not floating_parameters
        ):
            return t
    return None


def _check_placement(module: nn.Module, who: str, x: Tensor, dtype: bool) -> None:
    """The input must be on ``module``'s device and, outside autocast, of its parameters' dtype: the mixture
    does not convert inputs (a silent cast could lose precision or run a model in another precision)."""
    where = _first_tensor(module, floating_parameters=False)
    if where is not None and where.device != x.device:
        raise ValueError(f"input is on {x.device} but {who} is on {where.device}; move one with .to()")
    weights = _first_tensor(module, floating_parameters=True)
    if (
        dtype
        and weights is not None
        and weights.dtype != x.dtype
        and not torch.is_autocast_enabled(x.device.type)
    ):
        raise ValueError(
            f"input is {x.dtype} but {who}'s parameters are {weights.dtype}; convert the input with "
            f"x.to({weights.dtype}) or the model with {who}.to({x.dtype}) (under torch.autocast mixed "
            "precision is allowed)"
        )


def _checked_alpha(value: float | Tensor) -> float | Tensor:
    if isinstance(value, Tensor):
        if value.dim() > 1:
            raise ValueError(f"alpha must be a scalar or a per-sample [B] tensor, got shape {tuple(value.shape)}")
        if not is_transformed(value) and (torch.isnan(value).any() or (value < 0).any()):
            raise ValueError("alpha must be >= 0 (use math.inf for h alone); got a negative or NaN entry")
        return value
    value = float(value)
    if math.isnan(value) or value < 0:
        raise ValueError(f"alpha must be >= 0 (use math.inf for h alone), got {value}")
    return value


def _as_batch_alpha(alpha: float | Tensor | None, x: Tensor) -> Tensor:
    assert alpha is not None
    a = torch.as_tensor(alpha, dtype=x.dtype, device=x.device)
    if a.dim() == 0:
        return a.expand(x.shape[0])
    if a.shape[0] != x.shape[0]:
        raise ValueError(f"per-sample alpha has {a.shape[0]} entries but the batch has {x.shape[0]}")
    return a

"""Input-gradient norms of a classifier's outputs: the ingredients of R in eq. 5, eq. 7 and eq. 10.

For an attack in the l_p norm, the sensitivity of output ``f_i`` at ``x`` is the dual norm
``||∇_x f_i(x)||_{p*}`` (l_inf attack -> l_1 norm of the gradient; l_2 attack -> l_2 norm).
``f`` is whatever is being mixed: the model's logits (``space="logit"``, the paper's eq. 5) or its
softmax probabilities (``space="prob"``).

Three ways of computing all ``c`` class gradients from **one** forward pass are provided:

* ``"vmap"``: one backward pass vectorised with ``torch.vmap`` over one-hot cotangents (the VJP of the
  forward graph applied to a chunk of basis vectors at once, ``autograd.grad(is_grads_batched=True)``);
* ``"loop"``: one input-only backward pass per class, reusing the same forward graph;
* ``"func"``: the same VJP taken with ``torch.func.vjp`` and vectorised with ``torch.func.vmap``, with no
  ``requires_grad_`` and no ``autograd.grad``: the path that composes with ``torch.func`` transforms
  (``grad``, ``vmap``, ``jacrev``; per-example gradients of anything computed from R). Inside a transform it
  is always taken; its results are differentiable to any order by the surrounding transforms or autograd.

All compute the gradient of the batch-summed output ``sum_b f_i(x_b)`` with respect to the batch, which
equals the per-sample gradient for every model whose samples do not interact (any model in eval mode,
including BatchNorm). A model whose forward mixes samples (BatchNorm in train mode) gets the gradient of
that batch-coupled function: this module never switches a model between train and eval.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor, nn

from ._utils.checks import check_choice
from ._utils.norms import NORMS, Norm, dual_norm
from ._utils.transforms import in_transform

__all__ = [
    "Norm",
    "Space",
    "JacobianMethod",
    "ModelGradients",
    "dual_norm",
    "class_gradient_norms",
    "predicted_class_gradient_norm",
    "outputs_and_class_gradient_norms",
    "outputs_and_predicted_gradient_norm",
]

logger = logging.getLogger(__name__)

Space = Literal["logit", "prob"]
#: How the per-class gradients are computed (see :func:`resolve_method`).
JacobianMethod = Literal["auto", "vmap", "loop", "func"]

_NORMS = NORMS
_SPACES = ("logit", "prob")
_METHODS = ("auto", "vmap", "loop", "func")
_DEFAULT_VMAP_CHUNK = 16


def _to_space(out: Tensor, space: Space) -> Tensor:
    return out if space == "logit" else out.softmax(dim=-1)


@dataclass
class ModelGradients:
    """One model's output on a batch and the dual norms of its input gradients.

    ``output``: the model's raw output (logits), shape ``[B, c]``.
    ``mixed``: the quantity being mixed (logits, or softmax probabilities in ``prob`` space).
    ``norms``: ``[B, c]`` per-class norms (Jacobian form) or ``[B]`` (argmax form, eq. 10).
    ``predicted``: ``[B]`` predicted classes (argmax form only).
    """

    output: Tensor
    mixed: Tensor
    norms: Tensor
    predicted: Tensor | None = None


def _input_for_grad(x: Tensor) -> Tensor:
    """``x`` itself if autograd already tracks it (so callers keep their graph), else a tracked copy."""
    return x if x.requires_grad else x.detach().requires_grad_(True)


def run_model(model: Callable[[Tensor], Tensor], x: Tensor, who: str | None = None) -> Tensor:
    """``model(x)``, turning shape errors and non-tensor outputs into a ``ValueError`` that names the model
    (``who``, e.g. ``"g"``; default its class name) and says what the input looked like."""
    who = who or type(model).__name__
    try:
        out = model(x)
    except RuntimeError as err:
        if "shape" not in str(err) and "size" not in str(err) and "dimension" not in str(err):
            raise
        raise ValueError(
            f"{who} failed on an input of shape {tuple(x.shape)}: {err}. Is the input batched ([B, ...]) "
            "and of the shape the model expects?"
        ) from err
    check_output(out, x, who)
    return out


def check_output(out: object, x: Tensor, who: str) -> None:
    """A model's output must be a logits tensor ``[B, c]`` for the batch ``x``; say what it was otherwise."""
    if not isinstance(out, Tensor):
        kind = type(out).__name__
        raise ValueError(
            f"{who} returned a {kind}, but a logits tensor [batch, classes] is expected from {who}. Wrap a model "
            f"whose output holds the logits (a Hugging Face ModelOutput, a dict or a tuple): "
            f"robustmix.adapters.ExtractLogits({who}) returns out.logits, out['logits'] or out[0]"
        )
    if out.dim() != 2 or out.shape[0] != x.shape[0]:
        raise ValueError(
            f"{who} returned shape {tuple(out.shape)} for input of shape {tuple(x.shape)}; expected "
            f"[batch={x.shape[0]}, classes]. Is the input batched and of the rank the model expects?"
        )


def _grads_loop(
    mixed: Tensor, x: Tensor, classes: Tensor, norm: Norm, create_graph: bool, retain_last: bool
) -> Tensor:
    cols = []
    last = classes.numel() - 1
    for n, cls in enumerate(classes.tolist()):
        (grad,) = torch.autograd.grad(
            mixed[:, cls].sum(),
            x,
            retain_graph=create_graph or retain_last or n < last,
            create_graph=create_graph,
        )
        cols.append(dual_norm(grad, norm))
    return torch.stack(cols, dim=1)


def _grads_vmap(
    mixed: Tensor,
    x: Tensor,
    classes: Tensor,
    norm: Norm,
    create_graph: bool,
    chunk_size: int,
) -> Tensor:
    c = mixed.shape[1]
    eye = torch.eye(c, dtype=mixed.dtype, device=mixed.device)
    blocks = []
    chunks = classes.split(chunk_size)
    for chunk in chunks:
        cotangents = eye[chunk].unsqueeze(1).expand(chunk.numel(), mixed.shape[0], c)
        (grads,) = torch.autograd.grad(
            mixed,
            x,
            grad_outputs=cotangents,
            is_grads_batched=True,
            # Always retained: if a later chunk fails under vmap, the per-class loop reuses the graph.
            retain_graph=True,
            create_graph=create_graph,
        )
        blocks.append(dual_norm(grads, norm, batch_dims=2).transpose(0, 1))
    return torch.cat(blocks, dim=1)


def _func_forward(
    model: Callable[[Tensor], Tensor], x: Tensor, space: Space, who: str | None
) -> tuple[Tensor, Tensor, Callable[[Tensor], tuple[Tensor, ...]]]:
    """``(output, mixed, pullback)``: one forward of ``model`` under ``torch.func.vjp``; ``pullback(v)`` is
    ``v``'s vector-Jacobian product of the mixed quantity with respect to ``x`` (batch-summed, as above)."""

    def forward(inp: Tensor) -> tuple[Tensor, Tensor]:
        out = run_model(model, inp, who)
        return _to_space(out, space), out

    mixed, pullback, out = torch.func.vjp(forward, x, has_aux=True)
    return out, mixed, pullback


def _grads_func(
    mixed: Tensor, pullback: Callable[[Tensor], tuple[Tensor, ...]], classes: Tensor, norm: Norm, chunk_size: int
) -> Tensor:
    c = mixed.shape[1]
    cotangents = torch.eye(c, dtype=mixed.dtype, device=mixed.device)[classes]
    cotangents = cotangents.unsqueeze(1).expand(classes.numel(), mixed.shape[0], c)
    (grads,) = torch.func.vmap(pullback, chunk_size=chunk_size)(cotangents)
    return dual_norm(grads, norm, batch_dims=2).transpose(0, 1)


#: On CPU, batches with at most this many input elements take the torch.func path under ``method="auto"``.
_CPU_FUNC_MAX_ELEMENTS = 16 * 3 * 32 * 32


def resolve_method(method: JacobianMethod, x: Tensor) -> Literal["vmap", "loop", "func"]:
    """``auto`` picks the path measured faster for ``x``'s device and size (``benchmarks/sensitivity.py``);
    inside a ``torch.func`` transform every method resolves to ``"func"``, the only one that composes.

    On CUDA the vectorised backward wins. On CPU a vectorised backward wins while one backward pass has
    little work to spread over the cores and loses on larger batches (benchmarks/RESULTS.md, torchvision
    ResNet-18 at 32x32, 2 cores, time / floor of one forward plus c input backwards, c = 10: at batch 1
    func 0.45x, vmap 0.72x, loop 1.03x; at batch 16 func 0.82x, vmap 1.01x, loop 1.05x; at batch 64 func
    1.96x, vmap 0.97x, loop 1.00x). So batches of at most 16 CIFAR-sized images' worth of input elements
    take the ``torch.func`` path and larger ones the per-class loop, which also needs the least memory.
    """
    check_choice("method", method, _METHODS)
    if in_transform():
        return "func"
    if method != "auto":
        return method
    if x.device.type == "cuda":
        return "vmap"
    return "func" if x.numel() <= _CPU_FUNC_MAX_ELEMENTS else "loop"


def outputs_and_class_gradient_norms(
    model: Callable[[Tensor], Tensor],
    x: Tensor,
    norm: Norm = "linf",
    space: Space = "logit",
    classes: Sequence[int] | Tensor | None = None,
    chunk_size: int | None = None,
    method: JacobianMethod = "auto",
    create_graph: bool = False,
    keep_graph: bool = False,
    who: str | None = None,
) -> ModelGradients:
    """One forward pass of ``model`` plus the per-class dual gradient norms (the Jacobian form, eq. 5/7).

    ``create_graph=True`` makes the norms differentiable (double backward); ``keep_graph=True`` keeps the
    forward graph alive so the caller can backpropagate through ``output`` afterwards. With both False,
    nothing is retained once this returns. On the ``"func"`` path the forward graph lives as long as
    ``output`` does, whatever ``keep_graph`` says; inside a ``torch.func`` transform the norms are always
    differentiable by the enclosing transform. In eager mode, a model the ``"func"`` path cannot run
    (an op without a batching rule) falls back to the per-class loop under ``"auto"`` and raises under
    ``"func"``.
    """
    check_choice("norm", norm, _NORMS)
    check_choice("space", space, _SPACES)
    path = resolve_method(method, x)
    chunk_size = chunk_size or _DEFAULT_VMAP_CHUNK
    with torch.enable_grad():
        if path == "func":
            try:
                out, mixed, pullback = _func_forward(model, x, space, who)
                idx = _class_index(classes, mixed.shape[1], mixed.device)
                norms = _grads_func(mixed, pullback, idx, norm, chunk_size)
            except RuntimeError as err:  # ops without a batching rule, or a model that is not functional
                if method == "func" or in_transform():
                    raise
                logger.debug("torch.func Jacobian failed for %s (%s); using the per-class loop", type(model), err)
                path = "loop"
            else:
                if not (create_graph or in_transform()):
                    norms = norms.detach()  # as the autograd paths: R is a constant unless asked otherwise
                return ModelGradients(output=out, mixed=mixed, norms=norms)
        xg = _input_for_grad(x)
        out = run_model(model, xg, who)
        mixed = _to_space(out, space)
        c = mixed.shape[1]
        idx = _class_index(classes, c, mixed.device)
        if path == "vmap":
            try:
                norms = _grads_vmap(mixed, xg, idx, norm, create_graph, chunk_size)
            except RuntimeError as err:  # ops without a batching rule for their backward
                logger.debug("vmap Jacobian failed for %s (%s); using the per-class loop", type(model), err)
                norms = _grads_loop(mixed, xg, idx, norm, create_graph, keep_graph)
        else:
            norms = _grads_loop(mixed, xg, idx, norm, create_graph, keep_graph)
    return ModelGradients(output=out, mixed=mixed, norms=norms)


def outputs_and_predicted_gradient_norm(
    model: Callable[[Tensor], Tensor],
    x: Tensor,
    norm: Norm = "linf",
    space: Space = "logit",
    create_graph: bool = False,
    keep_graph: bool = False,
    who: str | None = None,
    method: JacobianMethod = "auto",
) -> ModelGradients:
    """One forward and one input-only backward: the norm of the predicted class's gradient (eq. 10).

    ``method="func"`` (taken automatically inside a ``torch.func`` transform) uses ``torch.func.vjp``;
    every other method uses ``torch.autograd.grad`` (measured as fast: func / autograd 1.01-1.15x on CPU).
    """
    check_choice("norm", norm, _NORMS)
    check_choice("space", space, _SPACES)
    check_choice("method", method, _METHODS)
    if method == "func" or in_transform():  # under "auto" the autograd path: measured as fast or faster
        with torch.enable_grad():
            out, mixed, pullback = _func_forward(model, x, space, who)
            predicted = out.argmax(dim=1)
            (grad,) = pullback(torch.zeros_like(mixed).scatter(1, predicted.unsqueeze(1), 1.0))
            norms = dual_norm(grad, norm)
        if not (create_graph or in_transform()):
            norms = norms.detach()
        return ModelGradients(output=out, mixed=mixed, norms=norms, predicted=predicted)
    with torch.enable_grad():
        xg = _input_for_grad(x)
        out = run_model(model, xg, who)
        mixed = _to_space(out, space)
        predicted = out.detach().argmax(dim=1)
        selected = mixed.gather(1, predicted.unsqueeze(1)).sum()
        (grad,) = torch.autograd.grad(
            selected, xg, retain_graph=create_graph or keep_graph, create_graph=create_graph
        )
        norms = dual_norm(grad, norm)
    return ModelGradients(output=out, mixed=mixed, norms=norms, predicted=predicted)


def _class_index(classes: Sequence[int] | Tensor | None, c: int, device: torch.device) -> Tensor:
    if classes is None:
        return torch.arange(c, device=device)
    idx = torch.as_tensor(classes, dtype=torch.long, device=device).flatten()
    if idx.numel() == 0 or int(idx.min()) < 0 or int(idx.max()) >= c:
        raise ValueError(f"classes must be non-empty indices in [0, {c}); got {idx.tolist()}")
    return idx


def class_gradient_norms(
    model: nn.Module | Callable[[Tensor], Tensor],
    x: Tensor,
    norm: Norm = "linf",
    space: Space = "logit",
    classes: Sequence[int] | Tensor | None = None,
    chunk_size: int | None = None,
    method: JacobianMethod = "auto",
) -> Tensor:
    """``||∇_x f_i(x)||_{p*}`` for each sample and each class in ``classes`` (default: all): ``[B, k]``.

    ``f`` is the model's logits (``space="logit"``) or softmax probabilities (``space="prob"``);
    ``p*`` is the dual of the attack norm (``linf`` -> l_1, ``l2`` -> l_2). ``chunk_size`` bounds how many
    classes are differentiated at once on the ``vmap`` path, so c = 1000 fits in memory. Works under
    ``torch.no_grad()``; the result is detached.
    """
    result = outputs_and_class_gradient_norms(model, x, norm, space, classes, chunk_size, method)
    return result.norms.detach()


def predicted_class_gradient_norm(
    model: nn.Module | Callable[[Tensor], Tensor],
    x: Tensor,
    norm: Norm = "linf",
    space: Space = "logit",
    method: JacobianMethod = "auto",
) -> tuple[Tensor, Tensor]:
    """The argmax form of eq. 10: ``(||∇_x f_k(x)||_{p*}, k)`` with ``k = argmax_i f_i(x)``, each ``[B]``."""
    result = outputs_and_predicted_gradient_norm(model, x, norm, space, method=method)
    assert result.predicted is not None
    return result.norms.detach(), result.predicted

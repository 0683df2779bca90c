"""The linear maps of a compiled network's affine runs, as the bound propagation multiplies by them.

Interval and linear bound propagation multiply by four operators per run of affine layers: ``W``, ``|W|``
and their transposes. A matrix (dense, or sparse CSR when it mostly holds zeros) is the general form. A
convolution merged with its neighbours into one matrix loses its structure, though: the demo CNN's
``AvgPool2d`` + ``Conv2d`` run is a dense ``[1024, 2048]`` matrix (16 MB read per product) for 18,432
weights. :class:`LayerMap` applies such a run through the layers themselves instead (bias-free copies in
float64; ``|W|`` through copies with absolute weights; transposes layer by layer, by transposed
convolutions, tiling pools spread back over their windows, and vector-Jacobian products), several times
faster on CPU. The matrix is still built once, at compile time, to check that the layers give the same
operators.
"""

from __future__ import annotations

import copy
import math
import warnings

import torch
from torch import Tensor, nn

__all__ = ["LayerMap", "Operator", "operators", "apply"]

_F64 = torch.float64
#: Matrices with more entries than this, and at most this fraction of them nonzero, are stored sparse.
_SPARSE_MIN_ENTRIES, _SPARSE_MAX_DENSITY = 2**16, 0.25
#: Runs holding a convolution whose matrix has more entries than this are applied through their layers.
_LAYER_MAP_MIN_ENTRIES = 2**18


class LayerMap:
    """The linear part of a run of affine layers (or of its absolute value, or a transpose), applied like
    a ``[m, n]`` matrix: ``[B, n] -> [B, m]`` and ``[B, n, k] -> [B, m, k]``."""

    def __init__(self, layers: nn.Sequential, in_shape: tuple[int, ...], out_features: int, transpose: bool = False):
        self.layers, self.in_shape, self.transpose = layers, in_shape, transpose
        n = math.prod(in_shape)
        self.shape = (n, out_features) if transpose else (out_features, n)
        shapes, a = [], torch.zeros(1, *in_shape, dtype=_F64)
        for layer in layers:  # each layer's input shape, for the transposes
            shapes.append(tuple(a.shape[1:]))
            a = layer(a)
        self._in_shapes = shapes

    def __call__(self, X: Tensor) -> Tensor:
        batch, rest = X.shape[0], X.shape[2:]
        cols = X if X.dim() == 2 else X.transpose(1, 2).reshape(-1, X.shape[1])  # one row per column of X
        out = self._transposed(cols) if self.transpose else self.layers(cols.reshape(-1, *self.in_shape))
        out = out.reshape(cols.shape[0], -1)
        return out if X.dim() == 2 else out.reshape(batch, *rest, -1).transpose(1, 2)

    def _transposed(self, Y: Tensor) -> Tensor:
        """``W^T y`` for each row ``y``: the layers' transposes in reverse order."""
        for layer, shape in zip(reversed(self.layers), reversed(self._in_shapes), strict=True):
            Y = _layer_transpose(layer, Y, shape)
        return Y


def _layer_transpose(layer: nn.Module, Y: Tensor, in_shape: tuple[int, ...]) -> Tensor:
    """The transpose of one bias-free linear layer applied to ``Y`` ``[N, ...]``, giving ``[N, *in_shape]``:
    a transposed convolution for ``Conv2d`` (zero padding), each output spread back over its window for an
    ``AvgPool2d`` whose windows tile the input, else the layer's vector-Jacobian product."""
    N = Y.shape[0]
    if isinstance(layer, nn.Conv2d) and layer.padding_mode == "zeros" and not isinstance(layer.padding, str):
        Y = Y.reshape(N, layer.out_channels, *_spatial(layer, in_shape))
        return torch.nn.grad.conv2d_input(
            (N, *in_shape), layer.weight, Y, layer.stride, layer.padding, layer.dilation, layer.groups
        )
    if _tiles(layer):
        return _pool_transpose(layer, Y, in_shape)
    X = torch.zeros(N, *in_shape, dtype=Y.dtype, requires_grad=True)
    with torch.enable_grad():
        out = layer(X)
        (grad,) = torch.autograd.grad(out, X, Y.reshape(out.shape))
    return grad


def _tiles(layer: nn.Module) -> bool:
    """Whether ``layer`` is an ``AvgPool2d`` whose windows do not overlap and need no padding."""
    if not isinstance(layer, nn.AvgPool2d):
        return False
    pair = torch.nn.modules.utils._pair
    return pair(layer.kernel_size) == pair(layer.stride) and pair(layer.padding) == (0, 0) and not layer.ceil_mode


def _pool_transpose(pool: nn.AvgPool2d, Y: Tensor, in_shape: tuple[int, ...]) -> Tensor:
    """The transpose of a tiling average pool: each output's value over its ``kh x kw`` window, divided by
    the window's divisor; the rows and columns the windows leave out get 0."""
    kh, kw = torch.nn.modules.utils._pair(pool.kernel_size)
    C, H, W = in_shape
    N, Ho, Wo = Y.shape[0], H // kh, W // kw
    Y = Y.reshape(N, C, Ho, 1, Wo, 1) / (pool.divisor_override or kh * kw)
    spread = Y.expand(N, C, Ho, kh, Wo, kw).reshape(N, C, Ho * kh, Wo * kw)
    return torch.nn.functional.pad(spread, (0, W - Wo * kw, 0, H - Ho * kh))


def _spatial(conv: nn.Conv2d, in_shape: tuple[int, ...]) -> tuple[int, int]:
    """The output height and width of ``conv`` on inputs of ``in_shape`` ``(C, H, W)``."""
    return tuple(  # type: ignore[return-value]
        (n + 2 * p - d * (k - 1) - 1) // s + 1
        for n, p, d, k, s in zip(in_shape[1:], conv.padding, conv.dilation, conv.kernel_size, conv.stride, strict=True)
    )


Operator = Tensor | LayerMap


def apply(op: Operator, X: Tensor) -> Tensor:
    """``op`` (``[m, n]``: a dense or sparse matrix, or a :class:`LayerMap`) applied to each example of ``X``:
    ``[B, n] -> [B, m]`` or ``[B, n, k] -> [B, m, k]``, as one product over the whole batch."""
    if isinstance(op, LayerMap):
        return op(X)
    if X.dim() == 2:
        return (op @ X.T).T
    B, n, k = X.shape
    return (op @ X.transpose(0, 1).reshape(n, B * k)).reshape(-1, B, k).transpose(0, 1)


def operators(W: Tensor, run: list[nn.Module], in_shape: tuple[int, ...]) -> tuple[Operator, Operator, Operator, Operator]:
    """``W``, ``|W|``, ``W^T``, ``|W|^T`` for the run of affine layers ``run`` whose dense matrix is ``W``:
    through the layers for large convolution runs (where they give ``W`` and ``|W|`` to rounding), else
    as matrices."""
    W_abs = W.abs()
    if W.numel() > _LAYER_MAP_MIN_ENTRIES and any(isinstance(m, nn.Conv2d) for m in run):
        linear, absolute = _linear_part(run, absolute=False), _linear_part(run, absolute=True)
        fwd, fwd_abs = LayerMap(linear, in_shape, W.shape[0]), LayerMap(absolute, in_shape, W.shape[0])
        back, back_abs = (LayerMap(m, in_shape, W.shape[0], transpose=True) for m in (linear, absolute))
        # the checks keep the matrices should a bias-free copy not be its layer's linear part; |W| is the
        # layers with absolute weights only where no two paths through them meet with opposite signs (true
        # of non-overlapping pooling before a convolution); elsewhere |W| stays a matrix
        if _same(fwd, W) and _same(back, W.T):
            if _same(fwd_abs, W_abs) and _same(back_abs, W_abs.T):
                return fwd, fwd_abs, back, back_abs
            return fwd, _matrix(W_abs), back, _matrix(W_abs.T.contiguous())
    return _matrix(W), _matrix(W_abs), _matrix(W.T.contiguous()), _matrix(W_abs.T.contiguous())


def _same(op: LayerMap, W: Tensor) -> bool:
    """Whether ``op`` gives the matrix ``W`` (to float64 rounding), checked on 8 random vectors with positive
    entries: a linear map that differs from ``W`` gives other images of almost every such vector, and where
    ``op`` is the layers with absolute weights, ``op - |W|`` is a nonnegative matrix, zero exactly when its
    images of positive vectors are."""
    V = torch.rand(8, W.shape[1], generator=torch.Generator().manual_seed(0), dtype=_F64) + 0.5
    expected = V @ W.T
    return bool(torch.allclose(op(V), expected, rtol=1e-10, atol=1e-12 * float(expected.abs().max())))


def _linear_part(run: list[nn.Module], absolute: bool) -> nn.Module:
    """A float64 copy of the run with every bias (and BatchNorm mean) removed, weights in absolute value if
    asked; no parameter requires a gradient."""
    seq = copy.deepcopy(nn.Sequential(*run)).double().eval()
    with torch.no_grad():
        for m in seq.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)) and m.bias is not None:
                m.bias.zero_()
            if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
                m.running_mean.zero_()
                if m.bias is not None:
                    m.bias.zero_()
            if absolute and isinstance(m, (nn.Conv2d, nn.Linear, nn.BatchNorm1d, nn.BatchNorm2d)) and m.weight is not None:
                m.weight.abs_()
    for p in seq.parameters():
        p.requires_grad_(False)
    return seq


def _matrix(M: Tensor) -> Tensor:
    if M.numel() < _SPARSE_MIN_ENTRIES or float((M != 0).float().mean()) > _SPARSE_MAX_DENSITY:
        return M
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")
        return M.to_sparse_csr()

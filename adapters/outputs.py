"""Models whose forward returns more than logits (Hugging Face ``ModelOutput``, dicts, tuples) as ``g`` or ``h``.

:class:`~robustmix.smoothing.AdaptiveSmoothing`, the attacks and the certificates expect each model to return
a logits tensor ``[B, c]``. :class:`ExtractLogits` wraps a model whose output holds the logits elsewhere.
"""

from __future__ import annotations

from collections.abc import Mapping

from torch import Tensor, nn

__all__ = ["ExtractLogits"]


class ExtractLogits(nn.Module):
    """``model(x)`` reduced to its logits tensor: ``out.logits`` (Hugging Face), ``out[key]`` (a dict) or
    ``out[0]`` (a tuple or list). The wrapped model is the submodule ``model`` (layer names gain the prefix
    ``model.``); the wrapper has no parameters of its own.
    """

    def __init__(self, model: nn.Module, key: str = "logits") -> None:
        super().__init__()
        self.model = model
        self.key = key

    def forward(self, x: Tensor) -> Tensor:
        out = self.model(x)
        if isinstance(out, Tensor):
            return out
        if isinstance(out, Mapping) and self.key in out:
            logits = out[self.key]
        elif hasattr(out, self.key):
            logits = getattr(out, self.key)
        elif isinstance(out, (tuple, list)) and out:
            logits = out[0]
        else:
            raise ValueError(
                f"{type(self.model).__name__} returned a {type(out).__name__} without {self.key!r}; pass key= to "
                "name the entry that holds the logits"
            )
        if not isinstance(logits, Tensor):
            raise ValueError(f"the {self.key!r} entry of the model's output is a {type(logits).__name__}, not a tensor")
        return logits

    def extra_repr(self) -> str:
        return f"key={self.key!r}"

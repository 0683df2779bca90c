"""Training the policy of the adaptive mixture with the composite loss of eq. 9: :class:`PolicyTrainer`
(attacks on every batch, Adam, resumable safetensors checkpoints, torchrun data parallelism)."""

from .loss import alpha_star_sign, composite_loss
from .trainer import STATE_FILE, PolicyTrainer, frozen

__all__ = ["PolicyTrainer", "STATE_FILE", "alpha_star_sign", "composite_loss", "frozen"]

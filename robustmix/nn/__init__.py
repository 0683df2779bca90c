"""Networks: building blocks (:mod:`~robustmix.nn.layers`), feature taps (:mod:`~robustmix.nn.taps`), the
architectures robustmix builds by name (:mod:`~robustmix.nn.architectures`) and the mixing policies
(:mod:`~robustmix.nn.policies`). Plain ``torch.nn`` modules: none of them knows about the mixture.

This package's ``__init__`` imports nothing, so the registry (which wraps models in
:class:`~robustmix.nn.layers.Normalized`) can sit between the building blocks and the architectures that
register themselves in it.
"""

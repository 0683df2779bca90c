"""The bottom layer: input checks, error classes, optional-dependency imports, norms and digests.

Nothing here imports any other part of robustmix; every other layer may import from here.
"""

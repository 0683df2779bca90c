"""Old module paths whose names now live in several modules (see :mod:`robustmix._deprecated`)."""

"""Phase augmentation: complex training data from magnitude-only archives (see ``phase`` and
``job``)."""

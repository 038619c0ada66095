"""`dimexport verify`: the same seeded inputs through every backend, compared with PyTorch."""

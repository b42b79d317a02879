"""Training data: the on-disk dataset format, importers, loader, phase/coil simulation."""

"""MRI physics in PyTorch.

Conventions (owned here, used everywhere):

* Complex images: ``(batch, y, x)`` complex64, or ``(batch, maps, y, x)`` with several
  ESPIRiT maps. ``x`` (last axis) is BART's dim 0 (READ), ``y`` is BART's dim 1 (PHS1).
* k-space: ``(batch, coil, y, x)`` complex64.
* Coil maps: ``(batch, coil, y, x)``, or ``(batch, maps, coil, y, x)``.
* Masks: real, broadcastable to k-space, e.g. ``(y, x)`` or ``(batch, 1, y, x)``.
* FFT: centred, orthonormal, negative exponent for the forward transform over the last two axes;
  identical to ``bart fft -u 3`` (checked in tests). The centre of an axis of length N is N // 2.

Everything takes tensors on any device and works batched.
"""

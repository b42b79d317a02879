"""Linear operators with forward, adjoint and normal, and the contract every operator passes.

An operator is an object with ``forward(x)``, ``adjoint(y)`` and ``normal(x) = adjoint(forward(x))``
(subclasses may override ``normal`` with something faster). ``A @ B`` composes (B first); the
composition's adjoint runs in reverse order. Operators are built from plain differentiable torch
ops, so autograd flows through them; nothing inside a forward pass mutates the operator.

:func:`adjoint_test` is the dot-product test <A x, y> = <x, A^H y>, run in complex128.
"""

from __future__ import annotations

import torch

__all__ = ["broadcast_shape", "LinOp", "Compose", "Identity", "Multiply", "FFT2", "Mask", "adjoint_test", "vdot"]


def broadcast_shape(*shapes) -> torch.Size:
    """The broadcast of ``shapes`` (NumPy rules), or RuntimeError as ``torch.broadcast_shapes``
    raises: plain Python, because the first ``torch.broadcast_shapes`` call imports sympy
    (~0.4 s of every command's start-up)."""
    ndim = max((len(s) for s in shapes), default=0)
    out = []
    for d in range(-ndim, 0):
        sizes = {s[d] for s in shapes if len(s) >= -d} - {1}
        if len(sizes) > 1:
            raise RuntimeError(f"shapes {[tuple(s) for s in shapes]} do not broadcast")
        out.append(sizes.pop() if sizes else 1)
    return torch.Size(out)


def vdot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Complex inner product <a, b> = sum conj(a) * b over all elements."""
    return torch.sum(a.conj() * b)


class LinOp:
    """Base class: subclasses implement ``forward`` and ``adjoint``."""

    name = "LinOp"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def adjoint(self, y: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def normal(self, x: torch.Tensor) -> torch.Tensor:
        return self.adjoint(self.forward(x))

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward(x)

    def __matmul__(self, other: "LinOp") -> "LinOp":
        return Compose(self, other)

    @property
    def H(self) -> "LinOp":
        return _Adjoint(self)

    def __repr__(self) -> str:
        return self.name


class Compose(LinOp):
    """``outer @ inner``: x -> outer(inner(x))."""

    def __init__(self, outer: LinOp, inner: LinOp):
        self.outer, self.inner = outer, inner
        self.name = f"{outer!r} * {inner!r}"

    def forward(self, x):
        return self.outer.forward(self.inner.forward(x))

    def adjoint(self, y):
        return self.inner.adjoint(self.outer.adjoint(y))


class _Adjoint(LinOp):
    def __init__(self, op: LinOp):
        self.op = op
        self.name = f"({op!r})^H"

    def forward(self, x):
        return self.op.adjoint(x)

    def adjoint(self, y):
        return self.op.forward(y)


class Identity(LinOp):
    name = "Identity"

    def forward(self, x):
        return x

    def adjoint(self, y):
        return y


class Multiply(LinOp):
    """Pointwise multiplication by a (broadcast) tensor."""

    name = "Multiply"

    def __init__(self, weights: torch.Tensor):
        self.weights = weights

    def forward(self, x):
        return x * self.weights

    def adjoint(self, y):
        return y * self.weights.conj()


class Mask(Multiply):
    """Multiplication by a real sampling mask (self-adjoint)."""

    name = "Mask"

    def adjoint(self, y):
        return y * self.weights


class FFT2(LinOp):
    """Centred orthonormal 2D FFT over the last two axes (unitary: adjoint = inverse)."""

    name = "FFT2"

    def forward(self, x):
        from mriprior.physics.fft import fft2c
        return fft2c(x)

    def adjoint(self, y):
        from mriprior.physics.fft import ifft2c
        return ifft2c(y)

    def normal(self, x):
        return x


def adjoint_test(op: LinOp, x_shape, y_shape=None, device=None, seed: int = 0) -> float:
    """Relative error of the dot-product test in complex128 for random x, y.

    ``op`` must accept complex128 input (operators built from tensors cast their tensors, see
    ``to(dtype)`` helpers of concrete operators, or pass an operator built in complex128).
    Returns |<A x, y> - <x, A^H y>| / (||A x|| ||y||).
    """
    g = torch.Generator(device="cpu").manual_seed(seed)
    x = torch.randn(*x_shape, generator=g, dtype=torch.complex128).to(device)
    ax = op.forward(x)
    y_shape = ax.shape if y_shape is None else y_shape
    y = torch.randn(*y_shape, generator=g, dtype=torch.complex128).to(device)
    lhs = vdot(ax, y)
    rhs = vdot(x, op.adjoint(y))
    return float(torch.abs(lhs - rhs) / (torch.linalg.vector_norm(ax) * torch.linalg.vector_norm(y)))

"""Contract tests run over every operator: dot-product adjoint (complex128), linearity,
normal = adjoint(forward), and autograd agreeing with the adjoint."""

import pytest
import torch

from mriprior.errors import InputError
from mriprior.physics.linop import FFT2, Identity, Mask, Multiply, adjoint_test, vdot
from mriprior.physics.sense import Sense

G = torch.Generator().manual_seed(1)


def crandn(*shape):
    return torch.randn(*shape, generator=G, dtype=torch.complex128)


def operators():
    mask = (torch.rand(12, 10, generator=G) < 0.4).double()
    maps4 = crandn(2, 4, 12, 10)
    maps5 = crandn(2, 2, 4, 12, 10)
    return {
        "identity": (Identity(), (2, 12, 10)),
        "multiply": (Multiply(crandn(12, 10)), (2, 12, 10)),
        "mask": (Mask(mask), (2, 12, 10)),
        "fft2": (FFT2(), (2, 12, 10)),
        "fft2-odd": (FFT2(), (2, 7, 9)),
        "sense": (Sense(maps4, mask), (2, 12, 10)),
        "sense-full": (Sense(maps4), (2, 12, 10)),
        "sense-2maps": (Sense(maps5, mask), (2, 2, 12, 10)),
        "sense-batch-mask": (Sense(maps4, (torch.rand(2, 1, 12, 10, generator=G) < .5).double()),
                             (2, 12, 10)),
        "sense-odd": (Sense(crandn(1, 3, 7, 9), (torch.rand(7, 9, generator=G) < .5).double()),
                      (1, 7, 9)),
        "compose": (FFT2() @ Multiply(crandn(12, 10)), (2, 12, 10)),
    }


OPS = operators()


@pytest.mark.parametrize("name", list(OPS))
def test_adjoint(name):
    op, shape = OPS[name]
    assert adjoint_test(op, shape) < 1e-12


@pytest.mark.parametrize("name", list(OPS))
def test_normal_and_linearity(name):
    op, shape = OPS[name]
    x, z = crandn(*shape), crandn(*shape)
    a, b = 0.7 - 0.2j, -1.3 + 0.5j
    lin = op.forward(a * x + b * z) - (a * op.forward(x) + b * op.forward(z))
    assert torch.linalg.vector_norm(lin) < 1e-10 * torch.linalg.vector_norm(op.forward(x))
    n1, n2 = op.normal(x), op.adjoint(op.forward(x))
    assert torch.linalg.vector_norm(n1 - n2) <= 1e-10 * torch.linalg.vector_norm(n2)


@pytest.mark.parametrize("name", ["sense", "sense-2maps", "compose"])
def test_autograd_matches_adjoint(name):
    op, shape = OPS[name]
    x = crandn(*shape).requires_grad_(True)
    y = crandn(*op.forward(x).shape)
    # d/dx* Re<y, A x> = A^H y / 2 in PyTorch's conjugate-Wirtinger convention (grad = 2 dL/dx*)
    loss = vdot(y, op.forward(x)).real
    loss.backward()
    assert torch.allclose(x.grad, op.adjoint(y), atol=1e-10)


def test_sense_adjoint_float32_meets_spec():
    maps = torch.randn(1, 8, 64, 48, dtype=torch.complex64)
    mask = (torch.rand(64, 48) < 0.3).float()
    op = Sense(maps, mask)
    x = torch.randn(1, 64, 48, dtype=torch.complex64)
    y = torch.randn(1, 8, 64, 48, dtype=torch.complex64)
    lhs, rhs = vdot(op.forward(x), y), vdot(x, op.adjoint(y))
    assert float(abs(lhs - rhs) / abs(lhs)) < 1e-5


def test_sense_rejects_bad_shapes():
    with pytest.raises(InputError, match="coil maps"):
        Sense(torch.zeros(4, 8, 8, dtype=torch.complex64))
    with pytest.raises(InputError, match="mask shape"):
        Sense(torch.zeros(1, 4, 8, 8, dtype=torch.complex64), torch.ones(7, 8))


def test_broadcast_shape_matches_torch():
    from mriprior.physics.linop import broadcast_shape
    for shapes in [((3, 1, 4), (1, 5, 4)), ((2,), (3, 2)), ((), (2, 3)),
                   ((1, 1, 24, 24), (1, 4, 24, 24)), ((5, 1), (1,), (2, 5, 7))]:
        assert broadcast_shape(*shapes) == torch.broadcast_shapes(*shapes)
    with pytest.raises(RuntimeError):
        broadcast_shape((3,), (4,))

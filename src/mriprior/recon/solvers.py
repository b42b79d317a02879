"""Iterative solvers that take callables: CG, FISTA, ADMM, power method.

All work on batched complex tensors ``(batch, ...)``: inner products, step lengths and stopping
tests are per batch item, so a batch of slices is solved as independent problems in one pass.
Each solver takes ``max_iter`` and an optional relative tolerance ``tol`` (stop when every item's
relative change / residual is below it) and an optional ``callback(it, x)``.
"""

from __future__ import annotations

import math
from typing import Callable

import torch

__all__ = ["conjugate_gradient", "fista", "admm", "power_method"]

Op = Callable[[torch.Tensor], torch.Tensor]


def _bdot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per-batch real part of <a, b>, shaped to broadcast against a."""
    d = torch.sum((a.conj() * b).real.reshape(a.shape[0], -1), dim=1)
    return d.reshape((-1,) + (1,) * (a.ndim - 1))


def _converged(x: torch.Tensor, x_prev: torch.Tensor, tol: float) -> bool:
    """Every batch item's relative change ||x - x_prev|| / ||x|| is at most tol."""
    ch = _bdot(x - x_prev, x - x_prev) / torch.clamp(_bdot(x, x), min=1e-30)
    return bool(torch.all(ch <= tol ** 2))


def conjugate_gradient(normal: Op, rhs: torch.Tensor, x0: torch.Tensor | None = None,
                       max_iter: int = 30, tol: float = 0.0, lam: float = 0.0,
                       callback=None) -> torch.Tensor:
    """Solve (N + lam I) x = rhs for Hermitian positive (semi)definite N, per batch item.

    Stops after ``max_iter`` iterations or when ||r|| <= tol * ||rhs|| for every item.
    """
    def op(v):
        return normal(v) + lam * v if lam else normal(v)

    x = torch.zeros_like(rhs) if x0 is None else x0.clone()
    r = rhs - op(x) if x0 is not None else rhs.clone()
    p = r.clone()
    rs = _bdot(r, r)
    rs0 = _bdot(rhs, rhs)
    # An item whose residual reached rounding level stops moving: past that point r has
    # components in N's null space and p^H N p ~ 0 would give a meaningless step.
    floor = (8 * torch.finfo(rs.dtype).eps) ** 2 * rs0
    for it in range(max_iter):
        if tol > 0 and bool(torch.all(rs <= (tol ** 2) * rs0)):
            break
        ap = op(p)
        pap = _bdot(p, ap)
        ok = (pap > 0) & (rs > floor)
        alpha = torch.where(ok, rs / torch.where(ok, pap, torch.ones_like(pap)),
                            torch.zeros_like(pap))
        x = x + alpha * p
        r = r - alpha * ap
        rs_new = _bdot(r, r)
        beta = torch.where(rs > 0, rs_new / torch.where(rs > 0, rs, torch.ones_like(rs)),
                           torch.zeros_like(rs))
        p = r + beta * p
        rs = rs_new
        if callback is not None:
            callback(it, x)
    return x


def fista(normal: Op, adj_y: torch.Tensor, prox: Callable[[torch.Tensor, float], torch.Tensor],
          step: float, max_iter: int = 30, x0: torch.Tensor | None = None, tol: float = 0.0,
          callback=None) -> torch.Tensor:
    """FISTA for min_x 0.5 ||A x - y||^2 + g(x), in BART's order of operations.

    ``normal`` = A^H A, ``adj_y`` = A^H y, ``prox(v, step)`` = prox of step * g. Each iteration:
    prox, Nesterov momentum ("ravine" step), then a gradient step
    x <- x + step * (A^H y - A^H A x). So the result ends with a gradient step, as BART's does.
    ``tol``: stop when every item's relative change between iterations is below it.
    """
    x = torch.zeros_like(adj_y) if x0 is None else x0.clone()
    old = x.clone()
    t = 1.0
    for it in range(max_iter):
        x_prev = x
        x = prox(x, step)
        t_new = (1.0 + math.sqrt(1.0 + 4.0 * t * t)) / 2.0
        x, old = x + ((t - 1.0) / t_new) * (x - old), x
        t = t_new
        x = x + step * (adj_y - normal(x))
        if callback is not None:
            callback(it, x)
        if tol > 0 and _converged(x, x_prev, tol):
            break
    return x


def admm(normal: Op, adj_y: torch.Tensor, D: Callable, Dh: Callable,
         prox_z: Callable[[torch.Tensor, float], torch.Tensor], rho: float = 0.5,
         max_iter: int = 30, cg_iter: int = 10, x0: torch.Tensor | None = None,
         tol: float = 0.0, callback=None) -> torch.Tensor:
    """ADMM for min_x 0.5 ||A x - y||^2 + g(D x) (scaled form).

    x-update: CG on (A^H A + rho D^H D) x = A^H y + rho D^H (z - u), warm-started;
    z-update: z = prox_z(D x + u, 1 / rho); u <- u + D x - z.
    """
    x = torch.zeros_like(adj_y) if x0 is None else x0.clone()
    dx = D(x)
    z = dx.clone()
    u = torch.zeros_like(dx)

    def normal_rho(v):
        return normal(v) + rho * Dh(D(v))

    for it in range(max_iter):
        x_prev = x
        x = conjugate_gradient(normal_rho, adj_y + rho * Dh(z - u), x0=x, max_iter=cg_iter)
        dx = D(x)
        z = prox_z(dx + u, 1.0 / rho)
        u = u + dx - z
        if callback is not None:
            callback(it, x)
        if tol > 0 and _converged(x, x_prev, tol):
            break
    return x


def power_method(normal: Op, shape, max_iter: int = 30, device=None, dtype=torch.complex64,
                 generator: torch.Generator | None = None) -> float:
    """Largest eigenvalue of a Hermitian operator (BART ``pics -e`` uses 30 iterations)."""
    x = torch.randn(*shape, dtype=dtype, generator=generator).to(device)
    x = x / torch.linalg.vector_norm(x)
    lam = 0.0
    for _ in range(max_iter):
        y = normal(x)
        lam = float(torch.linalg.vector_norm(y))
        if lam == 0:
            return 0.0
        x = y / lam
    return lam

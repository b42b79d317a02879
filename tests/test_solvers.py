"""Solvers against closed-form solutions."""

import torch

from mriprior.recon.solvers import admm, conjugate_gradient, fista, power_method


def spd_batch(b=3, n=12, seed=0):
    g = torch.Generator().manual_seed(seed)
    a = torch.randn(b, n, n, generator=g, dtype=torch.complex128)
    return a @ a.conj().transpose(1, 2) + 0.5 * torch.eye(n, dtype=torch.complex128)


def test_cg_solves_batched_system():
    m = spd_batch()
    rhs = torch.randn(3, 12, dtype=torch.complex128)
    x = conjugate_gradient(lambda v: (m @ v.unsqueeze(-1)).squeeze(-1), rhs, max_iter=200,
                           tol=1e-12, lam=0.3)
    want = torch.linalg.solve(m + 0.3 * torch.eye(12), rhs)
    assert torch.allclose(x, want, atol=1e-8)


def test_cg_warm_start_at_solution_stays():
    m = spd_batch(1)
    rhs = torch.randn(1, 12, dtype=torch.complex128)
    sol = torch.linalg.solve(m, rhs)
    x = conjugate_gradient(lambda v: (m @ v.unsqueeze(-1)).squeeze(-1), rhs, x0=sol, max_iter=5)
    assert torch.allclose(x, sol, atol=1e-9)


def test_fista_lasso_with_identity_is_soft_threshold():
    # min 0.5||x - y||^2 + lam ||x||_1 has the solution soft(y, lam)
    y = torch.randn(2, 50, dtype=torch.complex128)
    lam = 0.4

    def soft(v, mu):
        mag = v.abs()
        return v * torch.clamp(mag - lam * mu, min=0) / torch.clamp(mag, min=1e-30)

    x = fista(lambda v: v, y, soft, step=0.5, max_iter=200)
    want = soft(y, 1.0)
    # the result ends with a gradient step (BART's order): compare its prox
    assert torch.allclose(soft(x, 0.5), want, atol=1e-8)


def test_admm_tv_1d_denoising_decreases_objective():
    g = torch.Generator().manual_seed(0)
    truth = torch.repeat_interleave(torch.tensor([0., 1., 0.3, 0.8]), 16).to(torch.complex128)
    y = truth + 0.1 * torch.randn(64, generator=g, dtype=torch.complex128)
    y = y.unsqueeze(0)
    D = lambda v: torch.roll(v, -1, -1) - v  # noqa: E731
    Dh = lambda w: torch.roll(w, 1, -1) - w  # noqa: E731
    lam = 0.2

    def prox(v, t):
        mag = v.abs()
        return v * torch.clamp(mag - lam * t, min=0) / torch.clamp(mag, min=1e-30)

    def obj(x):
        return float(0.5 * (x - y).abs().pow(2).sum() + lam * D(x).abs().sum())

    x = admm(lambda v: v, y, D, Dh, prox, rho=1.0, max_iter=200, cg_iter=20)
    assert obj(x) < obj(y)
    assert float((x - truth.unsqueeze(0)).abs().pow(2).sum()) < float((y - truth).abs().pow(2).sum())
    # optimality: perturbations do not decrease the objective
    for s in (1e-3, -1e-3):
        assert obj(x + s * torch.randn(1, 64, generator=g, dtype=torch.complex128)) >= obj(x) - 1e-6


def test_power_method():
    m = spd_batch(1, 20)[0]
    lam = power_method(lambda v: m @ v, (20,), max_iter=500, dtype=torch.complex128)
    assert abs(lam - float(torch.linalg.eigvalsh(m)[-1])) < 1e-6 * lam


def test_tolerance_stops_early():
    y = torch.randn(2, 50, dtype=torch.complex128)
    calls = []
    fista(lambda v: v, y, lambda v, mu: v * 0.9, step=0.5, max_iter=10_000, tol=1e-6,
          callback=lambda it, x: calls.append(it))
    assert 0 < len(calls) < 10_000
    m = spd_batch(1)
    rhs = torch.randn(1, 12, dtype=torch.complex128)
    cg_calls = []
    conjugate_gradient(lambda v: (m @ v.unsqueeze(-1)).squeeze(-1), rhs, max_iter=500, tol=1e-10,
                       callback=lambda it, x: cg_calls.append(it))
    assert len(cg_calls) <= 40  # CG on a 12 x 12 system converges in ~12 steps, not 500

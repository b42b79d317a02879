"""Prior-based reconstruction: closed-form Gaussian posteriors, data consistency, scaling."""

import math

import pytest
import torch

from mriprior.errors import InputError
from mriprior.physics.fft import fft2c, ifft2c
from mriprior.physics.phantom import birdcage_maps
from mriprior.physics.sense import Sense
from mriprior.recon.posterior import (credibility_map, fast_posterior, interval_radius,
                                      langevin_posterior, prior_pics, summarise)
from mriprior.recon.priors import DiffusionPrior, GaussianPrior


def _crandn(shape, g):
    return torch.complex(torch.randn(shape, generator=g), torch.randn(shape, generator=g))


def _gaussian_problem(n=16, v=0.5, nv=0.25, frac=0.4, seed=1):
    """Single-coil problem y = M F x + n with x ~ N(0, v), n ~ N(0, nv) per component."""
    g = torch.Generator().manual_seed(seed)
    mask = (torch.rand(n, n, generator=g) < frac).float()
    x = _crandn((1, n, n), g) * math.sqrt(v)
    maps = torch.ones(1, 1, n, n, dtype=torch.complex64)
    y = (fft2c(x[:, None]) + _crandn((1, 1, n, n), g) * math.sqrt(nv)) * mask
    return y.to(torch.complex64), maps, mask


def _closed_form(y, mask, v, nv):
    """Posterior mean image and mean pixel variance (complex, E|e|^2) for the problem above:
    the orthonormal FFT keeps the prior white, so the posterior is diagonal in k-space."""
    k = y[:, 0]
    mean = ifft2c(k * (v / (v + nv)) * mask)
    var_k = torch.where(mask > 0, torch.tensor(v * nv / (v + nv)), torch.tensor(v))
    return mean, float(2 * var_k.mean())


def test_exact_langevin_matches_gaussian_posterior():
    v, nv, s_last, chains = 0.5, 0.25, 0.5, 256
    y, maps, mask = _gaussian_problem(v=v, nv=nv)
    prior = GaussianPrior(0.0, v, sigma_min=s_last, sigma_max=1.0)
    r = langevin_posterior(y, maps, prior, mask=mask, chains=chains, n_levels=2, skip=0,
                           steps=200, noise_var=nv, step_size=0.3, scaling=None, seed=0,
                           tweedie=False)
    # Without the final Tweedie step the chains sample p_{s_N}(x) p(y|x): prior N(0, v + s_N^2).
    mean, var = _closed_form(y, mask, v + s_last ** 2, nv)
    mc = math.sqrt(var / chains)  # expected rms Monte-Carlo error of the chain mean
    rms = float((r.mmse - mean).abs().square().mean().sqrt())
    assert rms < 1.3 * mc, (rms, mc)
    assert abs(float(r.var.mean()) / var - 1) < 0.05  # discretisation bias ~ a c / 4 ~ 1.5 %
    assert r.mmse.shape == (1, 16, 16) and r.std.shape == (1, 16, 16)
    assert torch.allclose(r.std, r.var.sqrt())


def test_summarise_and_interval():
    g = torch.Generator().manual_seed(0)
    s = _crandn((2, 4000, 3), g) * 0.7 + 1.0
    mmse, var, std = summarise(s)
    assert torch.allclose(mmse, torch.ones_like(mmse), atol=0.05)
    assert torch.allclose(var, torch.full_like(var, 2 * 0.49), rtol=0.06)
    # A circular complex Gaussian error falls inside the 90 % radius 90 % of the time.
    e = _crandn((200000,), g) / math.sqrt(2)  # E|e|^2 = 1
    inside = (e.abs() <= interval_radius(torch.tensor(1.0), 0.9)).float().mean()
    assert abs(float(inside) - 0.9) < 0.005
    ratio, flagged = credibility_map(torch.tensor([[1.0, 0.5, 0.01]]),
                                     torch.tensor([[0.01, 0.5, 0.5]]), rel=0.2)
    assert flagged.tolist() == [[False, True, False]]  # the last pixel is outside the object
    assert ratio.shape == (1, 3)
    with pytest.raises(InputError):
        interval_radius(torch.tensor(1.0), 1.5)
    with pytest.raises(InputError, match="at least 2 chains"):
        interval_radius(torch.tensor(1.0), 0.9, chains=1)


@pytest.mark.parametrize("chains", [2, 4, 8])
def test_interval_from_few_chains_covers_the_truth_at_its_level(chains):
    """A perfect sampler: the truth and the chains are iid draws of the same complex Gaussian
    per pixel. The mean of the chains misses the truth by more than the known-variance radius
    (4 chains: 76 % coverage, not 90 %); the radius for n chains covers 90 %."""
    g = torch.Generator().manual_seed(chains)
    n = 200000
    truth = _crandn((n,), g) * 0.3
    samples = _crandn((1, chains, n), g) * 0.3
    mmse, _, std = summarise(samples)
    err = (mmse[0] - truth).abs()
    covered = float((err <= interval_radius(std[0], 0.9, chains)).float().mean())
    assert abs(covered - 0.9) < 0.005
    naive = float((err <= interval_radius(std[0], 0.9)).float().mean())
    expected = 1 - (1 + math.log(10) / (chains - 1) / (1 + 1 / chains)) ** (1 - chains)
    assert abs(naive - expected) < 0.005 and naive < 0.86


def _multicoil(n=32, coils=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    maps = birdcage_maps(coils, (n, n), normalize="rss")[None]
    x = _crandn((1, n, n), g) * 0.3
    mask = (torch.rand(n, n, generator=g) < 0.35).float()
    mask[n // 2 - 3: n // 2 + 3, n // 2 - 3: n // 2 + 3] = 1
    y = Sense(maps, mask).forward(x.to(torch.complex64))
    return y, maps, mask, x


def test_fast_sampler_is_data_consistent():
    y, maps, mask, _ = _multicoil()
    prior = GaussianPrior(0.0, 10.0, sigma_min=0.01, sigma_max=1.0)  # weak prior
    r = fast_posterior(y, maps, prior, mask=mask, chains=3, nfe=8, cg_iters=50, scaling=None,
                       keep_samples=True)
    assert r.nfe == 8 and r.samples.shape == (1, 3, 32, 32)
    for j in range(3):
        res = Sense(maps, mask).forward(r.samples[:, j]) - y
        assert float(res.norm() / y.norm()) < 1e-3 * 3


def test_fast_sampler_noise_var_weighs_data_against_the_denoiser():
    """``noise_var``: data consistency solves (A^H A + nv / s^2) d = A^H y + nv / s^2 D: the
    plain CG step as nv -> 0, the denoised image itself (no data step) as nv -> infinity."""
    y, maps, mask, _ = _multicoil()
    prior = GaussianPrior(0.0, 0.1, sigma_min=0.05, sigma_max=1.0)  # a prior that pulls
    kw = dict(mask=mask, chains=2, nfe=4, scaling=None, seed=3)
    plain = fast_posterior(y, maps, prior, cg_iters=20, **kw).mmse
    no_data = fast_posterior(y, maps, prior, cg_iters=0, **kw).mmse
    tiny = fast_posterior(y, maps, prior, cg_iters=20, noise_var=1e-12, **kw).mmse
    huge = fast_posterior(y, maps, prior, cg_iters=20, noise_var=1e12, **kw).mmse
    mid = fast_posterior(y, maps, prior, cg_iters=20, noise_var=0.05, **kw).mmse
    torch.testing.assert_close(tiny, plain, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(huge, no_data, rtol=1e-4, atol=1e-4)
    res = lambda x: float((Sense(maps, mask).forward(x) - y).norm() / y.norm())  # noqa: E731
    assert res(plain) < res(mid) < res(no_data)
    with pytest.raises(InputError, match="noise_var"):
        fast_posterior(y, maps, prior, noise_var=-1.0, **kw)


def test_algorithm1_approaches_the_data():
    y, maps, mask, _ = _multicoil()
    prior = GaussianPrior(0.0, 10.0, sigma_min=0.01, sigma_max=1.0)
    r = langevin_posterior(y, maps, prior, mask=mask, chains=2, n_levels=30, skip=5, steps=3,
                           lam=20.0, scaling="cg", seed=0)
    assert r.nfe == 25 * 3
    # Algorithm 1 weights the data term by lam * tau_i, which vanishes at the last level: the
    # result is close to the data, not exactly consistent (the fast sampler is, see above).
    res = Sense(maps, mask).forward(r.mmse) - y
    assert float(res.norm() / y.norm()) < 0.15


@pytest.mark.parametrize("method", ["langevin", "fast", "pics"])
def test_scale_equivariance(method):
    y, maps, mask, _ = _multicoil(n=24)
    prior = GaussianPrior(0.0, 0.1, sigma_min=0.01, sigma_max=1.0)

    def run(k):
        if method == "langevin":
            r = langevin_posterior(k, maps, prior, mask=mask, chains=2, n_levels=10, skip=2,
                                   steps=2, seed=3)
            return r.mmse, r.std
        if method == "fast":
            r = fast_posterior(k, maps, prior, mask=mask, chains=2, nfe=5, seed=3)
            return r.mmse, r.std
        return prior_pics(k, maps, prior, lam=0.3, max_iter=10, mask=mask)[0], None

    c = 37.5
    a, sa = run(y)
    b, sb = run(y * c)
    assert torch.allclose(b, c * a, rtol=1e-4, atol=1e-5 * c * float(a.abs().max()))
    if sa is not None:
        assert torch.allclose(sb, c * sa, rtol=1e-3, atol=1e-5 * c * float(sa.max()))


def test_chains_differ_and_batches_are_independent():
    y, maps, mask, _ = _multicoil(n=24)
    prior = GaussianPrior(0.0, 0.1, sigma_min=0.01, sigma_max=1.0)
    r = fast_posterior(y, maps, prior, mask=mask, chains=3, nfe=4, keep_samples=True, seed=0)
    s = r.samples[0]
    assert float((s[0] - s[1]).abs().max()) > 0  # each chain from its own start
    assert float(r.std.max()) > 0
    y2 = torch.cat([y, 2 * y])
    r2 = fast_posterior(y2, maps, prior, mask=mask, chains=3, nfe=4, seed=0)
    assert r2.mmse.shape == (2, 24, 24)
    # one seed for the batch: the second slice, the first scaled by 2, gets the same chains
    assert torch.allclose(r2.mmse[1], 2 * r2.mmse[0], rtol=1e-4, atol=1e-6)
    # a slice's result depends on its data and seed only, not on the slices batched with it
    for method in (fast_posterior, langevin_posterior):
        kw = dict(mask=mask, chains=2, seed=[5, 7])
        kw.update(nfe=3) if method is fast_posterior else kw.update(n_levels=6, skip=2, steps=1)
        both = method(torch.cat([y, 3 * y.flip(-1)]), maps, prior, **kw).mmse
        kw["seed"] = 7
        alone = method(3 * y.flip(-1), maps, prior, **kw).mmse
        assert torch.allclose(both[1], alone[0], rtol=1e-4, atol=1e-6), method.__name__


def test_prior_pics_reaches_the_gaussian_map_and_decreases_its_objective():
    y, maps, mask, _ = _multicoil(n=24)
    v, lam = 0.05, 0.5
    prior = GaussianPrior(0.0, v)  # reg_grad = grad NLL = x / v
    op = Sense(maps, mask)
    # Closed form: (A^H A + lam / v) x = A^H y (exact by long CG).
    from mriprior.recon.solvers import conjugate_gradient
    x_star = conjugate_gradient(op.normal, op.adjoint(y), max_iter=300, lam=lam / v)

    def objective(x):
        return float(0.5 * (op.forward(x) - y).abs().square().sum()
                     + lam * prior.nll(x).sum())

    trace = []
    calls = []
    x, scale = prior_pics(y, maps, prior, lam=lam, max_iter=150, mask=mask, scaling=None,
                          callback=lambda it, n: calls.append((it, n)))
    assert calls[-1] == (150, 150)
    assert float(scale) == 1.0
    assert float((x - x_star).norm() / x_star.norm()) < 1e-3
    for it in (1, 5, 20, 150):
        xi, _ = prior_pics(y, maps, prior, lam=lam, max_iter=it, mask=mask, scaling=None)
        trace.append(objective(xi))
    assert trace[-1] <= min(trace) + 1e-6 * abs(trace[-1])
    assert trace[0] > trace[-1]
    assert abs(trace[-1] - objective(x_star)) < 1e-5 * abs(objective(x_star))


def test_prior_pics_anneals_the_denoiser_level_and_ends_at_the_plain_minimiser():
    y, maps, mask, _ = _multicoil(n=24)
    v, lam, s = 0.05, 0.5, 0.2

    class Recording(GaussianPrior):
        def score(self, x, sigma):
            levels.append(sigma)
            return super().score(x, sigma)

    levels: list = []
    prior = Recording(0.0, v, reg_sigma=s)  # reg_grad = s^2 x / (v + s^2): a quadratic
    op = Sense(maps, mask)
    from mriprior.recon.solvers import conjugate_gradient
    x_star = conjugate_gradient(op.normal, op.adjoint(y), max_iter=300,
                                lam=lam * s * s / (v + s * s))
    x, _ = prior_pics(y, maps, prior, lam=lam, max_iter=150, mask=mask, scaling=None,
                      anneal_sigma=2.0, anneal_iters=20)
    assert float((x - x_star).norm() / x_star.norm()) < 1e-3  # the annealing is transient
    expect = [2.0 * (s / 2.0) ** (k / 20) for k in range(20)] + [s] * 130
    assert levels == pytest.approx(expect, rel=1e-12)
    levels.clear()  # anneal_sigma = reg_sigma is plain PICS, exactly
    a = prior_pics(y, maps, prior, lam=lam, max_iter=7, mask=mask, anneal_sigma=s)[0]
    b = prior_pics(y, maps, prior, lam=lam, max_iter=7, mask=mask)[0]
    assert torch.equal(a, b) and levels == [s] * 14
    early = prior_pics(y, maps, prior, lam=lam, max_iter=5, mask=mask, anneal_sigma=2.0)[0]
    assert not torch.allclose(early, prior_pics(y, maps, prior, lam=lam, max_iter=5,
                                                mask=mask)[0], rtol=1e-3)
    with pytest.raises(InputError, match="anneal_sigma needs a prior with a score"):
        prior_pics(y, maps, GaussianPrior(0.0, v), lam=lam, max_iter=2, anneal_sigma=0.1)
    for bad in ({"anneal_sigma": -0.1}, {"anneal_sigma": 0.1, "anneal_iters": 0}):
        with pytest.raises(InputError, match="anneal_sigma > 0 and anneal_iters >= 1"):
            prior_pics(y, maps, prior, lam=lam, max_iter=2, **bad)


def test_prior_pics_wavelet_term_is_bart_l1_pics_when_the_prior_is_off():
    """The second regulariser: with the prior's weight 0 (and no support projection), prior
    PICS with ``wavelet=w`` runs BART's l1-wavelet FISTA (same step, same cycle spinning) and
    equals classical ``pics -l1 -r w``; with both terms the image lies between."""
    from mriprior.recon.classical import pics
    y, maps, mask, _ = _multicoil(n=32)
    prior = GaussianPrior(0.0, 0.05)
    w = 0.02
    x, _ = prior_pics(y, maps, prior, lam=0.0, wavelet=w, max_iter=30, mask=mask, scaling=None,
                      support=False)
    ref, _ = pics(y, maps[:, None], "l1", w, 30, mask=mask, scaling=None)
    assert float((x - ref[:, 0]).norm() / ref.norm()) < 1e-5
    both, _ = prior_pics(y, maps, prior, lam=0.5, wavelet=w, max_iter=30, mask=mask,
                         scaling=None, support=False)
    only, _ = prior_pics(y, maps, prior, lam=0.5, max_iter=30, mask=mask, scaling=None,
                         support=False)
    assert float((both - only).norm()) > 1e-3 * float(only.norm())
    assert float(both.norm()) < float(only.norm())  # the l1 term shrinks further
    with pytest.raises(InputError, match="wavelet >= 0"):
        prior_pics(y, maps, prior, wavelet=-1.0)


def _tiny_prior(in_channels=2):
    from mriprior.priors.networks import ScoreUNet
    torch.manual_seed(0)
    net = ScoreUNet(in_channels=in_channels, base_channels=8, channel_mults=(1, 2),
                    num_res_blocks=1, attention_levels=())
    meta = {"parametrisation": "score", "diffusion": {"type": "ve", "sigma_min": 0.01,
                                                      "sigma_max": 1.0}}
    return DiffusionPrior(net, meta)


@pytest.mark.parametrize("channels", [2, 1])
def test_diffusion_prior_any_size_and_maps(channels):
    prior = _tiny_prior(channels)
    x = torch.randn(2, 2, 11, 13, dtype=torch.complex64)  # (batch, maps, y, x), odd size
    s = prior.score(x, 0.1)
    assert s.shape == x.shape and s.dtype == x.dtype and prior.nfe == 1
    # maps are independent images: scoring one map alone gives the same values
    s0 = prior.score(x[:, 0], 0.1)
    assert torch.allclose(s[:, 0], s0, atol=1e-5)
    g = prior.reg_grad(x[:, 0])
    s_r = prior.score(x[:, 0], prior.reg_sigma)
    assert torch.allclose(g, -(prior.reg_sigma ** 2) * s_r, atol=1e-6)


def test_input_errors():
    y, maps, mask, _ = _multicoil(n=16)
    prior = GaussianPrior()
    with pytest.raises(InputError, match="coil maps"):
        fast_posterior(y, maps[..., :8], prior, mask=mask)
    with pytest.raises(InputError, match="mask"):
        fast_posterior(y, maps, prior, mask=mask[:8])
    with pytest.raises(InputError, match="k-space"):
        fast_posterior(y.real, maps, prior, mask=mask)
    with pytest.raises(InputError, match="chains"):
        langevin_posterior(y, maps, prior, mask=mask, chains=0)
    with pytest.raises(InputError, match="scaling"):
        prior_pics(y, maps, prior, mask=mask, scaling="max")


@pytest.mark.parametrize("channels", [2, 1])
def test_pixelcnn_prior_gradient_and_pics(channels, tmp_path):
    from mriprior.priors.export import save_prior
    from mriprior.priors.pixelcnn import PixelCNNPP, likelihood_meta
    from mriprior.recon.priors import load_image_prior

    torch.manual_seed(0)
    net = PixelCNNPP(in_channels=channels, filters=8, n_resnet=1, n_mix=2, n_levels=2,
                     dropout=0.0)
    save_prior(tmp_path / "pcnn", net, {"network": net.config, **likelihood_meta(channels),
                                         "data": {"channels": "complex" if channels == 2
                                                  else "magnitude"}})
    prior = load_image_prior(tmp_path / "pcnn")
    assert prior.sigma_max is None
    g = torch.Generator().manual_seed(1)
    x = (_crandn((1, 8, 8), g) * 0.3).to(torch.complex128)
    prior.net.double()
    d = _crandn((1, 8, 8), g).to(torch.complex128)
    grad = prior.reg_grad(x)
    eps = 1e-6
    with torch.no_grad():
        fd = (prior.nll(x + eps * d) - prior.nll(x - eps * d)) / (2 * eps)
    # directional derivative of a real function of a complex image: Re <grad, d>
    assert abs(float(fd) - float((grad.conj() * d).real.sum())) < 1e-4 * max(1.0, abs(float(fd)))
    prior.net.float()
    y, maps, mask, _ = _multicoil(n=16)
    xr, _ = prior_pics(y, maps, prior, lam=1e-4, max_iter=3, mask=mask)
    assert xr.shape == (1, 16, 16) and torch.isfinite(xr).all()
    with pytest.raises(NotImplementedError):
        prior.score(x.to(torch.complex64), 0.1)  # no noise levels: samplers cannot use it


@pytest.mark.parametrize("method", ["fast", "langevin", "exact", "pics"])
def test_image_stays_inside_the_coil_support(method):
    """ESPIRiT crops its maps to the object: where every map is 0 nothing is measured, so the
    result is 0 there (as BART's pics) unless ``support=False``, where the prior fills it in."""
    y, maps, mask, x = _multicoil()
    yy, xx = torch.meshgrid(torch.arange(32), torch.arange(32), indexing="ij")
    inside = ((yy - 16) ** 2 + (xx - 16) ** 2) < 11 ** 2
    maps = maps * inside
    y = Sense(maps, mask).forward((x * inside).to(torch.complex64))
    # (a non-zero prior mean, so that prior PICS has something to fill in outside)
    prior = GaussianPrior(0.2, 0.1, sigma_min=0.01, sigma_max=1.0)
    outs = []
    for support in (True, False):
        kw = dict(mask=mask, scaling=None, support=support)
        if method == "fast":
            img = fast_posterior(y, maps, prior, chains=2, nfe=6, **kw).mmse
        elif method == "langevin":
            img = langevin_posterior(y, maps, prior, chains=2, n_levels=12, skip=2, steps=2,
                                     **kw).mmse
        elif method == "exact":
            img = langevin_posterior(y, maps, prior, chains=2, n_levels=6, skip=0, steps=5,
                                     noise_var=1e-2, **kw).mmse
        else:
            img = prior_pics(y, maps, prior, lam=0.5, max_iter=20, **kw)[0]
        outs.append(img)
    on, off = outs
    assert float(on[:, ~inside].abs().max()) == 0.0
    assert float(off[:, ~inside].abs().max()) > 1e-3  # the restriction is what zeroes it
    assert float(on[:, inside].abs().mean()) > 0.05  # and the object is still reconstructed


def test_real_case_uncertainty_is_gauge_and_scale_free():
    """The real-slice protocol (magnitudes, reference of unknown scale and coil-map phase gauge):
    a perfect sampler covers its 90 % magnitude interval ~90 % of the time whatever the
    reference's scale and smooth phase (a complex least-squares scale would be shrunk by the
    phase mismatch and make every error look large)."""
    from types import SimpleNamespace

    from mriprior.experiments.recon_cases import uncertainty

    g = torch.Generator().manual_seed(5)
    n, chains = 96, 4
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, n), torch.linspace(-1, 1, n), indexing="ij")
    mu = (1.0 + 0.5 * torch.cos(3 * xx) * torch.sin(2 * yy)).to(torch.complex64)[None]
    truth = mu + 0.02 * _crandn((1, n, n), g)
    samples = mu[:, None] + 0.02 * _crandn((1, chains, n, n), g)
    mmse, _, std = summarise(samples)
    gauge = torch.exp(1j * (2.5 * xx + 1.5 * yy * yy)).to(torch.complex64)  # other maps' phase
    ksp = 1e-4 * _crandn((1, 4, n, n), g)  # the reference's noise: negligible here
    case = {"ref": 3.0 * truth * gauge, "scale": "lsq", "ksp": ksp,
            "mask": torch.ones(1, 1, n, n)}
    u = uncertainty(case, SimpleNamespace(mmse=mmse, std=std, samples=samples))
    assert u["error"] == "magnitude" and u["chains"] == chains
    assert 0.87 < u["coverage90"] < 0.93, u


def test_simulated_case_calibrated_uncertainty():
    """A sampler whose chains are 3 x too narrow: its F-interval covers far less than 90 %; the
    calibration fitted on one such case (recon.calibration) covers ~90 % on another, and the
    calibrated map's statistics are reported beside the chains' own."""
    from types import SimpleNamespace

    from mriprior.experiments.recon_cases import complex_error, uncertainty
    from mriprior.recon.calibration import fit_scale

    n, chains = 96, 4
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, n), torch.linspace(-1, 1, n), indexing="ij")
    mu = (1.0 + 0.5 * torch.cos(3 * xx) * torch.sin(2 * yy)).to(torch.complex64)[None]
    width = (0.01 + 0.03 * (xx + 1) / 2)[None]  # the posterior std varies across the image

    def draw(seed):
        g = torch.Generator().manual_seed(seed)
        truth = mu + width * _crandn((1, n, n), g)
        samples = mu[:, None] + width[:, None] / 3 * _crandn((1, chains, n, n), g)
        mmse, _, std = summarise(samples)
        return ({"ref": truth, "scale": "none"},
                SimpleNamespace(mmse=mmse, std=std, samples=samples))

    val, test = draw(1), draw(2)
    err, inside = complex_error(*val)
    cal = {"scale": fit_scale([err], [val[1].std], [inside], 0.9, pool=5), "pool": 5}
    u = uncertainty(*test, cal)
    assert u["coverage90"] < 0.5, u
    assert 0.86 < u["coverage90_calibrated"] < 0.94, u
    assert u["spearman_calibrated"] > u["spearman_std_err"], u  # pooling: a less noisy map
    assert "coverage90_calibrated" not in uncertainty(*test)


def test_method_defaults_are_the_functions_own():
    """`mriprior recon`'s defaults come from the library: each function's keyword defaults,
    except the fast sampler's measured-data noise model ("auto")."""
    import inspect

    from mriprior.recon.posterior import method_defaults

    for method, fn in (("fast", fast_posterior), ("langevin", langevin_posterior),
                       ("pics", prior_pics)):
        d = method_defaults(method)
        for name, p in inspect.signature(fn).parameters.items():
            if p.default is not inspect.Parameter.empty and not (method, name) == (
                    "fast", "noise_var"):
                assert d[name] == p.default, (method, name)
    assert method_defaults("fast")["noise_var"] == "auto"
    with pytest.raises(InputError, match="method must be one of"):
        method_defaults("admm")


def test_fast_sampler_draws_sample_the_gaussian_posterior():
    """``draws``: every step draws from its data step's Gaussian posterior (perturb-and-MAP) and
    renoises with fresh noise; for a Gaussian prior and likelihood the chains then have the
    posterior's variance and mean (the means-only chains are much narrower)."""
    v, nv = 0.5, 0.25
    y, maps, mask = _gaussian_problem(n=16, v=v, nv=nv)
    mean, var = _closed_form(y, mask, v, nv)
    prior = GaussianPrior(0.0, v, sigma_min=0.01, sigma_max=3.0)
    kw = dict(mask=mask, chains=64, nfe=10, noise_var=nv, scaling=None, cg_iters=30, seed=1)
    r = fast_posterior(y, maps, prior, draws=True, **kw)
    assert 0.9 < float(r.var.mean()) / var < 1.1
    # the mean of 64 draws: Monte Carlo error var / 64 (1.6 % of var), no bias beyond it
    assert float((r.mmse - mean).abs().square().mean()) / var < 0.03
    means_only = fast_posterior(y, maps, prior, eta=1.0, **kw)
    assert float(means_only.var.mean()) / var < 0.6
    with pytest.raises(InputError, match="draws needs noise_var"):
        fast_posterior(y, maps, prior, draws=True, **{**kw, "noise_var": None})


def test_local_variance_from_the_measured_denoising_error(tmp_path):
    """The draws' local variance: the sidecar's held-out denoising loss (log-log interpolated,
    held at its ends, at most sigma^2), else the Gaussian-data value from sigma_data."""
    from mriprior.priors.export import load_prior, read_sidecar, save_prior, set_denoising_error
    from mriprior.priors.networks import network_from_config

    torch.manual_seed(0)
    net = network_from_config({"type": "unet", "base_channels": 8, "channel_mults": [1, 2],
                               "num_res_blocks": 1, "attention_levels": []})
    meta = {"network": net.config, "parametrisation": "edm",
            "diffusion": {"type": "edm", "sigma_data": 0.3, "sigma_min": 0.01, "sigma_max": 1.0,
                          "p_mean": -3.0, "p_std": 1.4},
            "data": {"channels": "complex"}}
    save_prior(tmp_path / "p", net, meta)
    prior = DiffusionPrior(*load_prior(tmp_path / "p"))
    assert math.isclose(prior.local_variance(0.3), 0.09 * 0.09 / 0.18)  # Gaussian data, sd 0.3
    set_denoising_error(tmp_path / "p", [0.01, 0.1, 1.0], [0.4, 0.1, 0.02], "test")
    assert read_sidecar(tmp_path / "p")["denoising_error"]["loss"] == [0.4, 0.1, 0.02]
    prior = DiffusionPrior(*load_prior(tmp_path / "p"))
    assert math.isclose(prior.local_variance(0.1), 0.01 * 0.1)
    assert math.isclose(prior.local_variance(math.sqrt(0.1)), 0.1 * math.sqrt(0.1 * 0.02))
    assert math.isclose(prior.local_variance(0.001), 1e-6 * 0.4)  # held at the ends
    with pytest.raises(InputError, match="denoising_error"):
        set_denoising_error(tmp_path / "p", [0.1, 0.01], [0.4, 0.1], "test")

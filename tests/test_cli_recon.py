"""mriprior recon on BART cfl files: outputs, layouts, scaling, errors."""

import numpy as np
import pytest
import torch

from mriprior.cli.main import main
from mriprior.errors import InputError
from mriprior.io.cfl import read_cfl, write_cfl
from mriprior.physics.phantom import birdcage_maps, shepp_logan
from mriprior.physics.sense import Sense
from mriprior.priors.export import save_prior
from mriprior.priors.networks import network_from_preset


@pytest.fixture(scope="module")
def case(tmp_path_factory):
    d = tmp_path_factory.mktemp("recon")
    torch.manual_seed(0)
    net = network_from_preset("cpu-small", in_channels=2, base_channels=8, channel_mults=[1, 2],
                              attention_levels=[])
    save_prior(d / "prior", net, {"network": net.config, "parametrisation": "score",
                                  "diffusion": {"type": "ve", "sigma_min": 0.01,
                                                "sigma_max": 1.0},
                                  "data": {"channels": "complex"}})
    n = 24
    img = shepp_logan(n).to(torch.complex64)[None]
    maps = birdcage_maps(4, (n, n), normalize="rss")[None]
    g = torch.Generator().manual_seed(0)
    mask = (torch.rand(n, n, generator=g) < 0.4).float()
    mask[n // 2 - 4: n // 2 + 4, n // 2 - 4: n // 2 + 4] = 1
    ksp = Sense(maps, mask).forward(img)[0].numpy()  # (coil, y, x)
    # BART layout: x y z coil [maps]; our y = BART dim 1, x = BART dim 0.
    write_cfl(d / "ksp", ksp.transpose(2, 1, 0)[:, :, None, :])
    write_cfl(d / "sens", maps[0].numpy().transpose(2, 1, 0)[:, :, None, :, None])
    return d


def _copy_prior(case, dst):
    """A copy of the case's prior at ``dst`` (NAME), whose sidecar a test may rewrite."""
    import shutil

    for ext in (".safetensors", ".json"):
        shutil.copy(case / f"prior{ext}", dst.with_name(dst.name + ext))
    return dst


def _run(case, *args):
    """``args`` ends with the output path."""
    return main(["recon", "--prior", str(case / "prior"), "--quiet", *args[:-1],
                 str(case / "ksp"), str(case / "sens"), args[-1]])


def test_fast_writes_mmse_std_samples_flag(case):
    out = case / "fast"
    rc = _run(case, "--chains", "3", "--nfe", "4", "--std", str(case / "std"),
              "--samples", str(case / "samples"), "--var", str(case / "var"),
              "--flag", str(case / "flag"), str(out))
    assert rc == 0
    mmse = read_cfl(out)
    assert mmse.shape == (24, 24)  # x y (trailing singleton dims are not stored)
    assert np.isfinite(mmse).all() and np.abs(mmse).max() > 0
    std, var = read_cfl(case / "std"), read_cfl(case / "var")
    assert np.allclose(np.abs(std) ** 2, var.real, rtol=1e-4, atol=1e-10)
    samples = read_cfl(case / "samples")
    assert samples.shape == (24, 24, 1, 1, 1, 3)  # chains along BART dim 5
    assert np.allclose(samples.reshape(24, 24, 3).mean(-1), mmse.reshape(24, 24), atol=1e-5)
    flag = read_cfl(case / "flag")
    assert set(np.unique(flag.real)) <= {0.0, 1.0}


def test_scaling_the_data_scales_the_result(case):
    _run(case, "--chains", "2", "--nfe", "3", str(case / "a"))
    k = read_cfl(case / "ksp")
    write_cfl(case / "ksp2", 5.0 * k)
    main(["recon", "--prior", str(case / "prior"), "--quiet", "--chains", "2", "--nfe", "3",
          str(case / "ksp2"), str(case / "sens"), str(case / "b")])
    a, b = read_cfl(case / "a"), read_cfl(case / "b")
    assert np.allclose(b, 5.0 * a, rtol=1e-4, atol=1e-5 * np.abs(b).max())


@pytest.mark.parametrize("method,extra", [("langevin", ["--levels", "6", "--skip", "2",
                                                        "--steps", "1", "--chains", "2"]),
                                          ("pics", ["-i", "5", "--lam", "0.3"]),
                                          ("fast", ["--draws", "--chains", "2", "--nfe", "3"])])
def test_other_methods(case, method, extra):
    out = case / method
    assert _run(case, "--method", method, *extra, str(out)) == 0
    x = read_cfl(out)
    assert x.shape == (24, 24) and np.isfinite(x).all()


def test_errors_are_one_line(case, capsys, tmp_path):
    assert main(["recon", "--prior", str(tmp_path / "missing"), str(case / "ksp"),
                 str(case / "sens"), str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "missing" in err[0]
    write_cfl(tmp_path / "sens3", read_cfl(case / "sens")[:, :, :, :3])
    assert main(["recon", "--prior", str(case / "prior"), str(case / "ksp"),
                 str(tmp_path / "sens3"), str(tmp_path / "o")]) == 2
    assert "coils" in capsys.readouterr().err
    assert _run(case, "--scaling", "-1", str(tmp_path / "o")) == 2
    assert not (tmp_path / "o.cfl").exists()
    # An option of another method is refused, not silently ignored.
    capsys.readouterr()
    for args, opt in ((("--method", "langevin", "--flips"), "--flips"),
                      (("--method", "pics", "--nfe", "3"), "--nfe"),
                      (("--method", "fast", "-i", "3"), "-i"),
                      (("--method", "fast", "--anneal-sigma", "0.1"), "--anneal-sigma")):
        assert _run(case, *args, str(tmp_path / "o")) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and f"{opt}: not an option of --method {args[1]}" in err[0], err
    assert not (tmp_path / "o.cfl").exists()


def test_sidecar_recon_defaults_are_used_unless_overridden(case, tmp_path, capsys):
    """Settings tuned for a prior (its sidecar's recon_defaults) fill in what the command line
    leaves out; given options win; the values used are printed."""
    from mriprior.priors.export import set_recon_defaults

    _copy_prior(case, tmp_path / "tuned")
    set_recon_defaults(tmp_path / "tuned", {"fast": {"sigma_start": 0.3, "nfe": 3, "chains": 2},
                                            "pics": {"lam": 0.125, "iters": 4,
                                                     "wavelet": 0.002, "flips": True},
                                            "tuned_on": "test"})
    with pytest.raises(InputError, match="recon_defaults.fast.nfe"):
        set_recon_defaults(tmp_path / "tuned", {"fast": {"nfe": 0}})
    with pytest.raises(InputError, match="recon_defaults.pics.flips"):
        set_recon_defaults(tmp_path / "tuned", {"pics": {"flips": "yes"}})

    def run(*args):
        capsys.readouterr()
        rc = main(["recon", "--prior", str(tmp_path / "tuned"), "--quiet", *args,
                   str(case / "ksp"), str(case / "sens"), str(tmp_path / "out")])
        return rc, capsys.readouterr().err

    rc, err = run()
    assert rc == 0 and ("fast (chains 2, nfe 3, sigma_start 0.3, eta 0.85, cg_iters 5, "
                        "noise_var auto, draws False, flips False)") in err
    assert "3 network evaluations" in err
    rc, err = run("--flips")  # four evaluations per step
    assert rc == 0 and "flips True" in err and "12 network evaluations" in err
    rc, err = run("--nfe", "2")
    assert rc == 0 and "nfe 2" in err and "sigma_start 0.3" in err
    rc, err = run("--method", "pics")
    assert rc == 0 and "pics (lam 0.125, max_iter 4, wavelet 0.002, flips True)" in err
    assert "16 network evaluations" in err
    rc, err = run("--method", "pics", "--wavelet", "0", "--no-flips")
    assert rc == 0 and "pics (lam 0.125, max_iter 4, wavelet 0, flips False)" in err
    assert "4 network evaluations" in err
    rc, err = run("--method", "pics", "--wavelet", "-1")
    assert rc == 2 and "--wavelet must be >= 0" in err
    rc, err = run("--method", "pics", "--anneal-sigma", "0.5", "--anneal-iters", "2")
    assert rc == 0 and "flips True, anneal_sigma 0.5, anneal_iters 2)" in err
    rc, err = run("--method", "pics", "--anneal-sigma", "0")
    assert rc == 2 and "--anneal-sigma must be > 0" in err
    rc, err = run("--method", "pics", "--anneal-sigma", "0.5", "--anneal-iters", "0")
    assert rc == 2 and "--anneal-iters must be an integer >= 1" in err
    rc, err = run("--method", "pics", "--anneal-iters", "5")  # nothing to anneal from
    assert rc == 2 and "--anneal-iters needs --anneal-sigma" in err
    rc, err = run("--method", "langevin", "--levels", "4", "--skip", "0", "--steps", "1")
    assert rc == 0 and "langevin (chains 10, n_levels 4, skip 0, steps 1, lam 20)" in err  # library's
    rc, err = run("--chains", "0")
    assert rc == 2 and "--chains must be an integer >= 1" in err
    rc, err = run("--batch", "0")
    assert rc == 2 and "--batch must be >= 1" in err


def test_line_sampling_takes_the_settings_tuned_on_1d(case, tmp_path, capsys):
    """A 1D (line) pattern takes the sidecar's "1d" settings; a 2D one the others."""
    from mriprior.priors.export import set_recon_defaults

    _copy_prior(case, tmp_path / "tuned")
    set_recon_defaults(tmp_path / "tuned", {"pics": {"lam": 0.125, "iters": 3, "1d": {
        "lam": 0.5, "iters": 2, "anneal_sigma": 0.25, "anneal_iters": 1}}})
    for bad in ({"iters": 0}, {"anneal_sigma": 0.0}, {"anneal_iters": 0}):
        with pytest.raises(InputError, match=rf"recon_defaults.pics.1d.{next(iter(bad))}"):
            set_recon_defaults(tmp_path / "tuned", {"pics": {"1d": bad}})
    lines = np.zeros((24, 24), np.complex64)
    lines[::2] = 1  # every other phase-encode line (y), readout x full
    write_cfl(tmp_path / "pat1d", lines.T[:, :, None])  # BART x y z
    for pattern, expected in ((None, "pics (lam 0.125, max_iter 3, wavelet 0, flips False), "
                                     "2D pattern"),
                              ("pat1d", "pics (lam 0.5, max_iter 2, wavelet 0, flips False, "
                                        "anneal_sigma 0.25, anneal_iters 1), 1D pattern")):
        capsys.readouterr()
        extra = ["-p", str(tmp_path / pattern)] if pattern else []
        assert main(["recon", "--prior", str(tmp_path / "tuned"), "--quiet", "--method", "pics",
                     *extra, str(case / "ksp"), str(case / "sens"), str(tmp_path / "out")]) == 0
        assert expected in capsys.readouterr().err


def test_noise_var_auto_is_in_the_data_units(case):
    """--noise-var auto estimates the noise from KSP itself: scaling KSP by 5 scales the
    estimate by 25 and the result by 5; a given variance changes the result."""
    k = read_cfl(case / "ksp")
    rng = np.random.default_rng(0)
    noisy = k + (k != 0) * 0.01 * (rng.standard_normal(k.shape) + 1j * rng.standard_normal(k.shape))
    write_cfl(case / "kn", noisy.astype(np.complex64))
    write_cfl(case / "kn5", (5.0 * noisy).astype(np.complex64))
    args = ["recon", "--prior", str(case / "prior"), "--quiet", "--chains", "2", "--nfe", "3"]
    assert main(args + ["--noise-var", "auto", str(case / "kn"), str(case / "sens"),
                        str(case / "na")]) == 0
    assert main(args + ["--noise-var", "auto", str(case / "kn5"), str(case / "sens"),
                        str(case / "na5")]) == 0
    assert main(args + ["--noise-var", "none", str(case / "kn"), str(case / "sens"),
                        str(case / "plain")]) == 0
    a, a5, plain = (read_cfl(case / n) for n in ("na", "na5", "plain"))
    np.testing.assert_allclose(a5, 5 * a, rtol=1e-3, atol=1e-4 * np.abs(a5).max())
    assert np.abs(a - plain).max() > 1e-3 * np.abs(plain).max()


# ============================================================
# uncertainty calibration in the sidecar (mriprior.recon.calibration)

def test_sidecar_checks_the_calibration(case, tmp_path):
    from mriprior.priors.export import read_sidecar, set_recon_defaults
    from mriprior.recon.priors import load_image_prior

    tiny_prior = _copy_prior(case, tmp_path / "p")
    good = {"scale": 1.4, "pool": 5, "level": 0.9, "settings": {"chains": 4},
            "validation": {"scale_poisson": 1.3}, "measured_on": "test"}
    set_recon_defaults(tiny_prior, {"fast": {"chains": 4, "calibration": good}})
    assert read_sidecar(tiny_prior)["recon_defaults"]["fast"]["calibration"] == good
    assert load_image_prior(tiny_prior).recon_defaults["fast"]["calibration"]["scale"] == 1.4
    for bad, match in (({**good, "scale": 0}, "calibration.scale"),
                       ({**good, "pool": 4}, "calibration.pool"),
                       ({**good, "level": 1.0}, "calibration.level"),
                       ({**good, "settings": [4]}, "calibration.settings"),
                       ({**good, "other": 1}, "calibration.other"),
                       ({"pool": 3}, "calibration.scale"),
                       ("1.4", "calibration")):
        with pytest.raises(InputError, match=match):
            set_recon_defaults(tiny_prior, {"fast": {"calibration": bad}})
    with pytest.raises(InputError, match="recon_defaults.pics.calibration"):
        set_recon_defaults(tiny_prior, {"pics": {"calibration": good}})


def test_recon_writes_the_calibrated_std_for_its_settings(case, tmp_path, capsys):
    from mriprior.priors.export import set_recon_defaults
    from mriprior.recon.calibration import calibrated_std

    tiny_prior = _copy_prior(case, tmp_path / "p")
    settings = {"chains": 2, "nfe": 3, "sigma_start": 0.3, "noise_var": "auto", "draws": False,
                "eta": 0.85}
    cal = {"scale": 2.0, "pool": 3, "settings": settings, "measured_on": "test"}
    set_recon_defaults(tiny_prior, {"fast": {"chains": 2, "nfe": 3, "sigma_start": 0.3,
                                             "calibration": cal}})

    def run(*args):
        capsys.readouterr()
        rc = main(["recon", "--prior", str(tiny_prior), "--quiet", *args, str(case / "ksp"),
                   str(case / "sens"), str(tmp_path / "out")])
        return rc, capsys.readouterr().err

    rc, err = run("--std", str(tmp_path / "cal"), "--var", str(tmp_path / "calvar"))
    assert rc == 0 and "calibrated (pool 3, scale 2" in err
    rc, err = run("--raw-std", "--std", str(tmp_path / "raw"))
    assert rc == 0 and "calibrated" not in err
    raw = torch.from_numpy(np.abs(read_cfl(tmp_path / "raw")).T.copy())[None]  # (1, y, x)
    want = calibrated_std(raw, cal)[0].numpy().T
    got = np.abs(read_cfl(tmp_path / "cal"))
    assert np.allclose(got, want, rtol=1e-4, atol=1e-7 * want.max())
    assert np.allclose(read_cfl(tmp_path / "calvar").real, got ** 2, rtol=1e-4,
                       atol=1e-10 * want.max() ** 2)
    rc, err = run("--nfe", "2", "--std", str(tmp_path / "other"))  # other settings: raw, said
    assert rc == 0 and "measured with other sampler settings" in err

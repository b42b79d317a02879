"""Phase augmentation: the magnitude likelihood, the samplers, and the resumable batch job."""

import json
import math
import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from mriprior.augment.job import AugmentSettings, augment_dataset, work_dir
from mriprior.augment.phase import (langevin_phase, magnitude_loss, magnitude_loss_grad,
                                    smooth_phase, zero_phase)
from mriprior.cli.main import main
from mriprior.data.dataset import DatasetWriter, open_dataset
from mriprior.errors import InputError
from mriprior.priors.export import save_prior
from mriprior.priors.networks import network_from_preset
from mriprior.recon.priors import GaussianPrior

N_SLICES, SHAPE = 11, (16, 16)


@pytest.fixture(scope="module")
def magdata(tmp_path_factory):
    d = tmp_path_factory.mktemp("aug")
    g = torch.Generator().manual_seed(0)
    yy, xx = torch.meshgrid(torch.arange(16.0), torch.arange(16.0), indexing="ij")
    with DatasetWriter(d / "mag", "magnitude", SHAPE, shard_size=4) as w:
        for i in range(N_SLICES):
            blob = torch.exp(-((yy - 8) ** 2 + (xx - 8) ** 2) / (10 + 3 * i))
            img = blob * (0.5 + torch.rand(SHAPE, generator=g))
            w.add(img.numpy(), {"source": f"s{i}.png", "subject": f"p{i % 4}", "index": 0,
                                "split": ["train", "val", "test"][i % 3]})
    torch.manual_seed(0)
    net = network_from_preset("cpu-small", in_channels=2, base_channels=8, channel_mults=[1, 2],
                              attention_levels=[])
    save_prior(d / "prior", net, {"network": net.config, "parametrisation": "score",
                                  "diffusion": {"type": "ve", "sigma_min": 0.01,
                                                "sigma_max": 1.0},
                                  "data": {"channels": "complex"}})
    return d


# ----------------------------------------------------------------------------- likelihood

def test_magnitude_gradient_matches_finite_differences():
    g = torch.Generator().manual_seed(0)
    x = torch.complex(torch.randn(2, 5, 5, generator=g, dtype=torch.float64),
                      torch.randn(2, 5, 5, generator=g, dtype=torch.float64))
    m = torch.rand(2, 5, 5, generator=g, dtype=torch.float64)
    grad = magnitude_loss_grad(x, m)
    h = 1e-6
    for idx in [(0, 1, 2), (1, 4, 0), (0, 0, 0)]:
        for unit, part in ((1.0, "real"), (1j, "imag")):
            e = torch.zeros_like(x)
            e[idx] = unit
            fd = (magnitude_loss(x + h * e, m) - magnitude_loss(x - h * e, m))[idx[0]] / (2 * h)
            want = getattr(grad[idx], part)
            assert abs(float(fd) - float(want)) < 1e-6 * max(1.0, abs(float(want)))


def test_magnitude_gradient_is_finite_at_and_near_zero():
    m = torch.ones(1, 2, 2)
    x = torch.tensor([[[0, 1e-45], [1e-30j, 3 + 4j]]], dtype=torch.complex64)
    grad = magnitude_loss_grad(x, m)
    assert torch.isfinite(torch.view_as_real(grad)).all()
    assert grad[0, 0, 0] == 0  # the subgradient we pick at 0
    assert torch.allclose(grad[0, 1, 1], torch.tensor(2 * (5 - 1) * (3 + 4j) / 5,
                                                      dtype=torch.complex64))


# ----------------------------------------------------------------------------- samplers

def _exact_mean_cos(mu, v, s_l, m=1.0):
    """E cos(phase) under p(x) ~ N(x; mu, v) exp(-(|x| - m)^2 / (2 s_l^2)) (mu real, v per
    component), by integration over the plane in polar coordinates."""
    r = np.linspace(0, 4, 1601)
    th = np.linspace(-np.pi, np.pi, 721, endpoint=False)
    rr, tt = np.meshgrid(r, th, indexing="ij")
    logp = (-((rr * np.cos(tt) - mu) ** 2 + (rr * np.sin(tt)) ** 2) / (2 * v)
            - (rr - m) ** 2 / (2 * s_l ** 2))
    w = np.exp(logp - logp.max()) * rr
    return float((np.cos(tt) * w).sum() / w.sum())


def test_langevin_phase_exact_mode_matches_the_posterior_phase_law():
    """Gaussian prior x ~ N(mu, v) and a soft magnitude likelihood: the exact mode's phases
    have the posterior's mean cosine (and no preferred sign of the sine)."""
    mu, v, s_l, s_min = 0.5, 0.5, 0.2, 0.01
    m = torch.ones(64, 8, 8)
    prior = GaussianPrior(mu, v, sigma_min=s_min, sigma_max=1.0)
    out = langevin_phase(prior, m, n_levels=10, steps=400, step_size=0.5, likelihood_sigma=s_l,
                         seed=0)
    want = _exact_mean_cos(mu, v + s_min ** 2, s_l)  # 0.436
    got = float(torch.cos(out.angle()).mean())
    assert abs(got - want) < 0.025, (got, want)  # 4,096 samples: Monte-Carlo error ~0.01
    assert abs(float(torch.sin(out.angle()).mean())) < 0.03
    assert torch.allclose(out.abs(), m, rtol=1e-6)
    # Isotropic prior: no preferred phase at all.
    out = langevin_phase(GaussianPrior(0.0, v, sigma_min=s_min, sigma_max=1.0), m, n_levels=10,
                         steps=100, step_size=0.5, likelihood_sigma=s_l, seed=1)
    assert abs(float(torch.cos(out.angle()).mean())) < 0.03


def test_langevin_phase_published_update_is_colder_than_the_posterior():
    """The founding study's update (eta 0.15, 10 x 50, noise below Langevin's, no noise at the
    last level) keeps the magnitude and the symmetry but concentrates the phase: documented."""
    mu, v = 0.5, 0.5
    m = torch.ones(64, 8, 8)
    out = langevin_phase(GaussianPrior(mu, v, sigma_min=0.01, sigma_max=1.0), m, seed=0)
    assert torch.allclose(out.abs(), m, rtol=1e-6)
    assert abs(float(torch.sin(out.angle()).mean())) < 0.03
    got = float(torch.cos(out.angle()).mean())
    assert got > _exact_mean_cos(mu, v, 0.05) + 0.2  # measured: 0.89 vs 0.45


def test_zero_and_smooth_keep_the_magnitude():
    g = torch.Generator().manual_seed(0)
    mag = torch.rand(3, 32, 32, generator=g)
    z = zero_phase(mag)
    assert z.dtype == torch.complex64 and torch.equal(z.real, mag) and (z.imag == 0).all()
    s = smooth_phase(mag, [1, 2, 3])
    assert torch.allclose(s.abs(), mag, atol=1e-6)
    assert torch.equal(s[1], smooth_phase(mag[1:2], [2])[0])  # per-item seeds, batch-free
    assert not torch.equal(s[0].angle(), s[1].angle())
    # smooth: neighbouring pixels' phase differs little (wrapped difference)
    d = torch.angle(s[:, :, 1:] * s[:, :, :-1].conj())
    assert float(d.abs().median()) < 0.2
    with pytest.raises(InputError):
        zero_phase(-mag)


# ----------------------------------------------------------------------------- batch job

def _check_output(out: Path, src: Path, samples: int, method: str):
    ds, mag = open_dataset(out), open_dataset(src)
    assert ds.kind == "complex" and len(ds) == N_SLICES * samples
    seen = {}
    for j, rec in enumerate(ds.records):
        a = rec["augment"]
        key = (a["source_index"], a["sample"])
        assert key not in seen, f"{key} twice"
        seen[key] = j
        assert a["method"] == method and rec["split"] == mag.records[a["source_index"]]["split"]
        assert rec["source"] == mag.records[a["source_index"]]["source"]
        assert np.allclose(np.abs(ds[j]), mag[a["source_index"]], atol=1e-6)
    assert set(seen) == {(i, k) for i in range(N_SLICES) for k in range(samples)}
    assert not work_dir(out).exists()
    return np.stack([ds[j] for j in range(len(ds))])


def test_job_writes_every_slice_once_with_provenance(magdata, tmp_path):
    out = tmp_path / "smooth"
    s = augment_dataset(magdata / "mag", out, AugmentSettings("smooth", samples=2, seed=3,
                                                              chunk=4))
    assert s["count"] == 2 * N_SLICES and s["chunks"] == 3
    imgs = _check_output(out, magdata / "mag", 2, "smooth")
    m = json.loads((out / "manifest.json").read_text())
    assert m["options"]["augment"]["job"]["settings"]["seed"] == 3
    assert m["provenance"]["tool"] == "mriprior augment"
    # the two samples of one slice have different phases
    assert not np.allclose(imgs[0], imgs[1])
    # running it again changes nothing
    before = (out / "manifest.json").stat().st_mtime_ns
    s2 = augment_dataset(magdata / "mag", out, AugmentSettings("smooth", samples=2, seed=3,
                                                               chunk=4))
    assert s2["already_complete"] and (out / "manifest.json").stat().st_mtime_ns == before
    # a different job on the same output is refused, naming the setting
    with pytest.raises(InputError, match="already exists"):
        augment_dataset(magdata / "mag", out, AugmentSettings("smooth", samples=2, seed=4,
                                                              chunk=4))


def test_job_refuses_to_mix_chunks_of_different_settings(magdata, tmp_path):
    out = tmp_path / "mix"
    augment_dataset(magdata / "mag", out, AugmentSettings("zero", chunk=4), rank=1,
                    world_size=2)  # rank 1 only: chunk 1 written
    assert (work_dir(out) / "chunk-000001.npz").exists() and not out.exists()
    with pytest.raises(InputError, match=r"seed \(0 vs 5\)"):
        augment_dataset(magdata / "mag", out, AugmentSettings("zero", chunk=4, seed=5),
                        log=lambda *_: None)


def test_ranks_split_the_work_and_match_one_process(magdata, tmp_path):
    augment_dataset(magdata / "mag", tmp_path / "one", AugmentSettings("smooth", chunk=3),
                    log=lambda *_: None)
    ref = _check_output(tmp_path / "one", magdata / "mag", 1, "smooth")
    out = tmp_path / "two"
    s1 = augment_dataset(magdata / "mag", out, AugmentSettings("smooth", chunk=3), rank=1,
                         world_size=2)
    assert s1["chunks_done"] == 2 and not out.exists()  # chunks 1 and 3 of 0..3
    s0 = augment_dataset(magdata / "mag", out, AugmentSettings("smooth", chunk=3), rank=0,
                         world_size=2)
    assert s0["chunks_done"] == 2
    assert np.array_equal(_check_output(out, magdata / "mag", 1, "smooth"), ref)


def test_langevin_job_with_a_prior_file(magdata, tmp_path):
    out = tmp_path / "lang"
    assert main(["augment", "--method", "langevin", "--prior", str(magdata / "prior"),
                 "--levels", "2", "--steps", "2", "--samples", "2", "--chunk", "6", "--quiet",
                 "--in", str(magdata / "mag"), "--out", str(out)]) == 0
    _check_output(out, magdata / "mag", 2, "langevin")
    rec = open_dataset(out).records[0]["augment"]
    assert len(rec["prior_sha256"]) == 64
    assert main(["augment", "--method", "smooth", "--prior", str(magdata / "prior"),
                 "--in", str(magdata / "mag"), "--out", str(tmp_path / "x")]) == 2


# ----------------------------------------------------------------------------- kill and resume

_KILLER = textwrap.dedent("""
    import os, signal, sys
    import numpy as np
    from mriprior.augment.job import AugmentSettings, augment_dataset
    src, out, kill_at, log, mode = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4], \\
        sys.argv[5]
    state = {"calls": 0, "assembly": False}
    def die(where):
        with open(log, "a") as f:
            f.write(mode + ": " + where + "\\n")
        os.kill(os.getpid(), signal.SIGKILL)
    def tick(where):
        if where == "before save":   # np.save is only used by the assembly (chunks: savez)
            state["assembly"] = True
        if mode == "chunks" and state["assembly"]:
            die(where)               # phase 1 stops where the assembly starts
        if mode == "assembly" and not state["assembly"]:
            return
        state["calls"] += 1
        if state["calls"] == kill_at:
            die(where)
    def wrap(fn):
        def inner(*a, **k):
            tick("before " + fn.__name__)   # killed just before ...
            r = fn(*a, **k)
            tick("after " + fn.__name__)    # ... or just after a file operation
            return r
        return inner
    os.replace = wrap(os.replace)
    np.save = wrap(np.save)
    np.savez = wrap(np.savez)
    augment_dataset(src, out, AugmentSettings("smooth", samples=2, seed=1, chunk=2), batch=3,
                    log=lambda *_: None)
""")


def test_sigkill_at_any_file_operation_then_resume(magdata, tmp_path):
    """SIGKILL the job just before or after its file operations, then run it again: every
    slice ends up present exactly once, identical to an uninterrupted run, no stray files.
    Phase 1 kills at random points of the chunk writes until every chunk exists; phase 2 kills
    the assembly at each of its operations in turn (state carries over between runs)."""
    ref_out = tmp_path / "ref"
    augment_dataset(magdata / "mag", ref_out, AugmentSettings("smooth", samples=2, seed=1,
                                                              chunk=2))
    ref = _check_output(ref_out, magdata / "mag", 2, "smooth")
    script = tmp_path / "killer.py"
    script.write_text(_KILLER)
    env = dict(os.environ, OMP_NUM_THREADS="1")
    out, log = tmp_path / "out", tmp_path / "kills.log"

    def run(kill_at, mode):
        r = subprocess.run([sys.executable, str(script), str(magdata / "mag"), str(out),
                            str(kill_at), str(log), mode], env=env, capture_output=True,
                           text=True, timeout=300)
        assert r.returncode in (0, -signal.SIGKILL), r.stderr[-2000:]
        return r.returncode == 0

    rnd = random.Random(0)
    for _ in range(40):
        assert not run(rnd.randint(1, 6), "chunks")
        if log.read_text().endswith("chunks: before save\n"):
            break
    for k in range(1, 20):
        if run(k, "assembly"):
            break
    kills = log.read_text().split("\n")[:-1]
    chunk_kills = [w for w in kills if w.startswith("chunks") and not w.endswith("before save")]
    assembly_kills = [w for w in kills if w.startswith("assembly")]
    assert len(chunk_kills) >= 3 and len(assembly_kills) >= 4, kills
    assert "assembly: after replace" in assembly_kills  # e.g. after the dataset's rename
    assert np.array_equal(_check_output(out, magdata / "mag", 2, "smooth"), ref)
    leftovers = [p.name for p in tmp_path.iterdir() if p.name.startswith(".")]
    assert not leftovers, leftovers


def test_cli_killed_at_random_times_then_completes(magdata, tmp_path):
    """SIGKILL the CLI job three times mid-run (once a random number of its chunks is on disk,
    so every kill lands inside the job, not before or after it), then run it to the end."""
    rnd = random.Random(0)
    out = tmp_path / "cli"
    parts = Path(str(out) + ".parts")
    cmd = [sys.executable, "-m", "mriprior.cli.main", "augment", "--method", "smooth",
           "--samples", "3", "--chunk", "1", "--batch", "1", "--quiet",
           "--in", str(magdata / "mag"), "--out", str(out)]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    kills = []
    for _ in range(3):
        done_before = len(list(parts.glob("chunk-*.npz"))) if parts.exists() else 0
        target = done_before + rnd.randint(1, 2)  # kill once this many chunks exist
        p = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        while p.poll() is None and (not parts.exists()
                                    or len(list(parts.glob("chunk-*.npz"))) < target):
            time.sleep(0.005)
        if p.poll() is None:
            p.send_signal(signal.SIGKILL)
            p.wait()
            kills.append(len(list(parts.glob("chunk-*.npz"))))
    assert len(kills) == 3 and kills == sorted(kills) and kills[-1] < N_SLICES, kills
    assert not out.exists()  # killed before the assembly: nothing half-written in place
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert not parts.exists()
    _check_output(out, magdata / "mag", 3, "smooth")


# ----------------------------------------------------------------------------- conditional model

class _GaussianConditional(torch.nn.Module):
    """Analytic conditional 'network': x | m ~ N(m exp(i theta0), v) per pixel and component,
    output sigma * score in (re, im) channels, the contract of a trained conditional U-Net."""

    config = {"in_channels": 2, "cond_channels": 1}

    def __init__(self, v, theta0):
        super().__init__()
        self.v, self.theta0 = v, theta0

    def forward(self, x, sigma, cond):
        s = sigma.reshape(-1, 1, 1, 1).to(x.dtype)
        mu = torch.cat([cond * math.cos(self.theta0), cond * math.sin(self.theta0)], 1)
        return s * (mu - x) / (self.v + s * s)


def _projected_normal_mean_cos(r, v):
    """E cos(arg x - arg mu) for complex x ~ N(mu, v per component), |mu| = r (integration)."""
    rr = np.linspace(0, r + 8 * math.sqrt(v), 2001)
    th = np.linspace(-np.pi, np.pi, 721, endpoint=False)
    R, T = np.meshgrid(rr, th, indexing="ij")
    w = np.exp(-((R * np.cos(T) - r) ** 2 + (R * np.sin(T)) ** 2) / (2 * v)) * R
    return float((np.cos(T) * w).sum() / w.sum())


def test_conditional_sampler_on_a_known_conditional_distribution():
    from mriprior.augment.phase import conditional_phase
    from mriprior.recon.priors import DiffusionPrior

    v, theta0 = 0.25, 1.0
    net = _GaussianConditional(v, theta0)
    prior = DiffusionPrior(net, {"parametrisation": "score",
                                 "diffusion": {"type": "ve", "sigma_min": 0.01,
                                               "sigma_max": 2.0}})
    mag = torch.ones(64, 8, 8) * 3.0  # normalised to m = 1 by the sampler
    out = conditional_phase(prior, mag, n_levels=100, seed=0)
    assert torch.allclose(out.abs(), mag, rtol=1e-6)
    d = out.angle() - theta0
    want = _projected_normal_mean_cos(1.0, v)  # 0.85
    assert abs(float(torch.cos(d).mean()) - want) < 0.02, (float(torch.cos(d).mean()), want)
    assert abs(float(torch.sin(d).mean())) < 0.02
    with pytest.raises(InputError, match="conditional"):
        conditional_phase(GaussianPrior(), mag)


@pytest.fixture(scope="module")
def conditional_model(tmp_path_factory):
    """A tiny conditional U-Net trained for 6 steps by the priors engine."""
    from mriprior.priors.train import train

    d = tmp_path_factory.mktemp("cond")
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:16, :16] / 16.0
    with DatasetWriter(d / "cplx", "complex", (16, 16), options={"normalize": "max"}) as w:
        for i in range(12):
            mag = np.exp(-((yy - 0.5) ** 2 + (xx - 0.5) ** 2) / 0.1)
            w.add((mag * np.exp(1j * (3 * xx + rng.uniform(0, 1)))).astype(np.complex64),
                  {"source": f"c{i}", "split": "val" if i >= 10 else "train"})
    raw = {"model": {"type": "unet", "base_channels": 8, "channel_mults": [1, 2],
                     "num_res_blocks": 1, "attention_levels": [], "cond_channels": 1},
           "data": {"path": str(d / "cplx"), "crop": 16, "channels": "complex",
                    "num_workers": 0},
           "diffusion": {"type": "ve", "sigma_min": 0.01, "sigma_max": 1.0},
           "optim": {"lr": 2e-3, "warmup_steps": 1},
           "train": {"batch_size": 4, "steps": 6, "save_every": 3, "output": str(d / "run"),
                     "device": "cpu", "log_every": 3},
           "heldout": {"every": 3, "n_images": 2, "sigmas": [0.1, 1.0]}}
    res = train(raw)
    assert res["step"] == 6
    return d


def test_conditional_model_trains_exports_and_augments(conditional_model, magdata, tmp_path):
    from mriprior.priors.config import validate_config
    from mriprior.recon.priors import load_image_prior

    prior = conditional_model / "run" / "prior"
    meta = json.loads(prior.with_suffix(".json").read_text())
    assert meta["conditioning"] == "magnitude" and meta["network"]["cond_channels"] == 1
    log = [json.loads(line) for line in (conditional_model / "run" / "log.jsonl").open()]
    held = [r["heldout"] for r in log if "heldout" in r]
    assert held and all(math.isfinite(v) for v in held[-1].values())
    with pytest.raises(InputError, match="conditional model"):
        load_image_prior(prior)  # not a reconstruction prior
    assert main(["sample", "--prior", str(prior), "--n", "1", "--out",
                 str(tmp_path / "g.png")]) == 2
    out = tmp_path / "cond"
    assert main(["augment", "--method", "conditional", "--prior", str(prior), "--levels", "3",
                 "--quiet", "--in", str(magdata / "mag"), "--out", str(out)]) == 0
    _check_output(out, magdata / "mag", 1, "conditional")
    # the wrong pairings are refused
    assert main(["augment", "--method", "langevin", "--prior", str(prior), "--quiet",
                 "--in", str(magdata / "mag"), "--out", str(tmp_path / "bad")]) == 2
    assert main(["augment", "--method", "conditional", "--prior", str(magdata / "prior"),
                 "--quiet", "--in", str(magdata / "mag"), "--out", str(tmp_path / "bad")]) == 2
    bad = {"model": {"preset": "cpu-small", "in_channels": 1, "cond_channels": 1},
           "data": {"path": str(conditional_model / "cplx"), "channels": "magnitude"},
           "train": {"output": str(tmp_path / "x"), "steps": 10}}
    with pytest.raises(InputError, match="cond_channels"):
        validate_config(bad)


def test_shipped_conditional_config_validates():
    from mriprior.priors.config import load_config

    cfg = load_config(Path(__file__).resolve().parents[1] / "configs" / "cond-phase-cpu.yaml")
    assert cfg["model"]["cond_channels"] == 1 and cfg["data"]["channels"] == "complex"


# ----------------------------------------------------------------------------- evaluation

def test_phase_error_metric_known_values():
    from mriprior.experiments.phase_eval import phase_error, spectrum_distance

    g = torch.Generator().manual_seed(0)
    mag = torch.rand(2, 32, 32, generator=g) + 0.5
    ref = smooth_phase(mag, [1, 2])
    mask = torch.ones(2, 32, 32, dtype=torch.bool)
    e = phase_error(ref, ref, mask)
    assert max(e["raw"]) < 1e-6 and max(e["offset_removed"]) < 1e-6
    shifted = ref * torch.exp(torch.tensor(0.7j))
    e = phase_error(shifted.to(torch.complex64), ref, mask)
    assert np.allclose(e["raw"], 0.7, atol=1e-5) and max(e["offset_removed"]) < 1e-5
    rnd = torch.polar(mag, 2 * math.pi * torch.rand(2, 32, 32, generator=g))
    e = phase_error(rnd, ref, mask)
    assert all(abs(v - math.pi / 2) < 0.1 for v in e["offset_removed"])  # unrelated: ~pi/2
    assert max(spectrum_distance(ref, ref, mask)) == 0
    assert min(spectrum_distance(rnd, ref, mask)) > 0.5


def test_cli_experiment_phase(tmp_path):
    yy, xx = np.mgrid[:48, :48] / 48.0
    rng = np.random.default_rng(0)
    with DatasetWriter(tmp_path / "c", "complex", (48, 48)) as w:
        for i in range(6):
            mag = np.exp(-((yy - 0.5) ** 2 + (xx - 0.5) ** 2) / 0.08) * (1 + 0.2 * rng.random())
            w.add((mag * np.exp(1j * 2 * (xx + yy))).astype(np.complex64),
                  {"source": f"x{i}", "split": "test" if i > 2 else "train"})
    docs = tmp_path / "exp.md"
    assert main(["experiment", "phase", "--data", str(tmp_path / "c"), "--slices", "2",
                 "--out", str(tmp_path / "fig"), "--docs", str(docs)]) == 0
    res = json.loads((tmp_path / "fig" / "phase_eval.json").read_text())
    assert res["methods"] == ["zero", "smooth"] and len(res["per_case"]) == 2
    assert (tmp_path / "fig" / "phase_eval.png").exists()
    text = docs.read_text()
    assert text.startswith("# Experiments\n")
    assert "| **mean** |" in text and "mriprior experiment phase" in text
    assert main(["experiment", "phase", "--data", str(tmp_path / "c"), "--slices", "2",
                 "--out", str(tmp_path / "fig"), "--docs", str(docs)]) == 0
    assert docs.read_text().count("| **mean** |") == 1  # the section is replaced, not repeated


# ----------------------------------------------------------------------------- GAN baseline

def _gan_raw(data, out, steps):
    return {"gan": True,
            "model": {"base_channels": 8, "depth": 2, "dropout": 0.5, "disc_channels": 8,
                      "disc_layers": 2},
            "data": {"path": str(data), "crop": 16, "num_workers": 0},
            "train": {"batch_size": 4, "steps": steps, "save_every": 3, "log_every": 3,
                      "output": str(out), "seed": 1}}


def test_gan_trains_resumes_exactly_exports_and_augments(conditional_model, magdata, tmp_path):
    from safetensors.torch import load_file

    from mriprior.priors.gan_train import train_gan, validate_gan_config

    data = conditional_model / "cplx"  # complex 16 x 16 slices with a phase ramp
    r = train_gan(_gan_raw(data, tmp_path / "a", 6))
    assert r["step"] == 6 and math.isfinite(r["l1"])
    # 3 steps, "killed", then resumed to 6: identical generator weights
    train_gan(_gan_raw(data, tmp_path / "b", 3))
    train_gan(_gan_raw(data, tmp_path / "b", 6), resume=True)
    wa = load_file(str(tmp_path / "a" / "prior.safetensors"))
    wb = load_file(str(tmp_path / "b" / "prior.safetensors"))
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)
    with pytest.raises(InputError, match="train.l1_weight differs"):
        bad = _gan_raw(data, tmp_path / "b", 9)
        bad["train"]["l1_weight"] = 1.0
        train_gan(bad, resume=True)
    with pytest.raises(InputError, match="model.width: unknown key"):
        raw = _gan_raw(data, tmp_path / "c", 2)
        raw["model"]["width"] = 3
        validate_gan_config(raw)
    with pytest.raises(InputError, match="train.steps: expected int"):
        raw = _gan_raw(data, tmp_path / "c", 2)
        raw["train"]["steps"] = "ten"
        validate_gan_config(raw)
    # augment with it: the magnitude is kept, seeds give reproducible and different samples
    out = tmp_path / "gan"
    assert main(["augment", "--method", "gan", "--prior", str(tmp_path / "a" / "prior"),
                 "--samples", "2", "--quiet", "--in", str(magdata / "mag"),
                 "--out", str(out)]) == 0
    imgs = _check_output(out, magdata / "mag", 2, "gan")
    assert not np.allclose(np.angle(imgs[0]), np.angle(imgs[1]))  # dropout noise
    # the GAN is not a diffusion prior, and a diffusion prior is not a GAN
    assert main(["augment", "--method", "langevin", "--prior", str(tmp_path / "a" / "prior"),
                 "--quiet", "--in", str(magdata / "mag"), "--out", str(tmp_path / "x")]) == 2
    assert main(["augment", "--method", "gan", "--prior", str(magdata / "prior"),
                 "--quiet", "--in", str(magdata / "mag"), "--out", str(tmp_path / "y")]) == 2


def test_gan_phase_is_seeded_and_leaves_the_global_rng_alone():
    from mriprior.augment.phase import gan_phase
    from mriprior.priors.gan import PhaseGenerator

    torch.manual_seed(0)
    G = PhaseGenerator(base_channels=8, depth=2)
    mag = torch.rand(2, 10, 13)  # not a multiple of 4: padded and cropped
    state = torch.get_rng_state()
    a, b = gan_phase(G, mag, seed=5), gan_phase(G, mag, seed=5)
    assert torch.equal(torch.get_rng_state(), state)
    assert torch.equal(a, b) and a.shape == mag.shape
    assert torch.allclose(a.abs(), mag, atol=1e-6)
    assert not torch.equal(a, gan_phase(G, mag, seed=6))
    assert torch.equal(gan_phase(G, mag, seed=5, dropout=False),
                       gan_phase(G, mag, seed=6, dropout=False))


def test_cli_train_runs_a_gan_config(conditional_model, tmp_path):
    import yaml

    raw = _gan_raw(conditional_model / "cplx", tmp_path / "run", 2)
    cfg = tmp_path / "gan.yaml"
    cfg.write_text(yaml.safe_dump(raw))
    assert main(["train", str(cfg)]) == 0
    assert (tmp_path / "run" / "prior.safetensors").exists()
    assert main(["train", str(cfg), "--steps", "3", "--resume"]) == 0
    log = [json.loads(x) for x in (tmp_path / "run" / "log.jsonl").open()]
    assert log[-1]["step"] == 3


def test_model_job_does_not_depend_on_its_batch(magdata, tmp_path):
    """The Langevin sampler draws noise per item: a job stopped after its first batch and
    resumed with another batch size writes exactly what one uninterrupted run writes."""
    settings = dict(samples=1, seed=0, chunk=4, prior=str(magdata / "prior"),
                    langevin={"n_levels": 2, "steps": 1, "eta": 0.15})

    class Stop(Exception):
        pass

    def stop_after_first(done, total):
        raise Stop

    out = tmp_path / "lv"
    with pytest.raises(Stop):
        augment_dataset(magdata / "mag", out, AugmentSettings("langevin", **settings), batch=2,
                        progress=stop_after_first)
    assert "batch" not in json.loads((work_dir(out) / "job.json").read_text())
    s = augment_dataset(magdata / "mag", out, AugmentSettings("langevin", **settings), batch=3,
                        log=lambda *_: None)
    assert s["chunks_done"] == s["chunks"] - 1  # the first chunk was kept
    resumed = _check_output(out, magdata / "mag", 1, "langevin")
    once = tmp_path / "once"
    augment_dataset(magdata / "mag", once, AugmentSettings("langevin", **settings), batch=1,
                    log=lambda *_: None)
    np.testing.assert_allclose(resumed, _check_output(once, magdata / "mag", 1, "langevin"),
                               rtol=0, atol=1e-5)  # batched convolutions round differently

"""Unrolled networks (VarNet, MoDL): data consistency, adjointness, training, exact resume."""

import json
import math

import numpy as np
import pytest
import torch

from mriprior.data.dataset import DatasetWriter
from mriprior.errors import InputError
from mriprior.physics.phantom import birdcage_maps
from mriprior.unrolled import (MoDL, Synthesizer, VarNet, build_network, load_network,
                               save_network, train_unrolled, validate_unrolled_config)
from mriprior.unrolled.networks import sense_expand, sense_reduce
from mriprior.unrolled.synth import make_mask

SPEC = {"coils": 4, "snr": 40.0, "masks": ["equispaced", "random", "poisson"],
        "accels": [4.0, 8.0], "acs_fraction": 0.08, "calib_fraction": 0.1,
        "rotate_coils": True}


def _case(n=32, coils=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, n), torch.linspace(-1, 1, n), indexing="ij")
    mag = (yy ** 2 / 0.6 + xx ** 2 / 0.4 < 1).float() * (0.5 + 0.5 * torch.rand(n, n,
                                                                                 generator=g))
    x = torch.polar(mag, 1.5 * xx + 0.5 * yy)[None]
    maps = birdcage_maps(coils, (n, n), normalize="rss")[None]
    mask = make_mask("random", (n, n), 4.0, seed=seed)[None, None]
    noise = torch.complex(torch.randn(1, coils, n, n, generator=g),
                          torch.randn(1, coils, n, n, generator=g)) * 0.01
    y = (sense_expand(x, maps) + noise) * mask
    return x, y, maps, mask


def test_sense_expand_and_reduce_are_adjoint():
    g = torch.Generator().manual_seed(1)
    maps = birdcage_maps(3, (12, 10), normalize="rss")[None].to(torch.complex128)
    x = torch.randn(1, 12, 10, dtype=torch.complex128, generator=g)
    k = torch.randn(1, 3, 12, 10, dtype=torch.complex128, generator=g)
    lhs = torch.vdot(sense_expand(x, maps).flatten(), k.flatten())
    rhs = torch.vdot(x.flatten(), sense_reduce(k, maps).flatten())
    assert abs(lhs - rhs) < 1e-12 * abs(lhs)


@pytest.mark.parametrize("size", [(32, 32), (30, 26)])
def test_varnet_data_consistency_becomes_exact_as_the_weight_grows(size):
    x, y, maps, mask = _case(32)
    if size != (32, 32):  # odd-ish sizes: padded internally
        y, maps, mask = (t[..., :size[0], :size[1]] for t in (y, maps, mask))
    errs = []
    for w in (1.0, 1e2, 1e4, 1e6):
        torch.manual_seed(0)
        net = VarNet(cascades=2, chans=4, pools=2, dc_weight=w).double()
        for u in net.unets:  # as if trained: the refinement is not zero
            torch.nn.init.normal_(u.out.weight, std=0.3)
        with torch.no_grad():
            k = net.kspace(y.to(torch.complex128), maps.to(torch.complex128), mask.double())
        on = mask.expand_as(y).bool()
        errs.append(float((k - y)[on].abs().max() / y[on].abs().max()))
    assert errs[0] > 1e-2                      # a weak weight leaves the data inexact
    assert errs[1] > errs[2] > errs[3]         # error ~ 1 / (1 + lambda)
    assert errs[3] < 1e-5
    # unsampled entries are the network's business, not forced to zero
    with torch.no_grad():
        off = ~mask.expand_as(y).bool()
        assert float(k[off].abs().mean()) > 1e-3 * float(y[~off].abs().mean())


def test_modl_data_consistency_solves_the_normal_equations():
    x, y, maps, mask = _case(32)
    net = MoDL(iterations=1, chans=4, pools=1, cg_iters=60, mu=0.5).double()
    y, maps, mask = y.to(torch.complex128), maps.to(torch.complex128), mask.double()
    z = torch.randn(1, 32, 32, dtype=torch.complex128)
    mu = torch.tensor(0.5, dtype=torch.float64)
    with torch.no_grad():
        sol = net.data_consistency(z, y, maps, mask, mu)
        lhs = sense_reduce(mask * sense_expand(sol, maps), maps) + mu * sol
        rhs = sense_reduce(mask * y, maps) + mu * z
    assert float((lhs - rhs).abs().norm() / rhs.abs().norm()) < 1e-8


def test_untrained_networks_return_the_classical_answer():
    from mriprior.recon.solvers import conjugate_gradient

    x, y, maps, mask = _case(32)
    with torch.no_grad():
        zf = sense_reduce(y, maps)
        torch.testing.assert_close(VarNet(2, 4, 2)(y, maps, mask), zf)
        modl = MoDL(3, 4, 1, cg_iters=5, mu=0.5)(y, maps, mask)

        def normal(v):
            return sense_reduce(mask * sense_expand(v, maps), maps)
        # three proximal-point steps from the regularised SENSE solution, each 5 CG steps
        ref = conjugate_gradient(normal, zf, max_iter=5, lam=0.5)
        for _ in range(3):
            ref = conjugate_gradient(normal, zf + 0.5 * ref, max_iter=5, lam=0.5)
        torch.testing.assert_close(modl, ref, atol=1e-5, rtol=1e-4)


def test_networks_are_differentiable_and_scale_equivariant():
    x, y, maps, mask = _case(32)
    for net in (VarNet(2, 4, 2), MoDL(2, 4, 1, cg_iters=3)):
        for p in net.parameters():  # random weights everywhere (as if trained)
            torch.nn.init.normal_(p, std=0.2)
        out = net(y, maps, mask)
        assert out.shape == x.shape and out.dtype == torch.complex64
        torch.testing.assert_close(net(7.5 * y, maps, mask), 7.5 * out, atol=1e-4 *
                                   float(out.detach().abs().max()) * 7.5, rtol=1e-3)
        (out - x).abs().mean().backward()
        assert all(p.grad is not None and torch.isfinite(p.grad).all()
                   for p in net.parameters())


def test_build_network_rejects_unknown_keys_and_types():
    with pytest.raises(InputError, match="model.depth: unknown key for varnet"):
        build_network({"type": "varnet", "depth": 3})
    with pytest.raises(InputError, match="unknown unrolled network 'resnet'"):
        build_network({"type": "resnet"})
    with pytest.raises(InputError, match="model.chans: expected a number"):
        build_network({"type": "modl", "chans": "8"})


def test_synthesizer_is_a_function_of_the_generator_and_masks_have_the_rate():
    s = Synthesizer(SPEC, (32, 32), seed=3, bank=2)
    x = _case(32)[0].expand(3, -1, -1)
    a = s(x, torch.Generator().manual_seed(5))
    b = s(x, torch.Generator().manual_seed(5))
    assert all(torch.equal(u, v) for u, v in zip(a, b))
    ksp, maps, mask = a
    assert ksp.shape == (3, 4, 32, 32) and mask.shape == (3, 1, 32, 32)
    assert torch.equal(ksp * (1 - mask), torch.zeros_like(ksp))
    # every bank mask reaches about its acceleration (1D masks: more, because of the ACS)
    for (kind, r), bank in zip(s.combos, s.bank):
        got = bank[0].numel() / bank[0].sum()
        assert 0.5 * r < got <= 1.05 * r, (kind, r, float(got))
    torch.testing.assert_close((maps.abs() ** 2).sum(1), torch.ones(3, 32, 32), atol=1e-4,
                               rtol=0)


@pytest.fixture(scope="module")
def cplx(tmp_path_factory):
    d = tmp_path_factory.mktemp("unrolled")
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[-1:1:32j, -1:1:32j]
    with DatasetWriter(d / "c", "complex", (32, 32), options={"normalize": "max"}) as w:
        for i in range(12):
            a, b = 0.4 + 0.3 * rng.random(2)
            mag = ((yy / a) ** 2 + (xx / b) ** 2 < 1) * (0.6 + 0.4 * (yy + 1) / 2)
            mag = mag + 0.3 * (((yy - 0.1) / 0.15) ** 2 + (xx / 0.1) ** 2 < 1)
            img = mag / mag.max() * np.exp(1j * (rng.random() * 2 * xx + yy))
            w.add(img.astype(np.complex64), {"source": f"s{i}", "subject": f"p{i}",
                                             "split": "val" if i >= 10 else "train"})
    return d / "c"


def _raw(data, out, steps, **model):
    return {"unrolled": True,
            "model": {"type": "varnet", "cascades": 2, "chans": 6, "pools": 2, **model},
            "data": {"path": str(data), "num_workers": 0, "crop": None},
            "simulation": {**SPEC, "bank": 2},
            "optim": {"lr": 1e-2, "warmup_steps": 0},
            "train": {"batch_size": 4, "steps": steps, "save_every": 8, "log_every": 4,
                      "output": str(out), "seed": 2, "device": "cpu"},
            "heldout": {"every": 8, "n_images": 2}}


def test_config_validation_names_the_key(cplx, tmp_path):
    raw = _raw(cplx, tmp_path / "o", 4)
    raw["simulation"]["maks"] = ["poisson"]
    with pytest.raises(InputError, match="simulation.maks: unknown key"):
        validate_unrolled_config(raw)
    raw = _raw(cplx, tmp_path / "o", 4)
    raw["simulation"]["masks"] = ["radial"]
    with pytest.raises(InputError, match="simulation.masks: must be a non-empty list"):
        validate_unrolled_config(raw)
    raw = _raw(cplx, tmp_path / "o", 4)
    raw["train"]["steps"] = "10"
    with pytest.raises(InputError, match="train.steps: expected int"):
        validate_unrolled_config(raw)
    with pytest.raises(InputError, match="gan: unknown section"):
        validate_unrolled_config({**_raw(cplx, tmp_path / "o", 4), "gan": True})


def test_training_reduces_the_loss_exports_and_resumes_exactly(cplx, tmp_path):
    from mriprior.unrolled.train import complex_batch
    from mriprior.data.loader import SliceDataset

    full = train_unrolled(_raw(cplx, tmp_path / "a", 80))
    assert full["step"] == 80
    # killed after step 4's checkpoint, resumed: identical weights
    train_unrolled(_raw(cplx, tmp_path / "b", 80), stop_at=40)
    with pytest.raises(InputError, match="already holds checkpoints"):
        train_unrolled(_raw(cplx, tmp_path / "b", 80))
    resumed = train_unrolled(_raw(cplx, tmp_path / "b", 80), resume=True)
    assert resumed["weights_sha256"] == full["weights_sha256"]
    with pytest.raises(InputError, match="model differs"):
        train_unrolled(_raw(cplx, tmp_path / "b", 16, chans=4), resume=True)
    # a corrupt newest checkpoint is skipped with a warning (resume from the one before); with
    # none readable, one clear error
    ckpts = sorted((tmp_path / "b" / "checkpoints").glob("ckpt-*.pt"))
    ckpts[-1].write_bytes(b"not a checkpoint")
    if len(ckpts) > 1:
        with pytest.warns(UserWarning, match="unreadable checkpoint"):
            train_unrolled(_raw(cplx, tmp_path / "b", 80), resume=True)
    for p in sorted((tmp_path / "b" / "checkpoints").glob("ckpt-*.pt")):
        p.write_bytes(b"not a checkpoint")
    with pytest.raises(InputError, match="unreadable checkpoint"):
        train_unrolled(_raw(cplx, tmp_path / "b", 88), resume=True)
    # the trained network beats its initialisation on held-out synthesised data
    net, meta = load_network(tmp_path / "a" / "net")
    assert meta["step"] == 80 and meta["network"]["type"] == "varnet"
    torch.manual_seed(2)
    init = build_network(meta["network"])
    ref = complex_batch(torch.stack([SliceDataset(cplx, "val", flips=False)[i]
                                     for i in range(2)]))
    data = Synthesizer({**SPEC, "bank": 2}, (32, 32), seed=9)(ref, torch.Generator()
                                                              .manual_seed(0))
    with torch.no_grad():
        e_init = float((init(*data) - ref).abs().mean())
        e_trained = float((net(*data) - ref).abs().mean())
    with torch.no_grad():
        e_zf = float((sense_reduce(data[0], data[1]) - ref).abs().mean())
    assert abs(e_init - e_zf) < 1e-6            # untrained = zero-filled
    assert e_trained < 0.8 * e_init, (e_trained, e_init)
    log = [json.loads(line) for line in (tmp_path / "a" / "log.jsonl").read_text().splitlines()]
    held = [r["heldout"] for r in log if "heldout" in r]
    assert len(held) == 10 and all(math.isfinite(h["psnr"]) for h in held)


def test_save_and_load_network_round_trip(tmp_path):
    net = MoDL(2, 4, 1, cg_iters=2)
    save_network(tmp_path / "m", net, {"step": 1})
    back, meta = load_network(tmp_path / "m.safetensors")
    assert meta["network"] == net.config
    assert all(torch.equal(a, b) for a, b in zip(net.state_dict().values(),
                                                 back.state_dict().values()))
    (tmp_path / "m.json").write_text(json.dumps({"format": "mriprior-prior"}))
    with pytest.raises(InputError, match="not an mriprior unrolled network"):
        load_network(tmp_path / "m")
    # a name with a dot keeps it, whichever way the network is named
    save_network(tmp_path / "net-v1.5", net, {"step": 2})
    assert (tmp_path / "net-v1.5.safetensors").exists() and (tmp_path / "net-v1.5.json").exists()
    for name in ("net-v1.5", "net-v1.5.json", "net-v1.5.safetensors"):
        assert load_network(tmp_path / name)[1]["step"] == 2


def test_hallucination_count_finds_added_structures_only():
    from mriprior.metrics import hallucinations

    rng = np.random.default_rng(0)
    ref = np.zeros((40, 40))
    ref[5:35, 5:35] = 1.0
    out = ref + 0.01 * rng.standard_normal(ref.shape)
    assert hallucinations(out, ref)[0] == 0
    out[10:13, 10:13] += 0.5            # an added 9-pixel blob
    out[25, 25] += 0.5                  # a single hot pixel: below min_area
    out[20:24, 28:32] -= 0.5            # a removed structure is not a hallucination
    n, labels = hallucinations(out, ref)
    assert n == 1 and labels[11, 11] > 0 and labels[25, 25] == 0


def test_fourier_resize_keeps_the_field_of_view():
    from mriprior.physics.fft import fourier_resize

    yy, xx = torch.meshgrid(torch.linspace(-1, 1, 60), torch.linspace(-1, 1, 40), indexing="ij")
    img = ((yy ** 2 + xx ** 2) < 0.5).to(torch.complex64)
    small = fourier_resize(img, (32, 32))
    assert small.shape == (32, 32)
    assert small[:, :5].abs().max() < 1e-6       # aspect kept: the narrow axis is padded
    assert abs(float(small.abs().max()) - 1.0) < 0.2


def test_cli_experiment_downstream_on_a_toy_budget(cplx, tmp_path, capsys):
    import yaml

    from mriprior.cli.main import main

    cfg = _raw(cplx, "unused", 4)
    cfg["heldout"] = {"every": 0}
    cfg["train"]["save_every"] = 2
    cfg["data"]["path"] = str(cplx)
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(cfg))
    # a second phase source: the same magnitudes with zero phase
    from mriprior.data.dataset import open_dataset
    ds = open_dataset(cplx)
    with DatasetWriter(tmp_path / "zero", "complex", (32, 32)) as w:
        for i in range(len(ds)):
            w.add(np.abs(np.array(ds[i])).astype(np.complex64), dict(ds.manifest["slices"][i]))
    # test data: the same kind of images, with a test split
    with DatasetWriter(tmp_path / "t", "complex", (32, 32)) as w:
        for i in range(len(ds)):
            rec = dict(ds.manifest["slices"][i])
            rec["split"] = "test" if i < 3 else "val"
            w.add(np.array(ds[i]), rec)
    # a "real" slice folder in BART's layout (ksp: 1 x X x Y x coils, img: 1 x X x Y x 1 x 1)
    from mriprior.io.cfl import write_cfl
    from mriprior.unrolled.networks import sense_expand

    real = tmp_path / "real"
    real.mkdir()
    img = torch.from_numpy(np.array(ds[0]))[:, 2:30]            # (y 32, x 28)
    maps = birdcage_maps(4, img.shape, normalize="rss")[None]
    mask = (torch.rand(img.shape, generator=torch.Generator().manual_seed(0)) < 0.4).float()
    mask[6:26, 4:24] = 1                                        # 20 x 20 calibration
    ksp = (sense_expand(img[None], maps) * mask)[0]
    write_cfl(str(real / "ksp"), ksp.permute(2, 1, 0).numpy()[None])
    write_cfl(str(real / "img"), img.T.numpy()[None, :, :, None, None])
    docs = tmp_path / "docs" / "exp.md"
    args = ["experiment", "downstream", "--config", str(tmp_path / "c.yaml"),
            "--source", f"truth={cplx}", "--source", f"zero={tmp_path / 'zero'}",
            "--test", str(tmp_path / "t"), "--seeds", "0,1", "--accels", "4", "--slices", "2",
            "--real", str(real), "--out", str(tmp_path / "o"), "--docs", str(docs)]
    assert main(args) == 0
    assert torch.is_grad_enabled()                # the runner leaves autograd as it found it
    res = json.loads((tmp_path / "o" / "downstream.json").read_text())
    methods = {r["method"] for r in res["rows"]}
    assert methods == {"zero-filled", "L1-wavelet", "truth", "zero"}
    # (2 simulated + 1 real-phase + 1 real acquired) cases x (2 baselines + 2 sources x 2 seeds)
    assert len(res["rows"]) == 4 * (2 + 2 * 2)
    kinds = {e["kind"] for e in res["summary"]}
    assert kinds == {"simulated", "real-phase", "real-acquired"}
    acq = [r for r in res["rows"] if r["kind"] == "real-acquired" and r["method"] == "L1-wavelet"]
    assert acq[0]["psnr"] > 25                     # exact data, 40 % + calibration: near exact
    truth = next(e for e in res["summary"] if e["method"] == "truth" and e["kind"] == "simulated")
    assert len(truth["seed_psnr"]) == 2 and truth["n"] == 4
    assert (tmp_path / "docs" / "figures" / "downstream.png").exists()
    text = docs.read_text()
    assert "| 4.0 | truth |" in text and "mriprior experiment downstream" in text
    stamp = (tmp_path / "o" / "nets" / "truth-s0" / "net.safetensors").stat().st_mtime_ns
    assert main(args) == 0                        # finished networks are reused, not retrained
    assert (tmp_path / "o" / "nets" / "truth-s0" / "net.safetensors").stat().st_mtime_ns == stamp
    assert main(args[:4] + ["--source", "nameonly"] + args[8:]) == 2
    assert "--source 'nameonly': expected NAME=DATASET" in capsys.readouterr().err
    assert main(args[:4] + ["--source", f"x={tmp_path / 'none'}"] + args[8:]) == 2
    assert "is not an mriprior dataset" in capsys.readouterr().err


_DDP = """
import json, os, sys
from mriprior.unrolled import train_unrolled
res = train_unrolled(json.loads(sys.argv[1]))
with open(os.path.join(sys.argv[2], f"rank{os.environ['RANK']}.json"), "w") as f:
    json.dump(res, f)
"""


def test_ddp_two_ranks_identical_weights_and_cli(cplx, tmp_path):
    import os
    import subprocess
    import sys
    from pathlib import Path

    import yaml

    from mriprior.cli.main import main

    torchrun = Path(sys.executable).with_name("torchrun")
    if not torchrun.exists():
        pytest.skip(f"torchrun not found next to {sys.executable}")
    (tmp_path / "ddp.py").write_text(_DDP)
    raw = _raw(cplx, tmp_path / "run", 4)
    raw["train"]["batch_size"] = 2
    r = subprocess.run([str(torchrun), "--standalone", "--nproc_per_node", "2",
                        str(tmp_path / "ddp.py"), json.dumps(raw), str(tmp_path)],
                       capture_output=True, text=True, env=dict(os.environ, OMP_NUM_THREADS="1"),
                       timeout=180)
    if r.returncode != 0 and "rendezvous" in r.stderr.lower() and "error" in r.stderr.lower():
        pytest.skip(f"torchrun could not start: {r.stderr[-500:]}")
    assert r.returncode == 0, r.stderr[-3000:]
    r0, r1 = (json.loads((tmp_path / f"rank{i}.json").read_text()) for i in (0, 1))
    assert r0["world_size"] == r1["world_size"] == 2 and r0["step"] == r1["step"] == 4
    assert r0["weights_sha256"] == r1["weights_sha256"]
    with pytest.raises(InputError, match="resumed with 1"):
        train_unrolled(_raw(cplx, tmp_path / "run", 6), resume=True)
    # the CLI dispatches `unrolled: true` configs
    cfg = _raw(cplx, tmp_path / "cli", 4)
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(cfg))
    assert main(["train", str(tmp_path / "c.yaml"), "--steps", "2"]) == 0
    assert (tmp_path / "cli" / "net.safetensors").exists()
    assert json.loads((tmp_path / "cli" / "net.json").read_text())["step"] == 2


def test_modl_trains_and_resumes_exactly(cplx, tmp_path):
    model = {"type": "modl", "iterations": 2, "chans": 4, "pools": 1, "cg_iters": 3}

    def raw(out):
        r = _raw(cplx, out, 4)
        r["model"] = model
        r["train"]["save_every"] = 2
        r["heldout"] = {"every": 2, "n_images": 2}
        return r

    full = train_unrolled(raw(tmp_path / "a"))
    train_unrolled(raw(tmp_path / "b"), stop_at=2)
    assert train_unrolled(raw(tmp_path / "b"), resume=True)["weights_sha256"] == \
        full["weights_sha256"]
    net, meta = load_network(tmp_path / "a" / "net")
    assert isinstance(net, MoDL) and meta["network"]["cg_iters"] == 3

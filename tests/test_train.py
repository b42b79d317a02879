"""Tests of the training config (mriprior.priors.config) and engine (mriprior.priors.train)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from mriprior.errors import InputError
from mriprior.io.files import sha256_file
from mriprior.priors.config import load_config, validate_config
from mriprior.priors.export import load_prior
from mriprior.engine import latest_checkpoint, list_checkpoints, state_sha256
from mriprior.engine.checkpoints import check_fixed
from mriprior.priors.train import train
from tiny_data import prior_config

REPO = Path(__file__).resolve().parents[1]
_raw = prior_config


# ----------------------------------------------------------------------------- config
def test_config_paths_resolve_against_the_config_file():
    """Relative paths in a config are relative to the file, not to the working directory (every
    shipped config is validated in test_every_shipped_config_validates)."""
    cfg = load_config(REPO / "configs" / "ve-cpu.yaml")
    assert Path(cfg["data"]["path"]) == (REPO / "data" / "open256-complex").resolve()
    assert Path(cfg["train"]["output"]) == (REPO / "out" / "ve-cpu").resolve()


@pytest.mark.parametrize("mutate, message", [
    (lambda r: r["optim"].update(lerning_rate=1e-3), "optim.lerning_rate: unknown key"),
    (lambda r: r["train"].update(steps="10"), "train.steps: expected int, got str"),
    (lambda r: r["train"].update(steps=1.5), "train.steps: expected int, got float"),
    (lambda r: r["train"].update(amp="yes"), "train.amp: expected bool, got str"),
    (lambda r: r["train"].pop("steps"), "train.steps: required key missing"),
    (lambda r: r["train"].update(steps=0), "train.steps: must be >= 1"),
    (lambda r: r["data"].update(channels="phase"), "data.channels: expected one of"),
    (lambda r: r["data"].update(crop=[16, "a"]), "data.crop:"),
    (lambda r: r["diffusion"].update(beta_min=0.1), "diffusion.beta_min: not used by"),
    (lambda r: r["diffusion"].update(sigma_min=2.0), "diffusion.sigma_min: must be <"),
    (lambda r: r["model"].update(base_chanels=8), "model.base_chanels: unknown key"),
    (lambda r: r["model"].update(base_channels="8"), "model: base_channels must be"),
    (lambda r: r["model"].update(in_channels=1), "model.in_channels:"),
    (lambda r: r.update(trian={}), "trian: unknown section"),
    (lambda r: r.pop("model"), "model: required section missing"),
    (lambda r: r.update(model={"preset": "huge"}), "model.preset: unknown preset"),
    (lambda r: r["heldout"].update(sigmas=[0.1, -1]), "heldout.sigmas:"),
    (lambda r: r["optim"].update(betas=[0.9]), "optim.betas: expected two numbers"),
    (lambda r: r["data"].update(gain=[2.0, 1.0]), "data.gain: must be .lo, hi. with 0 < lo <= hi"),
    (lambda r: r["data"].update(transposes="yes"), "data.transposes: expected bool"),
])
def test_config_errors_name_the_key(tmp_path, dataset, mutate, message):
    raw = _raw(dataset, tmp_path / "run")
    mutate(raw)
    with pytest.raises(InputError, match=message.replace("(", r"\(")):
        validate_config(raw)


def test_config_file_relative_paths_presets_and_idempotence(tmp_path, dataset):
    d = tmp_path / "cfgdir"
    d.mkdir()
    shutil.copytree(dataset, d / "ds")
    raw = _raw("ds", "out")
    raw["model"] = {"preset": "cpu-small", "base_channels": 8}
    (d / "run.yaml").write_text(yaml.safe_dump(raw))
    cfg = load_config(d / "run.yaml", {"train.steps": 5})
    assert cfg["data"]["path"] == str((d / "ds").resolve())
    assert cfg["train"]["output"] == str((d / "out").resolve())
    assert cfg["train"]["steps"] == 5
    assert cfg["model"]["base_channels"] == 8 and cfg["model"]["channel_mults"] == [1, 2, 4, 4]
    assert cfg["optim"]["schedule"] == "cosine"  # default filled in
    assert validate_config(json.loads(json.dumps(cfg))) == cfg
    bad = dict(raw, optim={"lerning_rate": 1})
    (d / "bad.yaml").write_text(yaml.safe_dump(bad))
    with pytest.raises(InputError, match=r"bad.yaml: optim.lerning_rate: unknown key"):
        load_config(d / "bad.yaml")


# ----------------------------------------------------------------------------- engine
def _model_and_ema(output: Path, step: int):
    ck = torch.load(output / "checkpoints" / f"ckpt-{step:08d}.pt", weights_only=True)
    return ck["model"], ck["ema"]["shadow"]


def test_short_run_exports_a_prior(tmp_path, dataset):
    out = tmp_path / "run"
    res = train(_raw(dataset, out, **{"train.steps": 24, "train.save_every": 8,
                                      "heldout.every": 8}))
    assert res["step"] == 24 and res["world_size"] == 1
    net, meta = load_prior(out / "prior")
    assert meta["step"] == 24 and meta["parametrisation"] == "score" and meta["ema"] is True
    assert meta["diffusion"]["type"] == "ve" and meta["data"]["channels"] == "complex"
    assert meta["data"]["normalisation"] == "max"
    assert len(meta["dataset_manifest_sha256"]) == 64
    assert "git_revision" in meta and meta["config"]["train"]["steps"] == 24
    assert meta["network"]["base_channels"] == 8
    # The exported weights are the EMA weights of the last checkpoint.
    _, shadow = _model_and_ema(out, 24)
    for name, p in net.named_parameters():
        assert torch.equal(p, shadow[name])
    sigma = torch.full((2,), 0.5)
    assert net(torch.zeros(2, 2, 16, 16), sigma).shape == (2, 2, 16, 16)
    # Logs: loss records (decreasing from the first to the last), held-out evaluations.
    records = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in records if "loss" in r]
    assert len(losses) == 12 and all(np.isfinite(losses))
    assert losses[-1] < losses[0]
    held = [r for r in records if "heldout" in r]
    assert [r["step"] for r in held] == [8, 16, 24] and set(held[0]["heldout"]) == {"0.1", "1"}
    assert json.loads((out / "config.json").read_text())["train"]["steps"] == 24
    # keep_last = 2; no temporary files left behind.
    assert [p.name for p in list_checkpoints(out)] == ["ckpt-00000016.pt", "ckpt-00000024.pt"]
    assert not [p for p in out.rglob(".tmp-*")]
    # A second fresh run into the same folder is refused.
    with pytest.raises(InputError, match="already holds checkpoints"):
        train(_raw(dataset, out))


def test_init_from_starts_a_fresh_run_from_an_exported_prior(tmp_path, dataset):
    """Fine-tuning: train.init_from loads a prior's weights into the model and the EMA."""
    over = {"train.steps": 4, "train.save_every": 4, "heldout.every": 0}
    first = train(_raw(dataset, tmp_path / "a", **over))
    net_a, _ = load_prior(tmp_path / "a" / "prior")
    # One step at a negligible learning rate: the fine-tuned prior is the one it started from,
    # while a run from scratch (the same seeds) is far from it.
    tiny = {**over, "train.steps": 1, "train.save_every": 1, "optim.lr": 1e-12,
            "optim.min_lr": 0.0, "optim.warmup_steps": 0, "train.seed": 5}
    train(_raw(dataset, tmp_path / "b", **tiny, **{"train.init_from": str(tmp_path / "a" /
                                                                          "prior")}))
    train(_raw(dataset, tmp_path / "c", **tiny))
    net_b, meta_b = load_prior(tmp_path / "b" / "prior")
    net_c, meta_c = load_prior(tmp_path / "c" / "prior")
    for (name, pa), pb, pc in zip(net_a.named_parameters(), net_b.parameters(),
                                  net_c.parameters()):
        assert torch.allclose(pa, pb, atol=1e-6), name
    assert any(not torch.allclose(pa, pc, atol=1e-3)
               for pa, pc in zip(net_a.parameters(), net_c.parameters()))
    weights_a = tmp_path / "a" / "prior.safetensors"
    assert meta_b["init_from"] == {"path": "a/prior",
                                   "weights_sha256": sha256_file(weights_a)}
    assert "init_from" not in meta_c and first["step"] == 4
    # A prior of another network is refused, naming the key and what differs.
    wrong = _raw(dataset, tmp_path / "d", **tiny, **{"train.init_from": str(weights_a)})
    wrong["model"]["base_channels"] = 16
    with pytest.raises(InputError, match="train.init_from .*network differs"):
        train(wrong)
    with pytest.raises(InputError, match="nothere"):
        train(_raw(dataset, tmp_path / "e", **tiny,
                   **{"train.init_from": str(tmp_path / "nothere")}))
    assert not (tmp_path / "d").exists() and not (tmp_path / "e").exists()  # nothing written


def test_vp_run_exports_eps_prior(tmp_path, dataset):
    out = tmp_path / "vp"
    raw = _raw(dataset, out, **{"train.steps": 4, "heldout.every": 0})
    raw["diffusion"] = {"type": "vp", "beta_min": 0.1, "beta_max": 20.0}
    train(raw)
    _, meta = load_prior(out / "prior")
    assert meta["parametrisation"] == "eps"
    assert meta["diffusion"] == {"type": "vp", "beta_min": 0.1, "beta_max": 20.0, "t_eps": 1e-5}


def test_exact_resume_is_bit_identical(tmp_path, dataset):
    over = {"train.steps": 8, "train.save_every": 4, "heldout.every": 2}
    straight = train(_raw(dataset, tmp_path / "a", **over))
    # A separate process trains to the checkpoint of step 4 and dies there (os._exit: no final
    # checkpoint, export or clean-up), then this process resumes from the files alone.
    code = ("import json, os, sys; from mriprior.priors.train import train; "
            "train(json.loads(sys.argv[1]), stop_at=4); os._exit(0)")
    r = subprocess.run([sys.executable, "-c", code,
                        json.dumps(_raw(dataset, tmp_path / "b", **over))],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    assert latest_checkpoint(tmp_path / "b").name == "ckpt-00000004.pt"
    resumed = train(_raw(dataset, tmp_path / "b", **over), resume=True)
    assert resumed["step"] == 8
    ma, ea = _model_and_ema(tmp_path / "a", 8)
    mb, eb = _model_and_ema(tmp_path / "b", 8)
    for k in ma:
        assert torch.equal(ma[k], mb[k]), k
    for k in ea:
        assert torch.equal(ea[k], eb[k]), k
    assert straight["weights_sha256"] == resumed["weights_sha256"]
    assert straight["loss"] == resumed["loss"]
    # The log has no duplicated steps after the resume.
    steps = [json.loads(line)["step"] for line in (tmp_path / "b" / "log.jsonl").read_text()
             .splitlines() if "loss" in line]
    assert steps == [2, 4, 6, 8]
    # Resuming a finished run trains nothing and keeps the weights.
    again = train(_raw(dataset, tmp_path / "b", **over), resume=True)
    assert again["step"] == 8 and again["weights_sha256"] == resumed["weights_sha256"]
    # Resume with a changed model is refused, naming the key.
    changed = _raw(dataset, tmp_path / "b", **over)
    changed["model"]["base_channels"] = 16
    with pytest.raises(InputError, match="model differs"):
        train(changed, resume=True)
    changed = _raw(dataset, tmp_path / "b", **over)
    changed["data"]["transposes"] = True
    with pytest.raises(InputError, match="data.transposes differs"):
        train(changed, resume=True)


def test_check_fixed_entries_missing_from_older_checkpoints(tmp_path):
    """An entry a checkpoint's config predates counts as its value then (``missing``)."""
    old = {"data": {"flips": True}}
    new = {"data": {"flips": True, "transposes": False}}
    keys, before = [("data", "flips"), ("data", "transposes")], {("data", "transposes"): False}
    check_fixed(old, new, keys, tmp_path, missing=before)
    with pytest.raises(InputError, match="data.transposes differs"):
        check_fixed(old, {"data": {"flips": True, "transposes": True}}, keys, tmp_path,
                    missing=before)
    with pytest.raises(InputError, match="data.transposes differs"):  # no default given
        check_fixed(old, new, keys, tmp_path)


def test_checkpoint_contents_and_atomic_writes(tmp_path, dataset, monkeypatch):
    out = tmp_path / "run"
    train(_raw(dataset, out, **{"train.steps": 4, "train.save_every": 2, "heldout.every": 0}))
    ck = torch.load(latest_checkpoint(out), weights_only=True)
    assert {"model", "optimizer", "scheduler", "scaler", "ema", "step", "loader", "rng",
            "config", "world_size"} <= set(ck)
    assert ck["step"] == 4 and ck["loader"]["step"] == 4
    assert set(ck["rng"][0]) == {"noise", "torch_cpu"}
    # A disk filling up while a checkpoint is written leaves the previous ones intact and no
    # partial file.
    real = Path.write_bytes

    def boom(self, data):
        real(self, data[:10])
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(Path, "write_bytes", boom)
    with pytest.raises(OSError, match="No space left on device"):
        train(_raw(dataset, out, **{"train.steps": 6, "train.save_every": 2,
                                    "heldout.every": 0}), resume=True)
    assert [p.name for p in list_checkpoints(out)] == ["ckpt-00000002.pt", "ckpt-00000004.pt"]
    assert not list((out / "checkpoints").glob(".tmp-*"))


_DDP_SCRIPT = """
import json, os, sys
import torch
from mriprior.engine import state_sha256
from mriprior.priors.train import train
res = train(json.loads(sys.argv[1]))
rank = int(os.environ["RANK"])
with open(os.path.join(sys.argv[2], f"rank{rank}.json"), "w") as f:
    json.dump(res, f)
"""


def test_ddp_two_ranks_identical_weights(tmp_path, dataset):
    torchrun = Path(sys.executable).with_name("torchrun")
    if not torchrun.exists():
        pytest.skip(f"torchrun not found next to {sys.executable}")
    script = tmp_path / "ddp.py"
    script.write_text(_DDP_SCRIPT)
    out = tmp_path / "run"
    raw = _raw(dataset, out, **{"train.steps": 4, "train.save_every": 2, "train.batch_size": 2,
                                "heldout.every": 2})
    env = dict(os.environ, OMP_NUM_THREADS="1")
    r = subprocess.run([str(torchrun), "--standalone", "--nproc_per_node", "2", str(script),
                        json.dumps(raw), str(tmp_path)], capture_output=True, text=True,
                       env=env, timeout=120)
    if r.returncode != 0 and ("rendezvous" in r.stderr.lower() and "error" in r.stderr.lower()):
        pytest.skip(f"torchrun could not start: {r.stderr[-500:]}")
    assert r.returncode == 0, r.stderr[-3000:]
    r0 = json.loads((tmp_path / "rank0.json").read_text())
    r1 = json.loads((tmp_path / "rank1.json").read_text())
    assert r0["world_size"] == r1["world_size"] == 2 and r0["step"] == r1["step"] == 4
    assert r0["weights_sha256"] == r1["weights_sha256"]
    # The checkpoint holds one RNG state per rank, different streams; the export matches.
    ck = torch.load(latest_checkpoint(out), weights_only=True)
    assert ck["world_size"] == 2 and len(ck["rng"]) == 2
    assert not torch.equal(ck["rng"][0]["noise"], ck["rng"][1]["noise"])
    assert state_sha256(ck["model"], ck["ema"]["shadow"]) == r0["weights_sha256"]
    net, meta = load_prior(out / "prior")
    for name, p in net.named_parameters():
        assert torch.equal(p, ck["ema"]["shadow"][name])
    # Resuming a 2-rank checkpoint in one process is refused (exact resume needs 2 ranks).
    with pytest.raises(InputError, match="exact resume needs the same world size"):
        train(dict(raw, train=dict(raw["train"], steps=6)), resume=True)


def test_cli_train(tmp_path, dataset):
    from mriprior.cli.main import COMMANDS, main

    raw = _raw(dataset, tmp_path / "run", **{"heldout.every": 0})
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(raw))
    if "train" not in COMMANDS:  # registered by the lead; call the module directly until then
        import argparse

        from mriprior.cli import train as cli

        p = argparse.ArgumentParser()
        cli.add_arguments(p)
        cli.run(p.parse_args([str(tmp_path / "c.yaml"), "--steps", "2", "--device", "cpu"]))
    else:
        assert main(["train", str(tmp_path / "c.yaml"), "--steps", "2", "--device", "cpu"]) == 0
    assert latest_checkpoint(tmp_path / "run").name == "ckpt-00000002.pt"


@pytest.mark.parametrize("path", sorted((REPO / "configs").glob("*.yaml")), ids=lambda p: p.name)
def test_every_shipped_config_validates(path):
    """Each config in configs/ passes the validator of the trainer `mriprior train` gives it."""
    from mriprior.cli.train import resolve

    kind, cfg = resolve(path)
    assert kind == ("gan" if "gan" in path.name else "unrolled" if path.name.startswith(
        ("varnet", "modl")) else "prior")
    assert Path(cfg["data"]["path"]).is_absolute()
    assert cfg["train"]["steps"] > 0


def test_resume_skips_a_truncated_checkpoint_and_a_partial_log_line(tmp_path, dataset):
    """A kill mid-write (full disk) may leave the newest checkpoint truncated and the log's last
    line partial: resume warns, continues from the newest readable checkpoint, and ends with the
    same weights as an uninterrupted run."""
    over = {"train.steps": 8, "train.save_every": 4, "heldout.every": 0}
    straight = train(_raw(dataset, tmp_path / "a", **over))
    out = tmp_path / "b"
    train(_raw(dataset, out, **over), stop_at=4)
    good = latest_checkpoint(out)
    bad = good.with_name("ckpt-00000006.pt")
    bad.write_bytes(good.read_bytes()[:1000])  # truncated
    with open(out / "log.jsonl", "a") as f:
        f.write('{"step": 5, "lo')  # partial last record
    with pytest.warns(UserWarning) as rec:
        resumed = train(_raw(dataset, out, **over), resume=True)
    messages = " ".join(str(w.message) for w in rec)
    assert "ckpt-00000006.pt: unreadable checkpoint" in messages and "partial record" in messages
    assert resumed["step"] == 8 and resumed["weights_sha256"] == straight["weights_sha256"]
    lines = (out / "log.jsonl").read_text().splitlines()
    assert all(json.loads(line) for line in lines)
    # nothing readable at all: one clear error naming the newest file
    for p in list_checkpoints(out):
        p.write_bytes(b"")
    with pytest.raises(InputError, match="ckpt-00000008.pt: unreadable checkpoint .empty file"):
        train(_raw(dataset, out, **over), resume=True)

"""The bad-input corpus (issue 19): every case runs one command line on a bad input and checks
the error contract of docs/design.md -- exit code 2, exactly one line on stderr naming the file /
key / option at fault, and no new, changed or removed file in the output location (nor in the
shared inputs).

Cases use ``{d}`` (inputs the module fixture builds once, never modified) and ``{o}`` (a fresh
output folder per case; a case's ``prep`` may first put things there, e.g. a user's files that
``--force`` must not delete). Two cases need more than one process or a small filesystem: a
second job on a locked output, and a full disk (a 64 KiB tmpfs, skipped where mounting is not
allowed).
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from mriprior.cli.main import main
from mriprior.data.dataset import DatasetWriter
from mriprior.io.cfl import write_cfl
from mriprior.physics.phantom import birdcage_maps, shepp_logan
from mriprior.physics.sense import Sense
from mriprior.priors.export import save_prior
from mriprior.priors.networks import network_from_preset

N = 24
TINY_NET = {"type": "unet", "base_channels": 8, "channel_mults": [1, 2], "num_res_blocks": 1,
            "attention_levels": [], "fourier_scale": 16.0}


def _blobs(path, kind, n=8, size=16, seed=0):
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size] / size
    with DatasetWriter(path, kind, (size, size), options={"normalize": "max"}) as w:
        for i in range(n):
            cy, cx = rng.uniform(0.3, 0.7, 2)
            img = np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / 0.05)
            if kind == "complex":
                img = img * np.exp(1j * (2 * xx + rng.uniform(0, 1)))
            w.add(img.astype(np.float32 if kind == "magnitude" else np.complex64),
                  {"source": f"s{i}", "split": "val" if i >= n - 2 else "train"})


def _hdr(path: Path, dims_line: str, cfl_bytes: int | None = 0):
    path.with_suffix(".hdr").write_text(f"# Dimensions\n{dims_line}\n")
    if cfl_bytes is not None:
        path.with_suffix(".cfl").write_bytes(b"\0" * cfl_bytes)


def _prior(d: Path, name: str, diffusion=None, mutate=None):
    torch.manual_seed(0)
    net = network_from_preset("cpu-small", base_channels=8, channel_mults=[1, 2],
                              attention_levels=[])
    save_prior(d / name, net, {"network": net.config, "parametrisation": "score",
                               "diffusion": diffusion or {"type": "ve", "sigma_min": 0.01,
                                                          "sigma_max": 1.0},
                               "data": {"channels": "complex"}})
    if mutate is not None:
        side = d / f"{name}.json"
        side.write_text(json.dumps(mutate(json.loads(side.read_text()))))


def _nan_weights(d: Path, name: str):
    from safetensors.torch import load_file, save_file
    _prior(d, name)
    w = d / f"{name}.safetensors"
    t = load_file(w)
    k = sorted(t)[0]
    t[k] = torch.full_like(t[k], float("nan"))
    save_file(t, w, metadata={"format": "mriprior-prior"})


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("bad")
    img = shepp_logan(N).to(torch.complex64)[None]
    maps = birdcage_maps(4, (N, N), normalize="rss")[None]
    mask = torch.zeros(N, N)
    mask[::2] = 1
    mask[N // 2 - 4: N // 2 + 4] = 1
    ksp = Sense(maps, mask).forward(img)[0].numpy()
    bart_k = ksp.transpose(2, 1, 0)[:, :, None, :]
    bart_m = maps[0].numpy().transpose(2, 1, 0)[:, :, None, :, None]
    write_cfl(d / "ksp", bart_k)
    write_cfl(d / "sens", bart_m)
    write_cfl(d / "img", img[0].numpy().T)
    write_cfl(d / "img_small", img[0, :16, :16].numpy().T)
    k = bart_k.copy()
    k[3, 4, 0, 1] = np.nan
    write_cfl(d / "ksp_nan", k)
    k = bart_k.copy()
    k[0, 0, 0, 0] = np.inf
    write_cfl(d / "ksp_inf", k)
    write_cfl(d / "ksp_zero", np.zeros_like(bart_k))
    write_cfl(d / "img_zero", np.zeros((N, N), np.complex64))
    write_cfl(d / "ksp_small", bart_k[:16, :16])
    m = bart_m.copy()
    m[5, 5, 0, 2, 0] = np.nan
    write_cfl(d / "sens_nan", m)
    write_cfl(d / "sens_zero", np.zeros_like(bart_m))
    write_cfl(d / "sens_small", bart_m[:16, :16])
    write_cfl(d / "sens_3coil", bart_m[:, :, :, :3])
    pat = mask.numpy().T[:, :, None].astype(np.complex64)
    write_cfl(d / "pat_small", pat[:16, :16])
    pat[2, 2, 0] = np.nan
    write_cfl(d / "pat_nan", pat)
    write_cfl(d / "pat_4coil", np.repeat(mask.numpy().T[:, :, None, None], 4, 3))
    _hdr(d / "huge", "4294967296 4294967296 4294967296")           # product wraps in int64
    _hdr(d / "nodims", "", None)
    (d / "nodims.hdr").write_text("# Command\nbart ones\n")
    _hdr(d / "negdims", "24 -24 1 4")
    _hdr(d / "textdims", "24 twenty-four")
    _hdr(d / "trunc", "24 24 1 4", cfl_bytes=100)
    _hdr(d / "nocfl", "24 24 1 4", cfl_bytes=None)
    (d / "dirhdr.hdr").mkdir()
    # priors: a good one and broken ones
    _prior(d, "prior")
    _prior(d, "p_list", mutate=lambda m: [m])
    (d / "p_json.safetensors").write_bytes((d / "prior.safetensors").read_bytes())
    (d / "p_json.json").write_text("{\"format\": ")
    _prior(d, "p_big", mutate=lambda m: {**m, "network": {**m["network"],
                                                         "base_channels": 8192}})
    _prior(d, "p_xx", mutate=lambda m: {**m, "diffusion": {**m["diffusion"], "type": "xx"}})
    _prior(d, "p_vp", mutate=lambda m: {**m, "diffusion": {**m["diffusion"], "type": "vp"}})
    _nan_weights(d, "p_nan")
    _prior(d, "p_trunc")
    w = d / "p_trunc.safetensors"
    w.write_bytes(w.read_bytes()[:2000])
    # datasets, images, configs
    _blobs(d / "mag", "magnitude")
    _blobs(d / "cplx", "complex")
    (d / "broken").mkdir()
    (d / "broken" / "manifest.json").write_text("{not json")
    (d / "pngs").mkdir()
    for i in range(3):
        Image.fromarray(np.full((16, 16), 40 * (i + 1), np.uint8)).save(d / "pngs" / f"{i}.png")
    (d / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 40)
    return d


# ----------------------------------------------------------------------------- prep helpers
def user_folder(name: str) -> Callable:
    """``{o}/name`` holding a user's files (what --force must never delete)."""
    def prep(o: Path, d: Path):
        (o / name).mkdir()
        (o / name / "thesis.tex").write_text("years of work")
        (o / name / "notes.txt").write_text("keep me")
    return prep


def regular_file(name: str) -> Callable:
    def prep(o: Path, d: Path):
        (o / name).write_text("a file, not a folder")
    return prep


def directory(name: str) -> Callable:
    def prep(o: Path, d: Path):
        (o / name).mkdir()
    return prep


def config(name: str = "c.yaml", text: str | None = None, output="run", **over) -> Callable:
    """Write a tiny training config ``{o}/name`` (``text``: verbatim YAML instead)."""
    def prep(o: Path, d: Path):
        if text is not None:
            (o / name).write_text(textwrap.dedent(text).format(d=d, o=o))
            return
        raw = {"model": dict(TINY_NET),
               "data": {"path": str(d / "cplx"), "crop": 16, "channels": "complex",
                        "num_workers": 0},
               "diffusion": {"type": "ve", "sigma_min": 0.01, "sigma_max": 1.0},
               "optim": {"lr": 2e-3, "warmup_steps": 2},
               "train": {"batch_size": 2, "steps": 4, "save_every": 2, "output": str(o / output),
                         "device": "cpu"},
               "heldout": {"every": 2, "n_images": 2, "sigmas": [0.1]}}
        for dotted, value in over.items():
            section, key = dotted.split("__")
            raw[section][key] = value
        (o / name).write_text(yaml.safe_dump(raw))
    return prep


def both(*preps) -> Callable:
    def prep(o, d):
        for p in preps:
            p(o, d)
    return prep


def empty_checkpoint(o: Path, d: Path):
    config()(o, d)
    (o / "run" / "checkpoints").mkdir(parents=True)
    (o / "run" / "checkpoints" / "ckpt-00000002.pt").write_bytes(b"")


@dataclass
class Case:
    id: str
    argv: list
    words: str            # must appear in the one stderr line
    prep: Callable | None = None


PICS = ["pics", "-l1", "-i", "3"]
RECON = ["recon", "--quiet", "--nfe", "2", "--chains", "2"]
OK = ["{d}/ksp", "{d}/sens"]
SAMPLE = ["sample", "--n", "1", "--size", "16", "16", "--steps", "2"]
CASES = [
    # -- cfl headers and data files ------------------------------------------------------------
    Case("cfl-huge-dims", ["fft", "-u", "3", "{d}/huge", "{o}/x"], "huge.cfl: holds 0 bytes"),
    Case("cfl-no-dims", ["fft", "-u", "3", "{d}/nodims", "{o}/x"], "no '# Dimensions'"),
    Case("cfl-negative-dims", ["fft", "-u", "3", "{d}/negdims", "{o}/x"], "negdims.hdr: bad"),
    Case("cfl-text-dims", ["fft", "-u", "3", "{d}/textdims", "{o}/x"], "textdims.hdr: bad"),
    Case("cfl-truncated", ["fft", "-u", "3", "{d}/trunc", "{o}/x"], "trunc.cfl: holds 100"),
    Case("cfl-missing-data", ["fft", "-u", "3", "{d}/nocfl", "{o}/x"], "nocfl.cfl: data file"),
    Case("cfl-missing", ["fft", "-u", "3", "{d}/nothing", "{o}/x"], "nothing.hdr: header file"),
    Case("cfl-hdr-is-dir", ["fft", "-u", "3", "{d}/dirhdr", "{o}/x"], "dirhdr.hdr: is a dir"),
    # -- output locations ----------------------------------------------------------------------
    Case("out-cfl-is-dir", ["fft", "-u", "3", "{d}/img", "{o}/x"], "x.cfl: Is a directory",
         directory("x.cfl")),
    Case("out-under-file", ["fft", "-u", "3", "{d}/img", "{o}/f/x"], "f: is a file, not a folder",
         regular_file("f")),
    Case("out-pics-under-file", PICS + ["-r", "0.01"] + OK + ["{o}/f/x"], "f: is a file",
         regular_file("f")),
    Case("out-phantom-is-dir", ["phantom", "-x", "16", "{o}/x"], "Is a directory",
         directory("x.cfl")),
    # -- pics ----------------------------------------------------------------------------------
    Case("pics-r-negative", PICS + ["-r", "-1"] + OK + ["{o}/x"], "-r -1.0"),
    Case("pics-r-nan", PICS + ["-r", "nan"] + OK + ["{o}/x"], "-r nan"),
    Case("pics-s-zero", PICS + ["-r", "0.01", "-s", "0"] + OK + ["{o}/x"], "-s 0.0"),
    Case("pics-w-zero", PICS + ["-r", "0.01", "-w", "0"] + OK + ["{o}/x"], "-w 0.0"),
    Case("pics-w-negative", PICS + ["-r", "0.01", "-w", "-2"] + OK + ["{o}/x"], "-w -2.0"),
    Case("pics-ksp-nan", PICS + ["-r", "0.01", "{d}/ksp_nan", "{d}/sens", "{o}/x"],
         "ksp_nan: NaN or Inf in k-space"),
    Case("pics-ksp-inf", PICS + ["-r", "0.01", "{d}/ksp_inf", "{d}/sens", "{o}/x"],
         "ksp_inf: NaN or Inf in k-space"),
    Case("pics-sens-nan", PICS + ["-r", "0.01", "{d}/ksp", "{d}/sens_nan", "{o}/x"],
         "sens_nan: NaN or Inf in the coil maps"),
    Case("pics-sens-zero", PICS + ["-r", "0.01", "{d}/ksp", "{d}/sens_zero", "{o}/x"],
         "sens_zero: the coil maps are zero"),
    Case("pics-pattern-nan", PICS + ["-r", "0.01", "-p", "{d}/pat_nan"] + OK + ["{o}/x"],
         "pat_nan: NaN or Inf in the pattern"),
    Case("pics-pattern-size", PICS + ["-r", "0.01", "-p", "{d}/pat_small"] + OK + ["{o}/x"],
         "pat_small"),
    Case("pics-pattern-coils", PICS + ["-r", "0.01", "-p", "{d}/pat_4coil"] + OK + ["{o}/x"],
         "pat_4coil"),
    Case("pics-sens-size", PICS + ["-r", "0.01", "{d}/ksp", "{d}/sens_small", "{o}/x"],
         "sens_small"),
    Case("pics-sens-coils", PICS + ["-r", "0.01", "{d}/ksp", "{d}/sens_3coil", "{o}/x"],
         "sens_3coil"),
    Case("pics-bad-flag", PICS + ["--frobnicate"] + OK + ["{o}/x"], "--frobnicate"),
    Case("pics-batch-mode", PICS + ["-L", "8", "-r", "0.01"] + OK + ["{o}/x"], "-L (BART pics)"),
    Case("pics-admm-l1", PICS + ["-m", "-r", "0.01"] + OK + ["{o}/x"], "-m (ADMM)"),
    Case("pics-trajectory", PICS + ["-t", "{d}/ksp", "-r", "0.01"] + OK + ["{o}/x"],
         "non-Cartesian"),
    # -- small cfl tools -----------------------------------------------------------------------
    Case("fmac-dims", ["fmac", "{d}/ksp", "{d}/ksp_small", "{o}/x"], "ksp_small has 16: dims must agree"),
    Case("transpose-dim", ["transpose", "0", "16", "{d}/ksp", "{o}/x"], "dim 16"),
    Case("slice-range", ["slice", "3", "4", "{d}/ksp", "{o}/x"], "position 4 out of range"),
    Case("toimg-3d", ["toimg", "{d}/ksp", "{o}/x.png"], "toimg writes one 2D image"),
    Case("toimg-zero", ["toimg", "{d}/img_zero", "{o}/x.png"], "zero everywhere"),
    # -- ecalib / cc / poisson / metrics -------------------------------------------------------
    Case("ecalib-ksp-inf", ["ecalib", "{d}/ksp_inf", "{o}/s"], "ksp_inf: NaN or Inf in k-"),
    Case("ecalib-ksp-nan", ["ecalib", "{d}/ksp_nan", "{o}/s"], "ksp_nan: NaN or Inf in k-"),
    Case("ecalib-ksp-zero", ["ecalib", "{d}/ksp_zero", "{o}/s"], "ksp_zero"),
    Case("ecalib-cal-too-big", ["ecalib", "-r", "64", "{d}/ksp", "{o}/s"], "-r"),
    Case("cc-ksp-nan", ["cc", "-p", "2", "{d}/ksp_nan", "{o}/c"], "ksp_nan: NaN or Inf in k-"),
    Case("cc-too-many", ["cc", "-p", "9", "{d}/ksp", "{o}/c"], "-p 9"),
    Case("poisson-accel-unreachable", ["poisson", "-Y", "64", "-Z", "64", "--accel", "1000",
                                       "{o}/p"], "--accel 1000"),
    Case("poisson-zero-size", ["poisson", "-Y", "0", "-Z", "64", "{o}/p"], "-Y"),
    Case("metrics-shape", ["metrics", "{d}/img", "{d}/img_small"], "img_small"),
    Case("metrics-zero-reference", ["metrics", "{d}/ksp_zero", "{d}/ksp_zero"], "ksp_zero"),
    # -- prior files ---------------------------------------------------------------------------
    Case("recon-ksp-nan", RECON + ["--prior", "{d}/prior", "{d}/ksp_nan", "{d}/sens", "{o}/x"],
         "ksp_nan: NaN or Inf in k-space"),
    Case("recon-sens-zero", RECON + ["--prior", "{d}/prior", "{d}/ksp", "{d}/sens_zero",
                                     "{o}/x"], "sens_zero"),
    Case("recon-chains-0", RECON + ["--prior", "{d}/prior", "--chains", "0"] + OK + ["{o}/x"],
         "--chains"),
    Case("recon-batch-0", RECON + ["--prior", "{d}/prior", "--batch", "0"] + OK + ["{o}/x"],
         "--batch"),
    Case("recon-flag-1-chain", RECON + ["--prior", "{d}/prior", "--chains", "1", "--flag",
                                        "{o}/f"] + OK + ["{o}/x"], "--flag needs an interval"),
    Case("recon-nfe-0", RECON + ["--prior", "{d}/prior", "--nfe", "0"] + OK + ["{o}/x"],
         "--nfe"),
    Case("recon-iters-0", ["recon", "--quiet", "--prior", "{d}/prior", "--method", "pics", "-i",
                           "0"] + OK
         + ["{o}/x"], "-i must be an integer"),
    Case("recon-sigma-start", RECON + ["--prior", "{d}/prior", "--sigma-start", "-1"] + OK
         + ["{o}/x"], "--sigma-start"),
    Case("recon-noise-var-negative", RECON + ["--prior", "{d}/prior", "--noise-var", "-1"] + OK
         + ["{o}/x"], "--noise-var '-1'"),
    Case("recon-noise-var-text", RECON + ["--prior", "{d}/prior", "--noise-var", "lots"] + OK
         + ["{o}/x"], "--noise-var 'lots'"),
    Case("recon-device-tpu", RECON + ["--prior", "{d}/prior", "--device", "tpu"] + OK
         + ["{o}/x"], "tpu"),
    Case("prior-missing", RECON + ["--prior", "{d}/missing"] + OK + ["{o}/x"], "missing.json"),
    Case("prior-sidecar-list", RECON + ["--prior", "{d}/p_list"] + OK + ["{o}/x"],
         "p_list.json"),
    Case("prior-sidecar-json", RECON + ["--prior", "{d}/p_json"] + OK + ["{o}/x"],
         "p_json.json"),
    Case("prior-huge-network", RECON + ["--prior", "{d}/p_big"] + OK + ["{o}/x"], "p_big"),
    Case("prior-unknown-type", RECON + ["--prior", "{d}/p_xx"] + OK + ["{o}/x"], "p_xx.json"),
    Case("prior-type-mismatch", RECON + ["--prior", "{d}/p_vp"] + OK + ["{o}/x"], "p_vp.json"),
    Case("prior-nan-weights", RECON + ["--prior", "{d}/p_nan"] + OK + ["{o}/x"],
         "p_nan.safetensors"),
    Case("prior-truncated", RECON + ["--prior", "{d}/p_trunc"] + OK + ["{o}/x"], "p_trunc"),
    Case("sample-nan-weights", SAMPLE + ["--prior", "{d}/p_nan", "--out", "{o}/s.png"],
         "p_nan.safetensors"),
    Case("sample-n-0", ["sample", "--n", "0", "--prior", "{d}/prior", "--out", "{o}/s.png"],
         "--n"),
    # -- training configs and checkpoints ------------------------------------------------------
    Case("train-config-missing", ["train", "{o}/none.yaml"], "none.yaml"),
    Case("train-yaml-tag", ["train", "{o}/c.yaml"], "c.yaml",
         config(text="model: !!python/object/apply:os.system ['echo pwned']\n")),
    Case("train-yaml-syntax", ["train", "{o}/c.yaml"], "c.yaml",
         config(text="model: [unclosed\ntrain: {{\n")),
    Case("train-lr-nan", ["train", "{o}/c.yaml"], "optim.lr", config(optim__lr=float("nan"))),
    Case("train-unknown-key", ["train", "{o}/c.yaml"], "optim.lerning_rate",
         config(optim__lerning_rate=1e-3)),
    Case("train-steps-negative", ["train", "{o}/c.yaml"], "train.steps",
         config(train__steps=-1)),
    Case("train-data-missing", ["train", "{o}/c.yaml"], "none",
         config(data__path="/nonexistent/none")),
    Case("train-crop-too-big", ["train", "{o}/c.yaml"], "crop (64, 64) is larger",
         config(data__crop=64)),
    Case("train-output-is-file", ["train", "{o}/c.yaml"], "run: exists and is not a folder",
         both(config(), regular_file("run"))),
    Case("train-empty-checkpoint", ["train", "{o}/c.yaml", "--resume"],
         "ckpt-00000002.pt: unreadable checkpoint (empty file)", empty_checkpoint),
    Case("train-existing-checkpoint", ["train", "{o}/c.yaml"], "--resume", empty_checkpoint),
    # -- datasets ------------------------------------------------------------------------------
    Case("import-force-user-folder", ["data", "import", "{d}/pngs", "--out", "{o}/ds",
                                      "--shape", "16", "16", "--force"],
         "not an mriprior dataset", user_folder("ds")),
    Case("import-force-file", ["data", "import", "{d}/pngs", "--out", "{o}/ds", "--shape",
                               "16", "16", "--force"], "not a folder", regular_file("ds")),
    Case("import-exists", ["data", "import", "{d}/pngs", "--out", "{o}/ds", "--shape", "16",
                           "16"], "already exists", user_folder("ds")),
    Case("import-source-missing", ["data", "import", "{d}/nope", "--out", "{o}/ds"], "nope"),
    Case("import-only-corrupt", ["data", "import", "{d}/corrupt.png", "--out", "{o}/ds"],
         "corrupt.png"),
    Case("import-shape-zero", ["data", "import", "{d}/pngs", "--out", "{o}/ds", "--shape", "0",
                               "16"], "shape"),
    Case("simulate-not-dataset", ["data", "simulate", "--in", "{d}/pngs", "--out", "{o}/c"],
         "pngs"),
    Case("simulate-broken-manifest", ["data", "simulate", "--in", "{d}/broken", "--out",
                                      "{o}/c"], "broken/manifest.json"),
    Case("simulate-force-user-folder", ["data", "simulate", "--in", "{d}/mag", "--out", "{o}/c",
                                        "--force"], "not an mriprior dataset",
         user_folder("c")),
    Case("simulate-complex-input", ["data", "simulate", "--in", "{d}/cplx", "--out", "{o}/c"],
         "cplx"),
    Case("subset-too-many", ["data", "subset", "--in", "{d}/mag", "--out", "{o}/s", "--n",
                             "100"], "100"),
    Case("subset-force-user-folder", ["data", "subset", "--in", "{d}/mag", "--out", "{o}/s",
                                      "--n", "2", "--force"], "not an mriprior dataset",
         user_folder("s")),
    Case("augment-device-tpu", ["augment", "--method", "smooth", "--in", "{d}/mag", "--out",
                                "{o}/a", "--device", "tpu", "--quiet"], "tpu"),
    Case("augment-force-user-folder", ["augment", "--method", "smooth", "--in", "{d}/mag",
                                       "--out", "{o}/a", "--force", "--quiet"],
         "not an mriprior dataset", user_folder("a")),
    Case("augment-prior-nan", ["augment", "--method", "langevin", "--prior", "{d}/p_nan",
                               "--in", "{d}/mag", "--out", "{o}/a", "--quiet"],
         "p_nan.safetensors"),
    Case("augment-smooth-with-prior", ["augment", "--method", "smooth", "--prior", "{d}/prior",
                                       "--in", "{d}/mag", "--out", "{o}/a", "--quiet"],
         "prior"),
]


def _tree(root: Path) -> dict:
    """Every path under ``root`` with its size and modification time."""
    out = {}
    for p in sorted(root.rglob("*")):
        st = p.lstat()
        out[str(p.relative_to(root))] = (p.is_dir(), st.st_size, st.st_mtime_ns)
    return out


def _run(argv, d: Path, o: Path, capsys) -> tuple[int, list[str]]:
    try:
        code = main([a.format(d=d, o=o) for a in argv])
    except SystemExit as e:  # argparse's own exit (bad flags): the same contract
        code = e.code
    captured = capsys.readouterr()
    return code, captured.err.strip().splitlines()


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_one_line_exit_2_nothing_written(files, tmp_path, capsys, case):
    o = tmp_path / "o"
    o.mkdir()
    if case.prep is not None:
        case.prep(o, files)
    before_o, before_d = _tree(o), _tree(files)
    code, err = _run(case.argv, files, o, capsys)
    assert code == 2, err
    assert len(err) == 1 and case.words.format(d=files, o=o) in err[0], err
    assert _tree(o) == before_o, "the output location changed"
    assert _tree(files) == before_d, "an input changed"
    assert not list(tmp_path.glob(".*")), "a lock or temporary file was left beside the output"


def test_corpus_size():
    assert len(CASES) + 3 >= 60  # + the lock and full-disk cases below


# ----------------------------------------------------------------------------- one job per output
HOLD = """
import sys, time
from mriprior.io.files import output_lock
with output_lock(sys.argv[1], "test job"):
    print("held", flush=True)
    time.sleep(60)
"""


@pytest.fixture
def lock_holder(tmp_path):
    """A second process holding the lock of ``{o}/out`` (as a running job would)."""
    procs = []

    def start(out: Path):
        p = subprocess.Popen([sys.executable, "-c", HOLD, str(out)], stdout=subprocess.PIPE,
                             text=True)
        procs.append(p)
        assert p.stdout.readline().strip() == "held"
        return p

    yield start
    for p in procs:
        p.kill()
        p.wait()


@pytest.mark.parametrize("argv", [
    ["augment", "--method", "smooth", "--in", "{d}/mag", "--out", "{o}/out", "--quiet"],
    ["data", "simulate", "--in", "{d}/mag", "--out", "{o}/out"],
    ["data", "import", "{d}/pngs", "--out", "{o}/out", "--shape", "16", "16"],
    ["train", "{o}/c.yaml"],
], ids=["augment", "simulate", "import", "train"])
def test_second_job_on_one_output_names_the_first(files, tmp_path, capsys, lock_holder, argv):
    o = tmp_path / "o"
    o.mkdir()
    config(output="out")(o, files)
    pid = lock_holder(o / "out").pid
    before = _tree(o)
    code, err = _run(argv, files, o, capsys)
    assert code == 2 and len(err) == 1 and f"PID {pid}" in err[0], err
    assert _tree(o) == before


def test_lock_released_and_reusable(files, tmp_path, capsys, lock_holder):
    """A killed job's lock is released by the kernel: the next run proceeds."""
    o = tmp_path / "o"
    o.mkdir()
    holder = lock_holder(o / "a")
    argv = ["augment", "--method", "zero", "--in", "{d}/mag", "--out", "{o}/a", "--quiet"]
    assert _run(argv, files, o, capsys)[0] == 2
    holder.kill()  # SIGKILL: no clean-up code runs; the kernel drops the lock
    holder.wait()
    code, err = _run(argv, files, o, capsys)
    assert code == 0, err
    assert (o / "a" / "manifest.json").exists() and not (o / ".a.lock").exists()


# ----------------------------------------------------------------------------- full disk
@pytest.fixture
def full_disk(tmp_path):
    """A 64 KiB tmpfs (root and mount permission needed; skipped otherwise)."""
    mnt = tmp_path / "small"
    mnt.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mnt)],
                       capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here: {r.stderr.strip() or r.returncode}")
    yield mnt
    subprocess.run(["umount", str(mnt)], check=False)


@pytest.mark.parametrize("argv, fill", [
    (["phantom", "-x", "128", "-s", "8", "-k", "{o}/k"], 0),      # 1 MiB of k-space
    (PICS + ["-r", "0.01"] + OK + ["{o}/x"], 62 * 1024),       # 4.6 KB of image into ~2 KB
    (["data", "import", "{d}/pngs", "--out", "{o}/ds", "--shape", "128", "128"], 0),
    (["augment", "--method", "zero", "--in", "{d}/mag", "--out", "{o}/a", "--samples", "64",
      "--quiet"], 0),
], ids=["phantom", "pics", "import", "augment"])
def test_full_disk_one_line_nothing_left(files, full_disk, capsys, argv, fill):
    if fill:
        (full_disk / "filler").write_bytes(b"\0" * fill)
    code, err = _run(argv, files, full_disk, capsys)
    assert code == 2 and len(err) == 1 and "No space left on device" in err[0], err
    left = [p.name for p in full_disk.iterdir() if p.name != "filler"]
    assert not left, left


def test_full_disk_during_training_keeps_a_resumable_run(files, full_disk, tmp_path, capsys):
    """The first checkpoint does not fit: one line, no temporary file, no lock left; the run
    folder (config, log) stays for a resume once there is space."""
    config(output=str(full_disk / "run"), train__tensorboard=False)(tmp_path, files)
    code, err = _run(["train", str(tmp_path / "c.yaml")], files, tmp_path, capsys)
    assert code == 2 and len(err) == 1 and "No space left on device" in err[0], err
    assert "ckpt-00000002.pt" in err[0]
    names = [p.name for p in full_disk.rglob("*")]
    assert not [n for n in names if n.startswith(".")], names


def _has_tensorboard() -> bool:
    try:
        import torch.utils.tensorboard  # noqa: F401
    except ImportError:
        return False
    return True


@pytest.mark.skipif(_has_tensorboard(), reason="TensorBoard is installed here")
def test_tensorboard_required_but_missing(files, tmp_path, capsys):
    config(train__tensorboard=True)(tmp_path, files)
    code, err = _run(["train", str(tmp_path / "c.yaml")], files, tmp_path, capsys)
    assert code == 2 and len(err) == 1 and "train.tensorboard: true" in err[0], err
    assert "pip install 'mriprior[tensorboard]'" in err[0]
    assert not (tmp_path / "run").exists()

"""Bad input at the command line: exit code 2, one line on stderr naming the file / option at
fault, and no output written (the start of the issue-19 corpus)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mriprior.cli.main import main
from mriprior.io.cfl import write_cfl
from mriprior.physics.phantom import birdcage_maps, shepp_logan
from mriprior.physics.sense import Sense
from mriprior.priors.export import save_prior
from mriprior.priors.networks import network_from_preset

N = 24


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
    k = bart_k.copy()
    k[3, 4, 0, 1] = np.nan
    write_cfl(d / "ksp_nan", k)
    k = bart_k.copy()
    k[0, 0, 0, 0] = np.inf
    write_cfl(d / "ksp_inf", k)
    m = bart_m.copy()
    m[5, 5, 0, 2, 0] = np.nan
    write_cfl(d / "sens_nan", m)
    write_cfl(d / "sens_zero", np.zeros_like(bart_m))
    pat = mask.numpy().T[:, :, None].astype(np.complex64)
    pat[2, 2, 0] = np.nan
    write_cfl(d / "pat_nan", pat)
    torch.manual_seed(0)
    net = network_from_preset("cpu-small", base_channels=8, channel_mults=[1, 2],
                              attention_levels=[])
    save_prior(d / "prior", net, {"network": net.config, "parametrisation": "score",
                                  "diffusion": {"type": "ve", "sigma_min": 0.01,
                                                "sigma_max": 1.0},
                                  "data": {"channels": "complex"}})
    return d


PICS = ["pics", "-l1", "-i", "3"]
RECON = ["recon", "--quiet", "--nfe", "2", "--chains", "2"]
CASES = [
    # (argument list with {d} for the folder; the output is appended; expected words)
    (PICS + ["-r", "-1", "{d}/ksp", "{d}/sens"], "-r -1.0"),
    (PICS + ["-r", "nan", "{d}/ksp", "{d}/sens"], "-r nan"),
    (PICS + ["-r", "0.01", "-s", "0", "{d}/ksp", "{d}/sens"], "-s 0.0"),
    (PICS + ["-r", "0.01", "-w", "0", "{d}/ksp", "{d}/sens"], "-w 0.0"),
    (PICS + ["-r", "0.01", "-w", "-2", "{d}/ksp", "{d}/sens"], "-w -2.0"),
    (PICS + ["-r", "0.01", "{d}/ksp_nan", "{d}/sens"], "ksp_nan: k-space contains NaN or Inf"),
    (PICS + ["-r", "0.01", "{d}/ksp_inf", "{d}/sens"], "ksp_inf: k-space contains NaN or Inf"),
    (PICS + ["-r", "0.01", "{d}/ksp", "{d}/sens_nan"], "sens_nan: the coil maps contain"),
    (PICS + ["-r", "0.01", "{d}/ksp", "{d}/sens_zero"], "sens_zero: the coil maps are zero"),
    (PICS + ["-r", "0.01", "-p", "{d}/pat_nan", "{d}/ksp", "{d}/sens"],
     "pat_nan: the pattern contains NaN or Inf"),
    (RECON + ["--prior", "{d}/prior", "{d}/ksp_nan", "{d}/sens"], "ksp_nan: k-space"),
    (RECON + ["--prior", "{d}/prior", "{d}/ksp", "{d}/sens_zero"], "sens_zero"),
    (RECON + ["--prior", "{d}/prior", "--chains", "0", "{d}/ksp", "{d}/sens"], "--chains"),
    (RECON + ["--prior", "{d}/prior", "--batch", "0", "{d}/ksp", "{d}/sens"], "--batch"),
    (RECON + ["--prior", "{d}/prior", "--nfe", "0", "{d}/ksp", "{d}/sens"], "--nfe"),
    (RECON + ["--prior", "{d}/prior", "--method", "pics", "-i", "0", "{d}/ksp", "{d}/sens"],
     "--iters"),
    (RECON + ["--prior", "{d}/prior", "--sigma-start", "-1", "{d}/ksp", "{d}/sens"],
     "--sigma-start"),
    (RECON + ["--prior", "{d}/missing", "{d}/ksp", "{d}/sens"], "missing.json"),
]


@pytest.mark.parametrize("args, words", CASES, ids=[" ".join(c[0][:1] + c[0][-3:]) + f" #{i}"
                                                     for i, c in enumerate(CASES)])
def test_bad_input_one_line_exit_2_nothing_written(files, tmp_path, capsys, args, words):
    out = tmp_path / "out"
    argv = [a.format(d=files) for a in args] + [str(out)]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and words in err[0], err
    assert not list(tmp_path.iterdir())  # no output, no temporary files

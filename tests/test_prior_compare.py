"""`mriprior experiment priors` on a toy budget, and `mriprior data subset`."""

import json
import re

import numpy as np
import pytest
import torch

from mriprior.cli.main import main
from mriprior.data.dataset import DatasetWriter, open_dataset
from mriprior.data.subset import merge_datasets, subset_indices
from mriprior.errors import InputError
from mriprior.experiments.prior_compare import run_prior_comparison, summarise, table
from mriprior.io.cfl import write_cfl
from mriprior.physics.phantom import birdcage_maps, shepp_logan
from mriprior.physics.fft import fft2c
from mriprior.priors.export import save_prior
from mriprior.priors.networks import network_from_preset

N = 64


def _prior(path, channels):
    torch.manual_seed(0)
    c = 2 if channels == "complex" else 1
    net = network_from_preset("cpu-small", in_channels=c, base_channels=8, channel_mults=[1, 2],
                              attention_levels=[])
    save_prior(path, net, {"network": net.config, "parametrisation": "score",
                           "diffusion": {"type": "ve", "sigma_min": 0.01, "sigma_max": 1.0},
                           "data": {"channels": channels, "dataset": "nowhere"}})
    return str(path)


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    d = tmp_path_factory.mktemp("cmp")
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, N), torch.linspace(-1, 1, N), indexing="ij")
    base = shepp_logan(N).abs()
    with DatasetWriter(d / "data", "complex", (N, N)) as w:
        for i, split in enumerate(["train", "val", "test", "test"]):
            img = base * torch.exp(1j * (0.5 * yy + 0.3 * i * xx))
            w.add(img.to(torch.complex64).numpy(), {"source": f"s{i}", "subject": f"p{i}",
                                                    "index": i, "split": split})
    # a "real" slice folder in BART layout: ksp (x, y, z, coil), img (x, y, z, 1, maps)
    img = (base * torch.exp(0.4j * xx)).to(torch.complex64)
    maps = birdcage_maps(4, (N, N), normalize="rss")
    ksp = fft2c(maps * img)
    mask = torch.zeros(N, N)
    mask[::2] = 1
    mask[N // 2 - 12: N // 2 + 12] = 1
    real = d / "real"
    real.mkdir()
    write_cfl(real / "ksp", (ksp * mask).numpy().transpose(2, 1, 0)[:, :, None, :])
    write_cfl(real / "img", img.numpy().T[:, :, None, None, None])
    return {"data": str(d / "data"), "real": str(real),
            "complex": _prior(d / "pc", "complex"), "mag": _prior(d / "pm", "magnitude")}


KW = dict(n_slices=2, patterns=("poisson",), chains=1, nfe=3, pics_iters=3,
          l1_grid=(0.01,), pics_grid=(0.1, 0.5), sigma_grid=(0.3,))


def test_comparison_runs_resumes_and_tabulates(toy, tmp_path):
    out = tmp_path / "out"
    logs = []
    res = run_prior_comparison({"c": toy["complex"]}, toy["data"], out, real=toy["real"],
                               log=logs.append, **KW)
    cases = {e["case"] for e in res["entries"].values()}
    assert len(cases) == 3  # two simulated test slices + the real slice
    assert {e["method"] for e in res["entries"].values()} == {
        "zero-filled", "L1-wavelet", "c PICS", "c fast MMSE"}
    for e in res["entries"].values():
        assert np.isfinite(e["psnr"]) and 0 < e["ssim"] <= 1
    assert (out / "prior_compare.png").stat().st_size > 0
    tuned = [v for k, v in res["tuning"]["poisson"].items() if k.startswith("c@")]
    assert len(tuned) == 1 and tuned[0]["pics_lambda"] in KW["pics_grid"]
    before = {k: v["seconds"] for k, v in res["entries"].items()}

    # a second prior (magnitude) later: the first prior's entries are reused, not recomputed
    res2 = run_prior_comparison({"c": toy["complex"], "m": toy["mag"]}, toy["data"], out,
                                real=toy["real"], log=logs.append, **KW)
    for k, s in before.items():
        assert res2["entries"][k]["seconds"] == s
    assert {e["method"] for e in res2["entries"].values()} >= {"m PICS", "m fast MMSE"}
    assert len(res2["entries"]) == 3 * 6
    summ = summarise(res2)
    assert summ[("poisson", "sim")]["L1-wavelet"]["n"] == 2
    assert summ[("poisson", "real")]["m fast MMSE"]["n"] == 1
    head, text = table(res2, "cmd")
    assert text.startswith(head) and "| m fast MMSE |" in text and "| **L1-wavelet** |" in text
    assert "| m | `nowhere` | magnitude | ? | None |" in text

    # a wider grid: only the new values are validated; entries whose parameter stayed are kept
    val_before = json.loads(json.dumps(res2["tuning"]["poisson"]))
    res4 = run_prior_comparison({"c": toy["complex"], "m": toy["mag"]}, toy["data"], out,
                                real=toy["real"], log=logs.append,
                                **dict(KW, sigma_grid=(0.3, 0.05)))
    for name in ("c", "m"):
        key = next(k for k in val_before if k.startswith(name + "@"))
        old, new = val_before[key]["val_psnr"]["fast"], res4["tuning"]["poisson"][key]
        assert set(new["val_psnr"]["fast"]) == {"0.3", "0.05"}
        assert new["val_psnr"]["fast"]["0.3"] == old["0.3"]
        assert new["val_psnr"]["pics"] == val_before[key]["val_psnr"]["pics"]
        for k, e in res4["entries"].items():
            if f"|{name} fast MMSE|" in k:
                assert e["param"] == new["sigma_start"]
                assert (e["seconds"] == res2["entries"][k]["seconds"]) == (
                    new["sigma_start"] == 0.3)
            elif f"|{name} PICS|" in k:
                assert e["seconds"] == res2["entries"][k]["seconds"]

    # other settings: the cache is not reused
    res3 = run_prior_comparison({"c": toy["complex"]}, toy["data"], out, **dict(KW, n_slices=1))
    assert len(res3["entries"]) == 4


def test_comparison_rejects_bad_input(toy, tmp_path):
    with pytest.raises(InputError, match="no pc-missing.safetensors"):
        run_prior_comparison({"x": toy["complex"] + "-missing"}, toy["data"], tmp_path, **KW)
    with pytest.raises(InputError, match="unknown pattern"):
        run_prior_comparison({"c": toy["complex"]}, toy["data"], tmp_path,
                             **dict(KW, patterns=("spiral",)))
    assert main(["experiment", "priors", "--prior", toy["complex"], "--data", toy["data"],
                 "--out", str(tmp_path)]) == 2  # NAME= missing


def test_cli_writes_docs(toy, tmp_path, capsys):
    docs = tmp_path / "docs" / "experiments.md"
    assert main(["experiment", "priors", "--prior", f"c={toy['complex']}", "--data", toy["data"],
                 "--patterns", "poisson", "--slices", "1", "--chains", "1", "--nfe", "2",
                 "--out", str(tmp_path / "o"), "--docs", str(docs)]) == 0
    # progress: every line stamped with the elapsed time, the cases counted
    err = capsys.readouterr().err.splitlines()
    assert err and all(re.match(r"\[\d+:\d\d:\d\d\] ", line) for line in err)
    assert any("case 1/1 of pattern poisson" in line for line in err)
    text = docs.read_text()
    assert "## Priors trained on different data" in text and "simulated, Poisson-disc" in text
    assert (tmp_path / "docs" / "figures" / "prior_compare.png").exists()


# ----------------------------------------------------------------------------- data subset

def _records(splits):
    return [{"split": s} for s in splits]


def test_subset_indices_are_seeded_prefix_stable_and_respect_splits():
    recs = _records(["train", "val", "test"] * 20)
    a = subset_indices(recs, 10, seed=3)
    assert len(set(a)) == 10 and list(a) == sorted(a)
    assert set(a) <= set(subset_indices(recs, 25, seed=3))  # larger n: a superset
    assert not np.array_equal(a, subset_indices(recs, 10, seed=4))
    tv = subset_indices(recs, 40, splits=("train", "val"))
    assert all(recs[i]["split"] != "test" for i in tv)
    with pytest.raises(InputError, match="subset size 41"):
        subset_indices(recs, 41, splits=("train", "val"))
    with pytest.raises(InputError, match="unknown split"):
        subset_indices(recs, 1, splits=("training",))


def test_data_subset_cli(tmp_path):
    src = tmp_path / "src"
    with DatasetWriter(src, "magnitude", (4, 4), shard_size=3) as w:
        for i in range(9):
            w.add(np.full((4, 4), i, np.float32), {"source": f"f{i}", "split":
                                                   ["train", "val", "test"][i % 3]})
    (src / "LICENSES.md").write_text("licences")
    assert main(["data", "subset", "--in", str(src), "--out", str(tmp_path / "sub"), "--n", "4",
                 "--splits", "train,val", "--seed", "1"]) == 0
    sub = open_dataset(tmp_path / "sub")
    assert len(sub) == 4 and sub.kind == "magnitude"
    for i, r in enumerate(sub.records):
        assert r["split"] in ("train", "val") and r["source"] == f"f{r['subset_of']}"
        assert float(sub[i][0, 0]) == r["subset_of"]  # the right pixels came along
    assert sub.manifest["options"]["subset"] == {"source": str(src), "n": 4,
                                                 "splits": ["train", "val"], "keep": [],
                                                 "seed": 1, "source_count": 9}
    assert (tmp_path / "sub" / "LICENSES.md").read_text() == "licences"
    # two training slices drawn, val and test kept whole
    assert main(["data", "subset", "--in", str(src), "--out", str(tmp_path / "k"), "--n", "2",
                 "--splits", "train", "--keep", "val,test"]) == 0
    k = open_dataset(tmp_path / "k")
    assert [r["split"] for r in k.records].count("train") == 2 and len(k) == 8
    assert main(["data", "subset", "--in", str(src), "--out", str(tmp_path / "k2"), "--n", "2",
                 "--splits", "train", "--keep", "train"]) == 2
    # existing output without --force: one clear error, nothing changed
    assert main(["data", "subset", "--in", str(src), "--out", str(tmp_path / "sub"),
                 "--n", "2"]) == 2
    assert len(open_dataset(tmp_path / "sub")) == 4
    assert json.loads((tmp_path / "sub" / "manifest.json").read_text())["count"] == 4


def test_data_merge_cli(tmp_path):
    """The union of two datasets: chosen splits of each, in order, pixels and records kept."""
    for name, kind, offset in (("a", "complex", 0), ("b", "complex", 100), ("m", "magnitude", 0)):
        with DatasetWriter(tmp_path / name, kind, (4, 4), shard_size=2) as w:
            for i in range(6):
                w.add(np.full((4, 4), offset + i, np.complex64 if kind == "complex" else
                              np.float32), {"source": f"{name}{i}",
                                            "split": ["train", "val", "test"][i % 3]})
    (tmp_path / "b" / "LICENSES.md").write_text("b licences")
    assert main(["data", "merge", "--in", str(tmp_path / "a"), "--in", str(tmp_path / "b"),
                 "--out", str(tmp_path / "ab"), "--splits", "train,val"]) == 0
    ab = open_dataset(tmp_path / "ab")
    assert len(ab) == 8 and ab.kind == "complex"
    assert [r["source"] for r in ab.records] == ["a0", "a1", "a3", "a4", "b0", "b1", "b3", "b4"]
    for i, r in enumerate(ab.records):
        k, j = r["merged_from"]
        assert r["source"] == f"{'ab'[k]}{j}" and ab[i][0, 0] == 100 * k + j
    assert len(ab.indices("train")) == 4 and len(ab.indices("test")) == 0
    srcs = ab.manifest["options"]["merge"]["sources"]
    assert [s["count"] for s in srcs] == [4, 4] and len(srcs[1]["manifest_sha256"]) == 64
    assert (tmp_path / "ab" / "licenses" / "1-b" / "LICENSES.md").read_text() == "b licences"
    # a magnitude dataset does not merge with complex ones; one source is not a merge
    assert main(["data", "merge", "--in", str(tmp_path / "a"), "--in", str(tmp_path / "m"),
                 "--out", str(tmp_path / "am")]) == 2
    assert not (tmp_path / "am").exists()
    with pytest.raises(InputError, match="at least two"):
        merge_datasets([tmp_path / "a"], tmp_path / "x")


def test_best_grid_value_and_edge_note():
    from mriprior.experiments.prior_compare import _best
    logs = []
    assert _best({"0.1": 30.0, "0.3": 31.0, "1.0": 29.0}, (1.0, 0.1, 0.3), "x", logs.append) == 0.3
    assert logs == []
    assert _best({"0.1": 32.0, "0.3": 31.0, "1.0": 29.0}, (0.1, 0.3, 1.0), "x", logs.append) == 0.1
    assert "edge of the grid" in logs[0]
    logs.clear()  # the top edge is no edge where the parameter cannot go higher (sigma_max)
    top = {"0.1": 29.0, "0.3": 31.0, "1.0": 32.0}
    assert _best(top, (0.1, 0.3, 1.0), "x", logs.append, upper=1.0) == 1.0 and logs == []
    assert _best(top, (0.1, 0.3, 1.0), "x", logs.append, upper=2.0) == 1.0 and len(logs) == 1

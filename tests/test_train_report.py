"""experiments.train_report: summary and figure from a run's log.jsonl."""

import json

from mriprior.cli.main import main
from mriprior.experiments.train_report import read_log, summarise


def test_summary_and_plot(tmp_path, capsys):
    recs = [{"step": s, "loss": 1.0 / s, "images_per_s": 4.0 + i % 2}
            for i, s in enumerate(range(10, 110, 10))]
    recs.append({"step": 100, "heldout": {"0.01": 0.9, "0.1": 0.5, "1.0": 0.2}})
    (tmp_path / "log.jsonl").write_text("\n".join(json.dumps(r) for r in recs) + "\n")
    s = summarise(read_log(tmp_path))
    assert s["steps"] == 100 and s["final_loss"] == 0.01
    assert s["mean_images_per_s"] == 4.5
    assert s["heldout"] == [{"step": 100, "loss": {"0.01": 0.9, "0.1": 0.5, "1.0": 0.2}}]
    out = tmp_path / "curve.png"
    assert main(["experiment", "train-report", str(tmp_path), "--out", str(out)]) == 0
    assert out.stat().st_size > 2000
    assert json.loads(capsys.readouterr().out)["steps"] == 100


def test_save_figure_is_atomic(tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import pytest

    from mriprior.experiments.report import save_figure

    path = tmp_path / "fig.png"
    fig, ax = plt.subplots()
    ax.plot([0, 1], [1, 0])
    save_figure(fig, path, dpi=50)
    good = path.read_bytes()
    assert good[:8] == b"\x89PNG\r\n\x1a\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fig.png"]
    assert not plt.fignum_exists(fig.number)

    def broken(fname, **kw):  # rendering that fails half-way
        open(fname, "wb").write(b"partial")
        raise RuntimeError("render failed")

    fig2, _ = plt.subplots()
    fig2.savefig = broken
    with pytest.raises(RuntimeError):
        save_figure(fig2, path)
    assert path.read_bytes() == good  # the previous figure is intact, no temporary left
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fig.png"]

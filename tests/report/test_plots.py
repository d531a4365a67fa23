"""Figures and the Table 7 widths, on results folders written by the test."""
import csv
import json
import os

import pytest
from matplotlib import image

from prunebench.errors import PrunebenchError
from prunebench.report import aggregate, plots
from prunebench.report.runs import collect, group
from tests.report_fixtures import accs, config, pruned_widths, write_run


def readable(path):
    """A PNG decodes to pixels; an SVG is an XML document with an <svg> root."""
    if path.suffix == ".png":
        pixels = image.imread(path)
        return pixels.ndim == 3 and pixels.shape[0] > 50 and pixels.shape[1] > 50
    text = path.read_text()
    return text.lstrip().startswith("<?xml") and "<svg" in text and text.rstrip().endswith("</svg>")


@pytest.fixture
def ratio_sweep(tmp_path):
    for ratio in (0.3, 0.5):
        for seed in (0, 1):
            write_run(tmp_path / f"r{ratio}_s{seed}", seed, accs(90.0 - 10 * ratio + seed, 93.0 - 10 * ratio),
                      config(seed, ratio=ratio), vary_arch=True)
    return tmp_path


def test_the_report_draws_every_figure(ratio_sweep):
    out = aggregate.report(ratio_sweep, metric="acc1")
    names = {p.name for p in out["plots"]}
    stems = ["accuracy_l1_norm_vgg11_digits", "pruned_vs_uniform_vgg11"]  # the runs have uniform rows
    for ratio in ("0.3", "0.5"):
        stems += [f"{kind}_l1_norm_vgg11_digits_r{ratio}" for kind in ("widths", "weights", "curves")]
    assert names == {f"{s}.{ext}" for s in stems for ext in ("png", "svg")}
    for path in out["plots"]:
        assert path.parent == ratio_sweep / "plots" and readable(path), path


def test_widths_table_is_table_7(ratio_sweep):
    out = aggregate.report(ratio_sweep, plots=False)
    (label,) = [k for k in out["widths"] if "r=0.5" in k]
    recs = {r["layer"]: r for r in out["widths"][label]}
    assert list(recs)[:3] == ["conv1", "conv2", "conv3"] and len(recs) == 8
    full = json.loads(next((ratio_sweep / "stages").glob("r0.5_s0-unpruned")).joinpath("widths.json").read_text())
    spec = {"widths": [w for w in full.values()]}
    expect = [pruned_widths(spec, 0.5, seed, vary=True) for seed in (0, 1)]
    assert recs["conv2"]["unpruned"] == full["conv2"] and recs["conv2"]["pruned_mean"] == expect[0]["conv2"]
    assert recs["conv2"]["pruned_std"] is None or recs["conv2"]["pruned_std"] == 0
    assert recs["conv1"]["pruned_mean"] == pytest.approx((expect[0]["conv1"] + expect[1]["conv1"]) / 2)
    assert recs["conv1"]["pruned_std"] > 0 and recs["conv1"]["n"] == 2
    assert recs["conv2"]["kept"] == pytest.approx(expect[0]["conv2"] / full["conv2"], abs=1e-4)
    with open(ratio_sweep / "widths.csv") as f:
        assert len(list(csv.DictReader(f))) == 16  # 8 layers, 2 lines
    assert "## l1_norm vgg11 digits r=0.5" in (ratio_sweep / "widths.md").read_text()


def test_weights_of_a_chosen_layer(tmp_path):
    write_run(tmp_path / "run", 0, accs(90.0, 93.0))
    (line,) = group(collect(tmp_path))
    (png, svg) = plots.weights(line, tmp_path / "plots", layer="conv2")
    assert readable(png) and readable(svg) and "conv2" in svg.read_text()
    with pytest.raises(PrunebenchError, match="conv9"):
        plots.weights(line, tmp_path / "plots", layer="conv9")


def test_curves_from_metrics_json_when_history_csv_is_absent(tmp_path):
    run = write_run(tmp_path / "run", 0, accs(90.0, 93.0))
    for st in (tmp_path / "stages").iterdir():
        (st / "history.csv").unlink()
    assert plots.history(tmp_path / "stages" / "run-finetune")[1]["acc1"] is None  # epoch 2 not evaluated
    (line,) = group(collect(run))
    assert all(readable(p) for p in plots.curves(line, tmp_path / "plots"))


def test_for_run_writes_into_the_run_folder(tmp_path):
    run = write_run(tmp_path / "run", 0, accs(90.0, 93.0))
    rows = [r for r in collect(run)[0].rows]
    paths = plots.for_run(run, rows)
    assert {p.name.split("_")[0] for p in paths} == {"accuracy", "widths", "weights", "curves"}
    assert all(p.parent == run / "plots" and readable(p) for p in paths)


def test_plots_need_no_matplotlib_at_import():
    code = ("import sys; import prunebench.report, prunebench.report.aggregate, prunebench.measure; "
            "assert 'matplotlib' not in sys.modules, 'matplotlib imported'")
    assert os.system(f"{os.sys.executable} -c \"{code}\"") == 0

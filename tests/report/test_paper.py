"""The paper-layout table, on results folders written by the test (tests/report_fixtures.py)."""
import csv
import statistics

import pytest

from prunebench.errors import PrunebenchError
from prunebench.report import aggregate, stats
from prunebench.report.runs import collect, group
from tests.report_fixtures import accs, config, write_run

FT_CLEAR, SB_CLEAR = [90.0, 90.2, 89.8], [93.0, 93.2, 92.8]  # scratch-B clearly better
FT_SAME, SB_SAME = [90.0, 91.0, 89.0], [90.4, 89.2, 90.1]  # no difference


def sweep(root, finetune, scratch_b, **kw):
    for seed, (ft, sb) in enumerate(zip(finetune, scratch_b)):
        write_run(root / f"{seed}_run", seed, accs(ft, sb), config(seed), **kw)
    return root


def paper_rows(folder):
    with open(folder / "paper.csv") as f:
        return list(csv.DictReader(f))


def test_means_stds_and_a_clear_difference(tmp_path):
    out = aggregate.report(sweep(tmp_path, FT_CLEAR, SB_CLEAR), metric="acc1", plots=False)
    (rec,) = out["paper"]
    assert rec["finetune_mean"] == pytest.approx(statistics.mean(FT_CLEAR))
    assert rec["finetune_std"] == pytest.approx(statistics.stdev(FT_CLEAR))
    assert rec["scratch_b_n"] == 3 and rec["seeds"] == "0 1 2"
    assert rec["verdict"].startswith("scratch-B better") and rec["p"] < 0.05
    md = (tmp_path / "paper.md").read_text()
    assert "| Unpruned | Fine-tuned | Scratch-E | Scratch-B | Uniform |" in md
    assert "90.00 ± 0.20 (n=3)" in md and "Lottery" not in md
    assert "last epoch (acc1)" in md
    assert paper_rows(tmp_path)[0]["verdict"] == rec["verdict"]
    assert r"$\pm$" in (tmp_path / "paper.tex").read_text()


def test_no_difference_and_fine_tuned_better(tmp_path):
    same = aggregate.report(sweep(tmp_path / "same", FT_SAME, SB_SAME), plots=False)["paper"][0]
    assert same["verdict"] == f"no significant difference (p = {same['p']:.2f})" and same["p"] > 0.05
    worse = aggregate.report(sweep(tmp_path / "worse", SB_CLEAR, FT_CLEAR), plots=False)["paper"][0]
    assert worse["verdict"].startswith("fine-tuned better")


def test_verdict_edge_cases():
    assert stats.verdict([93.0], [90.0])["verdict"] == "1 seed, no test"
    assert stats.verdict([93.0, 93.0], [93.0, 93.0])["verdict"] == "no significant difference (p = 1.00)"
    assert stats.verdict([], [90.0, 91.0])["verdict"].startswith("no test")


def test_one_seed_shows_no_spread(tmp_path):
    write_run(tmp_path / "run", 0, accs(90.0, 93.0))
    rec = aggregate.report(tmp_path, metric="acc1", plots=False)["paper"][0]
    md = (tmp_path / "paper.md").read_text()
    assert rec["verdict"] == "1 seed, no test" and "1 seed, no test" in md
    assert "± 0.00" not in md and "93.00 (n=1)" in md
    assert "±" not in (tmp_path / "summary.md").read_text().split("\n", 2)[2].split("top-1:")[0]


def test_best_epoch_is_the_default_and_said_so(tmp_path):
    rec = aggregate.report(sweep(tmp_path, FT_CLEAR, SB_CLEAR), plots=False)["paper"][0]
    assert rec["metric"] == "acc1_best"
    assert rec["finetune_mean"] == pytest.approx(statistics.mean(FT_CLEAR) + 0.5)
    assert "best epoch (acc1_best" in (tmp_path / "paper.md").read_text()
    with open(tmp_path / "summary.csv") as f:
        ft = next(r for r in csv.DictReader(f) if r["row"] == "finetune")
    assert float(ft["acc1_mean"]) == pytest.approx(90.0) and float(ft["acc1_best_mean"]) == pytest.approx(90.5)


def test_without_acc1_best_the_table_uses_acc1(tmp_path):
    write_run(tmp_path / "run", 0, accs(90.0, 93.0), best=False)
    assert aggregate.report(tmp_path, plots=False)["metric"] == "acc1"
    with pytest.raises(PrunebenchError, match="--metric acc1"):
        aggregate.report(tmp_path, metric="acc1_best", plots=False)


def test_paper_figure_and_difference(tmp_path):
    sweep(tmp_path, FT_CLEAR, SB_CLEAR, paper={"scratch_b": 93.5, "unpruned": 95.0})
    rec = aggregate.report(tmp_path, metric="acc1", plots=False)["paper"][0]
    assert rec["scratch_b_paper"] == 93.5 and rec["scratch_b_diff"] == pytest.approx(93.0 - 93.5)
    assert rec["finetune_paper"] is None and rec["finetune_diff"] is None
    assert "paper 93.50 (-0.50)" in (tmp_path / "paper.md").read_text()
    assert float(paper_rows(tmp_path)[0]["scratch_b_diff"]) == pytest.approx(-0.5)


def test_params_and_flops_reduction_and_the_flag_when_seeds_disagree(tmp_path):
    rec = aggregate.report(sweep(tmp_path / "fixed", FT_CLEAR, SB_CLEAR), plots=False)["paper"][0]
    assert 0 < rec["params_pruned"] < rec["params_unpruned"]
    assert rec["params_reduction"] == pytest.approx(1 - rec["params_pruned"] / rec["params_unpruned"], abs=1e-4)
    assert rec["flops_reduction"] > 0.5 and rec["flags"] == ""
    varied = aggregate.report(sweep(tmp_path / "varied", FT_CLEAR, SB_CLEAR, vary_arch=True), plots=False)
    flags = varied["paper"][0]["flags"]
    assert "params differ over seeds" in flags and "flops differ over seeds" in flags
    assert "Warnings:" in (tmp_path / "varied" / "paper.md").read_text()


def test_lines_group_runs_that_differ_in_the_seed_alone(tmp_path):
    for seed in (0, 1):
        for width in (0.125, 0.25):
            write_run(tmp_path / f"w{width}_s{seed}", seed, accs(90.0 + seed, 93.0),
                      config(seed, width=width, device="cuda" if seed else "cpu", cache_dir=f"/c{seed}"),
                      stages=False)
        write_run(tmp_path / f"r0.7_s{seed}", seed, accs(88.0, 91.0), config(seed, ratio=0.7), stages=False)
    lines = group(collect(tmp_path))
    named = {(ln.ratio, ln.name): len(ln.runs) for ln in lines}
    assert named == {(0.5, "model.width=0.125"): 2, (0.5, "model.width=0.25"): 2, (0.7, ""): 2}
    recs = aggregate.report(tmp_path, plots=False)["paper"]
    assert [r["line"] for r in recs] == ["model.width=0.125", "model.width=0.25", ""]
    assert "model.width=0.25" in (tmp_path / "paper.md").read_text()


def test_cli_writes_every_table(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "300")
    sweep(tmp_path, FT_CLEAR, SB_CLEAR)
    aggregate.main([str(tmp_path), "--metric", "acc1", "--no-plots"])
    for name in ["summary.csv", "summary.md", "paper.md", "paper.csv", "paper.tex", "widths.md", "widths.csv"]:
        assert (tmp_path / name).exists(), name
    assert "scratch-B better" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        aggregate.main([str(tmp_path / "nothing")])

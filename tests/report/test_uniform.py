"""The verdict "pruned beats uniform?" per line and per model, and its figure (prunebench/report/uniform.py)."""
from prunebench.report import aggregate, stats, uniform
from tests.report_fixtures import config, write_run


def sweep(tmp_path, schedules):
    """Three seeds of l1_norm on VGG-11 per recipe: acc per row given by ``schedules[name](seed)``."""
    for name, acc in schedules.items():
        for seed in range(3):
            write_run(tmp_path / "sweep" / f"{name}_s{seed}", seed, acc(seed), cfg=config(seed, **{"schedule.name": name}),
                      stages=False)
    return tmp_path / "sweep"


def rows(finetune, scratch_b, uniform_acc):
    return {"unpruned": 95.0, "pruned": 20.0, "finetune": finetune, "scratch_b": scratch_b, "uniform": uniform_acc}


def test_verdicts_per_line_and_per_model_with_a_plot(tmp_path):
    folder = sweep(tmp_path, {
        "cifar": lambda s: rows(93.0 + 0.1 * s, 93.5 + 0.1 * s, 92.0 + 0.1 * s),  # pruned clearly better
        "modern": lambda s: rows(94.0 + 0.1 * s, 94.0 + 0.2 * s, 94.05 + 0.1 * s)})  # within the noise
    out = aggregate.report(folder, metric="acc1")
    recs = {r["line"]: r for r in out["uniform"]}
    assert len(recs) == 2
    cifar = next(r for k, r in recs.items() if "cifar" in k)
    modern = next(r for k, r in recs.items() if "modern" in k)
    assert cifar["pruned_beats_uniform"] == "yes" and cifar["architecture"].startswith("pruned better")
    assert cifar["architecture_p"] == stats.welch_p([93.5, 93.6, 93.7], [92.0, 92.1, 92.2])
    assert modern["pruned_beats_uniform"] == "undecided" and "no significant" in modern["architecture"]
    assert uniform.per_model(out["uniform"]) == {"vgg11": "yes: pruned better in 1 of 2 lines, uniform better in 0"}
    text = (folder / "uniform.md").read_text()
    assert "Pruned beats uniform?" in text and "vgg11" in text and text.count("| yes |") == 1
    assert (folder / "uniform.csv").exists()
    assert any(p.name == "pruned_vs_uniform_vgg11.png" for p in out["plots"])


def test_uniform_better_reads_no_and_sweeps_without_uniform_rows_write_nothing(tmp_path):
    folder = sweep(tmp_path, {"cifar": lambda s: rows(90.0 + 0.1 * s, 90.5 + 0.1 * s, 92.0 + 0.1 * s)})
    out = aggregate.report(folder, metric="acc1", plots=False)
    (rec,) = out["uniform"]
    assert rec["pruned_beats_uniform"] == "no" and rec["pipeline"].startswith("uniform better")
    assert uniform.per_model([rec]) == {"vgg11": "no: pruned better in 0 of 1 lines, uniform better in 1"}
    other = sweep(tmp_path / "b", {"cifar": lambda s: {"unpruned": 95.0, "pruned": 20.0, "finetune": 93.0}})
    assert aggregate.report(other, metric="acc1", plots=False)["uniform"] == []
    assert not (other / "uniform.md").exists()

"""The lottery strategy (Frankle & Carbin, ICLR 2019): the kept weights of a weight-level
pruned model reset to the unpruned model's init (or its weights after epoch k), then
trained under the mask for the Scratch-E epochs."""
from pathlib import Path

import pytest
import torch

from prunebench import pipeline
from prunebench.train import job
from prunebench.errors import PrunebenchError

ROWS = ["unpruned", "pruned", "finetune", "scratch_e", "scratch_b", "uniform", "lottery"]


def load(folder, name):
    return torch.load(Path(folder) / name, weights_only=True)


def assert_masked_copy(state, source, mask):
    """``state`` is ``source`` with the pruned weights zeroed, every other tensor equal."""
    for k, v in source.items():
        assert torch.equal(state[k], v * mask[k] if k in mask else v), k


@pytest.mark.parametrize("method, model", [("magnitude", "vgg11"), ("magnitude", "resnet20"), ("snip", "vgg11")])
def test_lottery_starts_from_the_masked_unpruned_init(smoke_cfg, starts, method, model):
    extra = ["model.width=0.5"] if model.startswith("resnet") else []
    rows = {r["row"]: r for r in pipeline.run(smoke_cfg(f"method={method}", f"model={model}", *extra))}
    assert list(rows) == ROWS and all(r["status"] == "ok" for r in rows.values()), rows
    lottery = rows["lottery"]
    assert lottery["epochs"] == rows["scratch_e"]["epochs"] and "init" in lottery["note"]
    mask = load(rows["pruned"]["stage"], "mask.pt")
    init = load(rows["unpruned"]["stage"], "init.pt")
    assert_masked_copy(starts["lottery"], init, mask)
    assert all(torch.equal(m, mask[k]) for k, m in load(lottery["stage"], "mask.pt").items())
    # Scratch-E draws a new init under the same mask, so it is not the ticket by accident
    scratch = starts["scratch_e"]
    assert all(torch.count_nonzero(scratch[k][~m]) == 0 for k, m in mask.items())
    assert not all(torch.equal(scratch[k], init[k] * m) for k, m in mask.items())
    # trained: the kept weights moved, the pruned ones are still exactly zero
    final = load(lottery["stage"], "model.pt")
    assert all(torch.count_nonzero(final[k][~m]) == 0 for k, m in mask.items())
    assert not all(torch.equal(final[k], starts["lottery"][k]) for k in mask)


def test_rewinding_to_epoch_1_uses_the_unpruned_weights_after_one_epoch(smoke_cfg, starts):
    rows = {r["row"]: r for r in pipeline.run(smoke_cfg("method=magnitude", "schedule.epochs=2",
                                                        "strategies=[lottery]", "strategy.lottery.rewind_epoch=1"))}
    assert all(r["status"] == "ok" for r in rows.values()), rows
    unpruned = rows["unpruned"]["stage"]
    epoch1, init = load(unpruned, "epoch1.pt"), load(unpruned, "init.pt")
    mask = load(rows["pruned"]["stage"], "mask.pt")
    assert not torch.equal(epoch1["features.0.weight"], init["features.0.weight"])
    assert not torch.equal(epoch1["features.0.weight"], load(unpruned, "model.pt")["features.0.weight"])
    assert_masked_copy(starts["lottery"], epoch1, mask)
    assert rows["lottery"]["epochs"] == 2 and "epoch 1" in rows["lottery"]["note"]


def test_rewinding_to_an_epoch_the_unpruned_stage_did_not_save_is_a_clear_error(smoke_cfg):
    first = pipeline.run(smoke_cfg("method=magnitude", "schedule.epochs=2", "strategies=[lottery]"))
    assert first[-1]["row"] == "lottery" and first[-1]["status"] == "ok"  # rewind 0: init.pt is always saved
    with pytest.raises(PrunebenchError, match=r"rewinds to epoch 1 .*epoch1\.pt.*rewind_epoch=1"):
        pipeline.run(smoke_cfg("method=magnitude", "schedule.epochs=2", "strategies=[lottery]",
                               "strategy.lottery.rewind_epoch=1"))
    folders = {p for p in Path(smoke_cfg().cache_dir).iterdir() if p.name.startswith("lottery-")}
    failed = folders - {Path(first[-1]["stage"])}
    assert len(failed) == 1  # released, with no result recorded: deleting the unpruned stage lets it run
    assert not any((p / name).exists() for p in failed for name in ("lock", "metrics.json"))


@pytest.mark.parametrize("k", [-1, 3])
def test_a_rewind_epoch_outside_the_schedule_is_rejected_before_training(smoke_cfg, k, monkeypatch):
    monkeypatch.setattr(job, "training_of", lambda *a, **kw: pytest.fail("trained despite a bad rewind_epoch"))
    with pytest.raises(PrunebenchError, match="rewind_epoch must lie in"):
        pipeline.run(smoke_cfg("method=magnitude", "schedule.epochs=2", f"strategy.lottery.rewind_epoch={k}"))


def test_structured_methods_have_no_lottery_row(smoke_cfg):
    rows = [r["row"] for r in pipeline.run(smoke_cfg("method=l1_norm", "strategies=[lottery]"))]
    assert rows == ["unpruned", "pruned"]

"""Seeds trained as one batched model equal the single-seed runs (compared in float64:
the batched convolutions sum in another order, which float64 keeps below 1e-7)."""
import json
import logging
from pathlib import Path

import pytest
import torch

from prunebench.train import Recipe, train
from prunebench.train.batched import train_batched
from tests.test_fast_step import VGG, build, float64, synthetic  # noqa: F401

RECIPE = Recipe(epochs=2, lr=0.05, batch_size=32, milestones=[0.5])


def test_two_seeds_batched_equal_two_single_seed_runs(synthetic, float64, tmp_path):
    seeds = [0, 3]
    inits = []
    for s in seeds:
        torch.manual_seed(s)
        inits.append(build(VGG).double().state_dict())
    single = []
    for s, init in zip(seeds, inits):
        model = build(VGG).double()
        model.load_state_dict(init)
        out = train(model, synthetic, RECIPE, seed=s, checkpoint=tmp_path / f"{s}.pt", progress=False, eval_every=1)
        single.append((out, model))
    models = []
    for init in inits:
        m = build(VGG).double()
        m.load_state_dict(init)
        models.append(m)
    outs = train_batched(models, synthetic, RECIPE, seeds=seeds, eval_every=1,
                         snapshots=[{0: tmp_path / f"init{s}.pt"} for s in seeds])
    for (ref, ref_model), out, model, init, s in zip(single, outs, models, inits, seeds):
        assert [h["loss"] for h in out["history"]] == pytest.approx([h["loss"] for h in ref["history"]], rel=1e-6)
        assert [h["acc1"] for h in out["history"]] == [h["acc1"] for h in ref["history"]]
        assert [h["lr"] for h in out["history"]] == pytest.approx([h["lr"] for h in ref["history"]])
        for (name, a), b in zip(ref_model.state_dict().items(), model.state_dict().values()):
            assert torch.allclose(a.double(), b.double(), atol=1e-7), name
        saved = torch.load(tmp_path / f"init{s}.pt", weights_only=True)
        assert all(torch.equal(saved[k], init[k]) for k in init)
    assert outs[0]["history"][0]["loss"] != outs[1]["history"][0]["loss"]  # two seeds, two runs


def test_seeds_batched_in_the_pipeline_give_the_single_seed_stages(smoke_cfg, tmp_path, caplog):
    from prunebench import pipeline
    over = ("strategies=[finetune]", "schedule.eval_every=1")
    with caplog.at_level(logging.INFO, logger="prunebench.seeds"):
        batched = pipeline.run(smoke_cfg("seeds=[0,1]", "train.batch_seeds=true", *over))
    assert "seeds [0, 1] batched" in caplog.text
    assert sorted({r["seed"] for r in batched}) == [0, 1]
    single = pipeline.run(smoke_cfg("seed=1", f"cache_dir={tmp_path / 'single'}", *over))
    one = {r["row"]: r for r in batched if r["seed"] == 1}
    for r in single:
        b = one[r["row"]]
        assert b["status"] == r["status"] == "ok", r["row"]
        assert Path(b["stage"]).name == Path(r["stage"]).name  # the same stage, cached under the same key
        loss = [json.loads((Path(x["stage"]) / "metrics.json").read_text()).get("train_loss") for x in (b, r)]
        assert loss[0] == pytest.approx(loss[1], rel=1e-4), r["row"]  # float32: equal up to rounding

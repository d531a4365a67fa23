"""SNIP (Lee et al. 2019): connection sensitivity |g * w| on one batch at initialisation."""
import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf
from torch import nn

from prunebench import models, pipeline
from prunebench.methods.snip import SNIPConfig
from prunebench.data.images import ImageData
from prunebench.errors import PrunebenchError
from prunebench.methods import create
from prunebench.methods.snip import sensitivities
from prunebench.pruning.masks import select_weights
from prunebench.pruning.surgery import prunable_weights

ROWS = ["unpruned", "pruned", "finetune", "scratch_e", "scratch_b", "uniform", "lottery"]


def cfg(**kw):
    return OmegaConf.structured(SNIPConfig(name="snip", **{"selection": "global", **kw}))


class TwoLayer(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(3, 4, bias=False)
        self.fc2 = nn.Linear(4, 2, bias=False)

    def forward(self, x):
        return self.fc2(torch.relu(self.fc1(x)))


def test_kept_connections_are_those_of_largest_hand_computed_sensitivity():
    torch.manual_seed(3)
    model = TwoLayer()
    x, y = torch.randn(5, 3), torch.tensor([0, 1, 1, 0, 1])
    w1, w2 = model.fc1.weight.detach().clone(), model.fc2.weight.detach().clone()
    # backpropagation of the mean cross-entropy, by hand
    h_pre = x @ w1.T
    h = h_pre.clamp(min=0)
    p = torch.softmax(h @ w2.T, dim=1)
    d_logits = (p - F.one_hot(y, 2).float()) / len(y)
    g2 = d_logits.T @ h
    g1 = ((d_logits @ w2) * (h_pre > 0).float()).T @ x
    s1, s2 = (g1 * w1).abs(), (g2 * w2).abs()
    total = s1.sum() + s2.sum()

    scores = sensitivities(model, x, y)
    assert torch.allclose(scores["fc1.weight"], s1 / total, atol=1e-6)
    assert torch.allclose(scores["fc2.weight"], s2 / total, atol=1e-6)
    assert abs(sum(s.sum() for s in scores.values()).item() - 1) < 1e-5  # normalised as in the paper

    masks = select_weights(scores, cfg(pruning_ratio=0.6))
    flat = torch.cat([s1.flatten(), s2.flatten()])
    kept = torch.zeros(flat.numel(), dtype=torch.bool)
    kept[flat.argsort(descending=True)[: flat.numel() - int(0.6 * flat.numel())]] = True
    assert torch.equal(torch.cat([masks["fc1.weight"].flatten(), masks["fc2.weight"].flatten()]), kept)
    assert model.fc1.weight.grad is None and model.fc2.weight.grad is None


def synthetic(n=64, size=16):
    g = torch.Generator().manual_seed(0)
    x = (torch.rand(n, 3, size, size, generator=g) * 255).to(torch.uint8)
    y = torch.randint(0, 10, (n,), generator=g)
    return ImageData(x, y, x[:16], y[:16], (0.5, 0.5, 0.5), (0.25, 0.25, 0.25), 10)


@pytest.mark.parametrize("spec", [models.vgg.spec_for(11, 0.125, 3, 10), models.resnet.spec_for(20, 0.25, 3, 10)])
def test_scores_match_autograd_on_one_seeded_batch_and_leave_the_model_unchanged(spec):
    data = synthetic()
    torch.manual_seed(0)
    model = models.build(spec).eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    scores = create(cfg(batch_size=16), seed=5).scores(model, data)

    # the model is as it was: weights, BN running statistics, no gradients, eval mode
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert all(p.grad is None for p in model.parameters())
    assert not model.training

    # independently: the same batch (seeded by the method's seed), backward(), |grad x w| / sum
    x, y = next(data.sample_batches(16, 16, torch.Generator().manual_seed(5)))
    reference = models.build(spec)
    reference.load_state_dict(before)
    reference.train()
    F.cross_entropy(reference(x), y).backward()
    raw = {n: (w.grad * w).abs().detach() for n, w in prunable_weights(reference).items()}
    total = sum(s.sum() for s in raw.values())
    assert scores.keys() == raw.keys()
    for n in raw:
        assert torch.allclose(scores[n], raw[n] / total, rtol=1e-4, atol=1e-9), n
    other = create(cfg(batch_size=16), seed=6).scores(model, data)
    assert not torch.allclose(other["classifier.weight"], scores["classifier.weight"])


def test_a_bad_batch_size_is_rejected():
    with pytest.raises(PrunebenchError, match="batch_size"):
        create(cfg(batch_size=0)).scores(models.build(models.vgg.spec_for(11, 0.125, 3, 10)), synthetic())


@pytest.mark.parametrize("model", ["vgg11", "resnet20"])
def test_smoke_run_prunes_the_init_and_gives_every_weight_level_row(smoke_cfg, model):
    extra = ["model.width=0.5"] if model.startswith("resnet") else []
    rows = {r["row"]: r for r in pipeline.run(smoke_cfg("method=snip", f"model={model}", *extra))}
    assert list(rows) == ROWS
    assert all(r["status"] == "ok" for r in rows.values()), rows
    full, pruned = rows["unpruned"], rows["pruned"]
    assert all(rows[n]["params"] < full["params"] and rows[n]["flops"] < full["flops"] for n in ROWS[1:])
    assert pruned["epochs"] == 0
    # the pruned model is the unpruned model's own init, masked: 95% of every conv and linear weight gone
    mask = torch.load(Path(pruned["stage"]) / "mask.pt", weights_only=True)
    init = torch.load(Path(full["stage"]) / "init.pt", weights_only=True)
    state = torch.load(Path(pruned["stage"]) / "model.pt", weights_only=True)
    for k, v in init.items():
        expected = v * mask[k] if k in mask else v
        assert torch.equal(state[k], expected), k
    kept = sum(int(m.sum()) for m in mask.values())
    total = sum(m.numel() for m in mask.values())
    assert kept == total - int(0.95 * total)
    density = json.loads((Path(pruned["stage"]) / "density.json").read_text())
    assert set(density) == {n.rsplit(".", 1)[0] for n in mask}


def test_the_pruned_stage_of_each_model_is_its_own(smoke_cfg):
    """Pruning at init depends on the model, seed and data: their stages never share a cache entry."""
    vgg = {r["row"]: r for r in pipeline.run(smoke_cfg("method=snip", "prune_only=true"))}
    resnet = {r["row"]: r for r in pipeline.run(smoke_cfg("method=snip", "model=resnet20", "model.width=0.5",
                                                          "prune_only=true"))}
    seed1 = {r["row"]: r for r in pipeline.run(smoke_cfg("method=snip", "seed=1", "prune_only=true"))}
    assert len({vgg["pruned"]["stage"], resnet["pruned"]["stage"], seed1["pruned"]["stage"]}) == 3
    assert models.load_spec(resnet["pruned"]["stage"])["arch"] == "resnet"

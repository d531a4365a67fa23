import json
import os

import pytest
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf

from prunebench import pipeline
from prunebench.methods.sfp import SFPConfig
from prunebench.errors import PrunebenchError
from prunebench.methods import create
from prunebench.models import build, resnet, vgg

SHAPE = (3, 16, 16)


def method(**kw):
    """SFP with the schema's scope (groups, the former rule) unless ``scope`` says otherwise."""
    return create(OmegaConf.structured(SFPConfig(name="sfp", selection="layer", **kw)))


def tiny_vgg():
    torch.manual_seed(0)
    return build(vgg.spec_for(11, 0.125, 3, 10))


def zeroed(model):
    return {g.name: [i for i, w in enumerate(model.get_submodule(g.conv).weight) if not w.any()]
            for g in model.channel_groups()}


def test_epoch_end_zeroes_exactly_the_lowest_norm_filters_of_each_layer():
    model, m = tiny_vgg(), method(pruning_ratio=0.3, min_channels=1, layer_ratios={"conv3": 0.5}, skip=["conv2"])
    conv1 = model.features[0].weight  # 8 filters of 3 x 3 x 3
    with torch.no_grad():
        conv1.copy_(torch.randn_like(conv1).sign())  # every filter at L2 norm sqrt(27)
        conv1[6] *= 0.1  # the three smallest, by L2
        conv1[1] *= 0.2
        conv1[3] *= 0.3
    before = {g.name: model.get_submodule(g.conv).weight.detach().clone() for g in model.channel_groups()}
    norms = {g.name: w.flatten(1).norm(dim=1) for g, w in zip(model.channel_groups(), before.values())}
    m.on_epoch_end(model, 0)
    z = zeroed(model)
    assert z["conv1"] == [1, 3, 6]  # 8 - int(8 x 0.7) = 3 lowest
    assert z["conv2"] == []  # skipped
    assert z["conv3"] == sorted(torch.argsort(norms["conv3"])[:16].tolist())  # layer ratio 0.5 of 32
    for name in ["conv4", "conv5", "conv8"]:
        n = norms[name].numel()
        assert z[name] == sorted(torch.argsort(norms[name])[:n - int(n * 0.7)].tolist())
    for g in model.channel_groups():  # the others are untouched
        w = model.get_submodule(g.conv).weight
        kept = [i for i in range(w.shape[0]) if i not in z[g.name]]
        assert torch.equal(w[kept], before[g.name][kept])


def test_the_norm_order_decides():
    model = tiny_vgg()
    conv1 = model.features[0].weight
    with torch.no_grad():
        conv1.fill_(1.0)  # L1 27, L2 5.2
        conv1[2].zero_()
        conv1[2, 0, 0, 0] = 4.0  # L1 4, L2 4: the smallest L1, not the smallest L2
        conv1[5].fill_(0.5)  # L1 13.5, L2 2.6: the smallest L2, not the smallest L1
    for p, lowest in ((1, 2), (2, 5)):
        m = method(pruning_ratio=0.125, norm=p, min_channels=1)  # one filter of 8
        copy = tiny_vgg()
        copy.load_state_dict(model.state_dict())
        m.on_epoch_end(copy, 0)
        assert zeroed(copy)["conv1"] == [lowest]
    with pytest.raises(PrunebenchError, match="norm"):
        method(norm=0)


def test_zeroed_filters_keep_training_and_may_come_back():
    model, m = tiny_vgg(), method(pruning_ratio=0.5)
    with torch.no_grad():  # a trained BatchNorm shift: a zeroed filter's channel is not at the ReLU's kink
        model.features[1].bias.fill_(0.1)
    m.on_epoch_end(model, 0)
    z = zeroed(model)["conv1"]
    assert len(z) == 4
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    x, y = torch.randn(16, *SHAPE), torch.randint(0, 10, (16,))
    F.cross_entropy(model(x), y).backward()
    m.regularize(model)  # SFP adds nothing to the step: no gradient mask
    opt.step()
    m.after_step(model, 0.1)
    assert zeroed(model)["conv1"] == []  # every zeroed filter got its update


def test_final_selection_removes_the_filters_zeroed_last():
    model, m = build(resnet.spec_for(20, 0.5, 3, 10)), method(pruning_ratio=0.4)
    torch.manual_seed(1)
    with torch.no_grad():  # a last epoch that moved the weights after the previous epoch's zeroing
        for g in model.channel_groups():
            model.get_submodule(g.conv).weight.mul_(torch.rand(model.get_submodule(g.conv).out_channels, 1, 1, 1))
    m.on_epoch_end(model, 4)
    z = zeroed(model)
    keep = m.select(model, m.scores(model, None), m.cfg)
    for g in model.channel_groups():
        n = model.get_submodule(g.conv).out_channels
        assert sorted(set(range(n)) - set(keep[g.name].tolist())) == z[g.name]
        assert len(z[g.name]) == n - max(int(n * 0.6 + 1e-9), 4)


@pytest.mark.parametrize("model", ["vgg11", "resnet20"])
def test_groups_scope_smoke_runs_every_row(smoke_cfg, model):
    extra = ["model.width=0.5"] if model == "resnet20" else []
    rows = {r["row"]: r for r in pipeline.run(smoke_cfg("method=sfp", "method.scope=groups", f"model={model}",
                                                        *extra))}
    assert list(rows) == ["unpruned", "sparse", "pruned", "finetune", "scratch_e", "scratch_b", "uniform"]
    assert all(r["status"] == "ok" for r in rows.values()), rows
    full = json.load(open(os.path.join(rows["unpruned"]["stage"], "widths.json")))
    pruned = json.load(open(os.path.join(rows["pruned"]["stage"], "widths.json")))
    assert pruned == {g: max(int(w * 0.7 + 1e-9), min(4, w)) for g, w in full.items()}  # 30% of every layer
    # the sparse stage's model carries its last epoch's zeros: exactly the filters pruning removed
    state = torch.load(os.path.join(rows["sparse"]["stage"], "model.pt"), weights_only=True)
    spec = json.load(open(os.path.join(rows["sparse"]["stage"], "arch.json")))
    sparse = build(spec)
    sparse.load_state_dict(state)
    assert {g: full[g] - len(z) for g, z in zeroed(sparse).items()} == pruned


# -- scope: all, the authors' rule -----------------------------------------------------------------

def small_resnet(seed=0):
    torch.manual_seed(seed)
    return build(resnet.spec_for(20, 1.0, 3, 10))


def zero_filters(model):
    """Per convolution, the indices of its all-zero filters."""
    return {name: [i for i, w in enumerate(m.weight) if not w.any()]
            for name, m in model.named_modules() if isinstance(m, torch.nn.Conv2d)}


def test_all_scope_zeroes_int_np_filters_of_every_convolution_stem_and_second_convs_included():
    model, m = small_resnet(), method(scope="all", pruning_ratio=0.3)
    assert m.kind == "weight"
    norms = {name: c.weight.detach().flatten(1).norm(dim=1) for name, c in model.named_modules()
             if isinstance(c, torch.nn.Conv2d)}
    classifier = model.classifier.weight.detach().clone()
    masks = m.soft_prune(model)
    z = zero_filters(model)
    names = list(z)
    assert names[0] == "conv1" and "blocks.0.conv2" in names and len(names) == 1 + 2 * 9  # the stem, 9 blocks x 2
    assert set(masks) == {f"{n}.weight" for n in names}
    for name, zeroed_ in z.items():
        n = norms[name].numel()
        assert len(zeroed_) == {16: 4, 32: 9, 64: 19}[n]  # int(N x 0.3): the authors' int(N (1 - 0.7))
        assert zeroed_ == sorted(torch.argsort(norms[name])[:len(zeroed_)].tolist())  # the lowest L2 norms
        assert (~masks[f"{name}.weight"]).flatten(1).all(1).nonzero().flatten().tolist() == zeroed_
    assert torch.equal(model.classifier.weight, classifier)  # the classifier is not a convolution


def test_all_scope_zeroes_before_the_first_epoch_and_after_every_epoch(tmp_path):
    from prunebench.train import HookList, Recipe, TrainHooks, train
    from tests.cases import DATA

    class FirstBatch(TrainHooks):
        capturable = False
        seen = []

        def on_batch(self, model, x, y):
            self.seen.append({n: len(v) for n, v in zero_filters(model).items()})

    model, m = small_resnet(), method(scope="all", pruning_ratio=0.3)
    spy = FirstBatch()
    assert not any(zero_filters(model).values())  # a fresh init has no zero filter
    recipe = Recipe(epochs=2, lr=0.1, batch_size=32, steps_per_epoch=2)
    train(model, DATA, recipe, seed=0, checkpoint=tmp_path / "c.pt", progress=False, hooks=HookList([m, spy]))
    first = spy.seen[0]
    assert first["conv1"] == 4 and first["blocks.0.conv2"] == 4 and first["blocks.8.conv2"] == 19
    assert {n: len(v) for n, v in zero_filters(model).items()} == first  # zeroed again after the last epoch
    # the groups rule (the former one) leaves the initial model as it is
    spy.seen.clear()
    model, m = small_resnet(), method(scope="groups", pruning_ratio=0.3)
    train(model, DATA, recipe.replace(epochs=1), seed=0, checkpoint=tmp_path / "d.pt", progress=False,
          hooks=HookList([m, spy]))
    assert not any(spy.seen[0].values())


def test_all_scope_is_per_layer_only():
    with pytest.raises(PrunebenchError, match="selection=layer"):
        create(OmegaConf.structured(SFPConfig(name="sfp", selection="global", scope="all")))
    with pytest.raises(PrunebenchError, match="scope"):
        create(OmegaConf.structured(SFPConfig(name="sfp", selection="layer", scope="every")))


def test_all_scope_smoke_keeps_the_filters_masked_in_every_row(smoke_cfg):
    rows = {r["row"]: r for r in pipeline.run(smoke_cfg("method=sfp", "model=resnet20", "model.width=0.5"))}
    assert list(rows) == ["unpruned", "sparse", "pruned", "finetune", "scratch_e", "scratch_b", "uniform", "lottery"]
    assert all(r["status"] == "ok" for r in rows.values()), rows
    mask = torch.load(os.path.join(rows["pruned"]["stage"], "mask.pt"), weights_only=True)
    spec = json.load(open(os.path.join(rows["sparse"]["stage"], "arch.json")))
    sparse = build(spec)
    sparse.load_state_dict(torch.load(os.path.join(rows["sparse"]["stage"], "model.pt"), weights_only=True))
    # the mask is the sparse model's last zeros: whole filters of every convolution, int(N x 0.3) of each
    assert {n[:-len(".weight")]: (~m).flatten(1).all(1).nonzero().flatten().tolist() for n, m in mask.items()} \
        == zero_filters(sparse)
    assert all(len(v) == int(len(getattr(sparse.get_submodule(n), "weight")) * 0.3 + 1e-9)
               for n, v in zero_filters(sparse).items())
    for row in ("pruned", "finetune", "scratch_e", "scratch_b", "lottery"):
        state = torch.load(os.path.join(rows[row]["stage"], "model.pt"), weights_only=True)
        assert all(torch.count_nonzero(state[n][~m]) == 0 for n, m in mask.items()), row
        assert rows[row]["params"] == rows["pruned"]["params"] < rows["unpruned"]["params"], row
    full = json.load(open(os.path.join(rows["unpruned"]["stage"], "widths.json")))
    assert json.load(open(os.path.join(rows["pruned"]["stage"], "widths.json"))) == full  # the architecture is kept

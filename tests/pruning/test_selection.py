import pytest
import torch
from omegaconf import OmegaConf

from prunebench.methods.l1_norm import L1NormConfig
from prunebench.methods.slimming import SlimmingConfig
from prunebench.errors import PrunebenchError
from prunebench.methods import create
from prunebench.models import build, vgg
from prunebench.pruning import select


def cfg(schema=SlimmingConfig, **kw):
    return OmegaConf.structured(schema(name="slimming" if schema is SlimmingConfig else "l1_norm", **kw))


def test_global_threshold_removes_the_smallest_gammas_wherever_they_are():
    scores = {"conv1": torch.tensor([0.9, 0.01, 0.8, 0.02]), "conv2": torch.tensor([0.03, 0.7, 0.6, 0.5])}
    keep = select(scores, cfg(selection="global", pruning_ratio=0.375, min_channels=1))
    assert keep["conv1"].tolist() == [0, 2]  # 0.01 and 0.02 are below the threshold
    assert keep["conv2"].tolist() == [1, 2, 3]  # 0.03 too


def test_min_channels_keeps_the_best_of_an_emptied_layer():
    scores = {"conv1": torch.tensor([0.001, 0.003, 0.002, 0.0]), "conv2": torch.ones(4)}
    keep = select(scores, cfg(selection="global", pruning_ratio=0.5, min_channels=2))
    assert keep["conv1"].tolist() == [1, 2]
    assert keep["conv2"].tolist() == [0, 1, 2, 3]


def test_layer_selection_with_ratios_and_skips():
    scores = {"conv1": torch.arange(8.0), "conv2": torch.arange(8.0).flip(0), "conv3": torch.arange(8.0)}
    c = cfg(L1NormConfig, selection="layer", pruning_ratio=0.5, layer_ratios={"conv2": 0.25}, skip=["conv3"],
            min_channels=1)
    keep = select(scores, c)
    assert keep["conv1"].tolist() == [4, 5, 6, 7]
    assert keep["conv2"].tolist() == [0, 1, 2, 3, 4, 5]
    assert keep["conv3"].tolist() == list(range(8))


def test_round_to_rounds_kept_widths_up():
    keep = select({"conv1": torch.arange(20.0)}, cfg(L1NormConfig, pruning_ratio=0.5, round_to=8, min_channels=1))
    assert len(keep["conv1"]) == 16


@pytest.mark.parametrize("ratio", [-0.1, 1.0, 1.5])
def test_ratio_out_of_range_is_an_error(ratio):
    with pytest.raises(PrunebenchError, match=r"\[0, 1\)"):
        select({"conv1": torch.ones(4)}, cfg(pruning_ratio=ratio))


def test_unknown_layer_names_are_an_error():
    with pytest.raises(PrunebenchError, match="conv9"):
        select({"conv1": torch.ones(4)}, cfg(L1NormConfig, skip=["conv9"]))


def test_l1_norm_drops_the_filter_with_the_smallest_norm():
    model = build(vgg.spec_for(11, 0.125, 3, 10))
    conv = model.features[0]
    with torch.no_grad():
        conv.weight.fill_(1.0)
        conv.weight[3] = 0.01  # smallest L1 norm
        conv.weight[5] = -0.02  # second smallest: the sign must not matter
    method = create(cfg(L1NormConfig, pruning_ratio=0.25, min_channels=1))
    keep = select(method.scores(model, None), method.cfg)
    assert 3 not in keep["conv1"].tolist() and 5 not in keep["conv1"].tolist()
    assert len(keep["conv1"]) == 6


def test_slimming_scores_are_gamma_magnitudes_and_its_penalty_is_l1():
    model = build(vgg.spec_for(11, 0.125, 3, 10))
    bn = model.features[1]
    with torch.no_grad():
        bn.weight.copy_(torch.tensor([0.5, -0.001, 0.3, 0.002, -0.4, 0.6, 0.7, 0.8]))
    method = create(cfg(selection="global", pruning_ratio=0.0, sparsity=0.01))
    assert method.sparse
    keep = select({"conv1": method.scores(model, None)["conv1"]},
                  cfg(selection="global", pruning_ratio=0.25, min_channels=1))
    assert keep["conv1"].tolist() == [0, 2, 4, 5, 6, 7]
    bn.weight.grad = torch.zeros(8)
    method.regularize(model)
    assert torch.allclose(bn.weight.grad, 0.01 * torch.sign(bn.weight.detach()))


def test_random_scores_follow_the_seed():
    model = build(vgg.spec_for(11, 0.125, 3, 10))
    c = OmegaConf.structured(L1NormConfig(name="random"))
    a, b, other = (create(c, s).scores(model, None) for s in (1, 1, 2))
    assert all(torch.equal(a[g], b[g]) for g in a)
    assert not all(torch.equal(a[g], other[g]) for g in a)


def test_threshold_selection_removes_what_scores_at_or_below_it_keeping_min_channels():
    scores = {"conv1": torch.tensor([0.0, 0.3, 0.0, 0.5, 0.2, 0.0]), "conv2": torch.tensor([0.0, 0.0, 0.0, 0.1]),
              "conv3": torch.zeros(4)}
    c = cfg(selection="threshold", threshold=0.2, min_channels=2, skip=["conv3"])
    keep = select(scores, c)
    assert keep["conv1"].tolist() == [1, 3]  # 0.2 is at the threshold: removed too
    assert keep["conv2"].tolist() == [0, 3]  # only 0.1 is above, but min_channels=2: ties go to the first
    assert keep["conv3"].tolist() == [0, 1, 2, 3]  # skipped
    keep = select(scores, cfg(selection="threshold", threshold=0.0, min_channels=1))
    assert keep["conv1"].tolist() == [1, 3, 4] and keep["conv2"].tolist() == [3] and keep["conv3"].tolist() == [0]


def test_unknown_selection_is_an_error():
    from tests.conftest import compose_config

    with pytest.raises(PrunebenchError, match="method.selection must be one of global, layer, threshold"):
        compose_config("method=slimming", "method.selection=median")


# -- the global threshold's count: int(N p) + 1 as the authors' code, or exactly int(N p) --------------

SCORES = {"conv1": torch.tensor([0.50, 0.10, 0.90, 0.30]), "conv2": torch.tensor([0.20, 0.80, 0.40, 0.60, 0.70, 0.05])}


def removed(keep, scores=SCORES):
    return sorted(round(float(s), 2) for g in scores for i, s in enumerate(scores[g]) if i not in keep[g].tolist())


@pytest.mark.parametrize("ratio", [0.25, 0.3, 0.5, 0.7])
def test_inclusive_global_threshold_removes_int_np_plus_one_and_exact_int_np(ratio):
    ordered = sorted(float(s) for s in torch.cat(list(SCORES.values())))
    k = int(ratio * 10)  # N = 10 channels
    inclusive = select(SCORES, cfg(selection="global", pruning_ratio=ratio, min_channels=1,
                                   global_threshold="inclusive"))
    exact = select(SCORES, cfg(selection="global", pruning_ratio=ratio, min_channels=1, global_threshold="exact"))
    assert removed(inclusive) == [round(s, 2) for s in ordered[:k + 1]]  # thre = y[int(N p)], keep > thre
    assert removed(exact) == [round(s, 2) for s in ordered[:k]]


def test_inclusive_threshold_removes_every_score_tied_with_it_and_a_zero_ratio_removes_nothing():
    scores = {"conv1": torch.tensor([0.3, 0.1, 0.3, 0.9]), "conv2": torch.tensor([0.3, 0.8])}
    # N = 6, p = 0.2: y = [0.1, 0.3, 0.3, 0.3, 0.8, 0.9], thre = y[1] = 0.3: the three 0.3 go with 0.1 (as `> thre`)
    keep = select(scores, cfg(selection="global", pruning_ratio=0.2, min_channels=1, global_threshold="inclusive"))
    assert keep["conv1"].tolist() == [3] and keep["conv2"].tolist() == [1]
    keep = select(scores, cfg(selection="global", pruning_ratio=0.2, min_channels=1))  # exact: int(1.2) = 1
    assert keep["conv1"].tolist() == [0, 2, 3] and keep["conv2"].tolist() == [0, 1]
    keep = select(scores, cfg(selection="global", pruning_ratio=0.0, min_channels=1, global_threshold="inclusive"))
    assert [len(k) for k in keep.values()] == [4, 2]


def test_the_threshold_rule_is_the_authors_for_slimming_and_magnitude_only():
    from tests.conftest import compose_config
    rules = {m: compose_config(f"method={m}").method.global_threshold for m in
             ("slimming", "magnitude", "taylor", "snip", "sss_sensitivity", "l1_norm")}
    assert rules == {"slimming": "inclusive", "magnitude": "inclusive", "taylor": "exact", "snip": "exact",
                     "sss_sensitivity": "exact", "l1_norm": "exact"}
    with pytest.raises(PrunebenchError, match="global_threshold must be one of exact, inclusive"):
        compose_config("method=slimming", "method.global_threshold=floor")

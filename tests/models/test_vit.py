"""The CIFAR ViT (prunebench.models.vit): heads and MLP units as channel groups, surgery,
reload, FLOPs, every protocol row on the smoke preset, refusal of methods not defined on it."""
import math

import pytest
import torch

from prunebench import measure, methods, models, pipeline, validate
from prunebench.data import ImageData
from prunebench.errors import PrunebenchError
from prunebench.pruning import surgery
from tests.conftest import compose_config

TINY = ("model=vit_cifar", "model.depth=2", "model.dim=32", "model.heads=4", "model.width=1.0")
SHAPE = (3, 16, 16)  # the smoke preset's synthetic images


def tiny_vit(seed: int = 0) -> models.vit.ViT:
    spec = models.spec_from_config(compose_config(*TINY).model, 3, 10, 16)
    torch.manual_seed(seed)
    return models.build(spec).eval()


def test_spec_from_config_scales_width_keeps_heads_and_needs_a_dividing_patch():
    spec = models.spec_from_config(compose_config("model=vit_cifar").model, 3, 10, 32)
    assert (spec["dim"], spec["head_dim"], spec["heads"], spec["mlp"]) == (192, 64, [3] * 12, [768] * 12)
    small = models.spec_from_config(compose_config("model=vit_small_cifar").model, 3, 10, 32)
    assert (small["dim"], small["heads"][0], small["mlp"][0]) == (384, 6, 1536)
    half = models.spec_from_config(compose_config("model=vit_cifar", "model.width=0.5").model, 3, 10, 32)
    assert (half["dim"], half["head_dim"], half["heads"][0], half["mlp"][0]) == (96, 32, 3, 384)
    with pytest.raises(PrunebenchError, match="model.patch=3 must divide"):
        models.spec_from_config(compose_config("model=vit_cifar", "model.patch=3").model, 3, 10, 32)


def test_groups_are_heads_and_mlp_units_and_flops_match_the_counter():
    model = tiny_vit()
    assert [g.name for g in model.channel_groups()] == ["block0_heads", "block0_mlp", "block1_heads", "block1_mlp"]
    assert surgery.widths(model) == {"block0_heads": 4, "block0_mlp": 128, "block1_heads": 4, "block1_mlp": 128}
    widths = {"block0_heads": 1, "block1_mlp": 7}
    narrow = models.build(model.spec_with_widths(widths))
    assert model.width_counter(SHAPE)(widths) == measure.count_flops(narrow, SHAPE)
    assert model.width_counter(SHAPE, "params")(widths) == measure.count_params(narrow)


def test_pruned_attention_keeps_head_structure_and_equals_the_masked_model():
    model = tiny_vit()
    keep = {"block0_heads": torch.tensor([0, 2]), "block1_heads": torch.tensor([3]),
            "block1_mlp": torch.arange(0, 128, 3)}
    pruned = surgery.prune(model, keep)
    assert pruned.spec["heads"] == [2, 1] and pruned.spec["mlp"] == [128, 43]
    qkv, proj = model.blocks[0].attn.qkv, model.blocks[0].attn.proj
    # the kept heads' q, k and v rows and the projection's columns for them, nothing else
    assert torch.equal(pruned.blocks[0].attn.qkv.weight, qkv.weight[[0, 2]])
    assert torch.equal(pruned.blocks[0].attn.qkv.bias, qkv.bias[[0, 2]])
    assert torch.equal(pruned.blocks[0].attn.proj.weight, proj.weight[:, [0, 2]])
    masked = tiny_vit()
    with torch.no_grad():  # a removed head or MLP unit adds nothing to what its consumer reads
        masked.blocks[0].attn.proj.weight[:, [1, 3]] = 0
        masked.blocks[1].attn.proj.weight[:, [0, 1, 2]] = 0
        dropped = [i for i in range(128) if i % 3]
        masked.blocks[1].mlp.fc2.weight[:, dropped] = 0
    x = torch.randn(4, *SHAPE)
    with torch.no_grad():
        assert torch.allclose(pruned(x), masked(x), atol=1e-6)
        assert not torch.allclose(pruned(x), model(x), atol=1e-3)


def test_pruned_vit_reloads_from_arch_json_with_equal_outputs(tmp_path):
    pruned = surgery.prune(tiny_vit(), {"block0_heads": torch.tensor([1, 3]), "block0_mlp": torch.arange(20)})
    models.save(pruned, tmp_path)
    again = models.load(tmp_path).eval()
    assert again.spec == pruned.spec and again.spec["heads"] == [2, 4]
    x = torch.randn(3, *SHAPE)
    with torch.no_grad():
        assert torch.equal(again(x), pruned(x))


@pytest.mark.parametrize("method", ["l1_norm", "fpgm", "random", "taylor"])
def test_unit_methods_score_each_head_and_mlp_unit(method):
    cfg = compose_config("experiment=smoke", *TINY, f"method={method}",
                         *(["method.target=weight", "method.num_images=16", "method.batch_size=8"]
                           if method == "taylor" else []))
    validate.check_model(cfg)
    model = tiny_vit()
    m = methods.create(cfg.method, 0)
    gen = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (16, *SHAPE), dtype=torch.uint8, generator=gen)
    y = torch.randint(0, 10, (16,), generator=gen)
    data = ImageData(x, y, x[:4], y[:4], mean=[0.5] * 3, std=[0.25] * 3, num_classes=10)
    scores = m.scores(model, data)
    assert {k: v.shape[0] for k, v in scores.items()} == surgery.widths(model)
    if method == "l1_norm":
        expected = model.blocks[1].attn.qkv.weight.detach().abs().sum(dim=(1, 2, 3))
        assert torch.allclose(scores["block1_heads"], expected)


def test_l1_norm_removes_the_head_with_the_smallest_qkv_rows():
    model = tiny_vit()
    with torch.no_grad():
        model.blocks[0].attn.qkv.weight[2].mul_(0.01)
    cfg = compose_config("experiment=smoke", *TINY, "method=l1_norm", "method.pruning_ratio=0.25",
                         "method.min_channels=1")
    m = methods.create(cfg.method, 0)
    keep = m.select(model, m.scores(model, None), cfg.method)
    assert keep["block0_heads"].tolist() == [0, 1, 3]


# every pair is checked in test_validate.py (tests/cases.py REFUSED); sfp with scope=all is weight-level yet refused
@pytest.mark.parametrize("method", ["slimming", "sfp"])
def test_methods_not_defined_on_heads_are_refused_by_name(method):
    cfg = compose_config("experiment=smoke", *TINY, f"method={method}")
    with pytest.raises(PrunebenchError, match=f"method={method} cannot prune model=vit_cifar: {method} scores "
                                              f"convolution channels.*use one of fpgm, l1_norm, random, taylor"):
        validate.check_model(cfg)


def test_taylor_on_batchnorm_is_refused_with_what_to_set():
    cfg = compose_config("experiment=smoke", *TINY, "method=taylor")
    with pytest.raises(PrunebenchError, match="set method.target=weight"):
        validate.check_model(cfg)


@pytest.mark.parametrize("method", ["l1_norm", "magnitude"])
def test_smoke_comparison_runs_every_row(smoke_cfg, method):
    cfg = smoke_cfg(*TINY, f"method={method}", "method.min_channels=1")
    rows = {r["row"]: r for r in pipeline.run(cfg)}
    assert all(r["status"] == "ok" for r in rows.values()), rows
    assert {"unpruned", "pruned", "finetune", "scratch_e", "scratch_b", "uniform"} <= set(rows)
    full = rows["unpruned"]
    if method == "l1_norm":
        for name in ["pruned", "finetune", "scratch_e", "scratch_b", "uniform"]:
            assert rows[name]["flops"] < full["flops"] and rows[name]["params"] < full["params"]
        assert abs(rows["uniform"]["flops"] - rows["pruned"]["flops"]) <= 0.01 * rows["pruned"]["flops"]
        assert rows["scratch_b"]["epochs"] == math.ceil(full["epochs"] * full["flops"] / rows["pruned"]["flops"])
        # the pruned stage folder (arch.json + weights) reloads as the unpruned stage's model cut by l1_norm
        unpruned = models.load(rows["unpruned"]["stage"]).eval()
        m = methods.create(cfg.method, 0)
        expected = surgery.prune(unpruned, m.select(unpruned, m.scores(unpruned, None), cfg.method)).eval()
        reloaded = models.load(rows["pruned"]["stage"]).eval()
        assert reloaded.spec == expected.spec and reloaded.spec["heads"] == [2, 2] and reloaded.spec["mlp"] == [64, 64]
        x = torch.randn(2, *SHAPE)
        with torch.no_grad():
            assert torch.equal(reloaded(x), expected(x))
    else:  # weight-level: the architecture is kept, attention weights are masked too
        assert rows["pruned"]["params"] < full["params"]
        # the uniform masks leave the pruned model's FLOPs (attention's products are not masked)
        assert abs(rows["uniform"]["flops"] - rows["pruned"]["flops"]) <= 0.02 * rows["pruned"]["flops"]


TIMM = ("model=timm", "model.name=vit_tiny_patch16_224", "model.width=1.0",
        "model.options={depth:2,embed_dim:32,num_heads:4,patch_size:4}")


def tiny_timm(seed: int = 0):
    pytest.importorskip("timm")
    spec = models.spec_from_config(compose_config(*TIMM).model, 3, 10, 16)
    torch.manual_seed(seed)
    return models.build(spec).eval()


def test_timm_vit_heads_mlp_and_embedding_are_groups_cut_like_the_masked_model(tmp_path):
    model = tiny_timm()
    assert surgery.widths(model) == {"blocks_0_attn_heads": 4, "blocks_0_mlp": 128, "blocks_1_attn_heads": 4,
                                     "blocks_1_mlp": 128, "patch_embed_proj": 32}
    pruned = surgery.prune(model, {"blocks_0_attn_heads": torch.tensor([0, 2]),
                                   "blocks_1_mlp": torch.arange(0, 128, 2)})
    qkv = model.net.blocks[0].attn.qkv.weight.view(3, 4, 8, 32)  # (q/k/v, head, head_dim, dim)
    assert torch.equal(pruned.net.blocks[0].attn.qkv.weight.view(3, 2, 8, 32), qkv[:, [0, 2]])
    assert pruned.net.blocks[0].attn.num_heads == 2
    masked = tiny_timm()
    with torch.no_grad():
        masked.net.blocks[0].attn.proj.weight[:, 8:16] = 0
        masked.net.blocks[0].attn.proj.weight[:, 24:32] = 0
        masked.net.blocks[1].mlp.fc2.weight[:, 1::2] = 0
    x = torch.randn(2, *SHAPE)
    with torch.no_grad():
        assert torch.allclose(pruned(x), masked(x), atol=1e-6)
    narrow = surgery.prune(pruned, {"patch_embed_proj": torch.arange(0, 32, 2)})  # the embedding width
    models.save(narrow, tmp_path)
    again = models.load(tmp_path).eval()
    assert again.net.pos_embed.shape[-1] == 16 and again.spec["keep"]["blocks_0_attn_heads"] == [0, 2]
    with torch.no_grad():
        assert torch.equal(again(x), narrow(x))


def test_l1_norm_scores_a_timm_head_by_its_qkv_rows():
    model = tiny_timm()
    cfg = compose_config("experiment=smoke", *TIMM, "method=l1_norm")
    scores = methods.create(cfg.method, 0).scores(model, None)
    rows = model.net.blocks[1].attn.qkv.weight.detach().view(3, 4, 8, 32).abs().sum(dim=(0, 2, 3))
    assert torch.allclose(scores["blocks_1_attn_heads"], rows)


def test_timm_smoke_comparison_runs_every_row(smoke_cfg):
    pytest.importorskip("timm")
    rows = {r["row"]: r for r in pipeline.run(smoke_cfg(*TIMM, "method=l1_norm", "method.min_channels=1"))}
    assert all(r["status"] == "ok" for r in rows.values()), rows
    assert {"unpruned", "pruned", "finetune", "scratch_e", "scratch_b", "uniform"} <= set(rows)
    assert rows["pruned"]["flops"] < rows["unpruned"]["flops"]
    assert abs(rows["uniform"]["flops"] - rows["pruned"]["flops"]) <= 0.01 * rows["pruned"]["flops"]


def test_a_method_not_defined_on_timm_transformers_is_refused_by_name():
    pytest.importorskip("timm")
    with pytest.raises(PrunebenchError, match="method=apoz cannot prune model=vit_tiny_patch16_224: apoz scores"):
        validate.check_model(compose_config("experiment=smoke", *TIMM, "method=apoz"))


def test_torchvision_swin_prunes_its_mlp_units_and_reloads(tmp_path):
    spec = models.spec_from_config(compose_config("model=torchvision", "model.name=swin_t").model, 3, 10, 32)
    assert spec["arch"] == "torchvision_transformer"
    model = models.build(spec).eval()
    assert model.transformer and all(g.name.endswith("_mlp") for g in model.channel_groups())
    pruned = surgery.prune(model, {"features_1_0_mlp": torch.arange(100)})
    models.save(pruned, tmp_path)
    again = models.load(tmp_path).eval()
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        assert again.net.features[1][0].mlp[0].out_features == 100 and torch.equal(again(x), pruned(x))

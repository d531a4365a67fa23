"""The fast training step (train.compile=on) computes what the eager step computes.

On a CPU the compiled step goes through torch.compile with the ``aot_eager``
backend: dynamo traces the step, AOTAutograd builds forward and backward graphs,
the optimizer and hooks run traced with a tensor learning rate; only the code
generation of ``inductor`` is left out (about two minutes of C++ compilation on a
2-core machine; the GPU check covers inductor). Each case trains 20 steps over a
learning-rate milestone, with a method's hook, and compares losses and weights in
float64: in float32 the rounding differences of the traced graphs (BatchNorm
decomposed, other summation orders) grow over 24 steps of a small ResNet to 1e-2
in the weights, where in float64 both runs agree to 1e-7, so float64 tests the
computation rather than the rounding."""
import pytest
import torch
from omegaconf import OmegaConf

from prunebench import data, methods, models
from prunebench.config import SyntheticDatasetConfig
from prunebench.methods.slimming import SlimmingConfig
from prunebench.methods.sss import SSSConfig
from prunebench.data.images import ImageData
from prunebench.errors import PrunebenchError
from prunebench.models import resnet, vgg
from prunebench.pruning.masks import uniform_masks
from prunebench.train import HookList, MaskHook, Recipe, TrainHooks, train
from prunebench.train.step import CapturableSGD, Speed, Step, optimizer

FAST = Speed(compile="on", backend="aot_eager")
RECIPE = Recipe(epochs=2, lr=0.05, batch_size=32, milestones=[0.5])  # 10 steps an epoch, lr x0.1 after epoch 1


@pytest.fixture(scope="module")
def synthetic():
    return data.load(OmegaConf.structured(SyntheticDatasetConfig(name="synthetic", pad=2, flip=True, train_size=320)))


@pytest.fixture
def float64(monkeypatch):
    """Batches in float64 (models are made float64 by ``twice``)."""
    normalize = ImageData.normalize
    monkeypatch.setattr(ImageData, "normalize", lambda self, x: normalize(self, x).double())


def build(spec):
    torch.manual_seed(0)
    return models.build(spec)


VGG = vgg.spec_for(11, 0.125, 3, 10)
RESNET = resnet.spec_for(8, 0.25, 3, 10)


def twice(synthetic, tmp_path, spec, hooks_for, speed=FAST, dtype=torch.float64):
    """Train the same init eagerly and with ``speed``; return both (history, model)."""
    out = []
    for name, s in (("eager", Speed()), ("fast", speed)):
        model = build(spec).to(dtype)
        hooks = hooks_for(model)
        model.to(dtype)
        h = train(model, synthetic, RECIPE, seed=0, checkpoint=tmp_path / f"{name}.pt", hooks=hooks,
                  progress=False, speed=s)["history"]
        out.append((h, model))
    return out


def assert_same(a, b, rtol=1e-9, atol=1e-6):
    (ha, ma), (hb, mb) = a, b
    assert [h["lr"] for h in ha] == pytest.approx([h["lr"] for h in hb])
    assert [h["loss"] for h in ha] == pytest.approx([h["loss"] for h in hb], rel=rtol)
    for (name, x), y in zip(ma.state_dict().items(), mb.state_dict().values()):
        assert torch.allclose(x.float(), y.float(), atol=atol), name


def test_compiled_vgg_with_slimming_l1_and_a_weight_mask_equals_eager(synthetic, float64, tmp_path):
    slim = methods.create(OmegaConf.structured(SlimmingConfig(name="slimming", sparsity=1e-2)))
    masks = uniform_masks(build(VGG), 0.3, seed=0)
    eager, fast = twice(synthetic, tmp_path, VGG, lambda m: HookList([slim, MaskHook(masks)]))
    assert_same(eager, fast)
    assert eager[0][1]["lr"] == pytest.approx(0.005)  # the milestone was crossed
    params = dict(fast[1].named_parameters())
    for name, mask in masks.items():
        assert (params[name][~mask] == 0).all(), name


def test_compiled_resnet_with_sss_proximal_step_equals_eager(synthetic, float64, tmp_path):
    sss = methods.create(OmegaConf.structured(SSSConfig(name="sss", selection="threshold", sparsity=2.0)))

    def hooks(model):
        sss.attach(model, (3, 16, 16))
        return sss

    eager, fast = twice(synthetic, tmp_path, RESNET, hooks)
    assert_same(eager, fast)
    factors = fast[1].sss_factors.factors
    assert any((f == 0).any() for f in factors.values())  # the proximal step ran: exact zeros


class Counting:
    """A torch.compile backend counting the graphs it is given (aot_eager underneath)."""

    def __init__(self):
        self.graphs = 0

    def __call__(self, gm, example_inputs):
        from torch._dynamo.backends.debugging import aot_eager
        self.graphs += 1
        return aot_eager(gm, example_inputs)


def test_a_schedule_step_neither_recompiles_nor_leaves_the_tensor_lr(synthetic):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.ReLU(),
                                torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(4, 10))
    backend = Counting()
    speed = Speed(compile="on", backend=backend)
    opt = optimizer(model, RECIPE, synthetic.device, speed)
    lr = opt.param_groups[0]["lr"]
    assert isinstance(lr, torch.Tensor)
    sched = torch.optim.lr_scheduler.MultiStepLR(opt, milestones=[1], gamma=0.1)
    step = Step(model, opt, TrainHooks(), speed, synthetic.device)
    batches = list(synthetic.train_batches(32, torch.Generator().manual_seed(0), steps=3))
    for x, y in batches:
        step(x, y)
    compiled = backend.graphs
    assert compiled > 0
    sched.step()
    assert opt.param_groups[0]["lr"] is lr and float(lr) == pytest.approx(0.005)
    for x, y in batches:
        step(x, y)
    assert backend.graphs == compiled


class Opaque(TrainHooks):
    capturable = False


def test_a_hook_that_cannot_be_captured_gets_the_eager_step(synthetic):
    model = build(VGG)
    opt = optimizer(model, RECIPE, synthetic.device, FAST)
    assert not Step(model, opt, HookList([TrainHooks(), Opaque()]), FAST, synthetic.device).fast
    assert Step(model, opt, HookList([TrainHooks()]), FAST, synthetic.device).fast


def test_channels_last_equals_eager_and_bf16_trains(synthetic, tmp_path):
    eager, nhwc = twice(synthetic, tmp_path, VGG, lambda m: TrainHooks(), speed=Speed(channels_last=True),
                        dtype=torch.float32)
    assert_same(eager, nhwc, rtol=1e-4, atol=1e-3)
    model = build(VGG)
    h = train(model, synthetic, RECIPE, seed=0, checkpoint=tmp_path / "bf16.pt", progress=False,
              speed=Speed(precision="bf16"))["history"]
    assert [x["loss"] for x in h] == pytest.approx([x["loss"] for x in eager[0]], rel=0.05)  # bf16: close, not equal


def test_speed_settings_keep_cache_keys_and_precision_changes_them(smoke_cfg):
    from prunebench.protocol import Run
    base = Run(smoke_cfg()).stage_values()
    fast = Run(smoke_cfg("train.compile=on", "train.channels_last=true", "train.max_concurrent=2",
                         "train.checkpoint_every=0")).stage_values()
    assert fast == base
    bf16 = Run(smoke_cfg("train.precision=bf16")).stage_values()
    for row in base:
        assert bf16[row] != base[row], row  # every stage trained (or pruned from one trained) in bf16
    assert Run(smoke_cfg()).bench.speed.compile == "off"
    with pytest.raises(PrunebenchError, match="train.compile must be one of off, on, graph, got 'False'"):
        smoke_cfg("train.compile=false")  # a YAML boolean is not one of the choices: refused in one line


@pytest.mark.parametrize("momentum,dampening,weight_decay,nesterov",
                         [(0.9, 0.0, 1e-4, False), (0.9, 0.0, 5e-4, True), (0.5, 0.1, 0.0, False), (0.0, 0.0, 1e-3, False)])
def test_the_graph_paths_sgd_is_torchs_sgd_with_a_tensor_lr(momentum, dampening, weight_decay, nesterov):
    """``CapturableSGD`` (train.compile=graph: torch's eager SGD would read a tensor lr back to
    the host) steps as torch's SGD does, momentum buffers included, over an lr change."""
    torch.manual_seed(0)
    ref = torch.nn.Sequential(torch.nn.Linear(5, 4), torch.nn.ReLU(), torch.nn.Linear(4, 3)).double()
    mine = torch.nn.Sequential(torch.nn.Linear(5, 4), torch.nn.ReLU(), torch.nn.Linear(4, 3)).double()
    mine.load_state_dict(ref.state_dict())
    kw = dict(momentum=momentum, dampening=dampening, weight_decay=weight_decay, nesterov=nesterov)
    opt_ref = torch.optim.SGD(ref.parameters(), lr=0.1, **kw)
    lr = torch.tensor(0.1, dtype=torch.float64)
    opt = CapturableSGD(mine.parameters(), lr=lr, foreach=True, **kw)
    for step in range(6):
        if step == 3:  # a milestone: the tensor is filled in place, as the schedule does
            opt_ref.param_groups[0]["lr"] = 0.01
            lr.fill_(0.01)
        x = torch.randn(8, 5, dtype=torch.float64)
        for model, o in ((ref, opt_ref), (mine, None)):
            model.zero_grad(set_to_none=True)
            model(x).square().mean().backward()
        opt_ref.step()
        opt.step()
        for a, b in zip(ref.parameters(), mine.parameters()):
            assert torch.allclose(a, b, rtol=1e-12, atol=1e-14)
    if momentum:
        for a, b in zip(opt_ref.state_dict()["state"].values(), opt.state_dict()["state"].values()):
            assert torch.allclose(a["momentum_buffer"], b["momentum_buffer"], rtol=1e-12, atol=1e-14)


def test_the_graph_path_off_cuda_trains_as_eager_with_a_tensor_lr(synthetic, float64, tmp_path):
    """train.compile=graph on a CPU: no compilation, no capture; the step with the tensor lr and
    ``sgd_update`` equals the eager step over a milestone, with slimming's hook and a mask."""
    slim = methods.create(OmegaConf.structured(SlimmingConfig(name="slimming", sparsity=1e-2)))
    masks = uniform_masks(build(VGG), 0.3, seed=0)
    graph = Speed(compile="graph")
    eager, fast = twice(synthetic, tmp_path, VGG, lambda m: HookList([slim, MaskHook(masks)]), speed=graph)
    assert_same(eager, fast)
    model = build(VGG)
    step = Step(model, optimizer(model, RECIPE, synthetic.device, graph), TrainHooks(), graph, synthetic.device)
    assert step.fast and not step.graphed and step.run == step.body  # nothing compiled, nothing to capture on a CPU
    assert isinstance(step.opt, CapturableSGD) and isinstance(step.opt.param_groups[0]["lr"], torch.Tensor)

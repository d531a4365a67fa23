"""The fast step on CUDA: the whole step captured in one CUDA graph computes what the
eager step computes. CUDA only (pytest marker ``gpu``; skipped without a GPU, the one
allowed skip); ``scripts/gpu_check.sh`` runs these first when a GPU is lent."""
import pytest
import torch
from omegaconf import OmegaConf

from prunebench import methods
from prunebench.methods.slimming import SlimmingConfig
from prunebench.methods.sss import SSSConfig
from prunebench.pruning.masks import uniform_masks
from prunebench.train import HookList, MaskHook, TrainHooks, train
from prunebench.train.step import Speed, Step, optimizer
from tests.train.test_step import RECIPE, RESNET, VGG, assert_same, build, float64, twice  # noqa: F401

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]

GRAPHED = Speed(compile="on", backend="aot_eager")  # traced and captured; no code generation
INDUCTOR = Speed(compile="on")
CAPTURED = Speed(compile="graph")  # the eager step captured, nothing compiled


@pytest.fixture(scope="module")
def gpu_data():
    from prunebench import data
    from prunebench.config import SyntheticDatasetConfig
    torch.backends.cudnn.allow_tf32 = False  # fp32 convolutions, so eager and compiled can be compared
    torch.backends.cuda.matmul.allow_tf32 = False
    return data.load(OmegaConf.structured(SyntheticDatasetConfig(name="synthetic", pad=2, flip=True,
                                                        train_size=320))).to("cuda")


def slimming_and_mask():
    slim = methods.create(OmegaConf.structured(SlimmingConfig(name="slimming", sparsity=1e-2)))
    masks = {k: v.cuda() for k, v in uniform_masks(build(VGG), 0.3, seed=0).items()}
    return lambda m: HookList([slim, MaskHook(masks)])


@pytest.mark.parametrize("speed", [GRAPHED, CAPTURED], ids=["compiled", "graph"])
def test_the_whole_step_is_one_cuda_graph_and_a_schedule_step_keeps_it(gpu_data, speed):
    model = build(VGG).cuda()
    opt = optimizer(model, RECIPE, gpu_data.device, speed)
    sched = torch.optim.lr_scheduler.MultiStepLR(opt, milestones=[1], gamma=0.1)
    step = Step(model, opt, TrainHooks(), speed, gpu_data.device)
    batches = list(gpu_data.train_batches(32, torch.Generator(device="cuda").manual_seed(0), steps=6))
    for x, y in batches:
        step(x, y)
    graph = step.graph
    assert graph is not None
    sched.step()
    for x, y in batches:
        step(x, y)
    assert step.graph is graph and torch.isfinite(step.loss_sum)


@pytest.mark.parametrize("speed", [GRAPHED, CAPTURED], ids=["compiled", "graph"])
def test_captured_vgg_with_slimming_and_a_mask_equals_eager_float64(gpu_data, float64, tmp_path, speed):
    eager, fast = twice(gpu_data, tmp_path, VGG, slimming_and_mask(), speed=speed)
    assert_same(eager, fast)


def test_captured_resnet_with_sss_equals_eager_float64(gpu_data, float64, tmp_path):
    sss = methods.create(OmegaConf.structured(SSSConfig(name="sss", selection="threshold", sparsity=2.0)))

    def hooks(model):
        sss.attach(model, (3, 16, 16))
        return sss

    eager, fast = twice(gpu_data, tmp_path, RESNET, hooks, speed=GRAPHED)
    assert_same(eager, fast)


def test_inductor_and_graph_track_eager_in_fp32(gpu_data, tmp_path):
    eager, fast = twice(gpu_data, tmp_path, VGG, slimming_and_mask(), speed=INDUCTOR, dtype=torch.float32)
    assert_same(eager, fast, rtol=1e-3, atol=5e-3)


def test_bf16_channels_last_graph_trains(gpu_data, tmp_path):
    model = build(VGG)
    h = train(model, gpu_data, RECIPE, seed=0, checkpoint=tmp_path / "c.pt", progress=False,
              speed=Speed(precision="bf16", channels_last=True, compile="on"))["history"]
    assert all(torch.isfinite(torch.tensor(x["loss"])) for x in h) and h[-1]["loss"] < h[0]["loss"] + 0.5


def test_trainings_in_flight_on_cuda_streams_equal_each_alone_float64(gpu_data, float64, tmp_path):
    """Each training's step (one CUDA-graph replay) and its batches go on a stream of its own
    through the scheduler: what lands on the device equals the job trained alone on the default
    stream."""
    from prunebench.train.job import train_job
    from tests.test_scheduler import in_flight, mixed_jobs

    def on_gpu(jobs):
        for j in jobs:
            j.model.double()
            j.masks = None if j.masks is None else {k: v.cuda() for k, v in j.masks.items()}
        return jobs
    alone = on_gpu(mixed_jobs(gpu_data, tmp_path / "alone", GRAPHED))
    outs_alone = [train_job(j) for j in alone]
    together = on_gpu(mixed_jobs(gpu_data, tmp_path / "together", GRAPHED))
    outs = in_flight(together, tmp_path / "stages").results()
    for a, b, oa, ob in zip(alone, together, outs_alone, outs):
        assert [h["loss"] for h in ob["history"]] == pytest.approx([h["loss"] for h in oa["history"]], rel=1e-9)
        assert [h["acc1"] for h in ob["history"]] == [h["acc1"] for h in oa["history"]]
        for (name, x), y in zip(a.model.state_dict().items(), b.model.state_dict().values()):
            assert torch.allclose(x.double(), y.double(), atol=1e-9), (a.kind, name)


def test_readouts_come_back_without_waiting_for_later_steps(gpu_data):
    """A Readout's copy lands once the work before it is done; kernels queued after it do not delay it."""
    from prunebench.train.readout import Readout
    x = torch.randn(8192, 8192, device="cuda")
    value = x.sum()
    out = Readout(value)
    for _ in range(20):  # about half a second of work queued after the readout
        x = x @ x / 8192
    got = out.get().item()
    assert not torch.cuda.current_stream().query()  # the later work still runs: get() did not wait for it
    assert got == value.item()

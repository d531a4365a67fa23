"""Latency by torch.utils.benchmark: median and interquartile range over timed blocks."""
import torch

from prunebench import measure, models
from prunebench.models import vgg


def tiny():
    torch.manual_seed(0)
    return models.build(vgg.spec_for(11, 0.125, 3, 10))


def test_latency_reports_median_and_iqr_and_keeps_the_mode():
    model = tiny().train()
    out = measure.latency(model, (3, 32, 32), batch=4, min_run_time=0.14)
    assert set(out) == {"median_ms", "iqr_ms", "blocks", "per_block", "batch", "device"}
    assert out["median_ms"] > 0 and out["iqr_ms"] >= 0 and out["blocks"] == 7
    assert out["batch"] == 4 and out["device"] == "cpu"
    assert model.training  # the caller's mode is restored
    assert isinstance(measure.latency_ms(model, (3, 32, 32), 4, 3), float)


def test_the_same_architecture_measured_twice_agrees_within_15_percent():
    """As the unpruned and sparse rows of a run (one architecture, two stages) must, with the default
    settings (20 blocks); on a CPU shared with other jobs too, hence the thread-time clock there."""
    model = tiny()
    a, b = (measure.latency(model, (3, 32, 32), batch=8)["median_ms"] for _ in range(2))
    assert abs(a - b) <= 0.15 * min(a, b), (a, b)

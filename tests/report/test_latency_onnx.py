"""Latency where the model is deployed: at a saturating batch, and exported to ONNX and run by
ONNX Runtime on the CPU (measure.onnx), beside the FLOPs' promise in the table."""
import sys

import numpy as np
import pytest
import torch

from prunebench import measure, models, pipeline
from prunebench.errors import PrunebenchError
from tests.conftest import compose_config

ort = pytest.importorskip("onnxruntime")  # in the [test] extra: CI runs these


def pruned_mobilenet():
    torch.manual_seed(0)
    model = models.build({"arch": "cifar_modern", "net": "mobilenet_v2", "width": 0.25, "in_channels": 3,
                          "num_classes": 10, "keep": {}}).eval()
    keep = {g.name: torch.arange(0, model.get_submodule(g.conv).out_channels, 2) for g in model.channel_groups()}
    return model, model.pruned(keep).eval()


def test_onnx_latency_runs_on_a_pruned_model_and_computes_what_it_computes():
    model, pruned = pruned_mobilenet()
    session = measure.onnx_session(pruned, (3, 16, 16))
    x = np.random.default_rng(0).standard_normal((4, 3, 16, 16)).astype(np.float32)
    with torch.no_grad():
        expected = pruned(torch.from_numpy(x)).numpy()
    assert np.allclose(session.run(None, {"x": x})[0], expected, atol=1e-4)
    out = measure.onnx_latency(pruned, (3, 16, 16), batches=(1, 8), min_run_time=0.06)
    assert set(out) == {1, 8}
    assert all(o["median_ms"] > 0 and o["blocks"] == 3 for o in out.values())


def test_missing_onnx_runtime_is_a_one_line_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    with pytest.raises(PrunebenchError, match="pip install onnxruntime"):
        measure.onnx_session(pruned_mobilenet()[1], (3, 16, 16))


@pytest.mark.slow  # the quickstart preset's pipeline, twice (a few seconds on a free CPU)
def test_the_quickstart_table_shows_onnx_latency_and_speed_ups_beside_the_flops_promise(tmp_path):
    cheap = ["experiment=quickstart", f"cache_dir={tmp_path / 'stages'}", "schedule.epochs=1",
             "schedule.steps_per_epoch=2", "strategy.finetune.epochs=1", "measure.latency_repeats=2",
             "measure.latency_batch=1", "strategies=[finetune,uniform]", "method=l1_norm"]
    first = {r["row"]: r for r in pipeline.run(compose_config(*cheap))}
    assert first["pruned"]["onnx_ms"] is None and first["pruned"]["speedup"] is not None
    # asked for afterwards: the cached stages are measured on their saved models, nothing retrains
    rows = {r["row"]: r for r in pipeline.run(compose_config(*cheap, "measure.onnx=true",
                                                             "measure.saturating_batch=8"))}
    assert all(r["status"] == "ok" for r in rows.values())
    for r in rows.values():
        assert r["onnx_ms"] > 0 and r["onnx_sat_ms"] > 0 and r["latency_sat_ms"] > 0
    assert rows["unpruned"]["onnx_speedup"] == 1.0
    full, pruned = rows["unpruned"], rows["pruned"]
    assert pruned["flops_speedup"] == round(full["flops"] / pruned["flops"], 3) > 1
    assert pruned["onnx_speedup"] == round(full["onnx_ms"] / pruned["onnx_ms"], 3)
    from prunebench.report.table import markdown
    table = markdown(list(rows.values()), "t")
    assert "onnx_ms" in table.splitlines()[2] and "flops_speedup" in table and "onnx_speedup" in table

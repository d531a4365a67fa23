"""The smaller model one would have picked anyway: the pruned model held against the nearest
smaller member of its family, trained from scratch with the unpruned recipe scaled to its FLOPs
as Scratch-B's is (E x FLOPs_full / FLOPs_small epochs, ``strategy.scratch_b``'s rounding and cap).
ResNet-56 against a pruned ResNet-110; a pruned YOLOv8s "is exactly yolov8n" (Torch-Pruning
issue #158); a pruned ResNet-34 against torchvision's ResNet-18.

``strategy.small_model``: ``model``, a ``conf/model`` option (resnet56, vgg16, torchvision), or
null for the run's own model config (its options, e.g. a preset's ``bn_init`` or ``shortcut``,
carried over); then ``name`` (a torchvision model: resnet18, mobilenet_v2), ``width`` and
``depth`` override it. Its params and FLOPs stand in its row beside the pruned row's; the note
gives them against the pruned model's."""
from typing import Dict

import yaml
from omegaconf import OmegaConf

from prunebench import data as datasets
from prunebench import models
from prunebench.config import SmallModelConfig
from prunebench.errors import PrunebenchError
from prunebench.measure import spec_flops
from prunebench.strategies.base import Strategy
from prunebench.strategies.scratch_b import budget, budget_values, check as check_scratch_b

OVERRIDES = ("name", "width", "depth")


def model_config(cfg):
    """The small model's config node: ``strategy.small_model.model`` (a conf/model option) or the run's, overridden,
    typed by its arch's schema."""
    from prunebench import config

    node = cfg.strategy.small_model
    if node.model is None:
        base = OmegaConf.create(OmegaConf.to_container(cfg.model, resolve=True, enum_to_str=True))
    else:
        path = config.CONF_DIR / "model" / f"{node.model}.yaml"
        if not path.exists():
            options = sorted(p.stem for p in (config.CONF_DIR / "model").glob("*.yaml"))
            raise PrunebenchError(f"strategy.small_model.model={node.model!r} is no conf/model option; known: "
                                  f"{', '.join(options)}")
        tree = yaml.safe_load(path.read_text()) or {}
        tree.pop("defaults", None)
        base = OmegaConf.create(tree)
    for key in OVERRIDES:
        if node[key] is not None:
            base[key] = node[key]
    return OmegaConf.merge(OmegaConf.structured(models.schema_of(base)), base)


def small_spec(run) -> Dict:
    return models.spec_from_config(model_config(run.cfg), run.input_shape[0], datasets.shape(run.cfg.dataset)[1])


def label(cfg) -> str:
    """The small model in words: ``resnet32``, ``vgg19 width 0.45``, ``mobilenet_v2 width 0.75``."""
    m, node = model_config(cfg), cfg.strategy.small_model
    name = f"{m.arch}{m.depth}" if node.depth is not None and node.name is None else str(m.name)
    return name + (f" width {m.width:g}" if float(m.width) != 1.0 else "")


class SmallModel(Strategy):
    name = "small_model"
    Config = SmallModelConfig
    pruned_model = False
    keyed_by = ("small_model",)

    def cache_values(self, cfg):
        values = super().cache_values(cfg)
        if cfg.strategy.small_model.model is None:  # the run's own model config, overridden
            values["model"] = OmegaConf.to_container(cfg.model, resolve=True)
        return {**values, "scratch_b": budget_values(cfg)}

    def check(self, cfg):
        check_scratch_b(cfg)
        node = cfg.strategy.small_model
        if all(node[k] is None for k in ("model",) + OVERRIDES):
            raise PrunebenchError("strategies has small_model but strategy.small_model names no model: set "
                                  "strategy.small_model.model (a conf/model option) and/or .name / .width / .depth "
                                  "(e.g. strategy.small_model.depth=44 on a resnet56 line)")
        model_config(cfg)

    def budget(self, run, spec):
        """Scratch-B's formula at the small model's own FLOPs (a dense model, whatever scratch_b.flops says)."""
        return budget(run, spec_flops(spec, run.input_shape), dense=False)

    def plan(self, run):
        spec = small_spec(run)
        return {"spec": spec, "epochs": self.budget(run, spec)["epochs"],
                "note": f"{label(run.cfg)} from scratch, Scratch-B's budget for its FLOPs"}

    def train(self, run, stage):
        spec = small_spec(run)
        b = self.budget(run, spec)

        def beside(m):
            p, f = run.figure("pruned", "params"), run.figure("pruned", "flops")
            note = f"{label(run.cfg)} from scratch"
            if p and f:
                note += f"; params x{m['params'] / p:.2f}, FLOPs x{m['flops'] / f:.2f} of the pruned model's"
            return {**m, "epochs_formula": b["formula"], "note": note}
        return run.trained(stage, run.fresh(spec, reinit=True), b["recipe"]).after(beside)

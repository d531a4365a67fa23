"""Configuration schemas: every YAML file in ``conf/`` is checked against these
dataclasses, so a misspelt key or a wrong type is an error, not a silent default."""
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING


@dataclass
class ModelConfig:
    name: str = MISSING  # vgg19, resnet56: the registry name, also the table label
    arch: str = MISSING  # vgg | resnet
    depth: int = MISSING
    width: float = 1.0  # multiplier on the paper's channel widths


@dataclass
class DatasetConfig:
    name: str = MISSING  # cifar10 | cifar100 | digits | synthetic
    root: str = "data"  # folder holding cifar-10-batches-py / cifar-100-python
    download: bool = True  # try torchvision's download when the files are absent
    pad: int = 4  # random-crop padding, pixels
    flip: bool = True  # random horizontal flip
    # synthetic only
    train_size: int = 256
    test_size: int = 128
    image_size: int = 16
    num_classes: int = 10


@dataclass
class ScheduleConfig:
    name: str = MISSING
    epochs: int = 160  # unpruned, sparse and scratch_e
    batch_size: int = 64
    lr: float = 0.1  # per batch of 64
    momentum: float = 0.9
    weight_decay: float = 1e-4
    milestones: List[float] = field(default_factory=lambda: [0.5, 0.75])  # fractions of the epochs
    gamma: float = 0.1  # lr factor at each milestone
    steps_per_epoch: Optional[int] = None  # cap on steps an epoch (smoke tests); None = whole set
    nesterov: bool = False  # Nesterov momentum (soft filter pruning's recipe)
    eval_every: int = 1  # test top-1 every this many epochs (and after the last); 0: after the last only
    eval_batch_size: int = 1000


@dataclass
class MethodConfig:
    name: str = MISSING
    pruning_ratio: float = 0.5  # fraction of prunable channels (weight-level: weights) removed
    # global: one threshold over all layers | layer: the ratio in every layer
    # threshold: remove what scores <= `threshold` (automatic methods: SSS, AutoPruner)
    selection: str = "layer"
    threshold: float = 0.0
    layer_ratios: Dict[str, float] = field(default_factory=dict)  # per-layer ratio overrides (layer selection)
    skip: List[str] = field(default_factory=list)  # layers never pruned
    min_channels: int = 4  # a layer never keeps fewer channels than this
    round_to: int = 1  # round kept widths up to a multiple of this (8 suits tensor cores)
    iterations: int = 1  # prune in this many steps, fine-tuning iteration_epochs between them
    iteration_epochs: int = 0  # epochs of fine-tuning (strategy.finetune.lr) between iterations
    # the sparse stage of methods that train before pruning (slimming, sss, autopruner, sfp)
    sparse_init: str = "scratch"  # scratch: from a fresh init | unpruned: from the trained unpruned model
    sparse_epochs: Optional[int] = None  # None: the schedule's epochs
    sparse_lr: Optional[float] = None  # None: the schedule's lr (and its milestones)


@dataclass
class SlimmingConfig(MethodConfig):
    sparsity: float = 1e-4  # L1 weight on BN gammas in the sparse stage (paper: 1e-4 VGG, 1e-5 ResNet)


@dataclass
class L1NormConfig(MethodConfig):
    pass


@dataclass
class RandomConfig(MethodConfig):
    pass


@dataclass
class SSSConfig(MethodConfig):
    level: str = "channel"  # channel: a factor per channel | block: a factor per residual block (ResNets)
    sparsity: float = 1e-4  # L1 weight on the scaling factors, applied by the proximal (soft-threshold) step
    momentum: float = 0.9  # of the accelerated proximal gradient update of the factors


@dataclass
class StatisticsConfig(MethodConfig):
    num_images: int = 1000  # training images the statistics are collected over (fewer if the set is smaller)
    batch_size: int = 250  # images per forward pass while collecting


@dataclass
class ThiNetConfig(StatisticsConfig):
    positions_per_image: int = 10  # sampled output positions per image
    reconstruct: bool = True  # least-squares rescaling of the kept weights of the next layer


@dataclass
class ChannelPruningConfig(StatisticsConfig):
    num_images: int = 5000  # paper: 5000 images, 10 positions each
    positions_per_image: int = 10
    reconstruct: bool = True  # least-squares refit of the next layer on the kept channels


@dataclass
class APoZConfig(StatisticsConfig):
    criterion: str = "ratio"  # ratio: remove pruning_ratio of each layer | std: remove APoZ > mean + std_k * std
    std_k: float = 1.0  # paper: 1


@dataclass
class AutoPrunerConfig(MethodConfig):
    alpha_start: float = 1.0  # sigmoid(alpha * x) steepness, raised linearly over the sparse stage
    alpha_stop: float = 100.0
    fc_init_scale: float = 10.0  # gate FC weights start at this multiple of MSRA init


@dataclass
class TaylorConfig(StatisticsConfig):
    target: str = "bn"  # bn: (sum of grad x gamma)^2 per channel | weight: (sum of grad x w)^2 per filter


@dataclass
class FPGMConfig(MethodConfig):
    pass


@dataclass
class SFPConfig(MethodConfig):
    norm: int = 2  # Lp norm of the filters ranked each epoch


@dataclass
class MagnitudeConfig(MethodConfig):
    pass


@dataclass
class SNIPConfig(MethodConfig):
    batch_size: int = 128  # images in the one batch the sensitivities come from


@dataclass
class FinetuneConfig:
    epochs: int = 40  # paper CIFAR
    lr: float = 0.001  # constant


@dataclass
class ScratchBConfig:
    max_factor: Optional[float] = None  # cap epochs at max_factor x E (paper: 2); None = the formula alone


@dataclass
class UniformConfig:
    match: str = "flops"  # flops | params: what the uniform model matches of the pruned one
    tolerance: float = 0.01  # relative gap allowed between the uniform and the pruned model


@dataclass
class LotteryConfig:
    rewind_epoch: int = 0  # reset kept weights to the unpruned model's weights at this epoch (0: its init)


@dataclass
class StrategyConfig:
    name: str = MISSING
    finetune: FinetuneConfig = field(default_factory=FinetuneConfig)
    scratch_b: ScratchBConfig = field(default_factory=ScratchBConfig)
    uniform: UniformConfig = field(default_factory=UniformConfig)
    lottery: LotteryConfig = field(default_factory=LotteryConfig)


@dataclass
class MeasureConfig:
    latency_batch: int = 1  # images per timed forward
    latency_repeats: int = 20  # timed forwards; the median is reported


@dataclass
class TrainConfig:
    """How stages train (prunebench.train.step), not what: only ``precision`` changes results,
    so only a non-default precision enters the cache keys."""
    precision: str = "fp32"  # fp32 | bf16: autocast of forward and loss
    channels_last: bool = False  # NHWC memory order for model and inputs
    compile: str = "off"  # off | on: torch.compile the whole step (+ one CUDA graph on CUDA)
    backend: str = "inductor"  # torch.compile backend (aot_eager: traced, no code generation)
    cuda_graph: bool = True  # with compile=on on CUDA: capture the whole step once, replay it
    parallel_stages: int = 1  # retraining stages of one run trained at once (threads, a CUDA stream each)
    batch_seeds: bool = False  # with seeds=[...]: the unpruned models of all seeds train as one batched model


@dataclass
class Config:
    model: ModelConfig = MISSING
    dataset: DatasetConfig = MISSING
    method: MethodConfig = MISSING
    schedule: ScheduleConfig = MISSING
    strategy: StrategyConfig = MISSING
    # lottery runs for weight-level methods only
    strategies: List[str] = field(default_factory=lambda: ["finetune", "scratch_e", "scratch_b", "uniform", "lottery"])
    seed: int = 0
    seeds: Optional[List[int]] = None  # several seeds in one process (one set of rows each); None: `seed`
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    cache_dir: str = "outputs/stages"  # stage folders, shared by every run and sweep
    retry_failed: bool = False  # rerun stages that diverged before
    progress: bool = True
    dry_run: bool = False  # print each stage's model, epochs and cache state; train nothing
    measure: MeasureConfig = field(default_factory=MeasureConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    paper: Dict[str, Any] = field(default_factory=dict)  # the paper's figures, printed beside ours


METHOD_SCHEMAS = {
    "slimming": SlimmingConfig, "l1_norm": L1NormConfig, "random": RandomConfig, "sss": SSSConfig,
    "thinet": ThiNetConfig, "channel_pruning": ChannelPruningConfig, "apoz": APoZConfig,
    "autopruner": AutoPrunerConfig, "taylor": TaylorConfig, "fpgm": FPGMConfig, "sfp": SFPConfig,
    "magnitude": MagnitudeConfig, "snip": SNIPConfig,
}


def register_configs() -> None:
    cs = ConfigStore.instance()
    cs.store(name="config_schema", node=Config)
    # kept out of the option groups, so `method=...` lists only real choices;
    # each YAML option starts with `defaults: [/schema/<group>/<name>@_here_]`
    cs.store(group="schema/model", name="model", node=ModelConfig)
    cs.store(group="schema/dataset", name="dataset", node=DatasetConfig)
    cs.store(group="schema/schedule", name="schedule", node=ScheduleConfig)
    cs.store(group="schema/strategy", name="strategy", node=StrategyConfig)
    for name, schema in METHOD_SCHEMAS.items():
        cs.store(group="schema/method", name=name, node=schema)

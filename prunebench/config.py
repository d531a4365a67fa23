"""Configuration schemas: every YAML file in ``conf/`` is checked against these
dataclasses, so a misspelt key or a wrong type is an error, not a silent default."""
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, OmegaConf

# The YAML files: the top-level conf/ of the source tree (and of editable installs), shipped
# inside the wheel as prunebench/conf (setup.py copies it at build time).
PACKAGED_CONF = Path(__file__).resolve().parent / "conf"
CONF_DIR = PACKAGED_CONF if PACKAGED_CONF.is_dir() else Path(__file__).resolve().parent.parent / "conf"


@dataclass
class ModelConfig:
    name: str = MISSING  # vgg19, resnet56: the registry name, also the table label
    arch: str = MISSING  # vgg | resnet | preresnet | densenet | imagenet_vgg | imagenet_resnet | torchvision | cifar_modern
    depth: int = MISSING
    width: float = 1.0  # multiplier on the paper's channel widths
    # the options below have defaults that keep today's models; each arch takes only some (models.ARCHS)
    bn_init: float = 1.0  # initial BatchNorm2d scale (gamma); network slimming's models use 0.5
    classifier: str = "linear"  # vgg: linear (one layer) | li (Li et al.: Linear 512, BN1d, ReLU, Linear)
    # resnet: subsample_pad (every other pixel) | avgpool_pad (2x2 average) | avgpool_pad_detached (Li et al.'s code:
    # 2x2 average, no gradient through it)
    shortcut: str = "subsample_pad"
    block: str = "basic"  # preresnet, densenet: basic | bottleneck
    growth: int = 12  # densenet: channels each layer adds
    compression: float = 1.0  # densenet: fraction of channels a transition keeps (BC: 0.5)


@dataclass
class ImageNetModelConfig(ModelConfig):
    """torchvision's VGG and ResNet for ImageNet (arch imagenet_vgg | imagenet_resnet)."""
    pretrained: bool = False  # unpruned model = torchvision's ImageNet weights (the unpruned stage trains 0 epochs)
    batch_norm: bool = True  # VGG: BatchNorm after each convolution (torchvision's vgg*_bn)
    # VGG: fc (4096-4096-classes) | fc_bn (the same, BatchNorm1d after each hidden layer, no dropout: network
    # slimming's VGG-11, its hidden units prunable) | gap (global average pool + one linear layer)
    head: str = "fc"
    pruned_head: Optional[str] = None  # VGG: null (the pruned model keeps the head) | gap (ThiNet's VGG-GAP/Tiny:
    # the pruned architecture's head is global average pooling + one linear layer, without the last max-pool)


@dataclass
class TorchvisionModelConfig(ModelConfig):
    """Any torchvision classification model (arch torchvision), pruned through torch-pruning's graph."""
    name: str = "torchvision"  # set to torchvision's model name (torchvision.models.list_models()), also the table label
    arch: str = "torchvision"
    depth: int = 0  # unused
    pretrained: bool = False  # unpruned model = torchvision's default ImageNet weights


@dataclass
class CifarModernModelConfig(ModelConfig):
    """ResNet-18/50 and MobileNetV2 for CIFAR-size images (arch cifar_modern), pruned through torch-pruning's graph."""
    arch: str = "cifar_modern"
    net: str = MISSING  # resnet18 | resnet50 | mobilenet_v2
    depth: int = 0  # unused: the net names it


@dataclass
class DatasetConfig:
    name: str = MISSING  # cifar10 | cifar100 | digits | synthetic
    root: str = "data"  # folder holding cifar-10-batches-py / cifar-100-python
    download: bool = True  # try torchvision's download when the files are absent
    pad: int = 4  # random-crop padding, pixels
    flip: bool = True  # random horizontal flip


@dataclass
class SyntheticDatasetConfig(DatasetConfig):
    train_size: int = 256  # images
    test_size: int = 128
    image_size: int = 16  # pixels a side
    num_classes: int = 10


@dataclass
class ImageFolderDatasetConfig(DatasetConfig):
    """ImageNet-style trees: <root>/<train_dir>/<class>/*, <root>/<val_dir>/<class>/* (dataset=imagenet|imagefolder)."""
    root: str = "data/imagenet"  # holds train/ and val/
    download: bool = False  # never: ImageNet needs a manual download
    train_dir: str = "train"
    val_dir: str = "val"
    image_size: int = 224  # pixels: the training crop and the test centre crop
    resize_size: int = 0  # pixels: test images' shorter side before the centre crop; 0 = image_size x 256/224
    min_scale: float = 0.08  # RandomResizedCrop's smallest area fraction
    workers: int = 8  # DataLoader worker processes decoding images (no effect on results)
    num_classes: int = 0  # 0: count the class folders of train_dir


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
    nesterov: bool = False  # Nesterov momentum (soft filter pruning's recipe uses it)
    warmup_epochs: int = 0  # the first epochs train at lr x warmup_factor (soft filter pruning's recipe: 1)
    warmup_factor: float = 0.1
    # the modern recipe (schedule=modern; docs/modern-cnns.md): at these defaults a schedule trains as before
    warmup: str = "constant"  # constant: warmup_epochs at lr x warmup_factor | linear: per step from that to lr
    lr_schedule: str = "step"  # step: lr x gamma at each milestone | cosine: per-step cosine decay to 0 after warm-up
    optimizer: str = "sgd"  # sgd (momentum, nesterov above) | adamw (decoupled weight_decay; momentum unused)
    label_smoothing: float = 0.0  # of the cross-entropy's targets
    augment: str = "none"  # none | trivialaugment | randaugment: after crop and flip, on the device
    randaugment_ops: int = 2  # randaugment: operations an image
    randaugment_magnitude: int = 9  # randaugment: magnitude bin, of 0..30
    mixup_alpha: float = 0.0  # Beta(alpha, alpha) of mixup's weight; 0: off (with cutmix on: one of the two a batch)
    cutmix_alpha: float = 0.0  # Beta(alpha, alpha) of cutmix's kept area; 0: off
    ema_decay: float = 0.0  # moving average of the weights, updated every ema_steps steps; 0: off (the stage's model
    ema_steps: int = 32  # is the average)
    steps_per_epoch: Optional[int] = None  # cap on steps an epoch (smoke tests); None = whole set
    eval_every: int = 1  # test top-1 every this many epochs (and after the last); 0: after the last only
    eval_batch_size: int = 1000


@dataclass
class MethodConfig:
    name: str = MISSING
    pruning_ratio: float = 0.5  # fraction of prunable channels (weight-level: weights) removed
    # global: one threshold over all layers | layer: the ratio in every layer
    # threshold: remove what scores <= `threshold` (automatic methods: SSS, AutoPruner)
    selection: str = "layer"
    # global selection of N units: exact removes int(N p) (ties: the earlier first) | inclusive takes the score
    # at position int(N p) of the ascending order as the threshold and removes every unit at or below it,
    # int(N p) + 1 without ties (Liu et al.'s slimming and weight-level code; method=slimming and magnitude)
    global_threshold: str = "exact"
    threshold: float = 0.0
    layer_ratios: Dict[str, float] = field(default_factory=dict)  # per-layer ratio overrides (layer selection)
    skip: List[str] = field(default_factory=list)  # layers never pruned
    min_channels: int = 4  # a layer never keeps fewer channels than this
    round_to: int = 1  # round kept widths up to a multiple of this (8 suits tensor cores)
    iterations: int = 1  # prune in this many steps, fine-tuning iteration_epochs between them
    iteration_epochs: int = 0  # epochs of fine-tuning (strategy.finetune.lr) between iterations
    # between iterations: finetune (iteration_epochs at strategy.finetune.lr) | rewind (weight-level: the kept
    # weights back to the unpruned model's init, strategy.lottery.rewind_epoch, trained with the schedule)
    iteration_training: str = "finetune"
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
class SSSSigmoidConfig(SSSConfig):
    alpha_start: float = 1.0  # gate sigmoid(alpha * s) steepness, raised linearly over the sparse stage
    alpha_stop: float = 100.0


@dataclass
class SSSSensitivityConfig(SSSConfig):
    num_images: int = 1000  # training images the sensitivities are averaged over
    batch_size: int = 250  # images per mini-batch: each batch's |dL/dlambda x lambda| is one sample


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
class DCPConfig(StatisticsConfig):
    num_stages: int = 3  # additional (auxiliary) losses; the authors' CIFAR config: 3
    discrimination_weight: float = 1.0  # lambda on the auxiliary cross-entropy in channel selection
    reconstruction_weight: float = 1.0  # weight of the consumer-output MSE in channel selection
    positions_per_image: int = 10  # sampled output positions per image for the least-squares refit
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
    # groups: the prunable channel groups (ResNet: each block's first conv), removed at the end (the former rule)
    # all: every convolution, zeroed before the first epoch too, kept as filter masks (method=sfp's YAML)
    scope: str = "groups"


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
class ScratchEConfig:
    """A recipe of Scratch-E's own where the authors trained it apart from the unpruned model (SSS on ImageNet)."""
    epochs: Optional[int] = None  # None: the schedule's (the unpruned model's)
    milestones: Optional[List[float]] = None  # fractions of these epochs where lr *= gamma; None: the schedule's


@dataclass
class ScratchBConfig:
    max_factor: Optional[float] = None  # cap epochs at max_factor x E (paper: 2); None = the formula alone
    # FLOPs of a weight-level pruned model: nonzero (masked weights excluded) | dense (all weights: the unpruned
    # architecture's FLOPs, so E epochs, as the authors' weight-level cifar_B.py:184-186 computes them)
    flops: str = "nonzero"
    base_epochs: Optional[int] = None  # E of the formula; None: the schedule's. Set: lr milestones at the schedule's x r
    rounding: str = "ceil"  # of E x F_full / F_pruned: ceil | floor (int(), as the authors' scripts)
    # Scratch-B's own epochs and milestones where the authors give them (SSS on ImageNet); the uniform and guided
    # baselines keep the formula and the schedule's milestones
    epochs: Optional[int] = None  # None: the formula
    milestones: Optional[List[float]] = None  # fractions of Scratch-B's epochs; None: the schedule's


@dataclass
class UniformConfig:
    match: str = "flops"  # flops | params: what the uniform model matches of the pruned one
    tolerance: float = 0.01  # relative gap allowed between the uniform and the pruned model


@dataclass
class LotteryConfig:
    rewind_epoch: int = 0  # reset kept weights to the unpruned model's weights at this epoch (0: its init)
    structured: bool = False  # true: a lottery row for structured methods too (the pruned architecture cut from it)


@dataclass
class GuidedConfig:
    source: Optional[str] = None  # run or sweep folder whose pruned models guide; None: this run's


@dataclass
class StrategyConfig:
    name: str = MISSING
    finetune: FinetuneConfig = field(default_factory=FinetuneConfig)
    scratch_e: ScratchEConfig = field(default_factory=ScratchEConfig)
    scratch_b: ScratchBConfig = field(default_factory=ScratchBConfig)
    uniform: UniformConfig = field(default_factory=UniformConfig)
    lottery: LotteryConfig = field(default_factory=LotteryConfig)
    guided: GuidedConfig = field(default_factory=GuidedConfig)


@dataclass
class LoggerConfig:
    name: str = "none"  # none | tensorboard | wandb
    project: str = "prunebench"  # W&B project
    mode: str = "offline"  # W&B mode: offline (no network needed) | online | disabled


@dataclass
class MeasureConfig:
    latency_batch: int = 1  # images per timed forward
    latency_repeats: int = 20  # timed blocks of ~20 ms each; the median per forward is reported
    saturating_batch: int = 0  # > 0: latency at this batch too (latency_sat_ms): a batch that fills the device
    onnx: bool = False  # also the model exported to ONNX, run by ONNX Runtime on the CPU (onnx_ms; pip install onnxruntime)


@dataclass
class DistributedConfig:
    """Only read under ``torchrun --nproc_per_node=N`` (prunebench.distributed)."""
    sync_bn: bool = False  # true: BatchNorm statistics over the global batch (else over each rank's shard)
    backend: str = "auto"  # auto (nccl on CUDA, gloo on the CPU) | nccl | gloo


@dataclass
class TrainConfig:
    """How stages train (prunebench.train.step), not what: only ``precision`` changes results,
    so only a non-default precision enters the cache keys."""
    precision: str = "fp32"  # fp32 | bf16: autocast of forward and loss
    channels_last: bool = False  # NHWC memory order for model and inputs
    compile: str = "off"  # off | on: torch.compile the whole step (+ one CUDA graph on CUDA) | graph: one CUDA graph
    # of the eager step, no compilation (eager off CUDA)
    backend: str = "inductor"  # torch.compile backend (aot_eager: traced, no code generation)
    cuda_graph: bool = True  # with compile=on on CUDA: capture the whole step once, replay it (false: compiled only)
    max_concurrent: Optional[int] = None  # trainings in flight at once (null: every one that is ready; 1: in turn)
    checkpoint_every: float = 60.0  # seconds of training between checkpoints (0: every epoch); the last is always saved


@dataclass
class Config:
    model: ModelConfig = MISSING
    dataset: DatasetConfig = MISSING
    method: MethodConfig = MISSING
    schedule: ScheduleConfig = MISSING
    strategy: StrategyConfig = MISSING
    logger: LoggerConfig = field(default_factory=LoggerConfig)
    # lottery runs for weight-level methods (structured ones with strategy.lottery.structured); guided on request
    strategies: List[str] = field(default_factory=lambda: ["finetune", "scratch_e", "scratch_b", "uniform", "lottery"])
    prune_only: bool = False  # stop after pruning, no strategy retrains (the source runs of guided transfer)
    seed: int = 0
    seeds: Optional[List[int]] = None  # several seeds in one process (one set of rows each); None: `seed`
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    cache_dir: str = "outputs/stages"  # stage folders, shared by every run and sweep
    retry_failed: bool = False  # rerun stages that diverged before, and retrain unreadable finished ones
    lock_timeout: float = 21600.0  # seconds to wait for a stage another job is writing (0: fail at once)
    strict: bool = False  # exit non-zero when any row of the table failed
    progress: bool = True
    dry_run: bool = False  # print each stage's model, epochs and cache state; train nothing
    measure: MeasureConfig = field(default_factory=MeasureConfig)
    distributed: DistributedConfig = field(default_factory=DistributedConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    paper: Dict[str, Any] = field(default_factory=dict)  # the paper's figures, printed beside ours
    notes: Dict[str, str] = field(default_factory=dict)  # a preset's word on a row, added to the row's note


METHOD_SCHEMAS = {
    "slimming": SlimmingConfig, "l1_norm": L1NormConfig, "random": RandomConfig, "sss": SSSConfig,
    "thinet": ThiNetConfig, "channel_pruning": ChannelPruningConfig, "apoz": APoZConfig,
    "autopruner": AutoPrunerConfig, "taylor": TaylorConfig, "fpgm": FPGMConfig, "sfp": SFPConfig,
    "magnitude": MagnitudeConfig, "snip": SNIPConfig, "sss_sigmoid": SSSSigmoidConfig,
    "sss_sensitivity": SSSSensitivityConfig, "dcp": DCPConfig,
}


DATASET_SCHEMAS = {"dataset": DatasetConfig, "synthetic": SyntheticDatasetConfig,
                   "imagefolder": ImageFolderDatasetConfig}


def open_dicts(schema, keys=("layer_ratios",)):
    """``schema`` as a config node whose free-form dicts accept new keys, so that
    ``method.layer_ratios={conv1:0.5}`` works on the command line without a ``+``."""
    node = OmegaConf.structured(schema)
    for key in keys:
        if key in node:
            OmegaConf.set_struct(node[key], False)
    return node


def group_options(conf_dir: Path = CONF_DIR) -> Dict[str, List[str]]:
    """Each config group a user chooses from (``conf/<group>/``) -> its options, nested ones as
    ``rethinking/slimming_vgg19_cifar10``."""
    return {d.name: sorted(str(p.relative_to(d).with_suffix("")) for p in d.rglob("*.yaml"))
            for d in sorted(conf_dir.iterdir()) if d.is_dir()}


HELP = """prunebench: the comparison of "Rethinking the Value of Network Pruning" (Liu et al., ICLR 2019)
for any model, data set and pruning method.

Usage: prunebench [GROUP=OPTION ...] [KEY=VALUE ...]
  prunebench experiment=quickstart                   a few minutes on a CPU, offline
  prunebench method=l1_norm model=resnet56 method.pruning_ratio=0.5
  prunebench -m method=l1_norm,slimming seed=0,1     a sweep; stages are shared through the cache
  prunebench experiment=smoke dry_run=true           what would train, and what is cached

== Configuration groups (GROUP=OPTION) ==
GROUPS
== Config (any KEY=VALUE overrides it) ==
$CONFIG
Hydra's own options: prunebench --hydra-help
Tab completion (bash): eval "$$(prunebench -sc install=bash)"
"""


def help_template(conf_dir: Path = CONF_DIR) -> str:
    groups = "".join(f"{g}: {', '.join(opts)}\n" for g, opts in group_options(conf_dir).items())
    return HELP.replace("GROUPS", groups)


def register_configs() -> None:
    cs = ConfigStore.instance()
    cs.store(group="hydra/help", name="prunebench", node={"app_name": "prunebench", "header": "", "footer": "",
                                                          "template": help_template()})
    cs.store(name="config_schema", node=Config)
    # kept out of the option groups, so `method=...` lists only real choices;
    # each YAML option starts with `defaults: [/schema/<group>/<name>@_here_]`
    cs.store(group="schema/model", name="model", node=ModelConfig)
    cs.store(group="schema/model", name="imagenet", node=ImageNetModelConfig)
    cs.store(group="schema/model", name="torchvision", node=TorchvisionModelConfig)
    cs.store(group="schema/model", name="cifar_modern", node=CifarModernModelConfig)
    for name, schema in DATASET_SCHEMAS.items():
        cs.store(group="schema/dataset", name=name, node=schema)
    cs.store(group="schema/schedule", name="schedule", node=ScheduleConfig)
    cs.store(group="schema/strategy", name="strategy", node=StrategyConfig)
    cs.store(group="schema/logger", name="logger", node=LoggerConfig)
    for name, schema in METHOD_SCHEMAS.items():
        cs.store(group="schema/method", name=name, node=open_dicts(schema))

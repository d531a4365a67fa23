"""Configuration schemas: every YAML file in ``conf/`` is checked against dataclasses, so a
misspelt key, a wrong type or a value outside an enumeration is an error, not a silent default;
the dataclasses are the one source of every default (a YAML file lists only what differs).

Here: the top-level :class:`Config`, the schedule, strategies, logger and run settings, the base
schemas of the parts a user may bring a class of their own for (:class:`MethodConfig`,
:class:`ModelConfig` and each model family's, :class:`DatasetConfig`, :class:`OwnStrategyConfig`)
and the enumerations. Each method declares its own schema beside its class (``Method.Config``);
:func:`prunebench.parts.typed` types the composed config's parts by them."""
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any, Dict, List, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, OmegaConf

# The YAML files: the top-level conf/ of the source tree (and of editable installs), shipped
# inside the wheel as prunebench/conf (setup.py copies it at build time).
PACKAGED_CONF = Path(__file__).resolve().parent / "conf"
CONF_DIR = PACKAGED_CONF if PACKAGED_CONF.is_dir() else Path(__file__).resolve().parent.parent / "conf"


# Enumerations: a value outside them is refused by OmegaConf when the config is composed. Each member's
# name is its value, so the composed config (and every stage key) holds the same plain strings.
Selection = StrEnum("Selection", ["global", "layer", "threshold"])
GlobalThreshold = StrEnum("GlobalThreshold", ["exact", "inclusive"])
SparseInit = StrEnum("SparseInit", ["scratch", "unpruned"])
IterationTraining = StrEnum("IterationTraining", ["finetune", "rewind"])
Classifier = StrEnum("Classifier", ["linear", "li"])
Shortcut = StrEnum("Shortcut", ["subsample_pad", "avgpool_pad", "avgpool_pad_detached"])
Block = StrEnum("Block", ["basic", "bottleneck"])
Head = StrEnum("Head", ["fc", "fc_bn", "gap"])
PrunedHead = StrEnum("PrunedHead", ["gap"])
ScratchBFlops = StrEnum("ScratchBFlops", ["nonzero", "dense"])
Rounding = StrEnum("Rounding", ["ceil", "floor"])
UniformMatch = StrEnum("UniformMatch", ["flops", "params"])
LoggerName = StrEnum("LoggerName", ["none", "tensorboard", "wandb"])
WandbMode = StrEnum("WandbMode", ["offline", "online", "disabled"])
Backend = StrEnum("Backend", ["auto", "nccl", "gloo"])
Precision = StrEnum("Precision", ["fp32", "bf16"])
Compile = StrEnum("Compile", ["off", "on", "graph"])
ShuffledBudget = StrEnum("ShuffledBudget", ["scratch_e", "scratch_b"])
Warmup = StrEnum("Warmup", ["constant", "linear"])
LRSchedule = StrEnum("LRSchedule", ["step", "cosine"])
Optimizer = StrEnum("Optimizer", ["sgd", "adamw"])
Augment = StrEnum("Augment", ["none", "trivialaugment", "randaugment"])


@dataclass
class ModelConfig:
    """What every model has; each family's schema below adds its own options (``models.ARCHS``)."""
    name: str = MISSING  # vgg19, resnet56: the registry name, also the table label
    arch: str = MISSING  # vgg | resnet | preresnet | densenet | imagenet_vgg | imagenet_resnet | torchvision | cifar_modern | factory
    depth: int = MISSING
    width: float = 1.0  # multiplier on the paper's channel widths
    _target_: Optional[str] = None  # your own model: the import path of an nn.Module factory (arch factory)


@dataclass
class VGGConfig(ModelConfig):
    bn_init: float = 1.0  # initial BatchNorm2d scale (gamma); network slimming's models use 0.5
    classifier: Classifier = Classifier.linear  # linear (one layer) | li (Li et al.: Linear 512, BN1d, ReLU, Linear)


@dataclass
class ResNetConfig(ModelConfig):
    bn_init: float = 1.0
    # subsample_pad (every other pixel) | avgpool_pad (2x2 average) | avgpool_pad_detached (Li et al.'s code:
    # 2x2 average, no gradient through it)
    shortcut: Shortcut = Shortcut.subsample_pad


@dataclass
class PreResNetConfig(ModelConfig):
    bn_init: float = 1.0
    block: Block = Block.basic


@dataclass
class DenseNetConfig(ModelConfig):
    bn_init: float = 1.0
    block: Block = Block.basic
    growth: int = 12  # channels each layer adds
    compression: float = 1.0  # fraction of channels a transition keeps (BC: 0.5)


@dataclass
class ImageNetResNetConfig(ModelConfig):
    """torchvision's ResNet for ImageNet (arch imagenet_resnet)."""
    pretrained: bool = False  # unpruned model = torchvision's ImageNet weights (the unpruned stage trains 0 epochs)


@dataclass
class ImageNetVGGConfig(ImageNetResNetConfig):
    """torchvision's VGG for ImageNet (arch imagenet_vgg)."""
    bn_init: float = 1.0  # initial BatchNorm scale; network slimming's VGG-11: 0.5
    batch_norm: bool = True  # BatchNorm after each convolution (torchvision's vgg*_bn)
    # fc (4096-4096-classes) | fc_bn (the same, BatchNorm1d after each hidden layer, no dropout: network
    # slimming's VGG-11, its hidden units prunable) | gap (global average pool + one linear layer)
    head: Head = Head.fc
    pruned_head: Optional[PrunedHead] = None  # null (the pruned model keeps the head) | gap (ThiNet's VGG-GAP/Tiny:
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
class FactoryModelConfig(ModelConfig):
    """Your own model (arch factory): ``_target_`` names a function returning an ``nn.Module``, called with
    ``in_channels``, ``num_classes`` and the keys its own schema (a subclass of this one) adds."""
    arch: str = "factory"
    depth: int = 0  # unused


@dataclass
class ViTModelConfig(ModelConfig):
    """A ViT for small images (arch vit, prunebench.models.vit); ``width`` scales ``dim`` and the MLP."""
    name: str = "vit_cifar"
    arch: str = "vit"
    depth: int = 12  # blocks
    patch: int = 4  # pixels a side of each patch (CIFAR 32x32: 64 patches)
    dim: int = 192  # embedding width (ViT-Tiny / DeiT-Ti: 192, ViT-Small: 384)
    heads: int = 3  # attention heads per block (Tiny: 3, Small: 6); head width dim / heads
    mlp_ratio: float = 4.0  # MLP hidden units per embedding channel


@dataclass
class TimmModelConfig(ModelConfig):
    """Any timm model (arch timm, prunebench.models.timm_models), random-initialised."""
    name: str = "timm"  # set to timm's model name (timm.list_models()), also the table label
    arch: str = "timm"
    depth: int = 0  # unused: give timm's own settings in options
    options: Dict[str, Any] = field(default_factory=dict)  # keyword arguments of timm.create_model


@dataclass
class DatasetConfig:
    name: str = MISSING  # cifar10 | cifar100 | digits | synthetic | imagenet | imagefolder | a name of your own
    _target_: Optional[str] = None  # your own data set: the import path of a function cfg -> prunebench.data.Data
    root: str = "data"  # folder holding cifar-10-batches-py / cifar-100-python
    download: bool = True  # try torchvision's download when the files are absent
    pad: int = 4  # random-crop padding, pixels
    flip: bool = True  # random horizontal flip
    # training images held out (seeded, the same for every row and seed) to select each stage's epoch on them:
    # acc1_val_selected (0: none, the paper's protocol); in-memory data sets (cifar, digits, synthetic)
    val_split: int = 0


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
    warmup: Warmup = Warmup.constant  # constant: warmup_epochs at lr x warmup_factor | linear: per step from that to lr
    # step: lr x gamma at each milestone | cosine: per-step cosine decay to 0 after warm-up
    lr_schedule: LRSchedule = LRSchedule.step
    optimizer: Optimizer = Optimizer.sgd  # sgd (momentum, nesterov above) | adamw (decoupled weight_decay)
    label_smoothing: float = 0.0  # of the cross-entropy's targets
    augment: Augment = Augment.none  # none | trivialaugment | randaugment: after crop and flip, on the device
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
    """What every method has; each method declares its own subclass next to its class (``Method.Config``)."""
    name: str = MISSING  # the method's name, also the table label
    _target_: Optional[str] = None  # your own method: the import path of its Method subclass
    pruning_ratio: float = 0.5  # fraction of prunable channels (weight-level: weights) removed
    # global: one threshold over all layers | layer: the ratio in every layer
    # threshold: remove what scores <= `threshold` (automatic methods: SSS, AutoPruner)
    selection: Selection = Selection.layer
    # global selection of N units: exact removes int(N p) (ties: the earlier first) | inclusive takes the score
    # at position int(N p) of the ascending order as the threshold and removes every unit at or below it,
    # int(N p) + 1 without ties (Liu et al.'s slimming and weight-level code; method=slimming and magnitude)
    global_threshold: GlobalThreshold = GlobalThreshold.exact
    threshold: float = 0.0
    layer_ratios: Dict[str, float] = field(default_factory=dict)  # per-layer ratio overrides (layer selection)
    skip: List[str] = field(default_factory=list)  # layers never pruned
    min_channels: int = 4  # a layer never keeps fewer channels than this
    round_to: int = 1  # round kept widths up to a multiple of this (8 suits tensor cores)
    iterations: int = 1  # prune in this many steps, fine-tuning iteration_epochs between them
    iteration_epochs: int = 0  # epochs of fine-tuning (strategy.finetune.lr) between iterations
    # between iterations: finetune (iteration_epochs at strategy.finetune.lr) | rewind (weight-level: the kept
    # weights back to the unpruned model's init, strategy.lottery.rewind_epoch, trained with the schedule)
    iteration_training: IterationTraining = IterationTraining.finetune
    # the sparse stage of methods that train before pruning (slimming, sss, autopruner, sfp)
    sparse_init: SparseInit = SparseInit.scratch  # scratch: from a fresh init | unpruned: from the trained unpruned model
    sparse_epochs: Optional[int] = None  # None: the schedule's epochs
    sparse_lr: Optional[float] = None  # None: the schedule's lr (and its milestones)


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
    flops: ScratchBFlops = ScratchBFlops.nonzero
    base_epochs: Optional[int] = None  # E of the formula; None: the schedule's. Set: lr milestones at the schedule's x r
    rounding: Rounding = Rounding.ceil  # of E x F_full / F_pruned: ceil | floor (int(), as the authors' scripts)
    # Scratch-B's own epochs and milestones where the authors give them (SSS on ImageNet); the uniform and guided
    # baselines keep the formula and the schedule's milestones
    epochs: Optional[int] = None  # None: the formula
    milestones: Optional[List[float]] = None  # fractions of Scratch-B's epochs; None: the schedule's


@dataclass
class UniformConfig:
    match: UniformMatch = UniformMatch.flops  # flops | params: what the uniform model matches of the pruned one
    tolerance: float = 0.01  # relative gap allowed between the uniform and the pruned model


@dataclass
class LotteryConfig:
    rewind_epoch: int = 0  # reset kept weights to the unpruned model's weights at this epoch (0: its init)
    structured: bool = False  # true: a lottery row for structured methods too (the pruned architecture cut from it)


@dataclass
class GuidedConfig:
    source: Optional[str] = None  # run or sweep folder whose pruned models guide; None: this run's


# -- the revisited strategies and controls (docs/revisited.md) --------------------------------


@dataclass
class FinetuneLargeConfig:
    """Fine-tuning at a large lr with a step schedule (Wang et al., arXiv 2301.05219; Renda et al., ICLR 2020)."""
    epochs: Optional[int] = None  # None: strategy.finetune.epochs
    lr: float = 0.01
    milestones: List[float] = field(default_factory=lambda: [0.5, 0.75])  # fractions of its epochs; lr *= gamma


@dataclass
class LrRewindConfig:
    """Learning-rate rewinding (Renda, Frankle & Carbin, ICLR 2020): the unpruned schedule's last E' epochs."""
    epochs: Optional[int] = None  # E'; None: strategy.finetune.epochs


@dataclass
class OneCycleConfig:
    """A 1-cycle schedule from a large lr (Le & Hua, ICLR 2021; Smith's 1-cycle): up, then linear decay."""
    epochs: Optional[int] = None  # None: strategy.finetune.epochs
    lr: Optional[float] = None  # the peak; None: the schedule's lr
    # fraction of the epochs spent rising from lr / div_factor to lr (0: a linear decay from lr alone);
    # 0.3 and 25 are torch.optim.lr_scheduler.OneCycleLR's defaults (pct_start, div_factor)
    warmup: float = 0.3
    div_factor: float = 25.0
    final_factor: float = 1e-4  # the last epoch's lr, as a fraction of lr / div_factor (OneCycleLR: 1 / 1e4)


@dataclass
class DistillConfig:
    """Fine-tuning with knowledge distillation from the trained unpruned model (Hinton et al. 2015's loss; Minitron,
    arXiv 2407.14679, recovers pruned models so)."""
    epochs: Optional[int] = None  # None: strategy.finetune.epochs
    lr: Optional[float] = None  # None: strategy.finetune.lr (constant)
    temperature: float = 4.0  # T of the softened logits
    weight: float = 0.5  # alpha: loss = (1 - alpha) CE + alpha T^2 KL(teacher_T || student_T)


@dataclass
class RandomArchConfig:
    """Random width configurations at the pruned model's cost (Li et al., "Revisiting Random Channel Pruning",
    CVPR 2022), each trained with Scratch-B's budget."""
    members: int = 3  # N architectures
    low: float = 0.1  # each group's relative width drawn uniformly in [low, 1] before the common scaling
    match: UniformMatch = UniformMatch.flops  # flops | params: what each matches of the pruned model (the uniform search)
    tolerance: float = 0.01


@dataclass
class ShuffledConfig:
    """The pruned mask shuffled within each layer (Frankle et al., ICLR 2021), trained as a scratch row."""
    budget: ShuffledBudget = ShuffledBudget.scratch_e  # scratch_e: the unpruned model's epochs | scratch_b: Scratch-B's


@dataclass
class SmallModelConfig:
    """The smaller model of the family one would pick anyway, trained from scratch with Scratch-B's budget."""
    model: Optional[str] = None  # a conf/model option (resnet56, vgg16, torchvision); required when the row runs
    name: Optional[str] = None  # overrides model.name (a torchvision model: resnet18, mobilenet_v2)
    width: Optional[float] = None  # overrides model.width (mobilenet_v2 width 0.75)
    depth: Optional[int] = None  # overrides model.depth


@dataclass
class OwnStrategyConfig:
    """The node ``strategy.<name>`` of a strategy of your own: subclass it with the strategy's settings."""
    _target_: Optional[str] = None  # the import path of its Strategy subclass


@dataclass
class StrategyConfig:
    name: str = MISSING
    finetune: FinetuneConfig = field(default_factory=FinetuneConfig)
    scratch_e: ScratchEConfig = field(default_factory=ScratchEConfig)
    scratch_b: ScratchBConfig = field(default_factory=ScratchBConfig)
    uniform: UniformConfig = field(default_factory=UniformConfig)
    lottery: LotteryConfig = field(default_factory=LotteryConfig)
    guided: GuidedConfig = field(default_factory=GuidedConfig)
    finetune_large: FinetuneLargeConfig = field(default_factory=FinetuneLargeConfig)
    lr_rewind: LrRewindConfig = field(default_factory=LrRewindConfig)
    one_cycle: OneCycleConfig = field(default_factory=OneCycleConfig)
    distill: DistillConfig = field(default_factory=DistillConfig)
    random_arch: RandomArchConfig = field(default_factory=RandomArchConfig)
    shuffled: ShuffledConfig = field(default_factory=ShuffledConfig)
    small_model: SmallModelConfig = field(default_factory=SmallModelConfig)


@dataclass
class LoggerConfig:
    name: LoggerName = LoggerName.none
    project: str = "prunebench"  # W&B project
    mode: WandbMode = WandbMode.offline  # W&B mode: offline (no network needed) | online | disabled


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
    backend: Backend = Backend.auto  # auto (nccl on CUDA, gloo on the CPU) | nccl | gloo


@dataclass
class TrainConfig:
    """How stages train (prunebench.train.step), not what: only ``precision`` changes results,
    so only a non-default precision enters the cache keys."""
    precision: Precision = Precision.fp32  # fp32 | bf16: autocast of forward and loss
    channels_last: bool = False  # NHWC memory order for model and inputs
    compile: Compile = Compile.off  # off | on: torch.compile the whole step (+ one CUDA graph on CUDA) | graph: one CUDA graph
    # of the eager step, no compilation (eager off CUDA)
    backend: str = "inductor"  # torch.compile backend (aot_eager: traced, no code generation)
    cuda_graph: bool = True  # with compile=on on CUDA: capture the whole step once, replay it (false: compiled only)
    max_concurrent: Optional[int] = None  # trainings in flight at once (null: every one that is ready; 1: in turn)
    checkpoint_every: float = 60.0  # seconds of training between checkpoints (0: every epoch); the last is always saved


@dataclass
class Config:
    model: ModelConfig = field(default_factory=ModelConfig)
    dataset: DatasetConfig = field(default_factory=DatasetConfig)
    method: MethodConfig = field(default_factory=MethodConfig)
    schedule: ScheduleConfig = MISSING
    strategy: StrategyConfig = field(default_factory=StrategyConfig)
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


OPEN_NODES = ("model", "dataset", "method", "strategy")


def schema_node():
    """The top-level schema as a config node. The nodes a user may fill with a class of their own
    (``model``, ``dataset``, ``method``, ``strategy``) hold their base schema and take any further key
    while the config is composed; :func:`prunebench.parts.typed` then merges each into its class's own
    schema, which refuses an unknown key or a wrong type. ``method.layer_ratios`` takes new layer names."""
    node = OmegaConf.structured(Config)
    for key in OPEN_NODES:
        OmegaConf.set_struct(node[key], False)
    OmegaConf.set_struct(node.method.layer_ratios, False)
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
    cs.store(name="config_schema", node=schema_node())


def one_line(error: Exception, prefix: str = "") -> str:
    """OmegaConf's (or Hydra's composition) error about a setting as one line: the setting, and
    what it takes. ``prefix`` is the dotted path of the node the error's key lies in."""
    import re

    cause = error
    while cause.__cause__ is not None and not hasattr(cause, "full_key"):
        cause = cause.__cause__
    if not hasattr(cause, "full_key"):
        return " ".join(str(error).split())
    key = f"{prefix}{cause.full_key}" if cause.full_key else prefix.rstrip(".")
    msg = str(getattr(cause, "msg", cause)).strip().splitlines()[0]
    choices = re.match(r"Invalid value '(.*)', expected one of \[(.*)\]", msg)
    if choices:
        return f"{key} must be one of {choices.group(2)}, got {choices.group(1)!r}"
    unknown = re.match(r"Key '(.*)' not in '(.*)'", msg)
    if unknown:
        return f"{key} is not a setting of {unknown.group(2)}; remove it, or fix its spelling"
    return f"{key}: {' '.join(msg.split())}"

"""Made-up models and data shared by several test files."""
from pathlib import Path

import torch
from omegaconf import OmegaConf

from prunebench.config import SyntheticDatasetConfig
from prunebench.data import synthetic
from prunebench.methods import create
from prunebench.methods.activations import sample
from prunebench.models import build, vgg
from prunebench.pruning import prune
from prunebench.pruning.reconstruct import layer_weight

DATA = synthetic.load(OmegaConf.structured(SyntheticDatasetConfig(name="synthetic")))  # 256 training images, 16x16
SAMPLING = {"num_images": 256, "batch_size": 128, "positions_per_image": 16}


def randomized(spec, seed=0):
    torch.manual_seed(seed)
    model = build(spec)
    for m in model.modules():  # non-trivial BN statistics, as after training
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.2, 0.2)
    return model.eval()


def relative_error(a, b):
    return float((a - b).norm() / b.norm())


def check_reconstruction_restores(method, model, pruned, keep):
    """``pruned`` (its consumers perturbed) is far from ``model``; the method's reconstruction
    brings it back to the original function on the training images."""
    x = DATA.normalize(DATA.train_x)
    with torch.no_grad():
        assert relative_error(pruned(x), model(x)) > 0.05
        method.reconstruct(model, pruned, keep, DATA)
        assert relative_error(pruned(x), model(x)) < 1e-4  # float32 through every layer


def planted_model():
    """VGG-11 whose conv2 (the consumer of conv1's 8 channels) reads channels 1, 4, 6;
    the other five reach it with 1% of their weight, though their own filters are the
    largest (a criterion on conv1's weights would keep them)."""
    model = randomized(vgg.spec_for(11, 0.125, 3, 10))
    planted, others = [1, 4, 6], [0, 2, 3, 5, 7]
    with torch.no_grad():
        model.features[0].weight[others] *= 3
        model.features[4].weight[:, others] *= 0.01
    return model, planted


def consumer_error(model, pruned, layer):
    """Relative error of ``layer``'s output in ``pruned`` against the original, on the training images."""
    batch = next(sample(DATA, [layer], pruned, model, **{**SAMPLING, "batch_size": 256},
                        seed=0))[layer]
    got = torch.einsum("nck,ock->no", batch.x, layer_weight(pruned.get_submodule(layer)))
    return relative_error(got, batch.y)


def check_planted_channels_beat_random_ones(cfg):
    """The method picks the planted channels, and its reconstruction beats five random choices."""
    model, planted = planted_model()
    c = cfg
    method = create(c)
    keep = method.select(model, method.scores(model, DATA), c)
    assert keep["conv1"].tolist() == planted
    pruned = prune(model, keep).eval()
    method.reconstruct(model, pruned, keep, DATA)
    error = consumer_error(model, pruned, "features.4")
    g = torch.Generator().manual_seed(0)
    random_errors = []
    while len(random_errors) < 5:
        choice = torch.sort(torch.randperm(8, generator=g)[:3]).values
        if choice.tolist() == planted:
            continue
        other = prune(model, {**keep, "conv1": choice}).eval()
        method.reconstruct(model, other, {**keep, "conv1": choice}, DATA)
        random_errors.append(consumer_error(model, other, "features.4"))
    assert error < 0.1 and error < min(random_errors) / 4, (error, random_errors)


# Every method x model pair of the registries (conf/method, conf/model), as the dry-run and validation
# tests run them: synthetic 32x32 images, narrow models (the torchvision entry needs a model's name).
MODEL_NAMES = sorted(p.stem for p in (Path(__file__).resolve().parent.parent / "conf" / "model").glob("*.yaml"))
MODEL_OPTIONS = {name: ["model.width=0.25"] for name in MODEL_NAMES} | {"torchvision": ["model.name=resnet18",
                                                                                     "model.width=1.0"]}
MODEL_OPTIONS |= {name: ["model.width=0.25", "model.depth=2"] for name in ("vit_cifar", "vit_small_cifar")}
MODEL_OPTIONS["timm"] = ["model.name=vit_tiny_patch16_224", "model.width=1.0",
                         "model.options={depth:2,embed_dim:32,num_heads:2,patch_size:8}"]
TRANSFORMERS = ("vit_cifar", "vit_small_cifar", "timm")
PAIR_OPTIONS = ["dataset=synthetic", "dataset.image_size=32"]
# the pairs that cannot run as configured, refused before anything trains, with what the refusal says
REFUSED = {
    **{("magnitude", m): r"method.skip names unknown layers \['classifier'\]"  # its default skip: CIFAR's classifier
       for m in ("resnet34", "resnet50", "torchvision", "vgg11_bn", "vgg16_bn", "vgg16_imagenet", "mobilenet_v2_cifar",
                 "resnet18_cifar", "resnet50_cifar")},
    **{("dcp", m): "dcp needs a model ending in a linear classifier"  # the auxiliary classifiers copy its classes
       for m in ("vgg11_bn", "vgg16_bn", "vgg16_imagenet")},  # ImageNet VGG's head: convolutions
    ("slimming", "vgg16_imagenet"): "have no BatchNorm",
    **{(m, "vgg16_imagenet"): "reads each channel after its BatchNorm"  # torchvision's VGG-16 without BN
       for m in ("apoz", "autopruner", "sss", "sss_sensitivity", "sss_sigmoid", "taylor")},
    # transformers: methods that read BatchNorm, feature maps or reconstruct convolutions (prunebench.models.vit)
    **{(m, t): f"{m} scores convolution channels.*use one of fpgm, l1_norm, random, taylor" for t in TRANSFORMERS
       for m in ("apoz", "autopruner", "channel_pruning", "dcp", "sfp", "slimming", "sss", "sss_sensitivity",
                 "sss_sigmoid", "thinet")},
    **{("taylor", t): "set method.target=weight" for t in TRANSFORMERS},
    ("magnitude", "timm"): r"method.skip names unknown layers \['classifier'\]",  # timm's is net.head
}

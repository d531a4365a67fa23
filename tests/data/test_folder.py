import pytest
import torch
from omegaconf import OmegaConf

from prunebench import data
from prunebench.config import ImageFolderDatasetConfig
from prunebench.data.base import Data
from prunebench.errors import PrunebenchError
from tests.imagetree import write_tree


def folder_cfg(root, **kw):
    kw = {"image_size": 8, "workers": 0, **kw}
    return OmegaConf.structured(ImageFolderDatasetConfig(name="imagefolder", root=str(root), **kw))


def test_image_tree_streams_the_loop_interface(tmp_path):
    cfg = folder_cfg(write_tree(tmp_path))
    assert data.shape(cfg) == ((3, 8, 8), 4)  # classes counted from the folders, nothing decoded
    d = data.load(cfg)
    assert isinstance(d, Data) and issubclass(data.ImageData, Data)
    assert d.num_classes == 4 and d.input_shape == (3, 8, 8) and d.test_size == 8
    assert d.steps_per_epoch(5) == 4 and d.steps_per_epoch(5, 2) == 2
    batches = list(d.train_batches(5, torch.Generator().manual_seed(1)))
    assert len(batches) == 4 and all(x.shape == (5, 3, 8, 8) and x.dtype == torch.float32 for x, _ in batches)
    assert {int(y) for _, ys in batches for y in ys} <= set(range(4))
    test = list(d.test_batches(3))
    assert [len(y) for _, y in test] == [3, 3, 2]
    assert torch.equal(torch.cat([y for _, y in test]), torch.arange(4).repeat_interleave(2))
    samples = list(d.sample_batches(7, 4, torch.Generator().manual_seed(0)))
    assert [len(y) for _, y in samples] == [4, 3]


def test_a_seed_fixes_order_and_augmentation_whatever_the_workers(tmp_path):
    write_tree(tmp_path)
    one = data.load(folder_cfg(tmp_path))
    two = data.load(folder_cfg(tmp_path, workers=2))
    a = list(one.train_batches(4, torch.Generator().manual_seed(3), steps=2))
    b = list(two.train_batches(4, torch.Generator().manual_seed(3), steps=2))
    c = list(one.train_batches(4, torch.Generator().manual_seed(4), steps=2))
    assert all(torch.equal(x, y) and torch.equal(u, v) for (x, u), (y, v) in zip(a, b))
    assert not all(torch.equal(x, y) for (x, _), (y, _) in zip(a, c))


def test_a_missing_tree_names_the_path_and_the_layout(tmp_path):
    with pytest.raises(PrunebenchError) as e:
        data.shape(folder_cfg(tmp_path / "nowhere"))
    assert str(tmp_path / "nowhere" / "train") in str(e.value) and "<class>" in str(e.value)
    (tmp_path / "train" / "a").mkdir(parents=True)
    with pytest.raises(PrunebenchError, match="val"):
        data.load(folder_cfg(tmp_path))


def test_imagenet_expects_1000_classes(tmp_path):
    write_tree(tmp_path)
    cfg = folder_cfg(tmp_path, num_classes=1000)
    cfg.name = "imagenet"
    assert data.shape(cfg) == ((3, 8, 8), 1000)
    with pytest.raises(PrunebenchError, match="1000 classes"):
        data.load(cfg)

import pickle

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from prunebench import data
from prunebench.config import DatasetConfig, SyntheticDatasetConfig
from prunebench.errors import PrunebenchError


def dataset_cfg(**kw):
    schema = SyntheticDatasetConfig if kw.get("name") == "synthetic" else DatasetConfig
    return OmegaConf.structured(schema(**kw))


def write_fake_cifar10(root, n=20):
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        with open(folder / name, "wb") as f:
            pickle.dump({"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
                         "labels": rng.integers(0, 10, n).tolist()}, f)
    return folder


def test_cifar10_reads_the_standard_python_layout(tmp_path):
    write_fake_cifar10(tmp_path)
    d = data.load(dataset_cfg(name="cifar10", root=str(tmp_path), download=False))
    assert d.train_x.shape == (100, 3, 32, 32) and d.train_x.dtype == torch.uint8
    assert d.test_x.shape == (20, 3, 32, 32) and d.num_classes == 10
    with open(tmp_path / "cifar-10-batches-py" / "data_batch_1", "rb") as f:
        first = pickle.load(f)["data"][0]
    assert torch.equal(d.train_x[0].flatten(), torch.from_numpy(first))  # CHW order, row-major


def test_missing_cifar_names_the_path_and_the_remedy(tmp_path):
    with pytest.raises(PrunebenchError) as e:
        data.load(dataset_cfg(name="cifar10", root=str(tmp_path / "nowhere"), download=False))
    assert str(tmp_path / "nowhere" / "cifar-10-batches-py") in str(e.value)
    assert "dataset.root" in str(e.value)


def test_digits_fixed_split():
    d = data.load(dataset_cfg(name="digits", pad=2, flip=False))
    assert d.train_x.shape == (1437, 1, 16, 16) and d.test_x.shape == (360, 1, 16, 16)
    again = data.load(dataset_cfg(name="digits"))
    assert torch.equal(d.test_y, again.test_y)


def test_augmentation_crops_and_flips_on_the_device():
    d = data.load(dataset_cfg(name="synthetic", pad=4, flip=True, image_size=8))
    x = torch.arange(64, dtype=torch.uint8).view(1, 1, 8, 8).repeat(256, 3, 1, 1)
    out = d.augment(x, torch.Generator().manual_seed(0))
    assert out.shape == x.shape
    assert (out == x).flatten(1).all(1).float().mean() < 0.5  # most images moved
    # every output row of an unflipped crop is a shifted row of the input (or padding)
    flipped_or_shifted = [(out[i] != x[i]).any() for i in range(256)]
    assert any(flipped_or_shifted)
    no_aug = data.load(dataset_cfg(name="synthetic", pad=0, flip=False, image_size=8))
    assert torch.equal(no_aug.augment(x, torch.Generator().manual_seed(0)), x)


def test_train_batches_are_a_permutation_with_fixed_shapes():
    d = data.load(dataset_cfg(name="synthetic", pad=0, flip=False, train_size=100))
    batches = list(d.train_batches(32, torch.Generator().manual_seed(0)))
    assert [len(y) for _, y in batches] == [32, 32, 32]  # last partial batch dropped
    again = list(d.train_batches(32, torch.Generator().manual_seed(0)))
    assert all(torch.equal(a[1], b[1]) for a, b in zip(batches, again))


@pytest.mark.parametrize("batch,steps,chunk", [(16, None, 32), (16, None, 5), (7, 40, 3), (2000, None, 32)])
def test_chunked_augmentation_gives_the_batches_of_a_batch_by_batch_one(monkeypatch, batch, steps, chunk):
    """Crops and flips are drawn batch by batch and applied a chunk at a time: the batches do not
    depend on the chunk size, and equal an augmentation of each batch on its own (so stages
    trained before the chunking came keep their results)."""
    from prunebench.data import images
    d = data.load(dataset_cfg(name="synthetic", pad=4, flip=True, train_size=1000))

    def batch_by_batch(g):
        order = torch.randperm(d.train_x.shape[0], generator=g)
        for i in range(d.steps_per_epoch(batch, steps)):
            idx = order[i * batch:(i + 1) * batch]
            yield d.normalize(d.augment(d.train_x[idx], g)), d.train_y[idx]
    expected = list(batch_by_batch(torch.Generator().manual_seed(1)))
    monkeypatch.setattr(images, "CHUNK_BATCHES", chunk)
    got = list(d.train_batches(batch, torch.Generator().manual_seed(1), steps))
    assert len(got) == len(expected) == d.steps_per_epoch(batch, steps)
    assert all(torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) for a, b in zip(got, expected))

"""Damaged and changed data: a CIFAR batch whose labels do not fit its images, or an image tree with
an empty class, an empty or undecodable image, is one line naming the file; and the data's
fingerprint keys the unpruned stage, so a changed data set never reuses a stage trained on other
data (and the same data, restored, reuses it)."""
import os
import pickle
import time

import numpy as np
import pytest

from prunebench import data, pipeline
from prunebench.errors import PrunebenchError
from prunebench.train import job
from tests.conftest import compose_config
from tests.imagetree import write_tree
from tests.data.test_data import write_fake_cifar10

RUN = ("experiment=smoke", "method=l1_norm", "strategies=[scratch_e]")


def cifar_cfg(root, cache, *extra):
    return compose_config(*RUN, "dataset=cifar10", f"dataset.root={root}", "dataset.download=false",
                          f"cache_dir={cache}", *extra)


def rewrite(path, change):
    with open(path, "rb") as f:
        batch = pickle.load(f)
    change(batch)
    with open(path, "wb") as f:
        pickle.dump(batch, f)


DAMAGE = {  # what a batch file may hold that no CIFAR batch does, and the words that say so
    "fewer labels than images": (lambda b: b.update(labels=b["labels"][:-3]), "20 images but 17 labels"),
    "a label of 12 on CIFAR-10": (lambda b: b["labels"].__setitem__(0, 12), "outside [0, 10) for 10 classes"),
    "a negative label": (lambda b: b["labels"].__setitem__(0, -1), "outside [0, 10)"),
    "float images": (lambda b: b.update(data=b["data"].astype(np.float32)), "not uint8 (N, 3072)"),
    "images of the wrong size": (lambda b: b.update(data=b["data"][:, :3000]), "not uint8 (N, 3072)"),
    "no labels": (lambda b: b.pop("labels"), "no dict with 'data' and 'labels'"),
    "no images": (lambda b: b.update(data=b["data"][:0], labels=[]), "with N > 0"),
}


@pytest.mark.parametrize("case", sorted(DAMAGE))
def test_a_damaged_cifar_batch_is_one_line_naming_it_before_any_stage(tmp_path, monkeypatch, case):
    change, words = DAMAGE[case]
    folder = write_fake_cifar10(tmp_path / "data")
    rewrite(folder / "data_batch_2", change)
    monkeypatch.setattr(job, "training_of", lambda *a, **k: pytest.fail("trained on damaged data"))
    with pytest.raises(PrunebenchError) as e:
        pipeline.run(cifar_cfg(tmp_path / "data", tmp_path / "stages"))
    message = str(e.value)
    assert str(folder / "data_batch_2") in message and words in message and "\n" not in message, message
    assert not any((tmp_path / "stages").iterdir()), "a stage folder was written"


def test_a_changed_data_set_never_reuses_a_stage_and_the_same_one_does(tmp_path, monkeypatch):
    folder = write_fake_cifar10(tmp_path / "data")
    original = (folder / "data_batch_2").read_bytes()
    cache = tmp_path / "stages"
    first = {r["row"]: r for r in pipeline.run(cifar_cfg(tmp_path / "data", cache))}
    rewrite(folder / "data_batch_2", lambda b: b["labels"].__setitem__(0, (b["labels"][0] + 1) % 10))  # one label
    changed = {r["row"]: r for r in pipeline.run(cifar_cfg(tmp_path / "data", cache))}
    assert all(changed[row]["stage"] != first[row]["stage"] for row in first)  # every stage trained anew
    (folder / "data_batch_2").write_bytes(original)  # the data set as it was
    trained = []
    real = job.training_of
    monkeypatch.setattr(job, "training_of", lambda j, **k: trained.append(j.kind) or real(j, **k))
    again = {r["row"]: r for r in pipeline.run(cifar_cfg(tmp_path / "data", cache))}
    assert not trained and {r: again[r]["stage"] for r in again} == {r: first[r]["stage"] for r in first}


@pytest.mark.parametrize("name,overrides", [("synthetic", ()), ("digits", ())])
def test_in_memory_sets_have_a_fixed_fingerprint_that_follows_their_settings(name, overrides):
    cfg = compose_config("experiment=smoke", f"dataset={name}", *overrides).dataset
    assert data.fingerprint(cfg) == data.fingerprint(cfg) and len(data.fingerprint(cfg)) == 16
    if name == "synthetic":
        cfg.train_size = 100
        assert data.fingerprint(cfg) != data.fingerprint(compose_config("experiment=smoke").dataset)


def tree_cfg(root, cache, workers=0):
    return compose_config(*RUN, "dataset=imagefolder", f"dataset.root={root}", "dataset.image_size=16",
                          f"dataset.workers={workers}", f"cache_dir={cache}")


def empty_class(split):
    def make(root):
        (root / split / "class9").mkdir()
        if split == "train":
            (root / "val" / "class9").mkdir()
            (root / "val" / "class9" / "a.png").write_bytes((root / "val" / "class0" / "img1.png").read_bytes())
        else:
            (root / "train" / "class9").mkdir()
            (root / "train" / "class9" / "a.png").write_bytes((root / "train" / "class0" / "img1.png").read_bytes())
        return root / split / "class9", "holds no image files"
    return make


def truncate(root):
    path = root / "train" / "class1" / "img0.jpg"
    path.write_bytes(path.read_bytes()[:200])
    return path, "cannot be read as an image"


def garble(root):
    path = root / "train" / "class2" / "img2.jpg"
    path.write_bytes(b"this is no JPEG" * 20)
    return path, "cannot be read as an image (UnidentifiedImageError: not an image format PIL can decode)"


def empty_file(root):
    path = root / "val" / "class3" / "img1.png"
    path.write_bytes(b"")
    return path, "is an empty file (0 bytes), not an image"


TREES = {"empty train class": (empty_class("train"), False), "empty val class": (empty_class("val"), False),
         "empty file": (empty_file, False), "truncated JPEG": (truncate, True), "not a JPEG": (garble, True)}


@pytest.mark.parametrize("workers", [0, 1])
@pytest.mark.parametrize("case", sorted(TREES))
def test_an_image_tree_problem_is_one_line_naming_the_file(tmp_path, case, workers):
    damage, decoded = TREES[case]
    root = write_tree(tmp_path / "data")
    path, words = damage(root)
    with pytest.raises(PrunebenchError) as e:
        pipeline.run(tree_cfg(root, tmp_path / "stages", workers))
    message = str(e.value)
    assert message.startswith(str(path)) and words in message and "\n" not in message, message
    if not decoded:  # found by the scan, before any stage
        assert not any((tmp_path / "stages").iterdir())
    else:  # found when decoded: nothing finished, no lock left, and the rerun after the fix trains
        assert not list((tmp_path / "stages").glob("*/metrics.json")) and not list((tmp_path / "stages").glob("*/lock"))
        path.unlink()
        rows = pipeline.run(tree_cfg(root, tmp_path / "stages", workers))
        assert all(r["status"] == "ok" for r in rows)


def test_an_image_trees_fingerprint_follows_its_files_not_their_times(tmp_path):
    root = write_tree(tmp_path / "data")
    cfg = tree_cfg(root, tmp_path / "stages").dataset
    before = data.fingerprint(cfg)
    image = root / "train" / "class0" / "img0.jpg"
    later = time.time() + 3600
    os.utime(image, (later, later))  # copied to another disk: new times, same data
    assert data.fingerprint(cfg) == before
    (root / "train" / "class0" / "extra.png").write_bytes((root / "train" / "class0" / "img1.png").read_bytes())
    assert data.fingerprint(cfg) != before  # one more image
    (root / "train" / "class0" / "extra.png").unlink()
    image.write_bytes(image.read_bytes() + b"\0")
    assert data.fingerprint(cfg) != before  # an image that changed

"""A tiny ImageNet-style tree of PNG and JPEG files for tests."""
import numpy as np


def write_tree(root, classes=4, train_per_class=6, val_per_class=2, size=12):
    """root/train/<class>/*, root/val/<class>/*: each class a solid colour plus noise, PNG and JPEG mixed."""
    from PIL import Image

    rng = np.random.default_rng(0)
    colours = rng.integers(0, 256, (classes, 3))
    for split, n in (("train", train_per_class), ("val", val_per_class)):
        for c in range(classes):
            folder = root / split / f"class{c}"
            folder.mkdir(parents=True)
            for i in range(n):
                pixels = np.clip(colours[c] + rng.normal(0, 20, (size, size + 2 * i % 5, 3)), 0, 255).astype(np.uint8)
                ext = "png" if i % 2 else "jpg"
                Image.fromarray(pixels).save(folder / f"img{i}.{ext}")
    return root

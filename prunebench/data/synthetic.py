"""Random but learnable images for tests: each class is a fixed random pattern
plus noise, so a few steps of training already beat chance."""
import torch

from prunebench.data.images import ImageData


def load(cfg) -> ImageData:
    g = torch.Generator().manual_seed(0)
    s, k = cfg.image_size, cfg.num_classes
    prototypes = torch.rand(k, 3, s, s, generator=g) * 255

    def sample(n):
        y = torch.randint(0, k, (n,), generator=g)
        x = prototypes[y] * 0.6 + torch.rand(n, 3, s, s, generator=g) * 255 * 0.4
        return x.round().to(torch.uint8), y

    train_x, train_y = sample(cfg.train_size)
    test_x, test_y = sample(cfg.test_size)
    return ImageData(train_x, train_y, test_x, test_y, (0.5, 0.5, 0.5), (0.25, 0.25, 0.25), k, cfg.pad, cfg.flip,
                     source="the synthetic data set")

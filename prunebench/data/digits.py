"""scikit-learn's bundled handwritten digits (1,797 images of 8x8, UCI), the
offline data set of the quickstart. Images are upsampled to 16x16 (bilinear) so
that a VGG's four poolings still leave one pixel; a fixed stratified split keeps
80% for training (1,437 images) and 20% for test (360)."""
import torch
import torch.nn.functional as F

from prunebench.data.images import ImageData


def load(cfg) -> ImageData:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    x = torch.tensor(digits.images, dtype=torch.float32).unsqueeze(1) / 16.0  # 0..1
    x = F.interpolate(x, size=(16, 16), mode="bilinear", align_corners=False)
    x = (x.clamp(0, 1) * 255).round().to(torch.uint8)
    y = torch.tensor(digits.target, dtype=torch.int64)
    train_idx, test_idx = train_test_split(torch.arange(len(y)).numpy(), test_size=0.2, random_state=0,
                                           stratify=y.numpy())
    train_x = x[train_idx]
    mean = (train_x.float() / 255).mean().item()
    std = (train_x.float() / 255).std().item()
    return ImageData(train_x, y[train_idx], x[test_idx], y[test_idx], (mean,), (std,), 10, cfg.pad, cfg.flip,
                     source="scikit-learn's digits")

"""Where a table came from: the prunebench version and commit, torch / CUDA / cuDNN versions,
the device and a hash of the config, written into every ``results.csv``, ``metrics.json`` and
report, so that two tables can be told apart without guessing."""
import functools
import hashlib
import json
import subprocess
from pathlib import Path
from typing import Dict, Optional

from omegaconf import DictConfig, OmegaConf


FIELDS = ("prunebench_version", "prunebench_commit", "torch_version", "cuda_version", "cudnn_version", "device_name",
          "config_hash")
CONFIG_IGNORED = ("hydra", "progress", "cache_dir", "dry_run", "seed", "seeds")  # not what a run computes


@functools.lru_cache(maxsize=1)
def commit() -> Optional[str]:
    """The git commit of the prunebench source tree (``+dirty`` with local changes), None outside a checkout."""
    root = Path(__file__).resolve().parent.parent
    if not (root / ".git").exists():
        return None
    try:
        head = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True,
                              timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return head + ("+dirty" if dirty else "") if head else None


def version() -> str:
    from importlib import metadata

    try:
        return metadata.version("prunebench")
    except metadata.PackageNotFoundError:
        return "unknown"


def config_hash(cfg: DictConfig) -> str:
    """A hash of the resolved config, without what cannot change a result (paths, progress, the seed:
    the seeds of one experiment share it)."""
    tree = OmegaConf.to_container(cfg, resolve=True)
    text = json.dumps({k: v for k, v in tree.items() if k not in CONFIG_IGNORED}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:10]


def device_name(device) -> str:
    import torch

    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    import platform

    return f"cpu ({platform.processor() or platform.machine()})"


def record(cfg: DictConfig, device) -> Dict[str, Optional[str]]:
    """Every provenance field of a run of ``cfg`` on ``device``."""
    import torch

    cudnn = torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None
    return {"prunebench_version": version(), "prunebench_commit": commit(), "torch_version": torch.__version__,
            "cuda_version": torch.version.cuda, "cudnn_version": None if cudnn is None else str(cudnn),
            "device_name": device_name(device), "config_hash": config_hash(cfg)}

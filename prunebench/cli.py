"""``prunebench``: the Hydra application. Composes ``conf/config.yaml`` with the
command line, prints the config, runs the protocol and writes the result table."""
import logging
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf
from rich.console import Console
from rich.syntax import Syntax

from prunebench.config import register_configs
from prunebench.errors import PrunebenchError

CONF_DIR = Path(__file__).resolve().parent.parent / "conf"
log = logging.getLogger("prunebench")


def title(cfg: DictConfig) -> str:
    return (f"{cfg.method.name} on {cfg.model.name} / {cfg.dataset.name}, "
            f"pruning_ratio {cfg.method.pruning_ratio}, seed {cfg.seed}")


def sweep_device(cfg: DictConfig) -> None:
    """In a sweep whose launcher runs jobs side by side (joblib), ``device=auto`` gives job k
    the GPU k mod (number of GPUs), so the jobs spread over the machine's GPUs."""
    import torch

    hc = HydraConfig.get()
    if (cfg.device == "auto" and hc.mode == RunMode.MULTIRUN and torch.cuda.device_count() > 1
            and "joblib" in str(hc.launcher.get("_target_", ""))):
        cfg.device = f"cuda:{hc.job.num % torch.cuda.device_count()}"


def failed_row(cfg: DictConfig, message: str) -> dict:
    """The one row of a sweep job that stopped before its table: the sweep goes on."""
    return {"row": "error", "method": cfg.method.name, "model": cfg.model.name, "dataset": cfg.dataset.name,
            "pruning_ratio": cfg.method.pruning_ratio, "seed": cfg.seed, "status": "failed", "note": message}


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="config")
def app(cfg: DictConfig) -> None:
    from prunebench import pipeline, report  # torch is imported here, after Hydra parsed the command line

    console = Console()
    sweep_device(cfg)
    text = OmegaConf.to_yaml(cfg, resolve=True)
    console.print(Syntax(text, "yaml", theme="ansi_dark", background_color="default"))
    run_dir = Path(HydraConfig.get().runtime.output_dir)
    (run_dir / "config.yaml").write_text(text)
    in_sweep = HydraConfig.get().mode == RunMode.MULTIRUN
    try:
        if cfg.dry_run:
            report.show_plan(pipeline.plan(cfg), title(cfg), console)
            return
        rows = pipeline.run(cfg)
    except Exception as e:  # noqa: BLE001 - in a sweep, one job's error is that job's failed row
        if not in_sweep:
            if isinstance(e, PrunebenchError):
                console.print(f"[bold red]error:[/] {e}")
                sys.exit(2)
            raise
        log.exception("this sweep job failed; the sweep goes on")
        rows = [failed_row(cfg, f"{type(e).__name__}: {e}")]
    report.write(rows, run_dir, title(cfg))
    report.show(rows, title(cfg), console)
    console.print(f"results: {run_dir / 'results.csv'}  {run_dir / 'results.md'}")
    if any(r["status"] == "ok" and r["row"] != "error" for r in rows):
        try:
            from prunebench.report import plots

            plots.for_run(run_dir, rows)
            console.print(f"plots: {run_dir / 'plots'}")
        except Exception:  # noqa: BLE001 - a figure that cannot be drawn never costs the table
            log.exception("the run's plots could not be drawn")
    if any(r["status"] != "ok" for r in rows):
        log.warning("some rows failed; see the note column")


def main() -> None:
    register_configs()
    app()


if __name__ == "__main__":
    main()

"""``prunebench``: the Hydra application. Composes ``conf/config.yaml`` with the
command line, prints the config, runs the protocol and writes the result table."""
import logging
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
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


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="config")
def app(cfg: DictConfig) -> None:
    from prunebench import pipeline, report  # torch is imported here, after Hydra parsed the command line

    console = Console()
    text = OmegaConf.to_yaml(cfg, resolve=True)
    console.print(Syntax(text, "yaml", theme="ansi_dark", background_color="default"))
    run_dir = Path(HydraConfig.get().runtime.output_dir)
    (run_dir / "config.yaml").write_text(text)
    try:
        if cfg.dry_run:
            report.show_plan(pipeline.plan(cfg), title(cfg), console)
            return
        rows = pipeline.run(cfg)
    except PrunebenchError as e:
        console.print(f"[bold red]error:[/] {e}")
        sys.exit(2)
    report.write(rows, run_dir, title(cfg))
    report.show(rows, title(cfg), console)
    console.print(f"results: {run_dir / 'results.csv'}  {run_dir / 'results.md'}")
    if any(r["status"] != "ok" for r in rows):
        log.warning("some rows failed; see the note column")


def main() -> None:
    register_configs()
    app()


if __name__ == "__main__":
    main()

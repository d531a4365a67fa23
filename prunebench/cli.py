"""``prunebench``: the Hydra application. Composes ``conf/config.yaml`` with the
command line, prints the config, runs the protocol and writes the result table.
A bad input exits with status 2; ``strict=true`` makes a failed row exit with 1.
In a sweep (``-m``) one job's error is printed and the other jobs go on."""
import logging
import sys
from pathlib import Path
from typing import List, Sequence

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.plugins.completion_plugin import CompletionPlugin
from hydra.core.object_type import ObjectType
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf
from rich.console import Console
from rich.syntax import Syntax

from prunebench.config import CONF_DIR, register_configs
from prunebench.errors import PrunebenchError

log = logging.getLogger("prunebench")
EXIT_BAD_INPUT, EXIT_FAILED_ROW = 2, 1
_sweep_status = {"code": 0}  # the worst exit status of the jobs of a sweep


def compose(overrides: Sequence[str] = ()) -> DictConfig:
    """The config the command line ``prunebench OVERRIDES`` would run (without Hydra's own node)."""
    from hydra import compose as hydra_compose, initialize_config_dir

    register_configs()
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        return hydra_compose("config", overrides=list(overrides))


def title(cfg: DictConfig) -> str:
    return (f"{cfg.method.name} on {cfg.model.name} / {cfg.dataset.name}, "
            f"pruning_ratio {cfg.method.pruning_ratio}, seed {cfg.seed}")


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="config")
def app(cfg: DictConfig) -> None:
    from prunebench import pipeline, report  # torch is imported here, after Hydra parsed the command line

    console = Console()
    text = OmegaConf.to_yaml(cfg, resolve=True)
    console.print(Syntax(text, "yaml", theme="ansi_dark", background_color="default"))
    hydra_cfg = HydraConfig.get()
    sweep = hydra_cfg.mode == RunMode.MULTIRUN
    run_dir = Path(hydra_cfg.runtime.output_dir)
    (run_dir / "config.yaml").write_text(text)
    try:
        if cfg.dry_run:
            report.show_plan(pipeline.plan(cfg), title(cfg), console)
            return
        rows = pipeline.run(cfg)
    except PrunebenchError as e:
        console.print(f"[bold red]error:[/] {e}")
        if not sweep:
            sys.exit(EXIT_BAD_INPUT)
        _sweep_status["code"] = max(_sweep_status["code"], EXIT_BAD_INPUT)  # the other jobs go on
        return
    report.write(rows, run_dir, title(cfg))
    report.show(rows, title(cfg), console)
    console.print(f"results: {run_dir / 'results.csv'}  {run_dir / 'results.md'}")
    if any(r["status"] != "ok" for r in rows):
        log.warning("some rows failed; see the note column")
        if cfg.strict:
            if not sweep:
                sys.exit(EXIT_FAILED_ROW)
            _sweep_status["code"] = max(_sweep_status["code"], EXIT_FAILED_ROW)


def nested_options(loader, group: str) -> List[str]:
    """Options in the subfolders of ``group`` (``rethinking/slimming_vgg19_cifar10``), which
    Hydra's completion does not list under ``experiment=``."""
    out = []
    for sub in loader.get_group_options(group, results_filter=ObjectType.GROUP):
        path = f"{group}/{sub}"
        out += [f"{sub}/{o}" for o in loader.get_group_options(path, results_filter=ObjectType.CONFIG)]
        out += [f"{sub}/{o}" for o in nested_options(loader, path)]
    return out


def complete_nested_options() -> None:
    """Make ``prunebench experiment=<TAB>`` offer ``experiment=rethinking/...`` too."""
    query = CompletionPlugin._query
    if getattr(query, "nested", False):
        return

    def _query(self, config_name, line):
        result = query(self, config_name, line)
        word = "" if not line or line.endswith(" ") else line.split()[-1]
        if "=" in word and not word.startswith(("~", "+")):
            group = word.split("=", 1)[0]
            extra = [f"{group}={o}" for o in nested_options(self.config_loader, group)]
            result = sorted(set(result) | {e for e in extra if e.startswith(word)})
        return result

    _query.nested = True
    CompletionPlugin._query = _query


def main() -> None:
    register_configs()
    complete_nested_options()
    app()
    if _sweep_status["code"]:
        sys.exit(_sweep_status["code"])


if __name__ == "__main__":
    main()

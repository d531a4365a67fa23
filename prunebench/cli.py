"""``prunebench``: the Hydra application. Composes ``conf/config.yaml`` with the
command line, prints the config, runs the protocol and writes the result table.
Under ``torchrun --nproc_per_node=N -m prunebench ...`` every rank runs the protocol
(``prunebench.distributed``); rank 0 alone prints and writes the run folder.
A bad input exits with status 2 and one line (unwrapped, on stderr); ``strict=true`` makes a
failed row exit with 1; an interrupt (Ctrl-C, SIGTERM) stops every training at its last
checkpoint and exits with 130. In a sweep (``-m``) one job's error is that job's failed row
and the other jobs go on."""
import logging
import multiprocessing
import os
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, List, Optional, Sequence

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.core.object_type import ObjectType
from hydra.experimental.callback import Callback
from hydra.plugins.completion_plugin import CompletionPlugin
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf
from rich.console import Console
from rich.syntax import Syntax

from prunebench.config import CONF_DIR, one_line, register_configs
from prunebench.errors import PrunebenchError, UnwritableFile, main_process, say_error

log = logging.getLogger("prunebench")
EXIT_BAD_INPUT, EXIT_FAILED_ROW, EXIT_INTERRUPTED = 2, 1, 130
RANK_GRACE = 30  # seconds another torchrun rank waits before it exits on bad input (see exit_bad_input)
_sweep_status = {"code": 0}  # with strict=true: the worst exit status of the jobs of a sweep
INTERRUPTED = ("interrupted: every training stopped at its last checkpoint; rerun the same command to resume "
               "(finished stages are reused, and locks a stopped job left are taken over)")
PROBE_BYTES = 64 * 1024  # written once into a new run folder: a folder that cannot take it cannot take the run's files


def stderr_console(main_rank: bool = True) -> Console:
    return Console(stderr=True, quiet=not main_rank)


def writable_folder(folder: Path) -> None:
    """Create ``folder`` and write (then remove) a small file in it; UnwritableFile when that fails."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder) as f:
            f.write(b"\0" * PROBE_BYTES)
            f.flush()
            os.fsync(f.fileno())
    except OSError as e:
        raise UnwritableFile(folder, e) from e


class RunFolderCheck(Callback):
    """Hydra callback: the run folder (``hydra.run.dir``) or the sweep folder (``hydra.sweep.dir``)
    must take files before Hydra writes its own there, else one line and exit 2."""

    def _check(self, node: Any) -> None:
        try:
            writable_folder(Path(str(node.dir)))
        except UnwritableFile as e:
            say_error(str(e))
            sys.exit(EXIT_BAD_INPUT)

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        if main_process():  # the other ranks of torchrun write nowhere
            self._check(config.hydra.run)

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        self._check(config.hydra.sweep)


def compose(overrides: Sequence[str] = (), config_dir: Optional[str] = None) -> DictConfig:
    """The config the command line ``prunebench OVERRIDES`` would run (without Hydra's own node), its
    parts typed (:func:`prunebench.parts.typed`); ``config_dir``: a folder of your own YAML files, searched
    before prunebench's (as ``--config-dir``). A setting OmegaConf refuses is one PrunebenchError line."""
    from hydra import compose as hydra_compose, initialize_config_dir

    from prunebench import parts

    register_configs()
    if config_dir is not None:
        overrides = [f"hydra.searchpath=[file://{Path(config_dir).resolve()}]", *overrides]
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        try:
            cfg = hydra_compose("config", overrides=list(overrides))
        except Exception as e:  # noqa: BLE001 - Hydra's composition errors wrap OmegaConf's
            if "full_key" not in str(e) and not hasattr(e.__cause__, "full_key"):
                raise
            raise PrunebenchError(one_line(e)) from e
    return parts.typed(cfg)


def title(cfg: DictConfig) -> str:
    return (f"{cfg.method.name} on {cfg.model.name} / {cfg.dataset.name}, "
            f"pruning_ratio {cfg.method.pruning_ratio}, "
            + (f"seeds {list(cfg.seeds)}" if cfg.get("seeds") else f"seed {cfg.seed}"))


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
    from prunebench import distributed, parts, pipeline, report  # torch is imported here, after Hydra parsed the command line

    in_sweep = HydraConfig.get().mode == RunMode.MULTIRUN
    errors = stderr_console(main_process())
    if not in_sweep:  # in a sweep the run types it (validate.check): a bad part is that job's failed row
        try:
            parts.typed(cfg)  # each part by its own schema (a class of your own included)
        except PrunebenchError as e:
            exit_bad_input(str(e), errors)
    if distributed.launched() and in_sweep:
        say_error("torchrun runs one run over several GPUs; run a sweep (-m) without torchrun (the joblib launcher "
                  "spreads its jobs over the GPUs)", errors)
        sys.exit(EXIT_BAD_INPUT)
    try:
        distributed.setup(cfg.device, cfg.distributed.backend, cfg.distributed.sync_bn)
    except PrunebenchError as e:
        exit_bad_input(str(e), errors)
    main_rank = distributed.is_main()
    console = Console(quiet=not main_rank)  # under torchrun rank 0 prints
    sweep_device(cfg)
    text = OmegaConf.to_yaml(cfg, resolve=True)
    console.print(Syntax(text, "yaml", theme="ansi_dark", background_color="default"))
    run_dir = Path(HydraConfig.get().runtime.output_dir)
    try:
        if main_rank:
            write_text(run_dir / "config.yaml", text)
        if cfg.dry_run:
            report.show_plan(pipeline.plan(cfg), title(cfg), console)
            return
        rows = pipeline.run(cfg)
    except KeyboardInterrupt:
        if multiprocessing.parent_process() is not None:  # a sweep's worker process: its launcher says it once
            raise
        say_error(INTERRUPTED, errors)
        sys.exit(EXIT_INTERRUPTED)
    except Exception as e:  # noqa: BLE001 - in a sweep, one job's error is that job's failed row
        if not in_sweep:
            if isinstance(e, PrunebenchError):
                exit_bad_input(str(e), errors)
            raise
        if isinstance(e, PrunebenchError):
            log.error("this sweep job failed (the sweep goes on): %s", e)
        else:
            log.exception("this sweep job failed; the sweep goes on")
        rows = [failed_row(cfg, f"{type(e).__name__}: {e}")]
    if not main_rank:
        return
    try:
        report.write(rows, run_dir, title(cfg))
    except UnwritableFile as e:
        say_error(str(e), errors)
        sys.exit(EXIT_BAD_INPUT)
    report.show(rows, title(cfg), console)
    console.print(f"results: {run_dir / 'results.csv'}  {run_dir / 'results.md'}", soft_wrap=True)
    if any(r["status"] == "ok" and r["row"] != "error" for r in rows):
        try:
            from prunebench.report import plots

            plots.for_run(run_dir, rows)
            console.print(f"plots: {run_dir / 'plots'}", soft_wrap=True)
        except Exception as e:  # noqa: BLE001 - a figure that cannot be drawn never costs the table
            log.warning("the run's plots could not be drawn (%s: %s); the table is written", type(e).__name__, e)
            log.debug("the plots' error", exc_info=e)
    if any(r["status"] != "ok" for r in rows):
        log.warning("some rows failed; see the note column")
        if cfg.strict:
            if not in_sweep:
                sys.exit(EXIT_FAILED_ROW)
            _sweep_status["code"] = max(_sweep_status["code"], EXIT_FAILED_ROW)


def write_text(path: Path, text: str) -> None:
    try:
        path.write_text(text)
    except OSError as e:
        raise UnwritableFile(path, e) from e


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


def exit_bad_input(message: str, errors: Console) -> None:
    """Say a bad input's error (rank 0) and exit with 2. Every torchrun rank reads the same input
    and fails alike, but torchrun stops every rank once one exits: another rank waits (up to
    ``RANK_GRACE`` s, until torchrun stops it) so that rank 0's line is the one the user reads,
    not an interruption."""
    say_error(message, errors)
    if int(os.environ.get("RANK", "0")) > 0:
        time.sleep(RANK_GRACE)
    sys.exit(EXIT_BAD_INPUT)


def one_line_composition_errors() -> None:
    """Make a setting OmegaConf refuses while Hydra composes (a value outside an enumeration, a wrong
    type) one line on stderr and exit status 2, as every other bad input (Hydra prints several)."""
    from hydra._internal import utils
    from hydra.errors import ConfigCompositionException

    report = utils.run_and_report
    if getattr(report, "one_line", False):
        return

    def run_and_report(func):
        try:
            return func()
        except ConfigCompositionException as e:
            if not hasattr(e.__cause__, "full_key") or os.environ.get("HYDRA_FULL_ERROR") == "1":
                error = e

                def again():  # Hydra's own report of the error
                    raise error
                return report(again)
            say_error(one_line(e))
            sys.exit(EXIT_BAD_INPUT)

    run_and_report.one_line = True
    utils.run_and_report = run_and_report


def main() -> None:
    register_configs()
    complete_nested_options()
    one_line_composition_errors()
    logging.raiseExceptions = False  # a log line that cannot be written (a full disk) must not bury the error
    scratch = None
    if int(os.environ.get("RANK", "0")) > 0:  # torchrun's other ranks: rank 0 keeps the run folder and its log
        scratch = tempfile.mkdtemp(prefix="prunebench-rank")
        sys.argv += [f"hydra.run.dir={scratch}", "hydra.output_subdir=null", "hydra.job_logging.root.level=WARNING"]
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # torchrun stopping the ranks: clean up first
    else:  # a time-out or a cluster's preemption stops the run as Ctrl-C does: checkpoints kept, status logged
        signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        app()
    except KeyboardInterrupt:  # outside a job: while Hydra composes, or a sweep's launcher waiting for its jobs
        say_error(INTERRUPTED)
        sys.exit(EXIT_INTERRUPTED)
    finally:
        if scratch is not None:
            shutil.rmtree(scratch, ignore_errors=True)
        if "torch" in sys.modules:
            from prunebench import distributed

            distributed.teardown()
    if _sweep_status["code"]:
        sys.exit(_sweep_status["code"])


if __name__ == "__main__":
    main()

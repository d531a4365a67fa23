"""What a retraining strategy is: one row of the table after ``pruned``. A strategy
names itself, the rows it needs, the nodes of ``cfg.strategy`` that key its cache
(beside the pruned stage, the seed and the schedule), whether it applies to a
method, what it will train (for ``dry_run``) and its work. The pipeline loops over
the strategies a run asks for and holds no strategy-specific branch."""
from abc import ABC, abstractmethod
from typing import TYPE_CHECKING, Any, Dict, Tuple

from prunebench.stages import Stage, settings

if TYPE_CHECKING:  # the pipeline imports the strategies, never the other way round at run time
    from prunebench.pipeline import Run


class Strategy(ABC):
    name: str = ""
    needs: Tuple[str, ...] = ("unpruned", "pruned")  # rows that must have finished ok
    keyed_by: Tuple[str, ...] = ()  # nodes of cfg.strategy whose non-default settings key the cache

    def check(self, cfg) -> None:
        """Raise PrunebenchError on settings of this strategy that cannot work (before any training)."""

    def applies(self, run: "Run") -> bool:
        """False: the strategy does not apply to this run's method (it is skipped, with a log line)."""
        return True

    def cache_values(self, cfg) -> Dict[str, Any]:
        return {node: settings(cfg.strategy[node]) for node in self.keyed_by}

    def plan(self, run: "Run") -> Dict[str, Any]:
        """What the stage will train, for ``dry_run``: {"spec": architecture or None when it
        depends on results not there yet, "epochs": int or None, "note": str}."""
        return {"spec": run.pruned_spec(), "epochs": run.recipe.epochs, "note": ""}

    @abstractmethod
    def train(self, run: "Run", stage: Stage) -> Dict[str, Any]:
        """Train the stage's model; return its metrics (``run.trained`` gives the common ones)."""

"""The class (or function) a config names: a built-in of a registry, an import path
(``_target_: mypkg.pruning.MyCriterion``), or an entry point of an installed package in the
group ``prunebench.methods``, ``prunebench.models``, ``prunebench.datasets`` or
``prunebench.strategies`` (``[project.entry-points."prunebench.methods"] my_criterion =
"mypkg.pruning:MyCriterion"``)."""
import importlib
from importlib.metadata import entry_points
from typing import Any, Dict, Optional

from prunebench.errors import PrunebenchError


def load_path(path: str, setting: str) -> Any:
    """The object at ``package.module.Name`` (or ``package.module:Name``); ``setting`` names
    where the path was given, for the error."""
    module, sep, attr = path.replace(":", ".").rpartition(".")
    if not sep or not module:
        raise PrunebenchError(f"{setting}={path!r} is not an import path; give package.module.Name")
    try:
        found = importlib.import_module(module)
    except ImportError as e:
        raise PrunebenchError(f"{setting}={path}: module {module} cannot be imported ({e}); put its folder on "
                              f"PYTHONPATH or install its package") from e
    if not hasattr(found, attr):
        raise PrunebenchError(f"{setting}={path}: module {module} has no {attr}")
    return getattr(found, attr)


def entry_point(group: str, name: str) -> Optional[Any]:
    """The object an installed package registers as ``name`` in the entry point ``group``, or None."""
    for ep in entry_points(group=group):
        if ep.name == name:
            return ep.load()
    return None


def resolve(kind: str, name: str, target: Optional[str], registry: Dict[str, Any]) -> Any:
    """What ``kind`` (method, model, dataset, strategy) ``name`` is: ``target`` when given (an import
    path), else the built-in registry's entry, else an installed package's entry point."""
    if target:
        return load_path(target, f"{kind}._target_")
    if name in registry:
        return registry[name]
    found = entry_point(f"prunebench.{kind}s", name)
    if found is None:
        raise PrunebenchError(f"unknown {kind} {name!r}; known: {', '.join(sorted(registry))} (or a class of "
                              f"your own: {kind}._target_=package.module.Name, see docs/extending.md)")
    return found

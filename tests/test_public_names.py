"""The package's public names: `__all__` is exactly what `import syncflow` offers."""

from __future__ import annotations

import importlib.metadata
import inspect

import syncflow


def test_all_is_honest() -> None:
    public = {name for name in dir(syncflow) if not name.startswith("_")} - {"sim", "sources", "fivetran"}
    assert set(syncflow.__all__) - {"__version__"} == public
    namespace: dict[str, object] = {}
    exec("from syncflow import *", namespace)  # a name __all__ lists but the package lacks fails here
    assert set(namespace) - {"__builtins__"} == set(syncflow.__all__)
    for name in set(syncflow.__all__) - {"__version__"}:
        exported = getattr(syncflow, name)
        if inspect.isclass(exported) or inspect.isfunction(exported):
            # syncflow's own, under its own name: not a re-exported foreign object or an alias of another name.
            assert exported.__module__.startswith("syncflow."), (name, exported.__module__)
            assert exported.__name__ == name, (name, exported.__name__)
    assert syncflow.__version__ == importlib.metadata.version("syncflow")

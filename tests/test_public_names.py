"""The package's public names: `__all__` is exactly what `import syncflow` offers."""

from __future__ import annotations

import syncflow


def test_all_is_honest() -> None:
    public = {name for name in dir(syncflow) if not name.startswith("_")} - {"sim", "sources", "fivetran"}
    assert set(syncflow.__all__) - {"__version__"} == public
    for name in syncflow.__all__:
        assert getattr(syncflow, name) is not None

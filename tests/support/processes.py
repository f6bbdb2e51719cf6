"""The connector's fetch processes (`syncflow._fetch_process` as a script), found in /proc: by parent or by folder."""

from __future__ import annotations

import os
from pathlib import Path


def fetch_processes(*, parent: int | None = None, cwd: Path | None = None) -> list[int]:
    """Fetch processes still running (zombies left out) whose parent is `parent` and/or whose directory is `cwd`."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if b"syncflow._fetch_process" not in (entry / "cmdline").read_bytes():
                continue
            stat = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            if parent is not None and int(stat[1]) != parent:
                continue
            if cwd is not None and Path(os.readlink(entry / "cwd")).resolve() != cwd.resolve():
                continue
        except OSError:
            continue
        if stat[0] != "Z":
            found.append(int(entry.name))
    return found


def running(pid: int) -> bool:
    """True while `pid` runs; a zombie has exited (an orphan's reaper may be slow to collect it)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"

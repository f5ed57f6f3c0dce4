"""Keeping earlier stores: a fresh run never deletes or overwrites a store, it moves it aside."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

from camwall.bench._store import STORE_NAME, Store
from camwall.errors import CamwallError

__all__ = ["archive_store"]


def _started_at(path: Path) -> float:
    """When the store at ``path`` was first started (its first run), else its file time."""
    try:
        db = sqlite3.connect(path, timeout=60)
        try:
            row = db.execute("SELECT min(started) FROM runs").fetchone()
        finally:
            db.close()  # the last connection folds a left-over -wal into the file
        if row and row[0] is not None:
            return float(row[0])
    except sqlite3.DatabaseError:
        pass
    return path.stat().st_mtime


def _move_with_sidecars(src: Path, dest: Path) -> None:
    """Rename ``src`` and its ``-wal`` / ``-shm`` files (if any) to ``dest`` (+ same suffix),
    all or none: if one rename fails, those done are undone, so a database never loses its
    sidecars (they hold committed rows)."""
    moved: list[tuple[Path, Path]] = []
    try:
        for suffix in ("-wal", "-shm", ""):  # the main file last: a reader never sees it alone
            old, new = Path(f"{src}{suffix}"), Path(f"{dest}{suffix}")
            if old.exists():
                old.rename(new)
                moved.append((old, new))
    except OSError as err:
        for old, new in reversed(moved):
            new.rename(old)
        raise CamwallError(
            f"{src}: cannot move the previous store aside ({err.strerror or err}); it is left as "
            "it was. Make its folder writable, run with --resume, or choose another --out."
        ) from None


def archive_store(out: Path) -> Path | None:
    """Keep the store in ``out`` aside before a fresh run: never delete, never overwrite.

    ``out/results.sqlite`` is renamed to ``out/results.<started UTC>.sqlite`` (its first run's
    start, e.g. ``results.20261201T044205Z.sqlite``; ``-2``, ``-3`` ... are appended if that
    name is taken), with its ``-wal`` / ``-shm`` files. Shards of an interrupted distributed
    run (``results.rank*.sqlite``) are merged into it first, or, if it cannot be opened, kept
    beside it as ``results.<started UTC>.rankR.sqlite``.

    Returns:
        The new path of the old store, or None if there was none.
    """
    path = out / STORE_NAME
    if not path.exists():
        return None
    shards = sorted(out.glob("results.rank*.sqlite"))
    if shards:
        try:
            with Store(path) as store:
                for shard in shards:
                    store.merge(shard)
            for shard in shards:
                for suffix in ("-wal", "-shm", ""):
                    Path(f"{shard}{suffix}").unlink(missing_ok=True)  # merged: a copy remains
        except CamwallError:
            pass  # kept beside the archived store below
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(_started_at(path)))
    dest, n = out / f"results.{stamp}.sqlite", 1
    while any(Path(f"{dest}{s}").exists() for s in ("", "-wal", "-shm")):
        n += 1
        dest = out / f"results.{stamp}-{n}.sqlite"
    _move_with_sidecars(path, dest)
    for shard in sorted(out.glob("results.rank*.sqlite")):
        _move_with_sidecars(shard, Path(str(dest).removesuffix(".sqlite") + shard.name[7:]))
    return dest

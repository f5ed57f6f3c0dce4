"""The results store: one SQLite file (stdlib ``sqlite3``) per benchmark output folder.

Tables:

- ``runs``: one row per invocation: the config (JSON) and its hash, library versions, seed,
  start and end times. A store holds exactly one config; ``--resume`` with another config is
  refused.
- ``results``: one row per ``(model, dataset, image, method)``, UNIQUE; the metric values (one
  column per :data:`camwall.metrics.METRICS` entry, NULL = NaN = empty map), an ``empty`` flag,
  the target class, label, predicted class, confidence and the seconds the map took. Rows are
  committed as they are computed, so an interrupted run loses at most one batch.
- ``predictions``: one row per ``(model, dataset, image)`` for every model (walled and
  baseline), to compute accuracies.
- ``models``, ``datasets``: JSON descriptions (dead zone mask as PNG, class names, sizes).
- ``figures``: PNG blobs of the first images of each dataset and of their saliency maps, so that
  ``camwall report DIR`` can redraw every figure from the store alone.
"""

from __future__ import annotations

import io
import json
import math
import sqlite3
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from camwall.errors import CamwallError
from camwall.metrics import METRICS
from camwall.runtime import config_hash as runtime_hash

__all__ = ["STORE_NAME", "ResultRow", "Store", "config_hash", "png_to_array", "to_png"]

STORE_NAME = "results.sqlite"
SCHEMA_VERSION = 1

# Config keys that change results; others (device, batch size, out) may differ on --resume.
RESULT_KEYS = (
    "models",
    "baselines",
    "weights",
    "walls",
    "datasets",
    "methods",
    "target_layer",
    "images",
    "seed",
)


def config_hash(config: dict[str, Any]) -> str:
    """SHA-256 of the result-defining part of ``config`` (keys in :data:`RESULT_KEYS`)."""
    return runtime_hash({k: config.get(k) for k in RESULT_KEYS})[:16]


def to_png(array: np.ndarray) -> bytes:
    """Encode a 2-D or H x W x 3 array in [0, 1] (float) or uint8/bool as an 8-bit PNG."""
    a = np.asarray(array)
    if a.dtype == bool:
        a = a.astype(np.uint8) * 255
    elif a.dtype != np.uint8:
        a = (np.clip(a, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(a).save(buf, format="PNG", optimize=True)
    return buf.getvalue()


def png_to_array(blob: bytes) -> np.ndarray:
    """Decode a PNG blob to float32 in [0, 1] (H x W or H x W x 3)."""
    return np.asarray(Image.open(io.BytesIO(blob)), dtype=np.float32) / 255.0


@dataclass(frozen=True)
class ResultRow:
    """One ``(model, dataset, image, method)`` result; metric values are fractions or NaN."""

    model: str
    dataset: str
    image: int
    method: str
    metrics: dict[str, float]
    empty: bool
    label: int
    target: int
    predicted: int
    confidence: float
    seconds: float


def _sql_float(v: float) -> float | None:
    return None if v is None or math.isnan(v) else float(v)


class Store:
    """A results store at ``path`` (created if missing). Use as a context manager or ``close()``.

    Args:
        path: the SQLite file.
        readonly: open without creating or writing.
    """

    def __init__(self, path: str | Path, readonly: bool = False) -> None:
        self.path = Path(path)
        if readonly and not self.path.is_file():
            raise CamwallError(
                f"no results store at {self.path}; run `camwall bench --out {self.path.parent}` "
                "first."
            )
        try:
            if readonly:
                self.db = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, timeout=60)
            else:
                self.db = sqlite3.connect(self.path, timeout=60)
            self.db.execute("PRAGMA journal_mode=WAL" if not readonly else "PRAGMA query_only=1")
            if not readonly:
                self._create()
            self.db.execute("SELECT count(*) FROM results").fetchone()
        except sqlite3.DatabaseError as err:
            raise CamwallError(
                f"{self.path} is not a camwall results store ({err}); remove it or choose "
                "another --out."
            ) from None

    # -- lifecycle ------------------------------------------------------------------------

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.db.close()

    def _create(self) -> None:
        cols = ", ".join(f"{name} REAL" for name in METRICS.names())
        self.db.executescript(
            f"""
            CREATE TABLE IF NOT EXISTS info (key TEXT PRIMARY KEY, value TEXT NOT NULL);
            CREATE TABLE IF NOT EXISTS runs (
                id INTEGER PRIMARY KEY AUTOINCREMENT, config TEXT NOT NULL,
                config_hash TEXT NOT NULL, versions TEXT NOT NULL, seed INTEGER NOT NULL,
                started REAL NOT NULL, finished REAL);
            CREATE TABLE IF NOT EXISTS results (
                model TEXT NOT NULL, dataset TEXT NOT NULL, image INTEGER NOT NULL,
                method TEXT NOT NULL, {cols}, empty INTEGER NOT NULL, label INTEGER NOT NULL,
                target INTEGER NOT NULL, predicted INTEGER NOT NULL, confidence REAL NOT NULL,
                seconds REAL NOT NULL, UNIQUE (model, dataset, image, method));
            CREATE TABLE IF NOT EXISTS predictions (
                model TEXT NOT NULL, dataset TEXT NOT NULL, image INTEGER NOT NULL,
                label INTEGER NOT NULL, predicted INTEGER NOT NULL, confidence REAL NOT NULL,
                UNIQUE (model, dataset, image));
            CREATE TABLE IF NOT EXISTS models (name TEXT PRIMARY KEY, info TEXT NOT NULL);
            CREATE TABLE IF NOT EXISTS datasets (name TEXT PRIMARY KEY, info TEXT NOT NULL);
            CREATE TABLE IF NOT EXISTS figures (
                model TEXT NOT NULL, dataset TEXT NOT NULL, image INTEGER NOT NULL,
                method TEXT NOT NULL, png BLOB NOT NULL,
                UNIQUE (model, dataset, image, method));
            """
        )
        self.db.execute("INSERT OR IGNORE INTO info VALUES ('schema', ?)", (str(SCHEMA_VERSION),))
        self.db.commit()

    # -- runs -----------------------------------------------------------------------------

    def config(self) -> dict[str, Any] | None:
        """The config of the first run in this store, or None for a new store."""
        row = self.db.execute("SELECT config FROM runs ORDER BY id LIMIT 1").fetchone()
        return None if row is None else json.loads(row[0])

    def runs(self) -> list[dict[str, Any]]:
        rows = self.db.execute(
            "SELECT id, config, config_hash, versions, seed, started, finished FROM runs"
        ).fetchall()
        return [
            {
                "id": r[0],
                "config": json.loads(r[1]),
                "config_hash": r[2],
                "versions": json.loads(r[3]),
                "seed": r[4],
                "started": r[5],
                "finished": r[6],
            }
            for r in rows
        ]

    def check_resume(self, config: dict[str, Any]) -> None:
        """Refuse to resume a store that was written with a different result-defining config."""
        old = self.config()
        if old is None or config_hash(old) == config_hash(config):
            return
        diff = [k for k in RESULT_KEYS if old.get(k) != config.get(k)]
        detail = "; ".join(f"{k}: stored {old.get(k)!r}, now {config.get(k)!r}" for k in diff)
        raise CamwallError(
            f"--resume: {self.path} was written with a different configuration ({detail}). "
            "Resume with the same options, or choose another --out."
        )

    def start_run(self, config: dict[str, Any], versions: dict[str, str]) -> int:
        cur = self.db.execute(
            "INSERT INTO runs (config, config_hash, versions, seed, started) VALUES (?,?,?,?,?)",
            (
                json.dumps(config, sort_keys=True),
                config_hash(config),
                json.dumps(versions, sort_keys=True),
                int(config.get("seed", 0)),
                time.time(),
            ),
        )
        self.db.commit()
        return int(cur.lastrowid or 0)

    def finish_run(self, run_id: int) -> None:
        self.db.execute("UPDATE runs SET finished = ? WHERE id = ?", (time.time(), run_id))
        self.db.commit()

    # -- descriptions -------------------------------------------------------------------------

    def put_info(self, table: str, name: str, info: dict[str, Any]) -> None:
        assert table in ("models", "datasets")
        self.db.execute(
            f"INSERT OR REPLACE INTO {table} VALUES (?, ?)", (name, json.dumps(info, default=str))
        )
        self.db.commit()

    def info(self, table: str) -> dict[str, dict[str, Any]]:
        assert table in ("models", "datasets")
        rows = self.db.execute(f"SELECT name, info FROM {table} ORDER BY rowid").fetchall()
        return {name: json.loads(info) for name, info in rows}

    # -- results ----------------------------------------------------------------------------

    def done(self, model: str, dataset: str, method: str) -> set[int]:
        """Image indices that already have a result row."""
        rows = self.db.execute(
            "SELECT image FROM results WHERE model=? AND dataset=? AND method=?",
            (model, dataset, method),
        )
        return {r[0] for r in rows}

    def predicted(self, model: str, dataset: str) -> dict[int, tuple[int, int, float]]:
        """``image -> (label, predicted, confidence)`` already stored."""
        rows = self.db.execute(
            "SELECT image, label, predicted, confidence FROM predictions "
            "WHERE model=? AND dataset=?",
            (model, dataset),
        )
        return {r[0]: (r[1], r[2], r[3]) for r in rows}

    def add_predictions(
        self, model: str, dataset: str, rows: Iterable[tuple[int, int, int, float]]
    ) -> None:
        """Insert ``(image, label, predicted, confidence)`` rows (existing keys are kept)."""
        self.db.executemany(
            "INSERT OR IGNORE INTO predictions VALUES (?,?,?,?,?,?)",
            [(model, dataset, i, lab, pred, conf) for i, lab, pred, conf in rows],
        )
        self.db.commit()

    def add_results(self, rows: Sequence[ResultRow]) -> int:
        """Insert and commit result rows; rows whose key exists are skipped. Returns # added."""
        names = METRICS.names()
        marks = ",".join("?" * (len(names) + 10))
        before = self.db.total_changes
        self.db.executemany(
            f"INSERT OR IGNORE INTO results (model, dataset, image, method, {', '.join(names)}, "
            "empty, label, target, predicted, confidence, seconds) "
            f"VALUES ({marks})",
            [
                (
                    r.model,
                    r.dataset,
                    r.image,
                    r.method,
                    *(_sql_float(r.metrics.get(n, math.nan)) for n in names),
                    int(r.empty),
                    r.label,
                    r.target,
                    r.predicted,
                    float(r.confidence),
                    float(r.seconds),
                )
                for r in rows
            ],
        )
        self.db.commit()
        return self.db.total_changes - before

    def results(self) -> list[dict[str, Any]]:
        """All result rows as dicts (metric NULLs become NaN), ordered by key."""
        cur = self.db.execute("SELECT * FROM results ORDER BY model, dataset, method, image")
        cols = [c[0] for c in cur.description]
        metric_names = set(METRICS.names())
        out = []
        for row in cur.fetchall():
            d = dict(zip(cols, row))
            for n in metric_names & d.keys():
                if d[n] is None:
                    d[n] = math.nan
            out.append(d)
        return out

    def predictions(self) -> list[dict[str, Any]]:
        cur = self.db.execute("SELECT * FROM predictions ORDER BY model, dataset, image")
        cols = [c[0] for c in cur.description]
        return [dict(zip(cols, row)) for row in cur.fetchall()]

    def count(self) -> int:
        return int(self.db.execute("SELECT count(*) FROM results").fetchone()[0])

    # -- figures ----------------------------------------------------------------------------

    def add_figure(self, model: str, dataset: str, image: int, method: str, png: bytes) -> None:
        """Store a PNG: ``method="image"`` for the input image itself, else a saliency map."""
        self.db.execute(
            "INSERT OR IGNORE INTO figures VALUES (?,?,?,?,?)", (model, dataset, image, method, png)
        )
        self.db.commit()

    def figures(self) -> dict[tuple[str, str, int, str], bytes]:
        rows = self.db.execute("SELECT model, dataset, image, method, png FROM figures")
        return {(m, d, i, k): bytes(p) for m, d, i, k, p in rows}

    # -- merging (distributed runs) ---------------------------------------------------------

    def merge(self, other: str | Path) -> int:
        """Copy every row of the store at ``other`` into this one (existing keys kept).

        Returns the number of result rows added.
        """
        before = self.count()
        self.db.execute("ATTACH DATABASE ? AS shard", (str(other),))
        try:
            for table in ("results", "predictions", "figures"):
                self.db.execute(f"INSERT OR IGNORE INTO {table} SELECT * FROM shard.{table}")
            for table in ("models", "datasets"):
                self.db.execute(f"INSERT OR IGNORE INTO {table} SELECT * FROM shard.{table}")
            self.db.commit()
        finally:
            self.db.execute("DETACH DATABASE shard")
        return self.count() - before

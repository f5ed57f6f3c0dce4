"""The results store: one SQLite file (stdlib ``sqlite3``) per benchmark output folder.

Tables (schema version :data:`SCHEMA_VERSION`, recorded in ``info``):

- ``info``: ``schema`` (the version), ``migrated_from`` (if an older store was migrated) and
  ``seconds_note`` (how ``seconds`` is measured).
- ``runs``: one row per invocation: the config (JSON) and its hash, library versions, seed,
  start and end times. A store holds exactly one config; ``--resume`` with another config is
  refused.
- ``results``: one row per ``(model, dataset, image, method)``, UNIQUE: an ``empty`` flag, the
  target class, label, predicted class, confidence and the seconds per image (for CAM methods
  computed together, the shared call's time divided by the batch size; see ``batches``).
- ``metrics``: long format, one row per ``(model, dataset, image, method, metric)``, UNIQUE;
  ``value`` NULL = NaN = empty map. A metric added to :data:`camwall.metrics.METRICS` later
  needs no new column, so older stores keep opening.
- ``batches``: one row per computed batch: its images, the CAM methods computed together in one
  :func:`camwall.cams.compute_cams` call, and that shared call's wall time in seconds.
- ``predictions``: one row per ``(model, dataset, image)`` for every model (walled and
  baseline), to compute accuracies.
- ``models``, ``datasets``: JSON descriptions (dead zone mask as PNG, class names, sizes).
- ``figures``: PNG blobs of the first images of each dataset and of their saliency maps, so that
  ``camwall report DIR`` can redraw every figure from the store alone.

A batch (its result rows, metrics, figures and timing) is written in one transaction: stored
whole or not at all. Schema 1 (one column per metric) is migrated on open: in place when the
store is opened for writing, in memory when it is opened read-only. A store written by a newer
camwall (a higher schema) is refused with a message saying so.
"""

from __future__ import annotations

import errno
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

__all__ = [
    "SCHEMA_VERSION",
    "STORE_NAME",
    "BatchRecord",
    "ReadOnlyStore",
    "ResultRow",
    "Store",
    "config_hash",
    "png_to_array",
    "store_error",
    "to_png",
]

STORE_NAME = "results.sqlite"
SCHEMA_VERSION = 2
"""1: one REAL column per metric in ``results``. 2: metrics in the long ``metrics`` table, and
the ``batches`` table of shared-call timings."""

SECONDS_NOTE = (
    "results.seconds is per image: CAM methods of one batch are computed together in one "
    "compute_cams call (shared forward/backward passes) and each gets that call's time divided "
    "by the batch size; controls are timed alone. batches.seconds is the shared call's time."
)

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

KEY = ("model", "dataset", "image", "method")
RESULT_COLUMNS = (*KEY, "empty", "label", "target", "predicted", "confidence", "seconds")
_TABLES = f"""
CREATE TABLE IF NOT EXISTS info (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS runs (
    id INTEGER PRIMARY KEY AUTOINCREMENT, config TEXT NOT NULL,
    config_hash TEXT NOT NULL, versions TEXT NOT NULL, seed INTEGER NOT NULL,
    started REAL NOT NULL, finished REAL);
CREATE TABLE IF NOT EXISTS results (
    model TEXT NOT NULL, dataset TEXT NOT NULL, image INTEGER NOT NULL,
    method TEXT NOT NULL, empty INTEGER NOT NULL, label INTEGER NOT NULL,
    target INTEGER NOT NULL, predicted INTEGER NOT NULL, confidence REAL NOT NULL,
    seconds REAL NOT NULL, UNIQUE ({", ".join(KEY)}));
CREATE TABLE IF NOT EXISTS metrics (
    model TEXT NOT NULL, dataset TEXT NOT NULL, image INTEGER NOT NULL,
    method TEXT NOT NULL, metric TEXT NOT NULL, value REAL,
    UNIQUE ({", ".join(KEY)}, metric));
CREATE TABLE IF NOT EXISTS batches (
    model TEXT NOT NULL, dataset TEXT NOT NULL, images TEXT NOT NULL,
    methods TEXT NOT NULL, seconds REAL NOT NULL, UNIQUE (model, dataset, images, methods));
CREATE TABLE IF NOT EXISTS predictions (
    model TEXT NOT NULL, dataset TEXT NOT NULL, image INTEGER NOT NULL,
    label INTEGER NOT NULL, predicted INTEGER NOT NULL, confidence REAL NOT NULL,
    UNIQUE (model, dataset, image));
CREATE TABLE IF NOT EXISTS models (name TEXT PRIMARY KEY, info TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS datasets (name TEXT PRIMARY KEY, info TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS figures (
    model TEXT NOT NULL, dataset TEXT NOT NULL, image INTEGER NOT NULL,
    method TEXT NOT NULL, png BLOB NOT NULL,
    UNIQUE ({", ".join(KEY)}));
"""
_MERGED = {
    "results": RESULT_COLUMNS,
    "metrics": (*KEY, "metric", "value"),
    "batches": ("model", "dataset", "images", "methods", "seconds"),
    "predictions": ("model", "dataset", "image", "label", "predicted", "confidence"),
    "figures": (*KEY, "png"),
    "models": ("name", "info"),
    "datasets": ("name", "info"),
}


def config_hash(config: dict[str, Any]) -> str:
    """SHA-256 of the result-defining part of ``config`` (keys in :data:`RESULT_KEYS`, and
    ``explainer_options`` when there are any: a config without them hashes as before)."""
    part = {k: config.get(k) for k in RESULT_KEYS}
    if config.get("explainer_options"):
        part["explainer_options"] = config["explainer_options"]
    return runtime_hash(part)[:16]


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


@dataclass(frozen=True)
class BatchRecord:
    """The CAM ``methods`` computed together on ``images`` in one call of ``seconds``."""

    model: str
    dataset: str
    images: tuple[int, ...]
    methods: tuple[str, ...]
    seconds: float


class ReadOnlyStore(CamwallError):
    """The store (or its folder) cannot be written; it can still be opened ``readonly``."""


def store_error(path: Path, err: BaseException) -> CamwallError:
    """One line for a store that cannot be opened or written: a full disk and a read-only
    store name the folder and the cause (the results stored so far are kept; never remove the
    store); only a file that is not a SQLite store at all is called that."""
    text = str(err)
    if getattr(err, "errno", None) == errno.ENOSPC or "disk is full" in text:
        return CamwallError(
            f"{path.parent}: the disk is full ({text}); the results stored so far in {path.name} "
            "are kept. Free some space there and run again with --resume, or choose another --out."
        )
    if "readonly" in text or "read-only" in text or getattr(err, "errno", None) == errno.EROFS:
        return ReadOnlyStore(
            f"{path}: the store is read-only ({text}); make it and its folder writable to add "
            "to it (`camwall report` only reads it), or choose another --out."
        )
    if isinstance(err, (sqlite3.OperationalError, OSError)):  # locked, cannot open, I/O error
        return CamwallError(f"{path}: cannot use the results store ({text}); nothing was changed.")
    return CamwallError(
        f"{path} is not a camwall results store ({text}); move it aside or choose another --out."
    )


def _sql_float(v: float | None) -> float | None:
    return None if v is None or math.isnan(v) else float(v)


def _schema_of(db: sqlite3.Connection) -> int | None:
    """The schema version recorded in ``db``; None for an empty database."""
    tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    if not tables:
        return None
    if "info" not in tables or "results" not in tables:
        raise sqlite3.DatabaseError("no info/results tables")
    row = db.execute("SELECT value FROM info WHERE key='schema'").fetchone()
    if row is None or not str(row[0]).isdigit():
        raise sqlite3.DatabaseError(f"unreadable schema version {row and row[0]!r}")
    return int(row[0])


def _migrate_v1(db: sqlite3.Connection) -> None:
    """Schema 1 -> 2 in one transaction: metric columns become rows of ``metrics``."""
    cols = [r[1] for r in db.execute("PRAGMA table_info(results)")]
    metric_cols = [c for c in cols if c not in RESULT_COLUMNS]
    keys = ", ".join(KEY)
    db.execute("BEGIN")
    try:
        db.execute("ALTER TABLE results RENAME TO results_v1")
        # executescript would commit first: the statements run one by one, in this transaction
        for statement in _TABLES.split(";"):
            if statement.strip():
                db.execute(statement)
        db.execute(
            f"INSERT INTO results ({', '.join(RESULT_COLUMNS)}) "
            f"SELECT {', '.join(RESULT_COLUMNS)} FROM results_v1"
        )
        for c in metric_cols:
            db.execute(
                f"INSERT INTO metrics ({keys}, metric, value) "
                f'SELECT {keys}, ?, "{c}" FROM results_v1',
                (c,),
            )
        db.execute("DROP TABLE results_v1")
        db.execute("UPDATE info SET value=? WHERE key='schema'", (str(SCHEMA_VERSION),))
        db.execute("INSERT OR REPLACE INTO info VALUES ('migrated_from', '1')")
        db.execute("INSERT OR REPLACE INTO info VALUES ('seconds_note', ?)", (SECONDS_NOTE,))
        db.commit()
    except BaseException:
        db.rollback()
        raise


class Store:
    """A results store at ``path`` (created if missing). Use as a context manager or ``close()``.

    Args:
        path: the SQLite file.
        readonly: open without creating or writing (an older schema is migrated in memory).

    Raises:
        CamwallError: not a camwall store, no store (``readonly``), or a store written by a
        newer camwall (higher schema version).
    """

    def __init__(self, path: str | Path, readonly: bool = False) -> None:
        self.path = Path(path)
        if readonly and not self.path.is_file():
            raise CamwallError(
                f"no results store at {self.path}; run `camwall bench --out {self.path.parent}` "
                "first."
            )
        try:
            self.db = self._connect(readonly)
            self.schema = self._upgrade(readonly)
            self.db.execute("SELECT count(*) FROM results").fetchone()
        except (sqlite3.DatabaseError, OSError) as err:
            raise store_error(self.path, err) from None

    def _connect(self, readonly: bool) -> sqlite3.Connection:
        if not readonly:
            db = sqlite3.connect(self.path, timeout=60)
            db.execute("PRAGMA journal_mode=WAL")
            return db
        db = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, timeout=60)
        db.execute("PRAGMA query_only=1")
        return db

    def _upgrade(self, readonly: bool) -> int:
        """Create, check or migrate the schema; returns the schema version now open."""
        version = _schema_of(self.db)
        if version is not None and version > SCHEMA_VERSION:
            self.db.close()
            raise CamwallError(
                f"{self.path} was written by a newer camwall (store schema {version}; this "
                f"camwall reads schemas 1 to {SCHEMA_VERSION}); upgrade camwall to read it, or "
                "choose another --out."
            )
        if version == SCHEMA_VERSION:
            return version
        if readonly:
            if version is None:
                raise sqlite3.DatabaseError("empty database")
            memory = sqlite3.connect(":memory:")
            self.db.backup(memory)
            self.db.close()
            self.db = memory
        if version == 1:
            _migrate_v1(self.db)
        else:
            self._create()
        if readonly:
            self.db.execute("PRAGMA query_only=1")
        return SCHEMA_VERSION

    # -- lifecycle ------------------------------------------------------------------------

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.db.close()

    def _create(self) -> None:
        self.db.executescript(_TABLES)
        self.db.execute("INSERT OR IGNORE INTO info VALUES ('schema', ?)", (str(SCHEMA_VERSION),))
        self.db.execute("INSERT OR IGNORE INTO info VALUES ('seconds_note', ?)", (SECONDS_NOTE,))
        self.db.commit()

    def meta(self) -> dict[str, str]:
        """The ``info`` table: ``schema``, ``seconds_note``, ``migrated_from`` (if migrated)."""
        return dict(self.db.execute("SELECT key, value FROM info").fetchall())

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
        keys = (*RESULT_KEYS, "explainer_options")
        diff = [k for k in keys if (old.get(k) or None) != (config.get(k) or None)]
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

    def _insert_results(self, rows: Sequence[ResultRow]) -> int:
        """Insert result rows and their metrics (no commit); existing keys are kept as they are."""
        added = 0
        for r in rows:
            key = (r.model, r.dataset, r.image, r.method)
            cur = self.db.execute(
                f"INSERT OR IGNORE INTO results ({', '.join(RESULT_COLUMNS)}) "
                "VALUES (?,?,?,?,?,?,?,?,?,?)",
                (*key, int(r.empty), r.label, r.target, r.predicted, r.confidence, r.seconds),
            )
            if cur.rowcount == 1:
                added += 1
                self.db.executemany(
                    "INSERT OR IGNORE INTO metrics VALUES (?,?,?,?,?,?)",
                    [(*key, n, _sql_float(v)) for n, v in r.metrics.items()],
                )
        return added

    def add_results(self, rows: Sequence[ResultRow]) -> int:
        """Insert and commit result rows; rows whose key exists are skipped. Returns # added."""
        with self.db:
            return self._insert_results(rows)

    def add_batch(
        self,
        rows: Sequence[ResultRow],
        figures: Sequence[tuple[str, str, int, str, bytes]] = (),
        batch: BatchRecord | Sequence[BatchRecord] | None = None,
    ) -> int:
        """Store one batch whole or not at all (one transaction): rows, figure PNGs, timings
        (one :class:`BatchRecord` or several: the shared CAM call and each explainer's call).

        Returns:
            The number of result rows added (existing keys are kept as they are).
        """
        with self.db:  # commits on success, rolls back on any exception
            added = self._insert_results(rows)
            self.db.executemany("INSERT OR IGNORE INTO figures VALUES (?,?,?,?,?)", figures)
            records = [batch] if isinstance(batch, BatchRecord) else list(batch or [])
            self.db.executemany(
                "INSERT OR IGNORE INTO batches VALUES (?,?,?,?,?)",
                [
                    (
                        b.model,
                        b.dataset,
                        json.dumps(list(b.images)),
                        json.dumps(list(b.methods)),
                        float(b.seconds),
                    )
                    for b in records
                ],
            )
        return added

    def metric_names(self) -> list[str]:
        """Names of the metrics stored (in the order first stored)."""
        rows = self.db.execute("SELECT metric FROM metrics GROUP BY metric ORDER BY min(rowid)")
        return [r[0] for r in rows]

    def results(self) -> list[dict[str, Any]]:
        """All result rows as dicts, ordered by key, with one entry per metric.

        Every :data:`camwall.metrics.METRICS` name is present; NULL (empty map) and metrics
        that this store does not hold (added to camwall after it was written) read as NaN.
        """
        values: dict[tuple[Any, ...], dict[str, float]] = {}
        for *key, name, value in self.db.execute("SELECT * FROM metrics"):
            values.setdefault(tuple(key), {})[name] = math.nan if value is None else value
        cur = self.db.execute(
            f"SELECT {', '.join(RESULT_COLUMNS)} FROM results "
            "ORDER BY model, dataset, method, image"
        )
        nan = dict.fromkeys(METRICS.names(), math.nan)
        out = []
        for row in cur.fetchall():
            d = dict(zip(RESULT_COLUMNS, row))
            out.append({**d, **nan, **values.get(row[:4], {})})
        return out

    def batches(self) -> list[dict[str, Any]]:
        """The shared-call timings: ``model, dataset, images, methods, seconds`` per batch."""
        rows = self.db.execute("SELECT * FROM batches ORDER BY rowid").fetchall()
        cols = _MERGED["batches"]
        return [
            {**dict(zip(cols, r)), "images": json.loads(r[2]), "methods": json.loads(r[3])}
            for r in rows
        ]

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

        ``other`` is opened (and migrated if older) first. Returns the number of result rows
        added.
        """
        Store(other).close()
        before = self.count()
        self.db.execute("ATTACH DATABASE ? AS shard", (str(other),))
        try:
            with self.db:
                for table, cols in _MERGED.items():
                    names = ", ".join(cols)
                    self.db.execute(
                        f"INSERT OR IGNORE INTO {table} ({names}) SELECT {names} FROM shard.{table}"
                    )
        finally:
            self.db.execute("DETACH DATABASE shard")
        return self.count() - before

"""The wall benchmark: run CAM methods on walled models, store every result, write a report.

Public API (import from ``camwall.bench``)::

    from camwall.bench import BenchModel, BenchDataset, run_bench, write_report

    store = run_bench([BenchModel(...)], [BenchDataset(...)], ["gradcam", "uniform"], "out")
    write_report("out")           # table.md, table.csv, summary.json, figures, report.html

The command line is ``camwall bench`` (see ``docs/bench.md``) and ``camwall report DIR``.
"""

from camwall.bench._plan import FIGURE_IMAGES, BenchDataset, BenchModel, BenchPlan
from camwall.bench._report import reading, write_report
from camwall.bench._runner import Loader, check_out_dir, resolve_device, run_bench
from camwall.bench._store import STORE_NAME, ResultRow, Store, config_hash
from camwall.bench._summary import PAPER, build_summary

__all__ = [
    "FIGURE_IMAGES",
    "PAPER",
    "STORE_NAME",
    "BenchDataset",
    "BenchModel",
    "BenchPlan",
    "Loader",
    "ResultRow",
    "Store",
    "build_summary",
    "check_out_dir",
    "config_hash",
    "reading",
    "resolve_device",
    "run_bench",
    "write_report",
]

"""``camwall bench`` (run the wall benchmark) and ``camwall report DIR`` (redraw its outputs)."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

from camwall._cliargs import (
    MAX_IMAGES,
    add_batch_size,
    add_device,
    add_no_progress,
    add_out,
    add_seed,
    add_target_layer,
    input_path,
    int_in,
    name_or_path,
)
from camwall.errors import CamwallError

__all__ = ["methods_table", "register", "run_bench", "run_methods", "run_report"]

ORDER = 10  # place in `camwall --help`

DEFAULT_OUT = "bench-out"


def register(subparsers: Any) -> None:
    """Add ``camwall bench``, ``camwall report`` and ``camwall methods``."""
    p = subparsers.add_parser(
        "bench",
        help="run the wall benchmark: CAM leakage into the dead zone, table, figures, report",
        description=(
            "Run CAM methods on a walled model and measure how much saliency lands in the dead "
            "zone (pixels the model provably cannot see). With no arguments: the Fashion walled "
            "+ baseline pair (shipped) on fashion-stackmix and fashion-stackpair, and the "
            "shipped grid model fashion-grid-vgg on fashion-grid (100 images each), all nine "
            "methods plus the uniform and random controls. Results go to a resumable SQLite "
            "store and a report in --out. "
            "Under `torchrun --nproc_per_node N -m camwall bench ...` images are sharded."
        ),
    )
    _model_arguments(p)
    _dataset_arguments(p)
    _method_arguments(p)
    _run_arguments(p)
    p.set_defaults(func=run_bench)
    _register_report(subparsers)
    _register_methods(subparsers)


def _model_arguments(p: argparse.ArgumentParser) -> None:
    """``--model``, ``--baseline``, ``--weights``, ``--wall``, ``--target-layer``, ``--grid``,
    ``--retrain``, ``--cache-dir``."""
    p.add_argument(
        "--model",
        action="append",
        type=name_or_path,
        metavar="NAME_OR_CHECKPOINT",
        help="walled model to test: a camwall checkpoint (NAME.safetensors + NAME.json) or a "
        "registry name (with --weights); repeatable. Default: the shipped fashion-vgg pair.",
    )
    p.add_argument(
        "--baseline",
        action="append",
        type=name_or_path,
        metavar="NAME_OR_CHECKPOINT",
        help="unwalled model whose predictions and accuracy are recorded too; repeatable",
    )
    p.add_argument(
        "--weights",
        type=name_or_path,
        metavar="FILE.safetensors",
        help="weights for a registry/torchvision --model",
    )
    p.add_argument(
        "--wall",
        action="append",
        default=[],
        type=name_or_path,
        metavar="LAYER:REGION",
        help="wall to insert into a torchvision --model, e.g. 'layer3:rows=4:' (repeatable)",
    )
    add_target_layer(p)
    p.add_argument(
        "--grid",
        action="store_true",
        help="test the shipped fashion-grid-vgg (a wall per cell's logits) on fashion-grid even "
        "with --model (the default run includes it already)",
    )
    p.add_argument(
        "--retrain",
        action="store_true",
        help="train the default pair from scratch (camwall.train.cached_pair, then cached) "
        "instead of using the pair shipped with camwall",
    )
    p.add_argument(
        "--cache-dir", type=input_path, metavar="DIR", help="cache of --retrain'ed models"
    )


def _dataset_arguments(p: argparse.ArgumentParser) -> None:
    """``--dataset``, ``--images``, ``--seed``."""
    from camwall.data import DATASETS

    p.add_argument(
        "--dataset",
        action="append",
        type=name_or_path,
        metavar="NAME_OR_DIR",
        help=f"registry dataset ({', '.join(DATASETS.names())}) or a folder from "
        "`camwall stackmix` / `camwall stackgen` / an ImageFolder tree; repeatable",
    )
    p.add_argument(
        "--images",
        type=int_in(1, MAX_IMAGES),
        default=100,
        metavar="N",
        help="images per dataset (default 100)",
    )
    add_seed(p, "dataset and control seed")


def _method_arguments(p: argparse.ArgumentParser) -> None:
    """``--methods``, ``--explainer-option``, ``--list-methods``."""
    from camwall.cams import DEFAULT_METHODS, METHODS
    from camwall.metrics import CONTROLS

    p.add_argument(
        "--methods",
        default="all",
        help=f"'all' (the default CAMs: {', '.join(DEFAULT_METHODS)}; with the controls) or a "
        f"comma list of CAM methods ({', '.join(METHODS.names())}), "
        f"controls ({', '.join(CONTROLS.names())}) and any explainer: captum:NAME, "
        "gradcam:NAME, torchcam:NAME, py:package.module:function (see `camwall methods`); "
        "default: all (the nine CAMs and the controls)",
    )
    p.add_argument(
        "--explainer-option",
        action="append",
        default=[],
        metavar="NAME.KEY=VALUE",
        help="an option of an explainer in --methods, e.g. "
        "'captum:Occlusion.sliding_window_shapes=(1,8,8)' (VALUE read as a Python literal, "
        "else as a string); repeatable",
    )
    p.add_argument(
        "--list-methods",
        action="store_true",
        help="list every method name with its family and source, and exit",
    )


def _run_arguments(p: argparse.ArgumentParser) -> None:
    """``--out``, ``--device``, ``--batch-size``, ``--resume``, ``--no-progress``."""
    add_out(p, DEFAULT_OUT)
    add_device(p)
    add_batch_size(p, None, "images per batch (default: 64 for inputs up to 128x128, else 16)")
    p.add_argument("--resume", action="store_true", help="continue an interrupted run in --out")
    add_no_progress(p)


def _register_report(subparsers: Any) -> None:
    r = subparsers.add_parser(
        "report",
        help="regenerate the tables, figures and report.html of a bench output folder",
        description="Regenerate table.md, table.csv, summary.json, the figures and report.html "
        "from DIR/results.sqlite, without recomputing anything.",
    )
    r.add_argument("dir", type=input_path, metavar="DIR", help="a `camwall bench --out` folder")
    r.set_defaults(func=run_report)


def _register_methods(subparsers: Any) -> None:
    m = subparsers.add_parser(
        "methods",
        help="list every saliency method the bench takes: name, family, source, installed",
        description="List every method name `camwall bench --methods` takes (camwall's CAMs, "
        "the controls, captum:NAME, gradcam:NAME, torchcam:NAME), with its family, its source, "
        "and whether its package is installed (with the pip extra when not). "
        "py:package.module:function names any callable of yours.",
    )
    m.add_argument("pattern", nargs="?", default="*", help="fnmatch pattern, e.g. 'captum:*'")
    m.add_argument("--json", action="store_true", help="print JSON instead of a table")
    m.set_defaults(func=run_methods)


def parse_methods(text: str) -> list[str]:
    """``all`` or a comma list -> method names, validated (``all``: the default CAMs, then the
    controls; the other native methods, e.g. ``fullgrad``, are asked for by name).

    A name is an engine CAM, a control, a registered explainer (``captum:Saliency``, ...) or
    ``py:package.module:function``; an unknown one is a CamwallError with a did-you-mean.
    """
    from camwall.cams import DEFAULT_METHODS, METHODS
    from camwall.metrics import CONTROLS

    if text.strip() == "all":
        return [*DEFAULT_METHODS, *CONTROLS.names()]
    names = [t.strip() for t in text.split(",") if t.strip()]
    if not names:
        raise CamwallError("--methods is empty; pass 'all' or e.g. 'gradcam,hirescam,uniform'.")
    for n in names:
        if n not in CONTROLS and n not in METHODS and not n.startswith("py:"):
            from camwall.explainers import EXPLAINERS

            if n not in EXPLAINERS:
                from camwall.errors import did_you_mean

                raise CamwallError(
                    f"--methods: unknown method {n!r}.{did_you_mean(n, EXPLAINERS.names())} "
                    "Choose from: all, the names `camwall methods` lists, or "
                    "py:package.module:function."
                )
    if len(set(names)) != len(names):
        raise CamwallError(f"--methods lists a method twice: {text!r}.")
    return names


def methods_table(rows: list[dict[str, Any]]) -> str:
    """The text of ``camwall methods``: one aligned line per method, grouped by family."""
    from camwall.bench._methods import FAMILY_ORDER
    from camwall.explainers import FAMILIES

    lines = []
    width = max(len(r["name"]) for r in rows)
    for family in FAMILY_ORDER:
        mine = [r for r in rows if r["family"] == family]
        if not mine:
            continue
        about = FAMILIES[family]
        lines.append(f"{family}:" if about == family else f"{family} ({about}):")
        for r in mine:
            state = "installed" if r["installed"] else f"not installed: {r['pip']}"
            lines.append(f"  {r['name']:<{width}}  {r['source']:<16}  {state}")
        lines.append("")
    lines.append("py:package.module:function  user  your callable (family: fn.camwall_family)")
    return "\n".join(lines)


def run_methods(args: argparse.Namespace) -> int:
    import json

    from camwall.bench._methods import method_rows

    rows = method_rows(getattr(args, "pattern", "*"))
    if not rows:
        raise CamwallError(f"no method matches {args.pattern!r}; try `camwall methods`.")
    print(json.dumps(rows, indent=2) if getattr(args, "json", False) else methods_table(rows))
    return 0


def run_bench(args: argparse.Namespace) -> int:
    """``camwall bench``: the arguments, checked, then :func:`camwall.bench.run_bench` (which
    locks ``--out`` and checks ``--resume`` before :func:`_loader` loads or trains a model)."""
    from camwall.bench import _inputs as inputs
    from camwall.bench._runner import run_bench as run

    if args.list_methods:
        return run_methods(args)
    methods = parse_methods(args.methods)
    _check_bench_args(args)
    options = _explainer_options(args, methods)
    config = _bench_config(args, methods, options)
    for spec in config["datasets"]:
        inputs.check_dataset_spec(spec)
    out = Path(args.out)
    run(
        _loader(args, config),
        None,
        methods,
        out,
        config=config,
        device=args.device,
        batch_size=args.batch_size,
        resume=args.resume,
        seed=args.seed,
        progress=not args.no_progress,
        explainer_options=config.get("explainer_options") or {},
    )
    if os.environ.get("RANK", "0") == "0":  # torchrun: rank 0 prints
        print(f"camwall bench: wrote {out / 'report.html'} and {out / 'table.md'}")
        print((out / "table.md").read_text().split("\n## ")[0])
    return 0


def _check_bench_args(args: argparse.Namespace) -> None:
    # --images, --seed and --batch-size are range-checked by their argparse types.
    if args.weights and not args.model:
        raise CamwallError("--weights needs a registry --model NAME to load them into.")
    if args.retrain and args.model:
        raise CamwallError("--retrain trains the default pair; drop it when passing --model.")


def _explainer_options(args: argparse.Namespace, methods: list[str]) -> dict[str, Any]:
    """``--explainer-option NAME.KEY=VALUE`` -> ``{name: {key: value}}``, checked early."""
    from camwall.bench._methods import check_methods
    from camwall.explainers import parse_explainer_options

    options = parse_explainer_options(args.explainer_option)
    check_methods(methods, options)
    return options


def _default_specs(args: argparse.Namespace) -> tuple[list[str], list[str]]:
    """``--model`` / ``--baseline`` specs; by default the shipped (or ``--retrain``) pair and the
    :data:`DEFAULT_MODELS` whose dataset runs (``--grid`` adds the grid model in any case)."""
    from camwall.bench._inputs import DEFAULT_PRESET

    source = "preset" if args.retrain else "shipped"
    models = args.model or [f"{source}:{DEFAULT_PRESET}:walled"]
    baselines = args.baseline or ([] if args.model else [f"{source}:{DEFAULT_PRESET}:baseline"])
    if not args.model:
        models += [s for s, d in DEFAULT_MODELS if d is None or d in _datasets(args)]
    if getattr(args, "grid", False) and GRID_SPEC not in models:
        models = [*models, GRID_SPEC]
    return models, baselines


def _datasets(args: argparse.Namespace) -> list[str]:
    """``--dataset``, else the default datasets and those of :data:`DEFAULT_MODELS` (without
    ``--model``) or of ``--grid``."""
    from camwall.bench._inputs import DEFAULT_DATASETS

    if args.dataset:
        return list(args.dataset)
    extra = [d for _, d in DEFAULT_MODELS if d is not None and not args.model]
    if getattr(args, "grid", False):
        extra.append(GRID_DATASET)
    return list(dict.fromkeys([*DEFAULT_DATASETS, *extra]))


def _bench_config(
    args: argparse.Namespace, methods: list[str], options: dict[str, Any]
) -> dict[str, Any]:
    from camwall.bench._methods import method_config

    models, baselines = _default_specs(args)
    return {
        "models": models,
        "baselines": baselines,
        "weights": args.weights,
        "walls": args.wall,
        "datasets": _datasets(args),
        "methods": methods,
        "target_layer": args.target_layer,
        "images": args.images,
        "seed": args.seed,
        **method_config(methods, options),
    }


def _loader(args: argparse.Namespace, config: dict[str, Any]) -> Any:
    """The loader :func:`camwall.bench.run_bench` calls once ``--out`` is locked: the models
    (default pair shipped or ``--retrain``ed, ``--model``, ``--baseline``), then the datasets."""
    from camwall.bench import _inputs as inputs

    def load(dist: Any) -> tuple[list[Any], list[Any]]:
        paths = _default_pair(args, dist) if not args.model else {}
        models = [
            inputs.resolve_model(
                _spec_path(s, paths),
                name=_shipped_name(s),
                weights=args.weights,
                target_layer=args.target_layer,
                walls=args.wall,
            )
            for s in config["models"]
        ]
        models += [
            inputs.resolve_model(_spec_path(s, paths), name=_shipped_name(s), walled=False)
            for s in config["baselines"]
        ]
        _dedupe_names(models)
        channels, size = inputs.reading_size(models)
        datasets = [
            inputs.resolve_dataset(d, args.images, args.seed, channels, size)
            for d in config["datasets"]
        ]
        return models, datasets

    return load


GRID_SPEC = "shipped:fashion-grid-vgg"
"""The ``--model`` spec of the shipped grid model (what ``--grid`` adds)."""

GRID_DATASET = "fashion-grid"
"""The dataset the grid model reads."""

DEFAULT_MODELS: tuple[tuple[str, str | None], ...] = ((GRID_SPEC, GRID_DATASET),)
"""The walled models the default run tests besides the fashion-vgg pair: ``(spec, the dataset
it needs, or None for a 64 x 64 single-output model that reads the default datasets)``. Left
out when ``--model`` is given, or when ``--dataset`` leaves out the dataset it needs. One line
per model, e.g. ``("shipped:fashion-vit", None)``."""


def _spec_path(spec: str, paths: dict[str, str]) -> str:
    """A model spec as a path: the default pair's, ``shipped:NAME`` (a shipped walled model,
    :func:`camwall.weights.shipped_model`), else the spec itself."""
    if spec in paths:
        return paths[spec]
    if spec.startswith("shipped:") and spec.count(":") == 1:
        from camwall.weights import shipped_model

        return str(shipped_model(spec.split(":", 1)[1]))
    return spec


def _shipped_name(spec: str) -> str | None:
    """The report name of a ``shipped:NAME`` model (``NAME``), else None (the default)."""
    return spec.split(":", 1)[1] if spec.startswith("shipped:") and spec.count(":") == 1 else None


def _default_pair(args: argparse.Namespace, dist: Any) -> dict[str, str]:
    """The default walled + baseline pair: shipped in the package, or ``--retrain``ed."""
    from camwall.bench._inputs import DEFAULT_PRESET

    if not args.retrain:
        from camwall.weights import shipped_pair

        walled, baseline = shipped_pair(DEFAULT_PRESET)
        source = "shipped"
    else:
        walled, baseline = _retrained_pair(args, dist)
        source = "preset"
    return {
        f"{source}:{DEFAULT_PRESET}:walled": str(walled),
        f"{source}:{DEFAULT_PRESET}:baseline": str(baseline),
    }


def _retrained_pair(args: argparse.Namespace, dist: Any) -> tuple[Path, Path]:
    """Train (in one process) or load the default pair from the cache (``--retrain``)."""
    from camwall.bench._inputs import DEFAULT_PRESET
    from camwall.train import cached_pair

    if dist.world > 1 and not _pair_cached(args.cache_dir):
        # Training inside a torchrun job would start a DDP run that the waiting ranks do not
        # join; train the pair once in one process instead.
        raise CamwallError(
            f"the --retrain {DEFAULT_PRESET} pair is not in the cache yet, and it is not trained "
            "under torchrun. Run `camwall bench --retrain` once in one process (it trains and "
            "caches the pair), or pass --model/--baseline checkpoints."
        )
    if dist.rank == 0:
        print(
            f"camwall bench: loading the retrained {DEFAULT_PRESET} walled + baseline pair from "
            "the cache (training it first if needed: several minutes on CPU) ...",
            file=sys.stderr,
        )
    walled, baseline = cached_pair(DEFAULT_PRESET, args.cache_dir, device=str(args.device))
    return Path(walled), Path(baseline)


def _pair_cached(cache_dir: str | None) -> bool:
    from camwall.bench._inputs import DEFAULT_PRESET
    from camwall.train import pair_cache_folder

    folder = pair_cache_folder(DEFAULT_PRESET, cache_dir)
    return all(
        (folder / f"{v}.{ext}").is_file()
        for v in ("walled", "baseline")
        for ext in ("safetensors", "json")
    )


def _dedupe_names(models: list[Any]) -> None:
    seen: dict[str, int] = {}
    for m in models:
        if m.name in seen:
            seen[m.name] += 1
            m.name = f"{m.name}-{seen[m.name]}"
        else:
            seen[m.name] = 1


def run_report(args: argparse.Namespace) -> int:
    from camwall.bench._report import write_report
    from camwall.runtime import folder_lock

    path = Path(args.dir)
    if not path.is_dir():
        raise CamwallError(f"{path}: no such folder; pass a `camwall bench --out` folder.")
    if not os.access(path, os.W_OK):
        raise CamwallError(f"{path}: not writable, so the report cannot be written there.")
    with folder_lock(path, "DIR"):  # the report rewrites the outputs: one writer at a time
        written = write_report(path)
    print(f"camwall report: wrote {len(written)} files in {path} (open {path / 'report.html'})")
    return 0

"""The plain-language reading of a benchmark: short sentences generated from the numbers.

For each walled model: where its dead zone is and what a uniform map scores; then, per
dataset, which methods respect the wall, which see through it and how much, which do no better
than a map with no information (the verdicts of :func:`camwall.bench._verdict.classify`), and
how many maps were empty. Then the accuracy of every model, a warning for models near chance,
and a warning first of all when the store is incomplete.
"""

from __future__ import annotations

from collections.abc import Mapping

from camwall.bench._results import BenchResults, DatasetResult, MethodResult, ModelResult
from camwall.bench._tables import dead_text, pct
from camwall.bench._verdict import Verdict, classify
from camwall.explainers import FAMILIES
from camwall.metrics import CONTROLS

__all__ = ["reading"]

EVAL_NOTE = (
    "Dead zones hold for models in eval mode (BatchNorm in training mode mixes statistics "
    "over the whole image); the benchmark runs every model in eval mode."
)


def reading(results: BenchResults) -> list[str]:
    """Short plain-language sentences that read the result from the numbers (one paragraph
    each): an incompleteness warning if any, then per walled model its dead zone and one
    paragraph per dataset, then accuracy and the eval-mode note."""
    if not results.models:
        return ["No walled model in the store: nothing to read."]
    out = _incomplete(results)
    multi = len(results.models) > 1
    families = results.families if results.grouped else None
    for model in results.models:
        out.append(_intro(model))
        for ds in model.datasets.values():
            if ds.stored or ds.incomplete:
                out.append(_dataset(model, ds, multi, families))
    out += _accuracy(results)
    out.append(EVAL_NOTE)
    return out


def join(names: list[str]) -> str:
    """``a``, ``a and b``, ``a, b and c``."""
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]


def _incomplete(results: BenchResults) -> list[str]:
    cells = [
        (m.name, ds.dataset, r)
        for m in results.models
        for ds in m.datasets.values()
        for r in ds.methods.values()
    ]
    short = [c for c in cells if not c[2].complete]
    if not short:
        return []
    text = (
        f"Warning: these results are incomplete (an interrupted run?): {len(short)} of "
        f"{len(cells)} (model, dataset, method) cells have fewer images than the run asked "
        "for, and their numbers may still change. They are marked (done/expected); "
        "`camwall bench --resume` with the same options completes them."
    )
    return [text]


def _intro(model: ModelResult) -> str:
    return (
        f"The model `{model.name}` provably ignores its dead zone, {dead_text(model.dead_zone)}: "
        "a faithful saliency map is exactly 0 there. "
        f"A uniform map (no information) scores μ = {pct(model.dead_zone.uniform_mu)}%."
    )


def _dataset(
    model: ModelResult,
    ds: DatasetResult,
    multi: bool,
    families: Mapping[str, str] | None = None,
) -> str:
    """One paragraph on ``ds``: its verdicts (per family, ``[Input gradient] ...``, when
    ``families`` is given), or how far the run got."""
    where = f"On {ds.dataset}" + (f" with `{model.name}`" if multi else "")
    cams = {m: r for m, r in ds.stored.items() if m not in CONTROLS}
    if ds.images == 0:
        return f"{where}: no results yet (0 of {ds.expected} images)."
    count = f"{ds.images} images"
    if ds.images < ds.expected:
        count = f"{ds.images} of {ds.expected} images so far"
    # Methods behind the others; the count above already says when all are short.
    behind = [f"{r.method} {r.images}/{r.expected}" for r in ds.incomplete if r.images < ds.images]
    if behind:
        count += "; incomplete: " + ", ".join(behind)
    if not cams:
        return f"{where} ({count}): no CAM results yet."
    parts = [f"{where} ({count}):"]
    if not families:
        return " ".join(parts + _verdicts(cams, model))
    for family, names in _by_family(cams, families):
        label = FAMILIES.get(family, family)
        parts.append(f"[{label[0].upper() + label[1:]}]")
        parts += _verdicts({m: cams[m] for m in names}, model)
    return " ".join(parts)


def _by_family(
    cams: dict[str, MethodResult], families: Mapping[str, str]
) -> list[tuple[str, list[str]]]:
    groups: dict[str, list[str]] = {}
    for m in cams:
        groups.setdefault(families.get(m, "other"), []).append(m)
    return list(groups.items())


def _verdicts(cams: dict[str, MethodResult], model: ModelResult) -> list[str]:
    """Sentences on ``cams``: which respect the wall, which see through it, empty maps."""
    parts: list[str] = []
    verdicts = {m: classify(r) for m, r in cams.items()}
    respect = [m for m, v in verdicts.items() if v is Verdict.RESPECTS]
    if respect:
        parts.append(
            f"{join(respect)} respect{'s' if len(respect) == 1 else ''} the wall "
            "(no positive pixel in the dead zone on any image)."
        )
    leaky = sorted(
        (m for m, v in verdicts.items() if v in (Verdict.LEAKS, Verdict.UNIFORM)),
        key=lambda m: -(cams[m].headline.mean or 0.0),
    )
    if leaky:
        parts += _leaks(cams, leaky, [m for m in leaky if verdicts[m] is Verdict.UNIFORM], model)
    empties = {m: r.headline.empty for m, r in cams.items() if r.headline.empty}
    if empties:
        parts.append(
            "All-zero maps, left out of the means: "
            + ", ".join(f"{m} {e}" for m, e in empties.items())
            + "."
        )
    return parts


def _leaks(
    cams: dict[str, MethodResult], leaky: list[str], worse: list[str], model: ModelResult
) -> list[str]:
    """Sentences on the methods that see through the wall, worst first."""
    worst = cams[leaky[0]]
    mu = worst.headline.mean or 0.0
    leak = worst.stats["any_leak"]
    parts = [
        f"{join(leaky)} see{'s' if len(leaky) == 1 else ''} through it. "
        f"{worst.method} leaks most: μ = {pct(mu)}% on average, "
        f"{mu / model.dead_zone.uniform_mu:.2f}× the uniform map, and "
        f"{pct(leak.mean, 0)}% of its "
        + (f"{leak.n} non-empty " if leak.empty else "")
        + "maps put saliency behind the wall."
    ]
    if len(leaky) > 1:
        best = cams[leaky[-1]]
        parts.append(
            f"The least leaky of them, {best.method}, still has μ = {pct(best.headline.mean)}%."
        )
    if worse:
        parts.append(
            f"{join(worse)} {'does' if len(worse) == 1 else 'do'} no better than a "
            "map with no information."
        )
    return parts


def _accuracy(results: BenchResults) -> list[str]:
    out = []
    for m, per in results.accuracy.items():
        classes = len(results.model_info.get(m, {}).get("class_names") or [])
        low = [
            d
            for d, a in per.items()
            if classes and a.accuracy is not None and a.accuracy < 1.5 / classes
        ]
        if low:
            out.append(
                f"Warning: {m} is near chance accuracy on {join(low)} ({classes} classes); "
                "is it trained? Maps of an untrained model say little about a method."
            )
    parts = []
    for m, per in results.accuracy.items():
        vals = ", ".join(f"{pct(a.accuracy)}% on {d}" for d, a in per.items())
        kind = "walled" if per and next(iter(per.values())).walled else "baseline"
        parts.append(f"{m} ({kind}): {vals}")
    if parts:
        out.append(
            "Accuracy against the composite's label: "
            + "; ".join(parts)
            + ". CAMs use the predicted class as target, as in the paper."
        )
    return out

"""The bench's methods: camwall's engine CAMs, the controls, and any other explainer by name.

A method name is one of

- a CAM of camwall's engine (:data:`camwall.cams.METHODS`): all of a batch's engine CAMs run
  in ONE :func:`camwall.cams.compute_cams` call (the one-pass rule);
- a control (:data:`camwall.metrics.CONTROLS`);
- any other explainer of :data:`camwall.explainers.EXPLAINERS` (``captum:NAME``,
  ``gradcam:NAME``, ``torchcam:NAME``) or a user callable ``py:package.module:function``: run
  per batch through its adapter (:class:`camwall.explainers.BoundExplainer`), timed alone.

Rows are grouped by family (:data:`camwall.explainers.FAMILIES`): CAM at a layer, input
gradient, perturbation, other, then the controls.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from torch import Tensor, nn

from camwall.errors import CamwallError

__all__ = [
    "FAMILY_ORDER",
    "bound_explainers",
    "callable_spec",
    "check_methods",
    "family_of",
    "group_by_family",
    "is_engine",
    "method_config",
    "method_rows",
    "object_family",
    "run_explainer",
]

FAMILY_ORDER = ("cam", "gradient", "perturbation", "other", "control")
"""The order of the families in the tables, figures and reading (controls last)."""


def is_engine(name: str) -> bool:
    """Whether ``name`` is computed by camwall itself (an engine CAM or a control)."""
    from camwall.cams import METHODS
    from camwall.metrics import CONTROLS

    return name in METHODS or name in CONTROLS


def check_methods(
    methods: Sequence[str],
    options: Mapping[str, Mapping[str, Any]],
    objects: Mapping[str, Any] | None = None,
) -> None:
    """Refuse unknown names, missing packages, duplicates and options nobody takes.

    ``objects`` maps names in ``methods`` to explainer objects given in Python (not looked up).

    Raises:
        CamwallError: naming the method or option and the fix.
    """
    from camwall.explainers import get_spec
    from camwall.explainers._registry import require

    if not methods:
        raise CamwallError("no method to run; pass e.g. --methods gradcam,uniform.")
    if len(set(methods)) != len(methods):
        raise CamwallError(f"--methods lists a method twice: {','.join(methods)}.")
    objects = objects or {}
    for name, obj in objects.items():
        if name not in methods or is_engine(name) or not callable(obj):
            raise CamwallError(
                f"explainer object {name!r}: it must be callable, named in the methods, and "
                "not named like a camwall CAM or control."
            )
    for m in methods:
        if not is_engine(m) and m not in objects:
            _check_known(m)
            spec = get_spec(m)  # a py: name is imported here
            if spec.module:
                require(spec.module, m)
    for name in options:
        if name not in methods:
            raise CamwallError(
                f"--explainer-option {name}.*: {name!r} is not among --methods "
                f"({', '.join(methods)}); add it or drop the option."
            )
        if is_engine(name):
            raise CamwallError(
                f"--explainer-option {name}.*: {name!r} is run by camwall's engine (all CAMs of "
                "a batch in one pass) and takes no per-method options in the bench; use "
                f"camwall.explainers.explain(model, x, {name!r}, ...) for that."
            )


def _check_known(name: str) -> None:
    from camwall.errors import did_you_mean
    from camwall.explainers import EXPLAINERS

    if not isinstance(name, str) or not (name in EXPLAINERS or name.startswith("py:")):
        raise CamwallError(
            f"unknown CAM method {name!r}.{did_you_mean(str(name), EXPLAINERS.names())} "
            "Choose from the names `camwall methods` lists (camwall's CAMs, the controls, "
            "captum:NAME, gradcam:NAME, torchcam:NAME) or py:package.module:function."
        )


def family_of(name: str, config: Mapping[str, Any] | None = None) -> str:
    """The family of method ``name``: recorded in ``config["families"]``, else looked up."""
    from camwall.cams import METHODS
    from camwall.metrics import CONTROLS

    recorded = (config or {}).get("families") or {}
    if name in recorded:
        return str(recorded[name])
    if name in CONTROLS:
        return "control"
    if name in METHODS:
        return "cam"
    if name.startswith("py:"):
        return "other"  # never import a user's module to draw a report
    from camwall.explainers import EXPLAINERS

    return EXPLAINERS.get(name).family if name in EXPLAINERS else "other"


def object_family(obj: Any) -> str:
    """The family an explainer object declares (``family`` or ``camwall_family``), else other."""
    from camwall.explainers import FAMILIES

    family = getattr(obj, "family", None) or getattr(obj, "camwall_family", None) or "other"
    return family if family in FAMILIES else "other"


def method_config(
    methods: Sequence[str],
    options: Mapping[str, Mapping[str, Any]],
    objects: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Config entries for a run with explainers: their options and every method's family.

    Empty for a run of engine methods only, so that the default config is as before.
    """
    from camwall.explainers import get_spec

    objects = objects or {}
    if all(is_engine(m) for m in methods) and not options:
        return {}
    families = {
        m: family_of(m)
        if is_engine(m)
        else object_family(objects[m])
        if m in objects
        else get_spec(m).family
        for m in methods
    }
    out: dict[str, Any] = {"families": families}
    if options:
        out["explainer_options"] = {k: dict(v) for k, v in options.items()}
    return out


def group_by_family(methods: Sequence[str], config: Mapping[str, Any] | None = None) -> list[str]:
    """``methods`` in family order (:data:`FAMILY_ORDER`), in their own order inside a family."""
    rank = {f: i for i, f in enumerate(FAMILY_ORDER)}
    return sorted(methods, key=lambda m: rank.get(family_of(m, config), len(rank)))


def callable_spec(name: str, fn: Any) -> Any:
    """An :class:`camwall.explainers.ExplainerSpec` for a callable following the protocol.

    ``fn(model, x, targets)`` is checked like a ``py:`` callable's output
    (:func:`camwall.explainers._user.call_user_function`: a tensor (numpy is refused) on
    ``x``'s device, no ``sys.exit``, ``B x H x W`` maps
    min-max normalized, or ``B x C x H x W`` input attributions reduced to ``N(sum_c |A_c|)``,
    finite floats); anything else is a CamwallError naming ``name``.
    """
    from camwall.explainers import Call, ExplainerSpec
    from camwall.explainers._user import call_user_function

    def adapter(call: Call) -> Tensor:
        return call_user_function(name, fn, call.model, call)

    return ExplainerSpec(name, object_family(fn), "user", adapter, "final", description=name)


def bound_explainers(
    methods: Sequence[str],
    target_layer: str,
    options: Mapping[str, Mapping[str, Any]],
    objects: Mapping[str, Any] | None = None,
    seed: int | None = None,
) -> dict[str, Any]:
    """``{name: explainer}`` for the non-engine methods: the given ``objects`` as they are,
    the others as :class:`camwall.explainers.BoundExplainer` bound to ``target_layer``;
    stochastic ones get ``seed`` unless their options set one."""
    from camwall.explainers import BoundExplainer, get_explainer, get_spec

    objects = objects or {}
    out: dict[str, Any] = {}
    for m in methods:
        if is_engine(m):
            continue
        if m not in objects:
            opts = dict(options.get(m, {}))
            if seed is not None and get_spec(m).stochastic:
                opts.setdefault("seed", seed)  # every batch seeded: resume gives the same maps
            out[m] = get_explainer(m, target_layer=target_layer or None, **opts)
        elif isinstance(objects[m], BoundExplainer):
            out[m] = objects[m]
        else:
            out[m] = BoundExplainer(callable_spec(m, objects[m]))
    return out


def run_explainer(
    explainer: Any, model: nn.Module, x: Tensor, targets: list[int], where: str
) -> Tensor:
    """``explainer(model, x, targets)``; any failure is a CamwallError naming it and ``where``.

    The adapter already checks the output (shape, floats, finite, device: see
    :func:`camwall.explainers.finish_maps`); an exception raised inside a user's function is
    reported with its type and message.
    """
    name = getattr(explainer, "name", repr(explainer))
    try:
        return explainer(model, x, targets)
    except CamwallError as err:
        raise CamwallError(f"{err} (bench: {where}; nothing of this batch was stored)") from err
    except Exception as err:  # a user's callable may raise anything
        raise CamwallError(
            f"explainer {name!r} failed on {where}: {type(err).__name__}: {err} "
            "(nothing of this batch was stored)"
        ) from err


def method_rows(pattern: str = "*") -> list[dict[str, Any]]:
    """Every explainer the bench takes: name, family, source, installed, pip extra, description."""
    from camwall.explainers import EXPLAINERS, list_explainers

    rows = []
    for info in list_explainers(pattern):
        extra = EXPLAINERS.get(info.name).extra
        fix = None if info.available or extra is None else f"pip install 'camwall[{extra}]'"
        rows.append(
            {
                "name": info.name,
                "family": info.family,
                "source": info.source,
                "installed": info.available,
                "pip": fix,
                "description": info.description,
            }
        )
    return rows

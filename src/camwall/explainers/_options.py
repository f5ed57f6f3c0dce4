"""Explainer options: the command-line form ``NAME.KEY=VALUE``, and routing to a library.

On the command line an option is ``--explainer-option NAME.KEY=VALUE``; ``NAME`` is an
explainer name (which may itself contain dots and colons, as in ``py:pkg.mod:fn``), ``KEY`` is
the text after the last dot before ``=``, and ``VALUE`` is read with :func:`ast.literal_eval`
(``32``, ``0.5``, ``(1, 8, 8)``, ``True``, ``None``), falling back to the plain string
(``smoothgrad``). In Python, options are keyword arguments of
:func:`camwall.explainers.get_explainer`.
"""

from __future__ import annotations

import ast
import inspect
import threading
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any

import torch

from camwall.errors import CamwallError, did_you_mean

__all__ = [
    "parse_explainer_option",
    "parse_explainer_options",
    "seeded",
    "split_options",
]


def parse_explainer_option(text: str) -> tuple[str, str, Any]:
    """Parse ``NAME.KEY=VALUE`` into ``(name, key, value)``.

    Examples::

        parse_explainer_option("captum:IntegratedGradients.n_steps=32")
        # ("captum:IntegratedGradients", "n_steps", 32)
        parse_explainer_option("captum:NoiseTunnel.nt_type=smoothgrad")
        # ("captum:NoiseTunnel", "nt_type", "smoothgrad")
    """
    left, eq, value_text = text.partition("=")
    name, dot, key = left.strip().rpartition(".")
    if not eq or not dot or not name or not key.isidentifier():
        raise CamwallError(
            f"--explainer-option {text!r} is not NAME.KEY=VALUE; e.g. "
            f"captum:IntegratedGradients.n_steps=32."
        )
    try:
        value: Any = ast.literal_eval(value_text.strip())
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        value = value_text.strip()
    return name, key, value


def parse_explainer_options(texts: Iterable[str]) -> dict[str, dict[str, Any]]:
    """Group several ``NAME.KEY=VALUE`` strings: ``{name: {key: value}}`` (later ones win)."""
    grouped: dict[str, dict[str, Any]] = {}
    for text in texts:
        name, key, value = parse_explainer_option(text)
        grouped.setdefault(name, {})[key] = value
    return grouped


def _params(fn: Callable[..., Any], skip: Iterable[str]) -> tuple[set[str], bool]:
    sig = inspect.signature(fn)
    names = {
        p.name
        for p in sig.parameters.values()
        if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and p.name != "self"
    }
    var_kw = any(p.kind is p.VAR_KEYWORD for p in sig.parameters.values())
    return names - set(skip), var_kw


def split_options(
    name: str,
    options: dict[str, Any],
    init: Callable[..., Any],
    call: Callable[..., Any],
    init_skip: Iterable[str] = (),
    call_skip: Iterable[str] = (),
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Route options to a library's constructor or call by their signatures.

    Args:
        name: the explainer, for error messages.
        options: the user's options.
        init, call: the library's constructor and call (e.g. ``cls.__init__``, ``cls.attribute``).
        init_skip, call_skip: arguments the adapter sets itself (model, inputs, target, ...).

    Returns:
        ``(constructor_kwargs, call_kwargs)``.

    Raises:
        CamwallError: an option that neither accepts, naming the valid ones.
    """
    init_names, _ = _params(init, init_skip)
    call_names, _ = _params(call, call_skip)
    ctor: dict[str, Any] = {}
    kw: dict[str, Any] = {}
    for key, value in options.items():
        if key in init_names:
            ctor[key] = value
        elif key in call_names:
            kw[key] = value
        else:
            valid = sorted(init_names | call_names)
            raise CamwallError(
                f"{name} has no option {key!r}.{did_you_mean(key, valid)} "
                f"Options: {', '.join(valid) or '(none)'}."
            )
    return ctor, kw


#: Held by every seeded block: torch's and numpy's global generators serve one at a time.
_GLOBAL_RNG = threading.RLock()


@contextmanager
def seeded(seed: int | None) -> Iterator[None]:
    """Seed torch's and numpy's global generators inside (when ``seed`` is not None).

    Both generators are restored afterwards, so a seeded explainer does not change the caller's
    random stream. Equivalent to ``torch.manual_seed(seed); np.random.seed(seed)`` before a
    direct library call. The generators are global, so seeded blocks of all threads run one
    after the other (:data:`_GLOBAL_RNG`): two threads on two models keep their own streams.
    """
    if seed is None:
        yield
        return
    import numpy as np

    devices = list(range(torch.cuda.device_count())) if torch.cuda.is_initialized() else []
    with _GLOBAL_RNG:
        state = np.random.get_state()  # noqa: NPY002
        try:
            with torch.random.fork_rng(devices=devices):
                torch.manual_seed(int(seed))
                np.random.seed(int(seed))  # noqa: NPY002 (libraries use the global stream)
                yield
        finally:
            np.random.set_state(state)  # noqa: NPY002

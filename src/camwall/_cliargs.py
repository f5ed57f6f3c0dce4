"""Shared pieces of the ``camwall`` command line: argparse types, option helpers, the parser class.

Every typed option of every sub-command goes through one of the argparse *types* below, so a bad
value is refused at parse time, before any work starts, with one line on stderr and exit status 2:

* numbers: :func:`positive_int`, :func:`non_negative_int`, :func:`seed` (``[0, 2**63 - 1]``,
  :func:`check_seed`),
  :func:`fraction` (``[0, 1]``), :func:`positive_float`, :func:`non_negative_float`,
  :func:`int_in` (a bounded int, e.g. ``--images`` or an image side);
* :func:`device` (``auto``, ``cpu``, ``cuda`` or ``cuda:N``: the one check,
  :func:`camwall.runtime.resolve_device`);
* paths: :func:`input_path` (UTF-8, non-empty), :func:`out_dir` and :func:`out_file` (also
  checked writable: not under a regular file, not in ``/proc``, ``/sys`` or ``/dev``, not a
  device). Nothing is created at parse time.

The *option helpers* (:func:`add_seed`, :func:`add_out`, :func:`add_device`, ...) declare a setting
once, with one flag name, one type and one help text, for every sub-command that takes it. A
renamed flag keeps its old spelling as a hidden alias that prints a one-line deprecation notice
(:func:`add_alias`).
"""

from __future__ import annotations

import argparse
import math
import operator
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NoReturn

__all__ = [
    "MAX_IMAGES",
    "MAX_SEED",
    "MAX_SIDE",
    "CliParser",
    "add_alias",
    "add_batch_size",
    "add_device",
    "add_no_progress",
    "add_out",
    "add_overwrite",
    "add_seed",
    "add_target_layer",
    "check_seed",
    "device",
    "fraction",
    "input_path",
    "int_in",
    "name_or_path",
    "non_negative_float",
    "non_negative_int",
    "out_dir",
    "out_file",
    "out_png",
    "positive_float",
    "positive_int",
    "seed",
    "torch_device",
]

MAX_SEED = 2**63 - 1
"""Largest seed: torch generators take a signed 64-bit seed."""

MAX_SIDE = 4096
"""Largest image side accepted on the command line (a 4096 x 4096 float map is 64 MiB)."""

MAX_IMAGES = 1_000_000
"""Largest image count accepted on the command line."""

# File systems where an output file makes no sense (kernel interfaces); /dev/shm is a tmpfs.
_VIRTUAL_ROOTS = (Path("/proc"), Path("/sys"), Path("/dev"))
_VIRTUAL_OK = (Path("/dev/shm"),)


class CliParser(argparse.ArgumentParser):
    """An ``ArgumentParser`` whose errors are one line: ``camwall: error: ...`` (exit 2).

    argparse prints the usage block before the message; the CLI promises one line per error,
    so the usage is replaced by a pointer to ``--help``.
    """

    def error(self, message: str) -> NoReturn:
        line = message.replace("\r", "\\r").replace("\n", "\\n")  # one line, whatever the input
        self.exit(2, f"camwall: error: {line} (see {self.prog} --help)\n")


# --- argparse types ---------------------------------------------------------------------------


def _int(text: str) -> int:
    try:
        return int(text, 10)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None


def _float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
    return value


def int_in(low: int, high: int, what: str = "") -> Callable[[str], int]:
    """An argparse type for integers in ``[low, high]``; ``what`` names the limit's reason."""

    def parse(text: str) -> int:
        value = _int(text)
        if value < low:
            raise argparse.ArgumentTypeError(f"must be at least {low}, got {value}")
        if value > high:
            why = f" ({what})" if what else ""
            raise argparse.ArgumentTypeError(f"must be at most {high}{why}, got {value}")
        return value

    parse.__name__ = f"int in [{low}, {high}]"  # argparse names the type in some errors
    return parse


def positive_int(text: str) -> int:
    """An integer ``>= 1``."""
    value = _int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def non_negative_int(text: str) -> int:
    """An integer ``>= 0``."""
    value = _int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {value}")
    return value


def check_seed(value: object, what: str = "--seed") -> int:
    """``value`` as an int if it is an integer in ``[0, 2**63 - 1]`` (what
    ``torch.Generator.manual_seed`` accepts; a bool is not a seed), else a CamwallError.

    The one seed check: the ``--seed`` argparse type and the library (``run_bench``, datasets)
    both use it.
    """
    from camwall.errors import CamwallError

    try:
        number = operator.index(value)  # type: ignore[arg-type]
    except TypeError:
        number = -1
    if isinstance(value, bool) or not 0 <= number <= MAX_SEED:
        raise CamwallError(f"{what} must be an integer in [0, 2**63 - 1], got {value!r}.")
    return number


def seed(text: str) -> int:
    """A seed in ``[0, 2**63 - 1]`` (:func:`check_seed`)."""
    from camwall.errors import CamwallError

    try:
        return check_seed(_int(text), "a seed")
    except CamwallError as err:
        raise argparse.ArgumentTypeError(str(err).removesuffix(".")) from None


def fraction(text: str) -> float:
    """A probability or fraction in ``[0, 1]``."""
    value = _float(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"expected a fraction in [0, 1], got {value:g}")
    return value


def positive_float(text: str) -> float:
    """A finite number ``> 0``."""
    value = _float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a number > 0, got {value:g}")
    return value


def non_negative_float(text: str) -> float:
    """A finite number ``>= 0``."""
    value = _float(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got {value:g}")
    return value


def device(text: str) -> str:
    """``auto``, ``cpu``, ``cuda`` or ``cuda:N``, checked by :func:`camwall.runtime.resolve_device`
    (the one device check: CUDA only where a GPU is visible); the name is kept, lower-cased."""
    from camwall.errors import CamwallError
    from camwall.runtime import resolve_device

    try:
        resolve_device(text)
    except CamwallError as err:
        raise argparse.ArgumentTypeError(
            str(err).removeprefix(f"--device {text}: ").removesuffix(".")
        ) from None
    return text.strip().lower()


def _utf8_path(text: str) -> Path:
    if not text:
        raise argparse.ArgumentTypeError("the path is empty; give a file or folder name")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raw = os.fsencode(text)
        raise argparse.ArgumentTypeError(
            f"the name {raw!r} is not valid UTF-8; rename it (camwall writes names into JSON)"
        ) from None
    if "\0" in text:
        raise argparse.ArgumentTypeError(f"{text!r} contains a NUL byte")
    return Path(text)


def name_or_path(text: str) -> str:
    """A registry name or a file/folder name, as text: non-empty and valid UTF-8."""
    _utf8_path(text)
    return text


def input_path(text: str) -> Path:
    """An input file or folder name: non-empty and valid UTF-8 (existence is checked later)."""
    return _utf8_path(text)


def _virtual(path: Path) -> bool:
    absolute = Path(os.path.abspath(path))
    if any(absolute.is_relative_to(ok) for ok in _VIRTUAL_OK):
        return False
    return any(absolute.is_relative_to(root) for root in _VIRTUAL_ROOTS)


def _check_parent(path: Path) -> None:
    """The nearest existing ancestor of ``path`` must be a writable folder."""
    parent = Path(os.path.abspath(path)).parent
    while not parent.exists():
        if parent.is_symlink() or parent == parent.parent:  # a dangling link or nothing at all
            break
        parent = parent.parent
    if not parent.is_dir():
        raise argparse.ArgumentTypeError(
            f"{path}: cannot write there ({parent} is a file, not a folder)"
        )
    if not os.access(parent, os.W_OK | os.X_OK):
        raise argparse.ArgumentTypeError(
            f"{path}: cannot write there (the folder {parent} is not writable)"
        )


NAME_MAX = 255
"""The longest file or folder name (bytes) that Linux, macOS and Windows file systems take."""


def _check_names(path: Path) -> None:
    """Every component of an output path must fit in :data:`NAME_MAX` bytes."""
    for part in path.parts:
        size = len(os.fsencode(part))
        if size > NAME_MAX:
            raise argparse.ArgumentTypeError(
                f"the name {part[:24]}... in the output path is {size} bytes long; file systems "
                f"take at most {NAME_MAX} bytes per name, choose a shorter one"
            )


def out_dir(text: str) -> Path:
    """An output folder: new or an existing folder, in a writable place. Not created here."""
    path = _utf8_path(text)
    _check_names(path)
    if _virtual(path):
        raise argparse.ArgumentTypeError(f"{path} is in a kernel file system; choose a real folder")
    if path.exists() and not path.is_dir():
        raise argparse.ArgumentTypeError(f"{path} exists and is not a folder")
    _check_parent(path)
    if path.is_dir() and not os.access(path, os.W_OK | os.X_OK):
        raise argparse.ArgumentTypeError(f"the folder {path} is not writable")
    return path


def out_file(text: str, suffix: str = "") -> Path:
    """An output file: new or an existing regular file, in a writable place.

    With ``suffix`` (e.g. ``".png"``), a name without an extension gets it, so the path returned
    is the one that will be written.
    """
    path = _utf8_path(text)
    _check_names(path.with_name(path.name + suffix) if suffix and not path.suffix else path)
    for candidate in (path, path.with_name(path.name + suffix) if suffix else path):
        if _virtual(candidate):
            raise argparse.ArgumentTypeError(
                f"{candidate} is in a kernel file system; choose a regular file"
            )
        if candidate.exists() and not candidate.is_file():
            raise argparse.ArgumentTypeError(f"{candidate} exists and is not a regular file")
    if suffix and not path.suffix:
        path = path.with_name(path.name + suffix)
    _check_parent(path)
    return path


_FIGURE_SUFFIXES = (".png", ".pdf", ".svg", ".jpg", ".jpeg")


def out_png(text: str) -> Path:
    """:func:`out_file` for a figure: ``NAME`` without an extension becomes ``NAME.png``; the
    extension must be one matplotlib writes (png, pdf, svg, jpg)."""
    path = out_file(text, ".png")
    if path.suffix.lower() not in _FIGURE_SUFFIXES:
        raise argparse.ArgumentTypeError(
            f"{path}: unknown figure format {path.suffix!r}; end the name with "
            f"{', '.join(_FIGURE_SUFFIXES)}"
        )
    return path


# --- option helpers ---------------------------------------------------------------------------


class _DeprecatedAlias(argparse.Action):
    """Acts as the new flag's own action (store, store_true, append, ...), after one line on
    stderr naming the new spelling."""

    def __init__(self, option_strings: Sequence[str], dest: str, **kw: Any) -> None:
        self.new_flag: str = kw.pop("new_flag")
        self.target: argparse.Action = kw.pop("target")
        super().__init__(option_strings, dest, **kw)

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: Any,
        option_string: str | None = None,
    ) -> None:
        print(
            f"camwall: warning: {option_string} is deprecated; use {self.new_flag}",
            file=sys.stderr,
        )
        self.target(parser, namespace, values, option_string)


def add_alias(p: argparse.ArgumentParser, old: str, new: str) -> None:
    """Accept ``old`` as a hidden, deprecated spelling of the already declared flag ``new``."""
    action = next(a for a in p._actions if new in a.option_strings)
    extra: dict[str, Any] = {"choices": action.choices} if action.choices else {}
    if action.type is not None:
        extra["type"] = action.type
    p.add_argument(
        old,
        dest=action.dest,
        nargs=action.nargs,
        action=_DeprecatedAlias,
        new_flag=new,
        target=action,
        default=argparse.SUPPRESS,
        help=argparse.SUPPRESS,
        **extra,
    )


def add_seed(
    p: argparse.ArgumentParser, help: str = "random seed", default: int | None = 0
) -> None:
    """``--seed S`` in ``[0, 2**63 - 1]``, default 0 (``None``: the caller's own default)."""
    text = f"{help} (default {default})" if default is not None else help
    p.add_argument("--seed", type=seed, default=default, metavar="S", help=text)


def add_out(
    p: argparse.ArgumentParser,
    default: str | None = None,
    *,
    kind: str = "dir",
    required: bool = False,
    help: str | None = None,
) -> None:
    """``--out``: a folder (``kind="dir"``), a file (``"file"``) or a figure (``"png"``)."""
    types = {"dir": out_dir, "file": out_file, "png": out_png}
    text = help or ("output folder" if kind == "dir" else "output file")
    if default is not None:
        text += f" (default {default})"
    p.add_argument(
        "--out",
        type=types[kind],
        default=default,
        required=required,
        metavar="DIR" if kind == "dir" else "FILE",
        help=text,
    )


def add_device(p: argparse.ArgumentParser, default: str = "auto") -> None:
    """``--device``: auto, cpu, cuda or cuda:N."""
    p.add_argument(
        "--device",
        type=device,
        default=default,
        metavar="DEVICE",
        help=f"auto (CUDA when available), cpu, cuda or cuda:N (default {default})",
    )


def add_target_layer(p: argparse.ArgumentParser) -> None:
    """``--target-layer NAME`` (hidden deprecated alias ``--layer``)."""
    p.add_argument(
        "--target-layer",
        metavar="NAME",
        help="CAM target layer, dotted name (default: the model's)",
    )
    add_alias(p, "--layer", "--target-layer")


def add_batch_size(p: argparse.ArgumentParser, default: int | None, help: str) -> None:
    """``--batch-size B``, a positive integer."""
    p.add_argument("--batch-size", type=positive_int, default=default, metavar="B", help=help)


def add_no_progress(p: argparse.ArgumentParser) -> None:
    """``--no-progress``: hide the progress bars."""
    p.add_argument("--no-progress", action="store_true", help="hide the progress bars")


def add_overwrite(p: argparse.ArgumentParser, help: str) -> None:
    """``--overwrite`` (hidden deprecated alias ``--force``)."""
    p.add_argument("--overwrite", action="store_true", help=help)
    add_alias(p, "--force", "--overwrite")


def torch_device(name: str) -> Any:
    """The ``torch.device`` of a :func:`device` value: :func:`camwall.runtime.resolve_device`."""
    from camwall.runtime import resolve_device

    return resolve_device(name)

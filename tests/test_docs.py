"""The README and docs/*.md cannot drift from the registries.

Three checks over every page:

* **Marked lists.** ``<!-- names: KEY -->`` ... ``<!-- /names -->`` encloses a list of names (a
  comma list, or a table whose first column holds the names). The names must be exactly those
  of the registry ``KEY`` (see :func:`registry_names`), in any order.
* **Marked counts.** ``<!-- count: KEY -->N`` states that registry ``KEY`` has ``N`` entries
  (digits or a number word).
* **Counts in prose.** "N CAM methods", "N CAMs" must be ``len(METHODS)``; "N default methods",
  "N default CAM methods" / "CAMs" ``len(DEFAULT_METHODS)``; "N presets" ``len(PRESETS)``.
* **Unmarked lists.** A line outside a marked list that enumerates many names of one registry
  (6 methods, 3 presets, 4 models) is a list that could drift: mark it, or shorten it. Tables
  are read cell by cell, without the notes in parentheses (results name one method per row);
  command lines (``--methods a,b``) are left out.

Besides, the README's command table lists exactly the CLI's commands, and every ``camwall X``
in backticks names a real command.
"""

from __future__ import annotations

import argparse
import importlib
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]

UNITS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
TEENS = ["ten", "eleven", "twelve", "thirteen", "fourteen", "fifteen", "sixteen", "seventeen"]
WORDS = {w: i for i, w in enumerate([*UNITS, *TEENS, "eighteen", "nineteen", "twenty"])}
WORDS.update({f"twenty-{w}": 20 + WORDS[w] for w in UNITS[1:]})
NUMBER = r"(\d+|" + "|".join(sorted(WORDS, key=len, reverse=True)) + r")"

NAMES_BLOCK = re.compile(r"<!-- names: ([\w:-]+) -->(.*?)<!-- /names -->", re.S)
COUNT_MARK = re.compile(r"<!-- count: ([\w:-]+) -->\s*" + NUMBER, re.I)


def number(text: str) -> int:
    return int(text) if text.isdigit() else WORDS[text.lower()]


def cli_commands() -> list[str]:
    from camwall.cli import build_parser

    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return sorted(sub.choices)


def registry_names() -> dict[str, list[str]]:
    """Every ``KEY`` a page may mark, with its names from the code."""
    from camwall.cams import DEFAULT_METHODS, METHODS
    from camwall.data import DATASETS
    from camwall.explainers import EXPLAINERS
    from camwall.metrics import CONTROLS
    from camwall.train import PRESETS
    from camwall.walls import MODELS
    from camwall.weights import SHIPPED_MODELS

    by_source: dict[str, list[str]] = {}
    for name, spec in EXPLAINERS.items():
        by_source.setdefault(f"explainers:{spec.source}", []).append(name)
    return {
        "methods": METHODS.names(),
        "default-methods": list(DEFAULT_METHODS),
        "other-methods": [m for m in METHODS.names() if m not in DEFAULT_METHODS],
        "presets": PRESETS.names(),
        "models": MODELS.names(),
        "datasets": DATASETS.names(),
        "shipped": list(SHIPPED_MODELS),
        "controls": CONTROLS.names(),
        "explainers": EXPLAINERS.names(),
        "commands": cli_commands(),
        **by_source,
    }


def strip_parentheses(text: str) -> str:
    """``text`` without its parenthesized parts, nested ones included."""
    while re.search(r"\([^()]*\)", text):
        text = re.sub(r"\([^()]*\)", "", text)
    return text


def block_names(text: str) -> list[str]:
    """The names in a marked block: a table's first column (header row left out), else a comma
    list (``a, b (note)/d and c``; backticks, parentheses and a leading ``camwall `` ignored)."""
    rows = [r for r in text.strip().splitlines() if r.strip().startswith("|")]
    if rows:
        cells = [r.strip().strip("|").split("|")[0].strip() for r in rows]
        sep = next(i for i, c in enumerate(cells) if set(c) <= set("-: "))
        items = cells[sep + 1 :]
    else:  # a comma list; a parenthesis after a name annotates it
        items = re.split(r",|/|\band\b", strip_parentheses(text))
    names = []
    for item in items:
        item = item.replace("`", "").strip()
        item = item.removeprefix("camwall ").strip()
        if item:
            names.append(item.split()[0].strip(".;"))
    return names


@pytest.fixture(scope="module")
def registries() -> dict[str, list[str]]:
    return registry_names()


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_marked_lists_equal_the_registries(page: Path, registries) -> None:
    for key, body in NAMES_BLOCK.findall(page.read_text()):
        assert key in registries, f"{page.name}: unknown list key {key!r}"
        got = block_names(body)
        assert len(got) == len(set(got)), f"{page.name}: {key} lists a name twice: {got}"
        extra, missing = set(got) - set(registries[key]), set(registries[key]) - set(got)
        assert not extra, f"{page.name}: the {key} list names what the code lacks: {extra}"
        assert not missing, f"{page.name}: the {key} list lacks {sorted(missing)}"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_marked_counts_equal_the_registries(page: Path, registries) -> None:
    for key, value in COUNT_MARK.findall(page.read_text()):
        assert key in registries, f"{page.name}: unknown count key {key!r}"
        assert number(value) == len(registries[key]), (
            f"{page.name}: says {value} {key}; the code has {len(registries[key])}"
        )


def prose_counts(registries: dict[str, list[str]]) -> list[tuple[re.Pattern[str], str]]:
    default = r"default (?:CAM )?(?:methods|CAMs)"
    return [
        (re.compile(rf"\b{NUMBER} {default}\b", re.I), "default-methods"),
        (
            re.compile(rf"\b{NUMBER} (?:CAM methods|CAMs|class-activation-map methods)\b", re.I),
            "methods",
        ),
        (re.compile(rf"\b{NUMBER} (?:training )?presets\b", re.I), "presets"),
    ]


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_counts_in_prose_equal_the_registries(page: Path, registries) -> None:
    text = NAMES_BLOCK.sub("", page.read_text())
    for pattern, key in prose_counts(registries):
        for match in pattern.finditer(text):
            assert number(match.group(1)) == len(registries[key]), (
                f"{page.name}: {match.group(0)!r}, but the code has {len(registries[key])} {key}"
            )


LIST_LIMITS = {"methods": 6, "presets": 3, "models": 4}
"""How many names of a registry make a line a list of that registry."""

DOCSTRING_MODULES = [
    "camwall.cams",
    "camwall.explainers",
    "camwall.explainers._native",
    "camwall.explainers._registry",
    "camwall.train",
]


@pytest.mark.parametrize("module", DOCSTRING_MODULES)
def test_counts_in_docstrings_equal_the_registries(module: str, registries) -> None:
    text = importlib.import_module(module).__doc__ or ""
    for pattern, key in prose_counts(registries):
        for match in pattern.finditer(text):
            assert number(match.group(1)) == len(registries[key]), (
                f"{module}: {match.group(0)!r}, but the code has {len(registries[key])} {key}"
            )
    for paragraph in text.split("\n\n"):  # a paragraph listing PRESETS names all of them
        words = set(re.findall(r"[\w-]+", paragraph.replace("`", " ")))
        found = words & set(registries["presets"])
        if "PRESETS" in words and len(found) >= LIST_LIMITS["presets"]:
            assert found == set(registries["presets"]), f"{module}: PRESETS {sorted(found)}"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_no_unmarked_registry_lists(page: Path, registries) -> None:
    text = NAMES_BLOCK.sub("", page.read_text())
    for line in text.splitlines():
        if "--methods " in line:
            continue  # a command line picks some methods
        # a table is read cell by cell: result tables name one method per row
        table = line.lstrip().startswith("|")
        parts = line.strip().strip("|").split("|") if table else [line]
        for part in parts:
            if table:  # a note in parentheses, in a cell, is no list
                part = strip_parentheses(part)
            words = set(re.findall(r"[\w-]+", part.replace("`", " ")))
            for key, limit in LIST_LIMITS.items():
                found = words & set(registries[key])
                assert len(found) < limit, (
                    f"{page.name}: an unmarked list of {key} ({sorted(found)}) in "
                    f"{part.strip()!r}; wrap it in <!-- names: ... --> or name fewer"
                )


def test_readme_command_table_lists_every_command(registries) -> None:
    text = (ROOT / "README.md").read_text()
    blocks = dict(NAMES_BLOCK.findall(text))
    assert "commands" in blocks, "README.md: the command table is not marked"
    assert sorted(block_names(blocks["commands"])) == registries["commands"]


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_every_named_command_exists(page: Path, registries) -> None:
    named = set(re.findall(r"`camwall ([a-z][\w-]*)", page.read_text()))
    unknown = named - set(registries["commands"])
    assert not unknown, f"{page.name}: names commands the CLI does not have: {sorted(unknown)}"


def test_the_checks_catch_drift(registries) -> None:
    """The parsers find what the pages write (a test of this test's own machinery)."""
    marked = "<!-- names: presets -->`a`, `b` (1, 2 and 3) and\n  `c`.<!-- /names -->"
    assert block_names(NAMES_BLOCK.findall(marked)[0][1]) == ["a", "b", "c"]
    table = "| command | what |\n|---|---|\n| `camwall bench [--x]` | b |\n| `camwall data x` | d |"
    assert block_names(table) == ["bench", "data"]
    pattern, key = prose_counts(registries)[1]
    assert key == "methods"
    assert number(pattern.search("the eighteen CAM methods").group(1)) == 18
    assert not pattern.search("the 15 default CAM methods")
    assert number(COUNT_MARK.search("<!-- count: presets -->five").group(2)) == 5

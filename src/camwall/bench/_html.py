"""``report.html``: one self-contained page (figures embedded as base64 PNG, no external link).

Content, in order: the title and provenance line, the plain-language reading, then per walled
model the Table 1 layout (cells coloured by verdict) and its figures (box plots, Figure 7 grids,
dead zone); the accuracy of every model; per walled model the other metrics and the time per
image; the configuration, versions and dead zones as JSON. A model's headings name it when the
store holds several walled models.
"""

from __future__ import annotations

import base64
import datetime as _dt
import html
import json
from collections.abc import Mapping
from pathlib import Path

from camwall.bench._reading import reading
from camwall.bench._results import BenchResults, ModelResult
from camwall.bench._tables import (
    INCOMPLETE_NOTE,
    family_heading,
    header,
    metric_text,
    overview,
    pct,
    progress,
    shown_metrics,
    sign_note,
    table_rows,
)
from camwall.metrics import METRICS

__all__ = ["FIGURE_KINDS", "html_page"]

FIGURE_KINDS = (
    ("Leakage per image", "box"),
    ("Saliency maps (Figure 7 layout)", "grid"),
    ("The dead zone", "dead"),
)
"""Figure sections: ``(title, key)``; the page takes ``figures[model][key]`` lists of PNGs."""

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:24px auto;
max-width:1200px;color:#222;line-height:1.45;padding:0 16px}
h1{font-size:1.6em;margin-bottom:4px}h2{margin-top:32px;border-bottom:1px solid #ddd}
table{border-collapse:collapse;margin:8px 0;font-size:.92em}
th,td{border:1px solid #ccc;padding:4px 10px;text-align:right}
th:first-child,td:first-child{text-align:left}th{background:#f3f3f3}
td.paper{color:#666;background:#fafafa}tr.control td{color:#666;font-style:italic}
td.ok{background:#e8f5e9}td.leak{background:#fff3e0}td.bad{background:#ffebee}
.reading{background:#f6f8fa;border-left:4px solid #1565c0;padding:8px 16px}
.reading p{margin:6px 0}img{max-width:100%;border:1px solid #eee}
pre{background:#f6f8fa;padding:8px;overflow:auto;font-size:.85em}
.small{color:#666;font-size:.9em}
"""

TABLE_NOTE = (
    "<p class='small'>μ = ‖L on the dead zone‖₂ / ‖L‖₂, mean ± std over images. Green: "
    "respects the wall; orange: leaks; red: no better than a uniform map. Paper "
    "columns: walled VGG16 on ImageNet (Taimeskhanov et al., 2024), for comparison of "
    "the pattern.</p>"
)

Figures = Mapping[str, Mapping[str, list[Path]]]


def html_page(results: BenchResults, store_path: Path, figures: Figures) -> str:
    """The text of ``report.html``; ``figures[model][kind]`` are PNGs to embed (kinds of
    :data:`FIGURE_KINDS`), ``store_path`` is named in the provenance line."""
    names = [m.name for m in results.models] or ["None"]
    code = ", ".join(f"<code>{html.escape(n)}</code>" for n in names)
    title = html.escape(", ".join(names))
    parts = [
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>",
        f"<title>camwall bench — {title}</title><style>{_CSS}</style></head><body>",
        f"<h1>Can the saliency maps see through the wall? — {code}</h1>",
        (
            f"<p class='small'>camwall {html.escape(results.versions.get('camwall', '?'))}, "
            f"{results.rows} result rows, generated "
            f"{_dt.datetime.now(_dt.timezone.utc).strftime('%Y-%m-%d %H:%M UTC')} from "
            f"<code>{html.escape(str(store_path))}</code>.</p>"
        ),
        "<div class='reading'>"
        + "".join(f"<p>{html.escape(s)}</p>" for s in reading(results))
        + "</div>",
    ]
    parts += _overview(results)
    multi = len(results.models) > 1
    for model in results.models:
        parts += _model_head(results, model, figures.get(model.name, {}), multi)
    parts.append(_accuracy(results))
    for model in results.models:
        parts += _model_tail(results, model, multi)
    cfg = {
        "dead_zone": {m.name: m.dead_zone.to_json() for m in results.models},
        "config": results.config,
        "versions": results.versions,
        "runs": list(results.runs),
    }
    parts.append("<h2>Configuration</h2><pre>" + html.escape(json.dumps(cfg, indent=2)) + "</pre>")
    parts.append("</body></html>")
    return "\n".join(parts)


def _overview(results: BenchResults) -> list[str]:
    """The overview table (one column group per kind of wall), when there are several kinds."""
    table = overview(results)
    if table is None:
        return []
    head, rows = table
    groups: list[tuple[str, int]] = []
    for group, _ in head[1:]:
        if groups and groups[-1][0] == group:
            groups[-1] = (group, groups[-1][1] + 1)
        else:
            groups.append((group, 1))
    top = "<tr><th></th>" + "".join(f"<th colspan='{n}'>{html.escape(g)}</th>" for g, n in groups)
    sub = "<tr>" + "".join(f"<th>{html.escape(c)}</th>" for _, c in head) + "</tr>"
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>" for r in rows
    )
    return [
        "<h2>Wall leakage μ by kind of wall</h2>",
        f"<table>{top}</tr>{sub}{body}</table>",
    ]


def _suffix(model: ModelResult, multi: bool) -> str:
    return f" — <code>{html.escape(model.name)}</code>" if multi else ""


def _img_tag(path: Path, alt: str) -> str:
    data = base64.b64encode(path.read_bytes()).decode()
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'


def _model_head(
    results: BenchResults, model: ModelResult, figures: Mapping[str, list[Path]], multi: bool
) -> list[str]:
    """A model's Table 1 section and its figure sections."""
    parts = [f"<h2>Wall leakage μ (Table 1 layout){_suffix(model, multi)}</h2>", TABLE_NOTE]
    parts.append(_table(results, model))
    parts += [f"<p class='small'>{html.escape(n)}</p>" for n in sign_note(results)]
    if not model.complete:
        parts.append(f"<p class='small'>{html.escape(INCOMPLETE_NOTE)}</p>")
    for title, key in FIGURE_KINDS:
        if figures.get(key):
            parts.append(f"<h2>{title}{_suffix(model, multi)}</h2>")
            parts += [_img_tag(p, p.stem) for p in figures[key]]
    return parts


def _table(results: BenchResults, model: ModelResult) -> str:
    """The Table 1 layout, cells classed by verdict (``ok``, ``leak``, ``bad``) or ``paper``."""
    head = ["<tr>"]
    for top, bottom in header(results, model):
        text = html.escape(top) + (f"<br>{bottom}" if bottom else "")
        head.append(f"<th>{text}</th>")
    head.append("</tr>")
    body = []
    rows = table_rows(results, model)
    for i, row in enumerate(rows):
        heading = family_heading(results, rows, i)
        if heading:
            span = len(row.cells) + 1
            body.append(f'<tr class="family"><th colspan="{span}">{html.escape(heading)}</th></tr>')
        cls = ' class="control"' if row.control else ""
        cells = [f"<tr{cls}><td>{html.escape(row.label)}</td>"]
        for text, kind in row.cells:
            body_text = text if kind == "paper" else html.escape(text)
            cells.append(f'<td class="{kind}">{body_text}</td>')
        body.append("".join(cells) + "</tr>")
    return "<table>" + "".join(head) + "".join(body) + "</table>"


def _accuracy(results: BenchResults) -> str:
    head = (
        "<h2>Accuracy</h2><table><tr><th>model</th><th>dataset</th><th>accuracy (%)</th>"
        "<th>images</th></tr>"
    )
    parts = [head]
    for m, per in results.accuracy.items():
        for d, a in per.items():
            parts.append(
                f"<tr><td>{html.escape(m)}</td><td>{html.escape(d)}</td>"
                f"<td>{pct(a.accuracy)}</td><td>{a.n}</td></tr>"
            )
    parts.append("</table>")
    return "\n".join(parts)


def _model_tail(results: BenchResults, model: ModelResult, multi: bool) -> list[str]:
    """A model's other-metrics tables and its time per image."""
    parts = [f"<h2>Other metrics{_suffix(model, multi)}</h2>", _metrics(model)]
    secs = {d: ds.stored for d, ds in model.datasets.items() if ds.stored}
    if secs:
        parts.append(
            f"<h2>Time per image (seconds){_suffix(model, multi)}</h2><table><tr><th>method</th>"
        )
        parts += [f"<th>{html.escape(d)}</th>" for d in secs]
        parts.append("</tr>")
        for meth in results.methods:
            parts.append(f"<tr><td>{html.escape(meth)}</td>")
            parts += [
                f"<td>{secs[d][meth].seconds:.4f}</td>" if meth in secs[d] else "<td>–</td>"
                for d in secs
            ]
            parts.append("</tr>")
        parts.append("</table>")
    return parts


def _metrics(model: ModelResult) -> str:
    names = METRICS.names()
    out = []
    for d, ds in model.datasets.items():
        names = shown_metrics(ds)
        out.append(f"<h3>{html.escape(d + progress(ds))}</h3><table><tr><th>method</th>")
        out += [f"<th title='{html.escape(METRICS.get(n).description)}'>{n}</th>" for n in names]
        out.append("</tr>")
        for meth, r in ds.stored.items():
            out.append(f"<tr><td>{html.escape(meth + progress(r))}</td>")
            out += [f"<td>{metric_text(n, r.stats[n].mean, '%')}</td>" for n in names]
            out.append("</tr>")
        out.append("</table>")
    legend = "; ".join(f"{n}: {METRICS.get(n).description}" for n in names)
    out.append(f"<p class='small'>{html.escape(legend)}.</p>")
    return "".join(out)

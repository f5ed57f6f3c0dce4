"""The metric rows and figure PNGs of a batch's maps, and the figures of the input images."""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor

from camwall.bench._batch import Batch, aim
from camwall.bench._plan import BenchDataset, BenchModel
from camwall.bench._store import ResultRow, to_png
from camwall.errors import CamwallError
from camwall.metrics import METRICS, empty_maps

__all__ = ["Figure", "input_figures", "measure"]

Figure = tuple[str, str, int, str, bytes]
"""``(model, dataset, image, kind, png)``: kind is ``"image"``, ``"dead_zone"`` or a method."""


def measure(
    batch: Batch, maps: dict[str, Tensor], seconds: dict[str, float], figure_images: int
) -> tuple[list[ResultRow], list[Figure]]:
    """One :class:`ResultRow` per image and method, and the map PNGs of images below
    ``figure_images``. ``maps``: ``{method: B x H x W}``; ``seconds``: each method's call on
    the whole batch (a row gets ``seconds / B``). Metrics of a target region are computed only
    when the batch has one (a grid model)."""
    rows: list[ResultRow] = []
    figures: list[Figure] = []
    zone_of = {"dead": batch.dead, "target": batch.region}
    per_image = {m: t / len(batch.ids) for m, t in seconds.items()}
    for method, raw in maps.items():
        m = _checked(method, raw, batch)
        values = {
            name: metric(m, zone).cpu().tolist()
            for name, metric in METRICS.items()
            if (zone := zone_of.get(metric.zone)) is not None
        }
        empty = empty_maps(m).cpu().tolist()
        for row, (i, p) in enumerate(zip(batch.ids, batch.preds, strict=True)):
            rows.append(
                ResultRow(
                    model=batch.model.name,
                    dataset=batch.dataset.name,
                    image=i,
                    method=method,
                    metrics={name: values[name][row] for name in values},
                    empty=bool(empty[row]),
                    label=p.label,
                    target=p.predicted,  # the explained class is the predicted one
                    predicted=p.predicted,
                    confidence=p.confidence,
                    seconds=per_image[method],
                )
            )
            if i < figure_images:
                figures.append(_figure(batch, i, method, m[row]))
    return rows, figures


def _checked(method: str, raw: Tensor, batch: Batch) -> Tensor:
    """``raw`` detached as float, if it is ``B x H x W``."""
    expected = (len(batch.ids), *batch.dead.shape[-2:])
    if raw.shape != expected:
        raise CamwallError(
            f"method {method!r} returned maps of shape {tuple(raw.shape)}; expected {expected}."
        )
    return raw.detach().float()


def _figure(batch: Batch, image: int, kind: str, a: Tensor) -> Figure:
    return (batch.model.name, batch.dataset.name, image, kind, to_png(a.cpu().numpy()))


def input_figures(
    bm: BenchModel, ds: BenchDataset, mine: Sequence[int], figure_images: int, seed: int
) -> list[Figure]:
    """The figure PNGs of the first images: each image, and for a per-output wall (a grid
    model) each image's own dead zone (kind ``"dead_zone"``)."""
    shown = [i for i in mine if i < figure_images]
    figures = [(bm.name, ds.name, i, "image", image_png(ds.images[i])) for i in shown]
    if bm.cell_zones is not None and shown:
        zones = aim(bm, seed).dead_zones(shown)[0].float().cpu().numpy()
        figures += [(bm.name, ds.name, i, "dead_zone", to_png(z)) for i, z in zip(shown, zones)]
    return figures


def image_png(image: Tensor) -> bytes:
    """A ``C x H x W`` image in [0, 1] as a PNG (grey, or its first three channels as RGB)."""
    a = image.detach().float().cpu()
    a = a[0] if a.shape[0] == 1 else a[:3].permute(1, 2, 0)
    return to_png(a.clamp(0, 1).numpy())

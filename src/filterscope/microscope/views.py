"""The microscope's answers as pure functions of records: a record, and the URLs of what it links to, in; the JSON
the API sends, out (after datasette's ``DataView.data()``).

Nothing here reads the atlas: the handlers of :mod:`.api` read the records (in one snapshot) and pass them, with
what a view links to (render ids for thumbnails, the running job), to these functions; :mod:`.schemas`
describes what they return and the API's tests check every answer against it. A view is ``dict[str, object]``:
JSON, written out, never read back here.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

from ..analysis.receptive_field import ReceptiveField
from ..atlas.records import ExemplarRecord, RenderRecord, UnitRecord, UnitSummary
from ..atlas.sections import CircuitSections, Link
from ..trust.unit import UnitTrust
from .jobs import Job
from .urls import Urls

__all__ = ["View", "grid_unit", "trust_summary", "unit_view", "render_view", "exemplar_view", "weights_view",
           "link_views", "job_view", "marker"]

View = dict[str, object]
"""A JSON object as the API sends it."""

LinkViews = Callable[[str, Sequence[Link]], list[View]]
"""The links to units of a layer (by name) as their views: each with its page and render thumbnail."""


def trust_summary(record: UnitTrust | None) -> View:
    """A unit's trust numbers for the layer grid's sorting and filtering (``None`` each without a record)."""
    if record is None:
        return {"flags": None, "path_share": None, "afc_renders": None, "afc_exemplars": None}
    renders, exemplars = record.score("renders"), record.score("exemplars")
    return {"flags": list(record.flags), "path_share": record.paths.share if record.paths else None,
            "afc_renders": renders.score if renders else None, "afc_exemplars": exemplars.score if exemplars else None,
            "description": record.description.text}


def grid_unit(summary: UnitSummary, trust: UnitTrust | None, urls: Urls) -> View:
    """One unit of a layer's grid: its summary, trust numbers and thumbnails (render, else top exemplar)."""
    return {**summary.to_dict(), **trust_summary(trust),
            "thumb": urls.render_thumb(summary.render) if summary.render else None,
            "exemplar_thumb": urls.exemplar_thumb(summary.exemplar) if summary.exemplar else None}


def render_view(render: RenderRecord, urls: Urls) -> View:
    return {**render.to_dict(), "image": urls.render_image(render.id) if render.file else None}


def exemplar_view(item: ExemplarRecord, urls: Urls, model: str, layer: str, unit: int,
                  field: ReceptiveField | None) -> View:
    """An exemplar with its crop, thumbnail, source and page, and where its maximum lies in the crop."""
    return {**item.to_dict(), "crop": urls.exemplar_crop(item.id) if item.has_crop else None,
            "thumb": urls.exemplar_thumb(item.id) if item.has_crop else None,
            "source": urls.exemplar_source(item.id), "page": urls.exemplar_page(model, layer, unit, item.id),
            "marker": marker(field, item) if item.kind != "mean" else None}


def link_views(links: Sequence[Link], model: str, layer: str, renders: Mapping[int, int], urls: Urls) -> list[View]:
    """Links to units of ``layer``, each with its page and, where ``renders`` holds one, its render thumbnail."""
    return [{**link.to_dict(), "url": urls.unit(model, layer, link.unit),
             "thumb": urls.render_thumb(renders[link.unit]) if link.unit in renders else None} for link in links]


def weights_view(sections: CircuitSections, links: LinkViews) -> View:
    """A unit's circuit sections, with each input (output) unit's page and thumbnail."""
    inputs, outputs = sections.inputs, sections.outputs
    return {
        "inputs": None if inputs is None else {
            **inputs.to_dict(), "inputs": {"excite": links(inputs.source, inputs.excite),
                                           "inhibit": links(inputs.source, inputs.inhibit),
                                           "attribution": links(inputs.source, inputs.attribution)}},
        "outputs": None if outputs is None else {
            **outputs.to_dict(), "excite": links(outputs.layer, outputs.excite),
            "inhibit": links(outputs.layer, outputs.inhibit)},
        "classes": None if sections.classes is None else sections.classes.to_dict()}


def job_view(job: Job, urls: Urls) -> View:
    """A render job as its answer: the record and its URL."""
    return {**job.to_dict(), "url": urls.api_job(job.id)}


def unit_view(record: UnitRecord, field: ReceptiveField | None, urls: Urls, *, cofiring: Sequence[tuple[int, float]],
              weights: View | None, trust: UnitTrust | None, job: View | None, can_render: bool,
              same_unit: View | None = None) -> View:
    """A unit's page data: its record with links (renders, exemplars, co-firing units, neighbours), its circuit
    sections, trust record, render job and its match in another network (``same_unit``)."""
    model, layer, unit = record.model, record.layer, record.unit
    return {**record.to_dict(), "renders": [render_view(r, urls) for r in record.renders],
            "exemplars": {kind: [exemplar_view(e, urls, model, layer, unit, field) for e in items]
                          for kind, items in record.exemplars.items()},
            "cofiring": [{"unit": u, "correlation": c, "url": urls.unit(model, layer, u)} for u, c in cofiring],
            "weights": weights, "trust": trust.to_dict() if trust is not None else None,
            "prev": urls.unit(model, layer, unit - 1) if unit > 0 else None,
            "next": urls.unit(model, layer, unit + 1) if unit + 1 < record.channels else None,
            "layer_url": urls.layer(model, layer), "can_render": can_render,
            "render_url": urls.api_render(model, layer, unit), "job": job, "same_unit": same_unit}


def marker(field: ReceptiveField | None, exemplar: ExemplarRecord) -> list[float] | None:
    """Where the maximum's position lies in the crop, as fractions ``[x, y]`` of its width and height."""
    if not field:
        return None
    x0, y0, x1, y1 = exemplar.box
    if field.whole:
        cx, cy = (exemplar.x + 0.5) * field.stride_x, (exemplar.y + 0.5) * field.stride_y
    else:
        cx = field.offset_x + exemplar.x * field.stride_x + field.width / 2
        cy = field.offset_y + exemplar.y * field.stride_y + field.height / 2
    if x1 <= x0 or y1 <= y0:
        return None
    return [min(max((cx - x0) / (x1 - x0), 0.0), 1.0), min(max((cy - y0) / (y1 - y0), 0.0), 1.0)]

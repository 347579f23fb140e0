"""What each JSON answer of the API holds, as pydantic models: they write the OpenAPI schema
(``/api/openapi.json``) that ``tests/test_api_fuzz.py`` checks every answer against.

They document, they do not serialize: handlers return ``JSONResponse`` objects (see :mod:`.api`), so a
field added to an answer but not here fails that test (``extra="forbid"`` writes
``additionalProperties: false``). Parts that are records of their own (a recipe, the trust record, a
circuit section, the image page's data) are objects here, described where they are built.
"""

from __future__ import annotations

import dataclasses
import typing
from typing import Any

from pydantic import BaseModel, ConfigDict, create_model

from ..atlas.records import ExemplarRecord, RenderRecord, UnitRecord, UnitStats, UnitSummary
from ..circuits.evidence import AblationCheck
from ..trust import AFCScore, PathSimilarity, UnitTrust
from ..trust import Consensus as ConsensusRecord
from ..trust import Description as DescriptionRecord

__all__ = ["Error", "Model", "LayerGrid", "DatasetImage", "Unit", "Job", "ActivationMap", "MapCell", "Explained",
           "answers", "json_responses", "file_responses", "page_responses", "without_validation_errors"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


M = typing.TypeVar("M", bound=type[BaseModel])


def mirrors(record: type, drop: tuple[str, ...] = ()) -> typing.Callable[[M], M]:
    """The decorated model with ``record``'s fields first (a dataclass of :mod:`~filterscope.atlas.records`, as
    its ``to_dict`` writes them: every field present), then its own: a record field's JSON type, or a field the
    API adds. A field added to the record is in the schema, so the answers and the schema cannot drift apart."""

    def make(cls: M) -> M:
        hints, own = typing.get_type_hints(record), typing.cast(type[BaseModel], cls).model_fields
        fields: dict[str, Any] = {
            f.name: (own[f.name].annotation, own[f.name]) if f.name in own else (hints[f.name], ...)
            for f in dataclasses.fields(record) if f.name not in drop}
        fields.update({name: (info.annotation, info) for name, info in own.items() if name not in fields})
        return typing.cast(M, create_model(cls.__name__, __base__=_Strict, __doc__=cls.__doc__, **fields))

    return make


class Error(_Strict):
    """Every error under ``/api/``: 404 for what the atlas does not hold, 4xx for a bad request."""

    detail: str


class Layer(_Strict):
    name: str
    channels: int
    shape: list[int]
    rendered: int
    not_improved: int
    failed: int
    pending: int
    exemplar_images: int
    url: str


class Model(_Strict):
    name: str
    weights: str
    weights_hash: str
    layers: list[Layer]


@mirrors(UnitSummary)
class GridUnit(_Strict):
    flags: list[str] | None
    path_share: float | None
    afc_renders: float | None
    afc_exemplars: float | None
    description: str | None = None
    thumb: str | None
    exemplar_thumb: str | None


class LayerGrid(_Strict):
    model: str
    layer: str
    channels: int
    shape: list[int]
    url: str
    units: list[GridUnit]
    can_render: bool
    map_page: str | None
    image_page: str | None


class DatasetImage(_Strict):
    image: int
    name: str
    source: str


@mirrors(RenderRecord)
class Render(_Strict):
    recipe: dict[str, Any]
    settings: dict[str, Any]
    image: str | None


@mirrors(ExemplarRecord)
class Exemplar(_Strict):
    crop: str | None
    thumb: str | None
    source: str
    page: str
    marker: list[float] | None


class Histogram(_Strict):
    edges: list[float]
    counts: list[float]


@mirrors(UnitStats)
class Stats(_Strict):
    histogram: Histogram


class Cofiring(_Strict):
    unit: int
    correlation: float
    url: str


class Link(_Strict):
    """A circuit link (:class:`filterscope.atlas.sections.Link`): the other unit or class and its weight."""

    unit: int
    weight: float
    kernel: list[list[float]] | None = None
    attribution: float | None = None
    name: str | None = None


class UnitLink(Link):
    """A link to a unit of another layer, with its page and render thumbnail."""

    url: str
    thumb: str | None


@mirrors(AblationCheck)
class Ablation(_Strict):
    """The causal check (:class:`filterscope.circuits.evidence.AblationCheck`)."""


class InputLinks(_Strict):
    excite: list[UnitLink]
    inhibit: list[UnitLink]
    attribution: list[UnitLink]


class Inputs(_Strict):
    """:class:`filterscope.atlas.sections.InputsSection` as JSON."""

    source: str
    kernel_size: list[int]
    exemplars: int
    inputs: InputLinks
    agreement: float
    note: str | None
    ablation: Ablation | None


class Outputs(_Strict):
    """:class:`filterscope.atlas.sections.OutputsSection` as JSON."""

    layer: str
    excite: list[UnitLink]
    inhibit: list[UnitLink]


class Classes(_Strict):
    """:class:`filterscope.atlas.sections.ClassesSection` as JSON."""

    promoted: list[Link]
    suppressed: list[Link]


class Weights(_Strict):
    """The unit's circuit sections (``None`` each where not built): the inputs from the source layer, the
    outputs to the next, the classes it promotes and suppresses."""

    inputs: Inputs | None
    outputs: Outputs | None
    classes: Classes | None


@mirrors(AFCScore)
class AFC(_Strict):
    """A 2-AFC score (:class:`filterscope.trust.AFCScore`)."""


@mirrors(PathSimilarity)
class Paths(_Strict):
    """The path check (:class:`filterscope.trust.PathSimilarity`)."""


@mirrors(ConsensusRecord)
class Consensus(_Strict):
    """The exemplars' consensus (:class:`filterscope.trust.Consensus`)."""


@mirrors(DescriptionRecord)
class Description(_Strict):
    """What the unit is (:class:`filterscope.trust.Description`), with its text."""

    consensus: Consensus | None
    text: str


@mirrors(UnitTrust)
class Trust(_Strict):
    """A unit's trust record (:class:`filterscope.trust.UnitTrust`), with its flags."""

    paths: Paths | None
    afc: list[AFC]
    description: Description
    flags: list[str]


class Job(_Strict):
    id: int
    model: str
    layer: str
    unit: int
    state: str
    progress: float
    message: str | None
    url: str


@mirrors(UnitRecord, drop=("folder",))
class Unit(_Strict):
    renders: list[Render]
    exemplars: dict[str, list[Exemplar]]
    stats: Stats | None
    cofiring: list[Cofiring]
    weights: Weights | None
    trust: Trust | None
    prev: str | None
    next: str | None
    layer_url: str
    can_render: bool
    render_url: str
    job: Job | None


class _Cell(_Strict):
    cell: int
    row: int
    col: int
    count: int
    label: str | None
    label_share: float | None
    cosine: float | None


class MapCellSummary(_Cell):
    status: str
    icon: str | None
    api: str


class ActivationMap(_Strict):
    model: str
    layer: str
    grid: int
    settings: dict[str, Any]
    trustworthiness: float | None
    cells: list[MapCellSummary]
    layer_url: str


class Member(_Strict):
    sample: int
    image: str
    y: int
    x: int
    patch: str


class TopUnit(_Strict):
    unit: int
    value: float
    url: str
    thumb: str | None


class MapCell(_Cell):
    members: list[Member]
    units: list[TopUnit]


class Explained(_Strict):
    """The image page's data (:meth:`.explain.Explainer.explain`) and the links of the units it names."""

    layer: str
    grid: list[int]
    units: list[list[list[int]]]
    values: list[list[list[float]]]
    attribution: dict[str, Any] | None
    groups: dict[str, Any]
    links: dict[str, dict[str, str | None]]


_ERRORS = {404: "Not in the atlas", 400: "A malformed request", 413: "An upload over the size limit",
           403: "Not allowed by how the server was started", 409: "In conflict with the atlas or the server",
           422: "An upload that is not an image, or one the layer cannot explain",
           429: "The render queue is full (Retry-After)"}


def answers(model: Any, status: int = 200, *errors: int) -> dict[int | str, dict[str, Any]]:
    """The ``responses=`` of a JSON route: ``model`` with ``status``, and :func:`json_responses` ``errors``."""
    return {status: {"model": model, "description": "The answer"}, **json_responses(*errors)}


def json_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """The ``responses=`` of a JSON route: the errors it may answer besides 404, each an :class:`Error`."""
    return {status: {"model": Error, "description": _ERRORS[status]} for status in (404, *statuses)}


def file_responses(media_type: str) -> dict[int | str, dict[str, Any]]:
    """The ``responses=`` of a route that answers a file (an image): the file, or a 404 :class:`Error`."""
    return {200: {"content": {media_type: {}}, "description": "The file"},
            304: {"description": "Not modified (ETag)"}, **json_responses()}


def without_validation_errors(schema: dict[str, Any]) -> dict[str, Any]:
    """``schema`` without the 422 validation error FastAPI declares on every route with parameters: this
    server answers a path that does not parse as a 404 (an id that is no number names nothing)."""
    for methods in schema["paths"].values():
        for operation in methods.values():
            if "HTTPValidationError" in str(operation["responses"].get("422", "")):
                del operation["responses"]["422"]
    for name in ("HTTPValidationError", "ValidationError"):
        schema.get("components", {}).get("schemas", {}).pop(name, None)
    return schema


def page_responses() -> dict[int | str, dict[str, Any]]:
    """The ``responses=`` of an HTML page: the page, or a 404 page."""
    return {404: {"content": {"text/html": {}}, "description": "Not in the atlas (an HTML page)"}}

"""What each JSON answer of the API holds, as pydantic models: they write the OpenAPI schema
(``/api/openapi.json``) that ``tests/microscope/test_api_fuzz.py`` checks every answer against.

They document, they do not serialize: handlers return ``JSONResponse`` objects (see :mod:`.api`), so a
field added to an answer but not here fails that test (``extra="forbid"`` writes
``additionalProperties: false``). Parts that are records of their own (a recipe, the trust record, a
circuit section, the image page's data) are objects here, described where they are built.
"""

from __future__ import annotations

import dataclasses
import typing
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from pydantic import BaseModel, ConfigDict, create_model

from ..atlas.records import ExemplarRecord, RenderRecord, UnitRecord, UnitStats, UnitSummary
from ..circuits.evidence import AblationCheck
from ..compare import LayerMatch, Match, ModelDiff
from ..compare.crosscoder import ConceptSplit, Latent
from ..engine.identity import RenderSettings
from ..engine.recipes import LATER_FIELDS, Recipe
from ..maps.settings import MapSettings
from ..trust import AFCScore, PathSimilarity, RenderTest, UnitTrust
from ..trust import Consensus as ConsensusRecord
from ..trust import Description as DescriptionRecord

__all__ = ["Error", "Model", "LayerGrid", "DatasetImage", "Unit", "Job", "ActivationMap", "MapCell", "Explained",
           "Diff", "answers", "json_responses", "file_responses", "page_responses", "openapi"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


M = typing.TypeVar("M", bound=type[BaseModel])


def mirrors(record: type, drop: tuple[str, ...] = (), optional: typing.AbstractSet[str] = frozenset()
            ) -> typing.Callable[[M], M]:
    """The decorated model with ``record``'s fields first (a dataclass of :mod:`~filterscope.atlas.records`, as
    its ``to_dict`` writes them: every field present but those ``optional``, which ``to_dict`` leaves out at their
    default), then its own: a record field's JSON type, or a field the API adds. A field added to the record is
    in the schema, so the answers and the schema cannot drift apart."""

    def make(cls: M) -> M:
        hints, own = typing.get_type_hints(record), typing.cast(type[BaseModel], cls).model_fields
        fields: dict[str, tuple[Any, Any]] = {  # (type, default or FieldInfo) for create_model
            f.name: (own[f.name].annotation, own[f.name]) if f.name in own
            else (hints[f.name], f.default if f.name in optional else ...)
            for f in dataclasses.fields(record) if f.name not in drop}
        fields.update({name: (info.annotation, info) for name, info in own.items() if name not in fields})
        model: typing.Callable[..., type[BaseModel]] = create_model  # its overloads cannot type **fields
        return typing.cast(M, model(cls.__name__, __base__=_Strict, __doc__=cls.__doc__, **fields))

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
    diff_page: str | None


class DatasetImage(_Strict):
    image: int
    name: str
    source: str


class TransformOptions(BaseModel):
    """A recipe's transforms: their registered ``kind`` and its options (each kind has its own)."""

    model_config = ConfigDict(extra="allow")
    kind: str


@mirrors(Recipe, optional=LATER_FIELDS)
class RecipeFields(_Strict):
    """A recipe (:class:`filterscope.Recipe`); the fields added after the first release only where not default."""

    transforms: TransformOptions


@mirrors(RenderSettings)
class Settings(_Strict):
    """The runtime settings that are part of a render's identity (:class:`filterscope.identity.RenderSettings`)."""


@mirrors(RenderRecord)
class Render(_Strict):
    recipe: RecipeFields
    settings: Settings
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


@mirrors(RenderTest)
class RenderCheck(_Strict):
    """The renders against the unit's own exemplar sets (:class:`filterscope.trust.RenderTest`)."""


@mirrors(AFCScore)
class AFC(_Strict):
    """A 2-AFC score (:class:`filterscope.trust.AFCScore`)."""

    test: RenderCheck | None


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


class SameUnit(_Strict):
    """The unit's match in the other network of the layer's newest diff (:mod:`filterscope.compare`)."""

    model: str
    layer: str
    unit: int
    correlation: float
    buddies: bool
    matched: bool
    diff_page: str


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
    same_unit: SameUnit | None


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


@mirrors(MapSettings)
class MapSettingsFields(_Strict):
    """How an activation atlas was made (:class:`filterscope.MapSettings`)."""

    compare: list[int] | None


class ActivationMap(_Strict):
    model: str
    layer: str
    grid: int
    settings: MapSettingsFields
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


class Attribution(_Strict):
    """The top class's spatial attribution (:class:`filterscope.explain.SpatialAttribution`)."""

    target: int
    name: str | None
    logit: float
    map: list[list[float]]


class Groups(_Strict):
    """The neuron groups (:class:`filterscope.explain.NeuronGroups`): heat maps, strongest units, attributions."""

    explained: float
    part: str
    spatial: list[list[list[float]]]
    units: list[list[int]]
    attribution: list[float] | None


class Explained(_Strict):
    """The image page's data (:meth:`.explain.Explainer.explain`) and the links of the units it names."""

    layer: str
    grid: list[int]
    units: list[list[list[int]]]
    values: list[list[list[float]]]
    attribution: Attribution | None
    groups: Groups
    links: dict[str, dict[str, str | None]]


_ERRORS = {404: "Not in the atlas", 400: "A malformed request", 413: "An upload over the size limit",
           403: "Not allowed by how the server was started", 409: "In conflict with the atlas or the server",
           422: "An upload that is not an image, or one the layer cannot explain",
           429: "The render queue is full (Retry-After)"}


Responses = dict[int | str, dict[str, object]]
"""A route's ``responses=``: status -> its description, model or content."""


def answers(model: object, status: int = 200, *errors: int) -> Responses:
    """The ``responses=`` of a JSON route: ``model`` with ``status``, and :func:`json_responses` ``errors``."""
    return {status: {"model": model, "description": "The answer"}, **json_responses(*errors)}


def json_responses(*statuses: int) -> Responses:
    """The ``responses=`` of a JSON route: the errors it may answer besides 404, each an :class:`Error`."""
    return {status: {"model": Error, "description": _ERRORS[status]} for status in (404, *statuses)}


def file_responses(media_type: str) -> Responses:
    """The ``responses=`` of a route that answers a file (an image): the file, or a 404 :class:`Error`."""
    return {200: {"content": {media_type: {}}, "description": "The file"},
            304: {"description": "Not modified (ETag)"}, **json_responses()}


def openapi(app: FastAPI) -> dict[str, Any]:
    """The app's OpenAPI schema (FastAPI's ``app.openapi``), made once, without the 422 validation error FastAPI
    declares on every route with parameters: this server answers a path that does not parse as a 404 (an id that
    is no number names nothing)."""
    if app.openapi_schema is not None:
        return app.openapi_schema
    schema = get_openapi(title=app.title, version=app.version, routes=app.routes)
    for methods in schema["paths"].values():
        for operation in methods.values():
            if "HTTPValidationError" in str(operation["responses"].get("422", "")):
                del operation["responses"]["422"]
    for name in ("HTTPValidationError", "ValidationError"):
        schema.get("components", {}).get("schemas", {}).pop(name, None)
    app.openapi_schema = schema
    return schema


def page_responses() -> Responses:
    """The ``responses=`` of an HTML page: the page, or a 404 page."""
    return {404: {"content": {"text/html": {}}, "description": "Not in the atlas (an HTML page)"}}


@mirrors(Match)
class DiffMatch(_Strict):
    """One matched pair of units (:class:`filterscope.compare.Match`), with the page of A's unit."""

    url: str


@mirrors(LayerMatch)
class DiffLayerMatch(_Strict):
    """A matched layer pair (:class:`filterscope.compare.LayerMatch`), best correlation first."""

    matches: list[DiffMatch]
    share: float


@mirrors(Latent)
class DiffLatent(_Strict):
    """A crosscoder concept (:class:`filterscope.compare.crosscoder.Latent`)."""


@mirrors(ConceptSplit)
class DiffConcepts(_Strict):
    """A matched pair's crosscoder (:class:`filterscope.compare.crosscoder.ConceptSplit`); its top images are
    indices into ``images``."""

    latents: list[DiffLatent]
    counts: dict[str, int]
    top_images: dict[str, list[int]]


@mirrors(ModelDiff)
class Diff(_Strict):
    """A layer's newest diff against another network (:class:`filterscope.compare.ModelDiff`)."""

    matches: list[DiffLayerMatch]
    concepts: list[DiffConcepts]
    model: str
    layer: str
    layer_url: str
    diffs: int
    image_names: list[str]

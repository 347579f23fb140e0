"""One unit's trust record: its faithfulness scores and description, from its dataset, renders and an independent net.

:class:`TrustData` is a layer over a dataset: each image's activation (spatial maximum) for every unit, a way to
load images by index, and caches of what the checks compute per image (the earlier layers' channel vectors, the
judge's standardized features of every image), so that units of one layer share their work. :func:`unit_trust`
makes one unit's :class:`UnitTrust`; :func:`trust_units` does it for units of a layer over a list of images (one
forward pass over them first). The atlas builds the same records from its exemplar pass (its maxima matrix and
dataset), and ``filterscope trust`` shows them.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..analysis.inputs import Images, image_list, prepare_image
from ..analysis.receptive_field import ReceptiveField, receptive_field
from ..arguments import checked
from ..errors import InvalidOptionError
from ..images import save_array
from ..layers import LayerRef, check_channel, list_layers, resolve_layer
from ..runtime.core import ANALYSIS_BATCH, Forward, Runtime
from ..zoo.model import LoadedModel, coerce_model
from .afc import AFC_K, AFC_POOL, AFC_TASKS, RENDER_SHARE, AFCScore, machine_afc, render_test
from .describe import Description, colours, consensus, spread
from .independent import Independent
from .judges import DEFAULT_JUDGE, Judge, Standardized, judge_for
from .paths import PathSimilarity, channel_vectors, path_layers, path_similarity

__all__ = ["UnitTrust", "TrustData", "unit_trust", "trust_units", "unit_maxima", "near_classifier", "EXEMPLARS",
           "RANDOMS", "CONSENSUS_CROPS"]

EXEMPLARS = 10
"""Top exemplars the path check compares a render with."""
RANDOMS = 10
"""Random dataset images that make the path check's lower band."""
CONSENSUS_CROPS = 20
"""Top exemplar crops the consensus, colours and spread are read from."""
_CHUNK = 64  # images loaded at once for the judge's features


@dataclass(frozen=True)
class UnitTrust:
    """How far a unit's pictures can be believed, and what the unit is.

    Attributes:
        layer, unit: Which unit.
        paths: The path check (:mod:`.paths`), or ``None`` without renders.
        afc: The machine 2-AFC scores (:mod:`.afc`): with renders (when there are any), exemplars and random
            references (the control: chance is 0.5).
        description: What it is (:mod:`.describe`).
        images: The dataset's size; ``independent``: the network that judged similarity and classes.
        judge: The feature space of the 2-AFC task (:mod:`.judges`).
        render_status: The renders' status when one of them failed to rise (``not-improved``), else ``ok``.
    """

    layer: str
    unit: int
    paths: PathSimilarity | None
    afc: tuple[AFCScore, ...]
    description: Description
    images: int
    independent: str
    render_status: str = "ok"
    judge: str = DEFAULT_JUDGE

    @property
    def flags(self) -> tuple[str, ...]:
        """What makes the pictures untrustworthy: ``another-path``, ``silent`` (:mod:`.paths`), ``renders-2afc`` (the
        renders predict the unit's photos worse than its own exemplar sets do, :func:`.afc.render_test`),
        ``not-improved``."""
        found = list(self.paths.flags) if self.paths is not None else []
        renders = self.score("renders")
        found += ["renders-2afc"] if renders is not None and renders.test is not None and renders.test.flagged else []
        return tuple(found + (["not-improved"] if self.render_status == "not-improved" else []))

    def score(self, references: str) -> AFCScore | None:
        """The 2-AFC score with ``references`` (renders, exemplars, random), if measured."""
        return next((s for s in self.afc if s.references == references), None)

    def to_dict(self) -> dict[str, object]:
        return {"layer": self.layer, "unit": self.unit, "paths": self.paths.to_dict() if self.paths else None,
                "afc": [s.to_dict() for s in self.afc], "description": self.description.to_dict(),
                "images": self.images, "independent": self.independent, "render_status": self.render_status,
                "judge": self.judge, "flags": list(self.flags)}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> UnitTrust:
        paths = data.get("paths")
        return cls(str(data["layer"]), int(data["unit"]),
                   PathSimilarity.from_dict(paths) if isinstance(paths, Mapping) else None,
                   tuple(AFCScore.from_dict(s) for s in data["afc"]),
                   Description.from_dict(data["description"]),
                   int(data["images"]), str(data["independent"]),
                   str(data.get("render_status") or "ok"), str(data.get("judge") or "pooled"))


def near_classifier(model: LoadedModel, layer: LayerRef) -> bool:
    """Whether the class effect describes ``layer``'s units: a classifier model, and a layer in the last quarter
    of the network (further down, the linearized path to the logits ranks classes but means little)."""
    if not model.categories:
        return False
    names = [info.name for info in list_layers(model)]
    return layer.name in names and names.index(layer.name) >= 0.75 * len(names)


@dataclass
class TrustData:
    """A layer over a dataset, as the checks read it (see the module docstring).

    Attributes:
        model, layer: The network and the layer whose units are checked.
        values: ``(N, C)`` each image's spatial maximum of each unit.
        load: The images of the given indices in the model's view, ``(n,C,H,W)`` in [0, 1].
        independent: The network that judges similarity and classes.
        judge: The 2-AFC task's feature space (:data:`~.judges.JUDGES`; ``None``: :func:`~.judges.judge_for`'s
            choice, ``matched`` for an EfficientNet independent network).
        layers: The earlier layers of the path check (default :func:`~.paths.path_layers`).
        cache: A folder where the judge's raw features of the dataset are kept between runs (an atlas's), under a
            name made of the judge, its description, the independent network and ``dataset`` (what identifies the
            images: their paths and fit); ``None``: computed each time.
    """

    model: LoadedModel
    layer: LayerRef
    values: torch.Tensor
    load: Callable[[Sequence[int]], torch.Tensor]
    independent: Independent
    layers: list[LayerRef] = field(default_factory=list)
    runtime: Runtime | None = None
    seed: int = 0
    judge: str | None = None
    cache: Path | None = None
    dataset: str = ""
    _judged: tuple[Standardized, torch.Tensor] | None = None
    _vectors: dict[int, dict[LayerRef, torch.Tensor]] = field(default_factory=dict)
    _maps: dict[int, torch.Tensor] = field(default_factory=dict)
    _field: ReceptiveField | None = None

    def __post_init__(self) -> None:
        if not self.layers:
            self.layers = path_layers(self.model, self.layer)

    @property
    def size(self) -> int:
        return int(self.values.shape[0])

    def ranked(self, unit: int) -> torch.Tensor:
        """Image indices by the unit's activation, strongest first (ties by index)."""
        return torch.argsort(self.values[:, unit].double(), descending=True, stable=True)

    def randoms(self, count: int, exclude: Sequence[int]) -> list[int]:
        """``count`` seeded random image indices, not in ``exclude`` (the same for every unit of a seed)."""
        order = torch.randperm(self.size, generator=torch.Generator().manual_seed(self.seed)).tolist()
        skip = {int(i) for i in exclude}
        return [i for i in order if i not in skip][:count]

    def vectors(self, indices: Sequence[int]) -> dict[LayerRef, torch.Tensor]:
        """The images' channel vectors at the path layers (cached), with their maps of the layer itself."""
        missing = [int(i) for i in indices if int(i) not in self._vectors]
        if missing:
            images = self.load(missing)
            refs = [*self.layers, self.layer]
            with torch.no_grad(), Forward(self.model, refs, self.runtime) as forward:
                for start in range(0, len(missing), ANALYSIS_BATCH):
                    batch = images[start:start + ANALYSIS_BATCH].to(self.model.device)
                    acts = forward(self.model.preprocessing.normalize(batch))
                    for j, index in enumerate(missing[start:start + ANALYSIS_BATCH]):
                        self._vectors[index] = {ref: acts[ref][j].reshape(acts[ref].shape[1], -1).mean(dim=1).cpu()
                                                for ref in self.layers}
                        self._maps[index] = acts[self.layer][j].cpu()
        return {ref: torch.stack([self._vectors[int(i)][ref] for i in indices]) for ref in self.layers}

    def maps(self, indices: Sequence[int], unit: int) -> list[torch.Tensor]:
        """The unit's activation map on each image (``(H, W)``; computed with :meth:`vectors`)."""
        self.vectors(indices)
        return [self._maps[int(i)][unit] for i in indices]

    def judged(self) -> tuple[Standardized, torch.Tensor]:
        """The judge's features of every image of the dataset, standardized over it (computed once, in chunks)."""
        if self._judged is None:
            judge = judge_for(self.judge, self.independent, self.model, self.layer)
            raw = self._cached(judge)
            standard = Standardized.fit(judge, raw)
            self._judged = (standard, standard(raw))
        return self._judged

    def _cached(self, judge: Judge) -> torch.Tensor:
        """The judge's raw features of every image: read from :attr:`cache` when they are there, else computed in
        chunks (and written there, atomically)."""
        file = None
        if self.cache is not None:
            key = json.dumps([judge.name, judge.describe, self.independent.name, self.dataset, self.size])
            file = self.cache / f"{judge.name}-{hashlib.sha256(key.encode()).hexdigest()[:16]}.npy"
            if file.is_file():
                found = torch.from_numpy(np.load(file))
                if found.shape == (self.size, sum(judge.groups)):
                    return found
        raw = torch.cat([judge.embed(self.load(list(range(start, min(start + _CHUNK, self.size)))))
                         for start in range(0, self.size, _CHUNK)])
        if file is not None:
            file.parent.mkdir(parents=True, exist_ok=True)
            save_array(raw.float().numpy(), file)
        return raw

    def crops(self, indices: Sequence[int], unit: int) -> list[torch.Tensor]:
        """Each image cropped to the unit's receptive field at its maximum (the whole image for global layers)."""
        if self._field is None:
            self._field = receptive_field(self.model, self.layer)
        images = self.load(list(indices))
        out = []
        for image, m in zip(images, self.maps(indices, unit)):
            if m.dim() == 2:
                y, x = divmod(int(m.argmax()), m.shape[1])
                x0, y0, x1, y1 = self._field.box(y, x, tuple(image.shape[-2:]))
                out.append(image[:, y0:max(y1, y0 + 1), x0:max(x1, x0 + 1)])
            else:
                out.append(image)
        return out


def unit_trust(data: TrustData, unit: int, renders: torch.Tensor | None = None, *, render_status: str = "ok",
               classes: tuple[tuple[tuple[str, float], ...], tuple[tuple[str, float], ...]] | None = None,
               negatives: torch.Tensor | None = None, tasks: int = AFC_TASKS, k: int = AFC_K, pool: int = AFC_POOL,
               exemplars: int = EXEMPLARS, randoms: int = RANDOMS, crops: int = CONSENSUS_CROPS) -> UnitTrust:
    """The trust record of ``unit`` (see :class:`UnitTrust`), with its ``renders`` ``(R,C,H,W)`` in [0, 1] (any
    size) if any (``negatives``: renders minimizing the unit, the fair task's negative references), and the classes
    it promotes and suppresses (``classes``) if known."""
    ranked = data.ranked(unit).tolist()
    top = ranked[:exemplars]
    values = data.values[:, unit]
    standard, features = data.judged()
    seed = data.seed * 1_000_003 + unit  # each unit's own draws
    scores = []
    render_vectors = None
    if renders is not None and len(renders):
        render_vectors = channel_vectors(data.model, data.layers, renders, runtime=data.runtime)
        against = standard(standard.judge.embed(negatives)) if negatives is not None and len(negatives) else None
        judged = standard(standard.judge.embed(renders))
        score = machine_afc(features, values, "renders", renders=judged, negatives=against, tasks=tasks, k=k,
                            pool=pool, seed=seed)
        scores.append(replace(score, test=render_test(features, values, judged, against, pool=pool,
                                                       share=RENDER_SHARE, seed=seed)))
    scores.append(machine_afc(features, values, "exemplars", tasks=tasks, k=k, pool=pool, seed=seed))
    scores.append(machine_afc(features, values, "random", tasks=tasks, k=k, pool=pool, seed=seed))
    paths = None
    if render_vectors is not None:
        paths = path_similarity(render_vectors, data.vectors(top), data.vectors(data.randoms(randoms, top)),
                                float(values[top].max()))
    chosen = ranked[:crops]
    crop_images = data.crops(chosen, unit)
    _, crop_classes = data.independent.embed(_stack(crop_images))
    up, down = classes if classes is not None else ((), ())
    description = Description(consensus(crop_classes.tolist()) if data.independent.model.categories else None,
                              colours(crop_images), spread([m for m in data.maps(chosen, unit) if m.dim() == 2]),
                              up, down)
    return UnitTrust(str(data.layer), unit, paths, tuple(scores), description, data.size, data.independent.name,
                     render_status, standard.judge.name)


def _stack(crops: Sequence[torch.Tensor]) -> torch.Tensor:
    """Crops of different sizes as one batch, each resized to the largest's side (square)."""
    side = max(max(c.shape[-2:]) for c in crops)
    return torch.stack([torch.nn.functional.interpolate(c[None].float(), size=(side, side), mode="bilinear",
                                                        align_corners=False, antialias=True)[0].clamp(0, 1)
                        for c in crops])


@checked
def trust_units(model: LoadedModel | torch.nn.Module, layer: str | LayerRef, units: Sequence[int],
                images: torch.Tensor | Images, independent: Independent, *,
                renders: Mapping[int, torch.Tensor] | None = None, statuses: Mapping[int, str] | None = None,
                negatives: Mapping[int, torch.Tensor] | None = None, judge: str | None = None,
                classes: bool | None = None, runtime: Runtime | None = None, seed: int = 0,
                progress: Callable[[int, int], None] | None = None, **options: int) -> list[UnitTrust]:
    """Trust records of ``units`` of ``layer`` over ``images`` (image files or PIL images, one or many, or a
    ``(N,C,H,W)`` tensor already in the model's view; at least ``2 * (k + 1)``), with each unit's ``renders`` (and their
    ``statuses``) where given, and its ``negatives`` (renders minimizing it: the fair task); ``judge``: the 2-AFC
    task's feature space (:data:`~.judges.JUDGES`); ``classes``: describe the class effect (default:
    :func:`near_classifier`); ``progress(done, total)`` after each unit. ``options``: :func:`unit_trust`'s counts.

    Raises:
        InvalidOptionError: too few images, or a tensor of images that is not 4-D.
    """
    from ..circuits import class_effects  # circuits imports nothing of trust; loaded only when asked

    loaded = coerce_model(model)
    ref = resolve_layer(loaded, layer)
    if not isinstance(images, torch.Tensor):
        images = image_list(images)
        images = torch.stack([prepare_image(loaded, i).pixels for i in images]) if images else torch.zeros(0)
    elif images.dim() != 4:
        raise InvalidOptionError(f"trust_units() takes images as a (N,C,H,W) tensor; got shape {tuple(images.shape)}")
    for unit in units:
        check_channel(loaded, ref, unit)
    if images.shape[0] < 2 * (options.get("k", AFC_K) + 1):
        raise InvalidOptionError(f"The trust scores need at least {2 * (options.get('k', AFC_K) + 1)} dataset images "
                                 f"(got {images.shape[0]}): give a folder of more of them")
    values = unit_maxima(loaded, ref, images, runtime)
    data = TrustData(loaded, ref, values, lambda indices: images[list(indices)], independent, runtime=runtime,
                     seed=seed, judge=judge)
    effects = class_effects(loaded, ref, list(units)) if (near_classifier(loaded, ref) if classes is None
                                                          else classes) else None
    out = []
    for n, unit in enumerate(units):
        known = None
        if effects is not None:
            up, down = effects.top(unit, 5)
            known = (tuple((c.name or str(c.unit), c.weight) for c in up),
                     tuple((c.name or str(c.unit), c.weight) for c in down))
        out.append(unit_trust(data, unit, (renders or {}).get(unit), render_status=(statuses or {}).get(unit, "ok"),
                              negatives=(negatives or {}).get(unit),
                              classes=known, **options))
        if progress is not None:
            progress(n + 1, len(units))
    return out


def unit_maxima(model: LoadedModel, ref: LayerRef, images: torch.Tensor, runtime: Runtime | None = None, *,
                batch_size: int = ANALYSIS_BATCH) -> torch.Tensor:
    """``(N, C)``: each image's spatial maximum of every unit of ``ref``, for ``images`` ``(N,C,H,W)`` in [0, 1]."""
    parts = []
    with torch.no_grad(), Forward(model, [ref], runtime) as forward:
        for start in range(0, images.shape[0], batch_size):
            act = forward(model.preprocessing.normalize(images[start:start + batch_size].to(model.device)))[ref]
            parts.append(act.reshape(act.shape[0], act.shape[1], -1).amax(dim=2).cpu())
    return torch.cat(parts)

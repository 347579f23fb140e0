"""A layer's concepts: a sparse dictionary trained on its activation vectors over the user's images, measured on
held-out images against the raw channels and a PCA, saved and loaded as one file.

:func:`train_dictionary` splits the images (a seeded fifth held out), collects the training images' vectors
(every position, mirrored too), trains a :mod:`~.sae` dictionary, and measures it, the channels and a PCA with
:mod:`~.quality` on the held-out images; with ``stability``, a second seed's dictionary is trained and matched.
"""

from __future__ import annotations

import os
import pickle
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from ..analysis.activations import checked_layer
from ..analysis.inputs import collect_images, prepare_image
from ..arguments import checked
from ..errors import InvalidOptionError
from ..files import atomic_write
from ..layers import LayerRef
from ..runtime.core import Runtime
from ..zoo.model import LoadedModel, coerce_model
from .dictionary import Dictionary, Normalizer, channel_basis, pca_basis
from .quality import DictionaryQuality, Stability, measure, stability
from .sae import SAESettings, SparseAutoencoder, train_sae
from .vectors import ActivationVectors, collect_vectors

__all__ = ["ConceptDictionary", "train_dictionary", "load_dictionary", "held_out_split", "Progress"]

Progress = Callable[[str, int, int], None]
"""``progress(what, done, total)``: ``vectors`` (images), ``training`` (steps), ``measuring`` (dictionaries)."""

_FORMAT = 1


@dataclass
class ConceptDictionary:
    """A trained dictionary of a layer and what was measured of it.

    Attributes:
        model: The model's name; ``layer`` the layer.
        sae: The dictionary (:meth:`encode`, :meth:`decode`, :attr:`atoms`).
        settings: How it was trained.
        quality: The dictionary's numbers on the held-out images, then the channels' and the PCA's.
        usage: ``(K,)`` the share of held-out vectors each concept fires on.
        held_out: The held-out images' indices (of the images given).
        vectors: How many training vectors it saw; ``seconds`` the collection and training time.
        stability: Against a dictionary of the next seed, when measured.
        train_fve: Its FVE on (up to 20,000 of) the training vectors: far above the held-out FVE, it learnt the
            training images rather than the layer.
    """

    model: str
    layer: str
    sae: SparseAutoencoder
    settings: SAESettings
    quality: list[DictionaryQuality]
    usage: torch.Tensor
    held_out: list[int]
    vectors: int
    seconds: float
    stability: Stability | None = None
    train_fve: float | None = None

    @property
    def atoms(self) -> torch.Tensor:
        """``(K, C)`` each concept's direction in the layer's activation space (unit norm)."""
        return self.sae.atoms

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.sae.encode(x)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return self.sae.decode(z)

    def grid_codes(self, grids: torch.Tensor, chunk: int = 8192) -> torch.Tensor:
        """``(N, K, H, W)``: every concept at every position of the layer's activations ``grids`` ``(N, C, H, W)``
        (encoded ``chunk`` positions at a time)."""
        n, channels, height, width = grids.shape
        with torch.no_grad():
            codes = torch.cat([self.encode(part) for part in
                               grids.permute(0, 2, 3, 1).reshape(-1, channels).split(chunk)])
        return codes.reshape(n, height, width, -1).permute(0, 3, 1, 2)

    def by_usage(self) -> list[int]:
        """The concepts, most used first (dead ones last)."""
        return self.usage.argsort(descending=True, stable=True).tolist()

    def to_dict(self) -> dict[str, object]:
        return {"model": self.model, "layer": self.layer, "settings": asdict(self.settings),
                "quality": [q.to_dict() for q in self.quality], "held_out": self.held_out, "vectors": self.vectors,
                "seconds": self.seconds, "stability": self.stability.to_dict() if self.stability else None,
                "train_fve": self.train_fve}

    def save(self, path: str | os.PathLike[str]) -> Path:
        """One file (``torch.save`` of tensors and plain data, loadable with ``weights_only=True``), written
        atomically."""
        state = {"format": _FORMAT, "record": self.to_dict(), "usage": self.usage,
                 "weights": {k: v.clone() for k, v in self.sae.state_dict().items()}}
        atomic_write(Path(path), lambda tmp: torch.save(state, tmp))
        return Path(path)


@checked
def load_dictionary(path: str | os.PathLike[str]) -> ConceptDictionary:
    """A dictionary saved by :meth:`ConceptDictionary.save`."""
    try:
        state = torch.load(Path(path), weights_only=True)
    except (OSError, RuntimeError, pickle.UnpicklingError, EOFError, ValueError) as exc:
        raise InvalidOptionError(f"{path} is not a filterscope concept dictionary "
                                 f"({str(exc).splitlines()[0][:80]})") from None
    if not isinstance(state, dict) or state.get("format") != _FORMAT:
        raise InvalidOptionError(f"{path} is not a filterscope concept dictionary (no format {_FORMAT} record)")
    record, weights = state["record"], state["weights"]
    settings = SAESettings(**record["settings"])
    normalizer = Normalizer(weights["normalizer.mean"], weights["normalizer.scale"])
    sae = SparseAutoencoder(normalizer, settings.atoms, settings.k, settings.kind)
    sae.load_state_dict(weights)
    found = record["stability"]
    return ConceptDictionary(record["model"], record["layer"], sae.eval().requires_grad_(False), settings,
                             [DictionaryQuality(**q) for q in record["quality"]], state["usage"], record["held_out"],
                             record["vectors"], record["seconds"], Stability(**found) if found else None,
                             record.get("train_fve"))


def held_out_split(count: int, share: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Training and held-out image indices (sorted): a seeded ``share`` of ``count`` images held out."""
    order = torch.randperm(count, generator=torch.Generator().manual_seed(seed))
    held = max(1, round(count * share)) if share > 0 else 0
    return order[held:].sort().values, order[:held].sort().values


def _pixels(model: LoadedModel, images: torch.Tensor | str | os.PathLike[str] | Sequence[str | os.PathLike[str]]
            ) -> torch.Tensor:
    if isinstance(images, torch.Tensor):
        return images
    return torch.stack([prepare_image(model, p).pixels for p in collect_images(images)])


@checked
def train_dictionary(model: LoadedModel | torch.nn.Module, layer: str | LayerRef,
                     images: torch.Tensor | str | os.PathLike[str] | Sequence[str | os.PathLike[str]], *,
                     atoms: int | None = None, k: int = 32, kind: str = "topk", epochs: int = 5, views: int = 4,
                     flips: bool = True, per_image: int | None = None, held_out: float = 0.2, seed: int = 0,
                     stability_seed: int | None = None, runtime: Runtime | None = None,
                     progress: Progress | None = None) -> ConceptDictionary:
    """Train a sparse dictionary of ``layer`` on ``images`` (a folder, paths, or ``(N, C, H, W)`` in [0, 1]) and
    measure it on held-out images (see the module docstring).

    ``atoms``: the dictionary's size (default 8 times the layer's channels); ``k``: active concepts per vector;
    ``kind``: ``topk`` or ``batchtopk``; ``views``: random views of each training image besides it and its mirror
    image (the dictionary generalizes better: on 640 photos, held-out FVE 0.56 with none, 0.62 with 4); ``per_image``:
    vectors per image drawn by norm (default every position); ``stability_seed``: also train with this seed and
    match the two.
    """
    loaded = coerce_model(model)
    ref, channels = checked_layer(loaded, layer)
    pixels = _pixels(loaded, images)
    if not 0 <= held_out < 1 or pixels.shape[0] < 2:
        raise InvalidOptionError(f"held_out must be in [0, 1) and there must be at least 2 images (got {held_out}, "
                                 f"{pixels.shape[0]} image(s))")
    settings = SAESettings(atoms=atoms or 8 * channels, k=k, kind=kind, epochs=epochs, seed=seed)
    started = time.perf_counter()
    train, held = held_out_split(pixels.shape[0], held_out, seed)
    tell = progress or (lambda what, done, total: None)
    tell("vectors", 0, len(pixels))
    vectors = collect_vectors(loaded, ref, pixels[train], flips=flips, views=views, per_image=per_image, seed=seed,
                              runtime=runtime)
    tell("vectors", len(pixels), len(pixels))
    sae = train_sae(vectors.vectors, settings, progress=lambda step, steps, loss: tell("training", step, steps))
    seconds = time.perf_counter() - started
    quality, usage = _measured(loaded, ref, sae, vectors, pixels[held] if len(held) else pixels[train], settings,
                               tell)
    second = None
    if stability_seed is not None:
        other = train_sae(vectors.vectors, SAESettings(**{**asdict(settings), "seed": stability_seed}))
        second = stability(sae.atoms, other.atoms)
    step = max(1, len(vectors) // 20_000)
    train_fve = measure(sae, vectors.vectors[::step], settings.atoms, "training").fve
    return ConceptDictionary(loaded.name, str(ref), sae, settings, quality, usage, held.tolist(), len(vectors),
                             seconds, second, train_fve)


def _measured(model: LoadedModel, ref: LayerRef, sae: SparseAutoencoder, train: ActivationVectors, held: torch.Tensor,
              settings: SAESettings, tell: Progress) -> tuple[list[DictionaryQuality], torch.Tensor]:
    """The dictionary's, the channels' and the PCA's numbers on the held-out images, and each concept's usage."""
    vectors = collect_vectors(model, ref, held, flips=False).vectors
    bases = (channel_basis(train.vectors, settings.k), pca_basis(train.vectors, settings.k, settings.atoms))
    candidates: list[tuple[Dictionary, int, str]] = [(sae, settings.atoms, "SAE"),
                                                     *((b, b.atoms.shape[0], b.name) for b in bases)]
    quality = []
    for n, (dictionary, size, name) in enumerate(candidates):
        tell("measuring", n, len(candidates))
        quality.append(measure(dictionary, vectors, size, name, model=model, ref=ref, images=held))
    tell("measuring", len(candidates), len(candidates))
    with torch.no_grad():
        usage = torch.cat([(sae.encode(part) != 0).float().sum(0, keepdim=True) for part in vectors.split(8192)]
                          ).sum(0) / max(len(vectors), 1)
    return quality, usage

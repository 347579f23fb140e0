"""Shared and exclusive concepts of two layers: a BatchTopK crosscoder over their paired activation vectors.

After Lindsey et al. 2024 (sparse crosscoders: one dictionary whose every latent decodes into both models) with
the BatchTopK fix of Minder et al. 2025 (an L1 penalty invents exclusive latents; a TopK budget does not). The two
layers see the same images; their grids pooled to the same side (:func:`~.matching.align_grids`) pair every
position of A with the same position of B. Each side is centred and scaled to the same mean norm, so neither
dominates, and the pair ``[x_A, x_B]`` is one vector of a sparse autoencoder (:mod:`filterscope.concepts.sae`)
whose atoms are unit vectors of the joint space: each latent's decoder splits into A's part and B's part.

Each latent's **relative decoder norm** ``Δ = ((|d_B| - |d_A|) / max(|d_A|, |d_B|) + 1) / 2`` (Minder et al.):
0 where only A's part is non-zero, 1 where only B's, 0.5 where both are alike. A latent is ``a-only`` below
:data:`EXCLUSIVE`, ``b-only`` above ``1 - EXCLUSIVE``, ``shared`` within :data:`SHARED` of 0.5, ``mixed``
otherwise, ``dead`` if it never fires on the held-out vectors.

The check against false exclusives: a latent said to be B's alone may still be *readable* from A (B writes it
where A keeps it in other directions). Minder et al.'s Latent Scaling asks how much of the other model's
activation the latent explains along its own decoder direction, which needs the two layers to share one space;
here the layers may differ in width and basis, so the check is its linear-probe form: a ridge regression from
A's vectors to the latent's activation, its held-out R² (:attr:`Latent.readable`). An exclusive latent whose
activation the other side predicts well (R² above :data:`READABLE`) is reported as ``readable``, not exclusive.

Hand-written on the project's own sparse autoencoder; ``overcomplete`` has no crosscoder, and the crosscoder code
of the papers is for transformer residual streams.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any

import torch

from ..concepts.sae import SAESettings, SparseAutoencoder, train_sae
from ..errors import InvalidOptionError
from .matching import align_grids

__all__ = ["Latent", "Crosscoder", "ConceptSplit", "train_crosscoder", "paired_vectors", "concept_split",
           "EXCLUSIVE", "SHARED", "READABLE", "LATENT_KINDS"]

EXCLUSIVE = 0.1
"""Relative decoder norm below this: A's alone; above ``1 - EXCLUSIVE``: B's alone."""
SHARED = 0.1
"""Relative decoder norm within this of 0.5: shared."""
READABLE = 0.5
"""An exclusive latent whose activation the other side predicts with a held-out R² above this is ``readable``."""
LATENT_KINDS = ("shared", "a-only", "b-only", "mixed", "dead")
SHARED_KEPT = 8
"""Shared concepts whose decoder directions a diff keeps (the most used), to render them in both networks."""
_RIDGE = 1e-2  # the probe's ridge, relative to the mean eigenvalue of the other side's covariance


@dataclass(frozen=True)
class Latent:
    """One crosscoder latent: its decoder norms in A and B, relative norm, kind, how often it fires on held-out
    vectors (``usage``), and for an exclusive one the held-out R² of the other side's linear probe
    (``readable``)."""

    index: int
    norm_a: float
    norm_b: float
    delta: float
    kind: str
    usage: float
    readable: float | None = None

    @property
    def exclusive(self) -> bool:
        """Exclusive to one side and not readable from the other."""
        return self.kind in ("a-only", "b-only") and (self.readable is None or self.readable <= READABLE)

    def to_dict(self) -> dict[str, object]:
        return {"index": self.index, "norm_a": self.norm_a, "norm_b": self.norm_b, "delta": self.delta,
                "kind": self.kind, "usage": self.usage, "readable": self.readable}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Latent:
        readable = data.get("readable")
        return cls(int(data["index"]), float(data["norm_a"]), float(data["norm_b"]), float(data["delta"]),
                   str(data["kind"]), float(data["usage"]), None if readable is None else float(readable))


@dataclass(frozen=True)
class Crosscoder:
    """A crosscoder of layer ``layer_a`` of A and ``layer_b`` of B (see the module docstring): its sparse
    autoencoder over the joint vectors, the split (A's ``channels_a`` first), each latent, and on held-out vectors
    the share of each side's variance it explains (``fve_a``, ``fve_b``)."""

    layer_a: str
    layer_b: str
    channels_a: int
    channels_b: int
    sae: SparseAutoencoder
    scales: tuple[float, float]
    latents: tuple[Latent, ...]
    fve_a: float
    fve_b: float
    settings: SAESettings
    vectors: int
    seconds: float

    def count(self, kind: str) -> int:
        return sum(1 for latent in self.latents if latent.kind == kind)

    def exclusive(self, side: str) -> list[Latent]:
        """The latents exclusive to ``side`` (``a`` or ``b``) and not readable from the other, most used first."""
        kind = f"{side}-only"
        return sorted((lt for lt in self.latents if lt.kind == kind and lt.exclusive), key=lambda lt: -lt.usage)

    def encode(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """``(N, K)`` codes of paired raw vectors ``a`` ``(N, C_a)`` and ``b`` ``(N, C_b)``."""
        return self.sae.encode(_joined(a, b, self.scales))

    def summary(self) -> dict[str, object]:
        """Counts and quality, without the latents."""
        return {"layer_a": self.layer_a, "layer_b": self.layer_b, "atoms": len(self.latents),
                "counts": {kind: self.count(kind) for kind in LATENT_KINDS},
                "exclusive_a": len(self.exclusive("a")), "exclusive_b": len(self.exclusive("b")),
                "fve_a": self.fve_a, "fve_b": self.fve_b, "vectors": self.vectors, "seconds": self.seconds,
                "k": self.settings.k, "kind": self.settings.kind}

    def to_dict(self) -> dict[str, object]:
        return {**self.summary(), "latents": [lt.to_dict() for lt in self.latents]}


@dataclass(frozen=True)
class ConceptSplit:
    """What a diff keeps of a crosscoder (:meth:`Crosscoder.summary`'s numbers, every latent, the top images of
    each exclusive latent and of those leaning furthest to each side: indices into the diff's images, strongest
    first; and the most used shared concepts' decoder directions, ``(concept, A's part, B's part)``, to render
    them in each network)."""

    layer_a: str
    layer_b: str
    latents: tuple[Latent, ...]
    fve_a: float
    fve_b: float
    k: int
    vectors: int
    seconds: float
    top_images: tuple[tuple[int, tuple[int, ...]], ...] = ()
    directions: tuple[tuple[int, tuple[float, ...], tuple[float, ...]], ...] = ()

    def count(self, kind: str) -> int:
        return sum(1 for latent in self.latents if latent.kind == kind)

    def exclusive(self, side: str) -> list[Latent]:
        """The latents exclusive to ``side`` (``a`` or ``b``) and not readable from the other, most used first."""
        kind = f"{side}-only"
        return sorted((lt for lt in self.latents if lt.kind == kind and lt.exclusive), key=lambda lt: -lt.usage)

    def images_of(self, latent: int) -> tuple[int, ...]:
        return dict(self.top_images).get(latent, ())

    def leaning(self, side: str) -> list[Latent]:
        """The live latents with top images, leaning furthest to ``side`` (``a`` or ``b``) first."""
        kept = {j for j, _ in self.top_images}
        found = [lt for lt in self.latents if lt.index in kept and lt.kind != "dead"]
        return sorted(found, key=lambda lt: lt.delta, reverse=side == "b")

    def to_dict(self) -> dict[str, object]:
        return {"layer_a": self.layer_a, "layer_b": self.layer_b, "latents": [lt.to_dict() for lt in self.latents],
                "fve_a": self.fve_a, "fve_b": self.fve_b, "k": self.k, "vectors": self.vectors,
                "seconds": self.seconds, "counts": {kind: self.count(kind) for kind in LATENT_KINDS},
                "top_images": {str(j): list(images) for j, images in self.top_images},
                "directions": [[j, list(a), list(b)] for j, a, b in self.directions]}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ConceptSplit:
        return cls(str(data["layer_a"]), str(data["layer_b"]), tuple(Latent.from_dict(lt) for lt in data["latents"]),
                   float(data["fve_a"]), float(data["fve_b"]), int(data["k"]), int(data["vectors"]),
                   float(data["seconds"]),
                   tuple((int(j), tuple(int(i) for i in images)) for j, images in data["top_images"].items()),
                   tuple((int(j), tuple(float(v) for v in a), tuple(float(v) for v in b))
                         for j, a, b in data.get("directions") or ()))


def concept_split(crosscoder: Crosscoder, a: torch.Tensor, b: torch.Tensor, images: torch.Tensor,
                  top: int = 10, lean: int = 20) -> ConceptSplit:
    """The record of ``crosscoder`` with the ``top`` images (by its largest activation over the paired vectors
    ``a``, ``b``, each from image ``images``) of each exclusive latent and of the ``lean`` live latents leaning
    furthest to each side (by relative decoder norm: what changed most, exclusive or not)."""
    live = [lt for lt in crosscoder.latents if lt.kind != "dead"]
    leaning = sorted(live, key=lambda lt: lt.delta)  # the most A-leaning first, the most B-leaning last
    chosen = list(dict.fromkeys([lt.index for side in ("a", "b") for lt in crosscoder.exclusive(side)]
                                + [lt.index for lt in leaning[:lean] + leaning[-lean:]]))
    count = int(images.max()) + 1 if len(images) else 0
    best = torch.zeros(count, len(chosen))
    with torch.no_grad():
        for start in range(0, a.shape[0], 8192):
            codes = crosscoder.encode(a[start:start + 8192], b[start:start + 8192])[:, chosen]
            index = images[start:start + 8192, None].expand_as(codes)
            best.scatter_reduce_(0, index, codes, reduce="amax")
    tops = tuple((j, tuple(int(i) for i in best[:, n].argsort(descending=True, stable=True)[:top]
                          if best[i, n] > 0)) for n, j in enumerate(chosen))
    shared = sorted((lt for lt in live if lt.kind == "shared"), key=lambda lt: -lt.usage)[:SHARED_KEPT]
    atoms, width = crosscoder.sae.atoms, crosscoder.channels_a
    directions = tuple((lt.index, tuple(atoms[lt.index, :width].tolist()), tuple(atoms[lt.index, width:].tolist()))
                       for lt in shared)
    return ConceptSplit(crosscoder.layer_a, crosscoder.layer_b, crosscoder.latents, crosscoder.fve_a,
                        crosscoder.fve_b, crosscoder.settings.k, crosscoder.vectors, crosscoder.seconds, tops,
                        directions)


def _joined(a: torch.Tensor, b: torch.Tensor, scales: tuple[float, float]) -> torch.Tensor:
    return torch.cat([a.float() * scales[0], b.float() * scales[1]], dim=1)


def paired_vectors(a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Every position of two layers' activations over the same images (``(N, C, H, W)``, pooled to the same grid)
    as paired vectors ``(M, C_a)`` and ``(M, C_b)``, with each vector's image index ``(M,)``."""
    a, b = align_grids(a, b)
    if a.dim() == 2:
        return a.float(), b.float(), torch.arange(a.shape[0])
    positions = a.shape[-2] * a.shape[-1]
    flat_a = a.float().flatten(2).transpose(1, 2).reshape(-1, a.shape[1])
    flat_b = b.float().flatten(2).transpose(1, 2).reshape(-1, b.shape[1])
    return flat_a, flat_b, torch.arange(a.shape[0]).repeat_interleave(positions)


def _fve(x: torch.Tensor, x_hat: torch.Tensor) -> float:
    return 1.0 - float((x - x_hat).pow(2).sum() / (x - x.mean(0)).pow(2).sum().clamp(min=1e-12))


def _probe(x_train: torch.Tensor, y_train: torch.Tensor, x_test: torch.Tensor, y_test: torch.Tensor) -> torch.Tensor:
    """Held-out R² ``(K,)`` of a ridge regression from ``x`` to each column of ``y``."""
    mean_x, mean_y = x_train.double().mean(0), y_train.double().mean(0)
    xc, yc = x_train.double() - mean_x, y_train.double() - mean_y
    gram = xc.T @ xc
    ridge = _RIDGE * float(torch.diagonal(gram).mean()) * torch.eye(gram.shape[0], dtype=torch.float64)
    weights = torch.linalg.solve(gram + ridge, xc.T @ yc)
    predicted = (x_test.double() - mean_x) @ weights + mean_y
    residual = (y_test.double() - predicted).pow(2).sum(0)
    total = (y_test.double() - y_test.double().mean(0)).pow(2).sum(0)
    return torch.where(total > 1e-12, 1 - residual / total.clamp(min=1e-12), torch.zeros_like(total))


def _kind(delta: float, usage: float) -> str:
    if usage == 0:
        return "dead"
    if delta < EXCLUSIVE:
        return "a-only"
    if delta > 1 - EXCLUSIVE:
        return "b-only"
    return "shared" if abs(delta - 0.5) <= SHARED else "mixed"


def train_crosscoder(a: torch.Tensor, b: torch.Tensor, images: torch.Tensor, settings: SAESettings, *,
                     layer_a: str = "A", layer_b: str = "B", held_share: float = 0.2,
                     progress: Callable[[int, int, float], None] | None = None) -> Crosscoder:
    """A crosscoder of paired vectors ``a`` ``(M, C_a)`` and ``b`` ``(M, C_b)`` (:func:`paired_vectors`), the
    vectors of a held-out share of the images (``images``: each vector's image, ``(M,)``) kept for its numbers
    (see the module docstring). Seeded by ``settings.seed`` (the split too).

    Raises:
        InvalidOptionError: the two sides hold different numbers of vectors, or too few images to hold some out.
    """
    started = time.perf_counter()
    if a.shape[0] != b.shape[0] or a.shape[0] != images.shape[0]:
        raise InvalidOptionError(f"The crosscoder needs paired vectors: got {a.shape[0]} of A, {b.shape[0]} of B "
                                 f"and {images.shape[0]} image indices")
    ids = torch.unique(images)
    if len(ids) < 5:
        raise InvalidOptionError(f"The crosscoder holds out a share of the images and needs at least 5; got {len(ids)}")
    generator = torch.Generator().manual_seed(settings.seed)
    held_ids = ids[torch.randperm(len(ids), generator=generator)[:max(1, round(held_share * len(ids)))]]
    held = torch.isin(images, held_ids)
    # each side to mean norm 1 around its mean, so that neither outweighs the other in the joint space
    scales = tuple(1.0 / float((x[~held] - x[~held].mean(0)).norm(dim=1).mean().clamp(min=1e-12)) for x in (a, b))
    joint = _joined(a, b, scales)  # type: ignore[arg-type]
    sae = train_sae(joint[~held], settings, progress=progress)
    with torch.no_grad():
        codes = torch.cat([sae.encode(part) for part in joint[held].split(8192)])
        decoded = torch.cat([sae.decode(part) for part in codes.split(8192)])
    ca = a.shape[1]
    fve_a, fve_b = _fve(joint[held][:, :ca], decoded[:, :ca]), _fve(joint[held][:, ca:], decoded[:, ca:])
    atoms = sae.atoms
    norm_a, norm_b = atoms[:, :ca].norm(dim=1), atoms[:, ca:].norm(dim=1)
    delta = 0.5 * ((norm_b - norm_a) / torch.maximum(norm_a, norm_b).clamp(min=1e-12) + 1)
    usage = (codes > 0).float().mean(0)
    latents = [Latent(j, float(norm_a[j]), float(norm_b[j]), float(delta[j]), _kind(float(delta[j]), float(usage[j])),
                      float(usage[j])) for j in range(atoms.shape[0])]
    latents = _probed(latents, a, b, held, sae, joint)
    return Crosscoder(layer_a, layer_b, ca, b.shape[1], sae, scales, tuple(latents), fve_a, fve_b,  # type: ignore[arg-type]
                      settings, int((~held).sum()), time.perf_counter() - started)


def _probed(latents: list[Latent], a: torch.Tensor, b: torch.Tensor, held: torch.Tensor, sae: SparseAutoencoder,
            joint: torch.Tensor) -> list[Latent]:
    """Each exclusive latent with the held-out R² of the other side's probe of its activation."""
    out = list(latents)
    only_a = [lt.index for lt in latents if lt.kind == "a-only"]
    only_b = [lt.index for lt in latents if lt.kind == "b-only"]
    if not only_a and not only_b:
        return out
    with torch.no_grad():  # every vector encoded once, the exclusive latents' columns kept
        codes = torch.cat([sae.encode(part)[:, only_a + only_b] for part in joint.split(8192)])
    for other, chosen, mine in ((b, only_a, codes[:, :len(only_a)]), (a, only_b, codes[:, len(only_a):])):
        if chosen:
            r2 = _probe(other[~held], mine[~held], other[held], mine[held])
            for index, value in zip(chosen, r2.tolist()):
                out[index] = replace(out[index], readable=float(value))
    return out

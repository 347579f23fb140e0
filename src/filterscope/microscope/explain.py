"""The image page's work: what an uploaded image is made of at a layer of the atlas's model.

``POST /api/m/MODEL/LAYER/explain`` takes the image as the request body (any format Pillow reads; the
``Content-Type`` is not trusted) and answers the semantic dictionary at every position, the neuron groups' heat
maps with each group's strongest units, and the spatial attribution of the top class (when the model's output
is class logits; :mod:`filterscope.explain`), with links to the units' pages and render thumbnails.

Uploads are hostile input: at most :data:`MAX_BYTES`, at most :data:`MAX_PIXELS` pixels (checked from the
header, before any decoding: a 40,000 x 40,000 PNG is refused without being expanded), not an image or a
truncated one: each a 4xx with a message. Nothing is written: the image lives in memory for the request. One
explanation runs at a time (a lock: the model is shared).
"""

from __future__ import annotations

import io
import threading
import warnings
from dataclasses import dataclass, field

from PIL import Image, UnidentifiedImageError

from ..errors import ImageError, InvalidOptionError
from ..explain import neuron_groups, semantic_dictionary, spatial_attribution
from ..layers import resolve_layer
from ..zoo.model import LoadedModel

__all__ = ["Explainer", "UploadError", "MAX_BYTES", "MAX_PIXELS", "read_upload"]

MAX_BYTES = 20 * 2**20
"""The largest upload accepted."""
MAX_PIXELS = 50_000_000
"""The most pixels an uploaded image may have (its header is read before it is decoded)."""


class UploadError(ImageError):
    """An upload the image page refuses; ``status`` is the HTTP status to answer."""

    def __init__(self, message: str, status: int = 422) -> None:
        super().__init__(message)
        self.status = status


def read_upload(data: bytes) -> Image.Image:
    """The uploaded bytes as a decoded RGB image, or an :class:`UploadError`."""
    if not data:
        raise UploadError("The upload is empty: send an image file as the request body", 400)
    if len(data) > MAX_BYTES:
        raise UploadError(f"The upload has {len(data):,} bytes; the limit is {MAX_BYTES:,}", 413)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
            width, height = image.size
            if width * height > MAX_PIXELS:
                raise UploadError(f"The image is {width} x {height} pixels; the limit is {MAX_PIXELS:,} pixels", 413)
            image.load()
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise UploadError(f"The image has too many pixels; the limit is {MAX_PIXELS:,}", 413) from None
    except UnidentifiedImageError:
        raise UploadError("The upload is not an image this server reads (PNG, JPEG, WebP, TIFF, ...)") from None
    except OSError as exc:  # truncated or damaged files
        raise UploadError(f"The image cannot be decoded: {exc}") from None
    return image.convert("RGB")


@dataclass
class Explainer:
    """The atlas's model, loaded once, and the lock that lets one explanation run at a time."""

    model: LoadedModel
    groups: int = 6
    k: int = 4
    lock: threading.Lock = field(default_factory=threading.Lock)

    def explain(self, image: Image.Image, layer: str) -> dict[str, object]:
        """The dictionary (every position), the groups' heat maps and the attribution map, as JSON data."""
        with self.lock:
            ref = resolve_layer(self.model, layer)
            dictionary = semantic_dictionary(self.model, image, ref, k=self.k)
            found = neuron_groups(self.model, dictionary.image, ref, n=self.groups)
            try:
                attribution = spatial_attribution(self.model, dictionary.image, ref)
            except InvalidOptionError:  # no class logits: no attribution
                attribution = None
        return {"layer": str(ref), "grid": list(dictionary.units.shape[:2]), "units": dictionary.units.tolist(),
                "values": [[[round(v, 4) for v in cell] for cell in row] for row in dictionary.values.tolist()],
                "attribution": None if attribution is None else {
                    "target": attribution.target, "name": attribution.name, "logit": attribution.logit,
                    "map": attribution.map.tolist()},
                "groups": {"explained": found.explained, "part": found.part, "spatial": found.spatial.tolist(),
                           "units": found.channels.topk(min(self.k, found.channels.shape[1]), dim=1).indices.tolist(),
                           "attribution": None if attribution is None else attribution.of_groups(found).tolist()}}

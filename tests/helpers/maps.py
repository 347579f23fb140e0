"""Shared activation-atlas fixtures: small map settings, a photo folder, a one-layer map build."""

from __future__ import annotations

import pytest

import filterscope as fs
from filterscope.maps import MapSettings

from .models import color_classes, save_photos

SMALL = MapSettings(grid=4, min_count=2, icon_size=32, n_neighbors=10)


@pytest.fixture(scope="module")
def photo_folder(tmp_path_factory):
    return save_photos(tmp_path_factory.mktemp("photos"), 60)


def build(folder, photos, settings=SMALL, executor=None, progress=None):
    return fs.build_atlas(folder, color_classes(), "conv2", recipes=(), dataset=photos, circuits=False, trust=False,
                          maps=settings, executor=executor, progress=progress)

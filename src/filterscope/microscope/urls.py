"""Every URL the microscope serves, built in one place (as datasette's ``url_builder.py``): handlers, the
JSON API's links and the pages' data ask :class:`Urls`, never an f-string of their own."""

from __future__ import annotations

from urllib.parse import quote

__all__ = ["Urls"]


def _q(text: str) -> str:
    return quote(text, safe="")


class Urls:
    """The microscope's URLs; names and layers are percent-encoded (a layer name may hold ``/`` or ``.``)."""

    # ------------------------------------------------------------------------------------------ pages
    def home(self) -> str:
        return "/"

    def layer(self, model: str, layer: str) -> str:
        return f"/m/{_q(model)}/{_q(layer)}"

    def unit(self, model: str, layer: str, unit: int) -> str:
        return f"{self.layer(model, layer)}/{unit}"

    def image_page(self, model: str, layer: str) -> str:
        return f"{self.layer(model, layer)}/image"

    def map_page(self, model: str, layer: str) -> str:
        return f"{self.layer(model, layer)}/map"

    def diff_page(self, model: str, layer: str) -> str:
        return f"{self.layer(model, layer)}/diff"

    def exemplar_page(self, model: str, layer: str, unit: int, exemplar: int) -> str:
        return f"{self.unit(model, layer, unit)}/exemplar/{exemplar}"

    def static(self, name: str) -> str:
        """A file of ``static/`` (the script, the stylesheet)."""
        return f"/static/{_q(name)}"

    # -------------------------------------------------------------------------------------------- api
    def api_models(self) -> str:
        return "/api/models"

    def api_layer(self, model: str, layer: str) -> str:
        return f"/api{self.layer(model, layer)}"

    def api_unit(self, model: str, layer: str, unit: int) -> str:
        return f"/api{self.unit(model, layer, unit)}"

    def api_images(self, model: str, layer: str) -> str:
        return f"{self.api_layer(model, layer)}/images"

    def api_explain(self, model: str, layer: str) -> str:
        return f"{self.api_layer(model, layer)}/explain"

    def api_render(self, model: str, layer: str, unit: int) -> str:
        return f"{self.api_unit(model, layer, unit)}/render"

    def api_map(self, model: str, layer: str) -> str:
        return f"{self.api_layer(model, layer)}/map"

    def api_diff(self, model: str, layer: str) -> str:
        return f"{self.api_layer(model, layer)}/diff"

    def api_map_cell(self, model: str, layer: str, cell: int) -> str:
        return f"{self.api_map(model, layer)}/cells/{cell}"

    def api_job(self, job: int) -> str:
        return f"/api/jobs/{job}"

    # ----------------------------------------------------------------------------------------- images
    def render_image(self, render: int) -> str:
        return f"/img/render/{render}"

    def render_thumb(self, render: int) -> str:
        return f"/img/render/{render}/thumb"

    def exemplar_crop(self, exemplar: int) -> str:
        return f"/img/exemplar/{exemplar}"

    def exemplar_thumb(self, exemplar: int) -> str:
        return f"/img/exemplar/{exemplar}/thumb"

    def map_icon(self, map_id: int, cell: int) -> str:
        return f"/img/map/{map_id}/{cell}"

    def map_patch(self, map_id: int, sample: int) -> str:
        return f"/img/patch/{map_id}/{sample}"

    def exemplar_source(self, exemplar: int) -> str:
        return f"/img/source/{exemplar}"

    @staticmethod
    def is_data(path: str) -> bool:
        """Whether ``path`` is answered with JSON or bytes (its errors too), not with an HTML page."""
        return path.startswith(("/api/", "/img/", "/static/"))

"""The microscope: a local web page to browse an atlas (``filterscope serve OUT``).

* :mod:`.server`: the FastAPI application, one router per page family: :mod:`.pages`, :mod:`.api` (JSON),
  :mod:`.images` (by id); :mod:`.urls` builds every URL, :mod:`.context` gives handlers the atlas;
* :mod:`.jobs`: rendering missing units on demand (``--render``);
* ``templates/`` and ``static/``: the HTML shells, one script and one stylesheet (no CDN, no build step).
"""

from .jobs import Job, RenderJobs
from .server import create_app

__all__ = ["create_app", "RenderJobs", "Job"]

"""The ``serve`` command: the microscope, a local web page to browse an atlas."""

import ipaddress
import socket
from pathlib import Path
from typing import Annotated, Optional

import typer

from ..atlas.store import AtlasStore
from ..engine.recipes import Recipe, get_recipe
from ..errors import AtlasError, InvalidOptionError
from ..zoo import LoadedModel, read_preprocessing, reload_model
from ..zoo.weights import weights_fingerprint
from .app import app, guarded
from .options import DeviceOption, PreprocessingOption, SeedOption, WeightsOption, load

__all__ = ["serve_command", "render_settings"]


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _check_port(host: str, port: int) -> None:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            raise InvalidOptionError(f"Cannot listen on {host}:{port} ({exc.strerror or exc}); choose another --port "
                                     "or --host") from None


def render_settings(atlas: Path, model: Optional[str], weights: Optional[str], preprocessing: Optional[Path],
                    seed: int, device: str, recipe: Optional[str]) -> tuple[LoadedModel, Recipe]:
    """The model and recipe of on-demand renders: the atlas's own model (checked against the weights'
    fingerprint it recorded) and its most used recipe, unless the options say otherwise."""
    with AtlasStore(atlas, create=False, readonly=True) as store:
        record = store.model(None)
        used = store.most_used_recipe(record.id)
    if model is None and weights is None:  # the atlas's own network: its source and the weights it recorded
        prep = read_preprocessing(preprocessing) if preprocessing is not None else None
        loaded = reload_model(record.source or record.name, record.weights, preprocessing=prep, device=device)
    else:
        loaded = load(model or record.source or record.name, weights, seed, device, True, preprocessing)
    if model is None and weights_fingerprint(loaded.module) != record.weights_hash:
        raise AtlasError(f"The atlas's {record.name} was built with other weights ({record.weights}; SHA-256 "
                         f"{record.weights_hash[:12]}...) than {loaded.weights}: give them with --weights")
    if recipe is not None:
        chosen = get_recipe(recipe)
    elif used is not None:
        chosen = used
    else:
        chosen = get_recipe("paper")
    return loaded, chosen


@app.command("serve")
@guarded
def serve_command(
    out: Annotated[Path, typer.Argument(help="The atlas folder (see filterscope atlas build).", show_default=False)],
    host: Annotated[str, typer.Option("--host", help="Address to listen on. Other than 127.0.0.1 makes the atlas "
                                                     "visible to your network.")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", help="Port to listen on.")] = 8000,
    render: Annotated[bool, typer.Option("--render", help="Let pages render units the atlas lacks (in a background "
                                                          "worker, written to the atlas). Without it the server "
                                                          "never writes.")] = False,
    explain: Annotated[bool, typer.Option("--explain", help="Load the atlas's model so that the image page explains "
                                                            "uploaded images (in memory; nothing is written).")] = False,
    recipe: Annotated[Optional[str], typer.Option(
        "--recipe", help="With --render: the recipe of new renders (default: the one the atlas uses most).")] = None,
    model: Annotated[Optional[str], typer.Option(
        "--model", "-m", help="With --render or --explain: the model to load (default: the atlas's own, FILE.py:FACTORY sources "
                              "included).")] = None,
    weights: WeightsOption = None,
    preprocessing: PreprocessingOption = None,
    seed: SeedOption = 0,
    device: DeviceOption = "auto",
) -> None:
    """Browse an atlas in a web browser: layers as grids of units, each unit with its images, exemplars and statistics.

    Example: filterscope serve out/demo/atlas   (then open http://127.0.0.1:8000/)
    """
    import uvicorn

    from ..microscope import RenderJobs, create_app
    from ..microscope.explain import Explainer

    if not 0 < port < 65536:
        raise InvalidOptionError(f"--port must be 1-65535 (got {port})")
    AtlasStore(out, create=False, readonly=True).close()  # a missing or unreadable atlas fails before any model loads
    jobs, explainer = None, None
    if render or explain:
        loaded, chosen = render_settings(out, model, weights, preprocessing, seed, device, recipe)
        jobs = RenderJobs(out, loaded, chosen, seed) if render else None
        explainer = Explainer(loaded) if explain or render else None
    application = create_app(out, jobs=jobs, explainer=explainer)
    _check_port(host, port)
    if not _loopback(host):
        typer.echo(f"warning: listening on {host}: anyone who can reach this machine can browse the atlas"
                   f"{' and start renders' if render else ''}", err=True)
    shown = f"[{host}]" if ":" in host else host
    typer.echo(f"serving {out} at http://{shown}:{port}/{' (--render: missing units can be rendered)' if render else ''}"
               " — Ctrl-C to stop")
    uvicorn.run(application, host=host, port=port, log_level="warning")

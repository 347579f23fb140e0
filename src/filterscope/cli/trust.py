"""The ``trust`` command: can a unit's pictures be believed, and what is the unit? (:mod:`filterscope.trust`)

For visualization PNGs (the model, weights, layer and unit read from their metadata) over a folder of the user's
images, or for the units of an atlas (the records its build computed).
"""

import json
import sys
from pathlib import Path
from typing import Annotated, Optional

import torch
import typer
from tqdm.auto import tqdm

from ..analysis import collect_images
from ..atlas import Atlas
from ..errors import InvalidOptionError
from ..files import atomic_write_text, check_output
from ..images import load_image, read_png_metadata
from ..layers import resolve_layer
from ..tensors import to_tensor
from ..trust import AFCScore, UnitTrust, independent_network, trust_units
from ..trust.judges import JUDGES
from ..trust.paths import PATH_ALPHA
from ..zoo import WeightsSource, reload_model
from .app import app, guarded
from .options import DeviceOption, QuietOption, at_least, parse_indices


@app.command("trust")
@guarded
def trust_command(
    pngs: Annotated[Optional[list[Path]], typer.Argument(
        help="Visualization PNGs (or folders of them) made by filterscope visualize.", show_default=False)] = None,
    images: Annotated[Optional[list[Path]], typer.Option(
        "--images", help="Your images (files or folders; 20 at least, a few hundred is better): the unit's exemplars "
                         "and the random baseline come from them.")] = None,
    atlas: Annotated[Optional[Path], typer.Option(
        "--atlas", help="Show the trust records an atlas build computed, instead of PNGs.")] = None,
    layer: Annotated[Optional[str], typer.Option("--layer", "-l", help="With --atlas: the layer.")] = None,
    units: Annotated[Optional[str], typer.Option("--units", "-u", help="With --atlas: units (default all).")] = None,
    tasks: Annotated[int, typer.Option("--tasks", help="2-AFC tasks per unit and kind of reference.")] = 200,
    independent: Annotated[Optional[str], typer.Option(
        "--independent", help="The network that judges similarity and classes (default efficientnet_lite2, or "
                              "efficientnet_lite1 for Lite2 itself).", show_default=False)] = None,
    judge: Annotated[Optional[str], typer.Option(
        "--judge", help="The 2-AFC task's feature space: matched (the independent network's blocks at the unit's "
                        "depth, the default), pooled, colour-texture (a non-neural control).",
        show_default=False)] = None,
    json_path: Annotated[Optional[Path], typer.Option("--json", help="Also write the records as JSON.")] = None,
    seed: Annotated[int, typer.Option("--seed", help="Seeds the random images and the 2-AFC tasks.")] = 0,
    device: DeviceOption = "auto",
    quiet: QuietOption = False,
) -> None:
    """Trust scores and a description of each unit: path similarity (does the render drive the earlier layers like the unit's natural exemplars?), the machine 2-AFC score of renders and exemplars (chance 0.5), flags (another-path, renders-2afc, silent, not-improved), and what the unit is (exemplar classes, colours, spread).

    Example: filterscope trust out/efficientnet_lite0-_blocks.15-f0016.png --images photos/
    """
    if json_path is not None:
        check_output(json_path, folder=False)
    if atlas is not None:
        if pngs:
            raise InvalidOptionError("Give PNGs or --atlas, not both")
        if judge is not None or images:
            raise InvalidOptionError("--atlas shows the records its build computed (with its judge, over its dataset): "
                                     "--judge and --images go with PNGs")
        records = _from_atlas(atlas, layer, units)
    else:
        if not pngs or not images:
            raise InvalidOptionError("Give visualization PNGs with --images (a folder of your images), or --atlas OUT "
                                     "-l LAYER; see filterscope trust --help")
        at_least(tasks, 1, "--tasks")
        if judge is not None:
            JUDGES.get(judge)  # an unknown name: the one-line error with the choices, before any work
        records = _from_pngs(pngs, images, tasks, independent, judge, seed, device, quiet)
    for record in records:
        typer.echo(describe(record))
    if json_path is not None:
        typer.echo(f"wrote {atomic_write_text(json_path, json.dumps([r.to_dict() for r in records], indent=2))}")


def describe(record: UnitTrust) -> str:
    """A unit's record in a few lines."""
    lines = [f"{record.layer} unit {record.unit}: {', '.join(record.flags) or 'no flags'}"]
    if record.paths is not None:
        p = record.paths
        test = (f"; p = {p.p_value:.2f} against {len(p.null)} held-out exemplars (flagged at p <= {PATH_ALPHA}: a "
                f"false-alarm rate of {p.false_alarm:.0%} on natural images)") if p.p_value is not None else ""
        lines.append(f"  path similarity: the render is closer to the exemplars than random images are in "
                     f"{p.share:.0%} of {len(p.layers)} earlier layers{test}")
    scores = ", ".join(f"{_kind(s)} {s.score:.2f} ± {s.stderr:.2f}" for s in record.afc)
    renders, exemplars = record.score("renders"), record.score("exemplars")
    ratio = f"; renders ÷ exemplars {renders.score / exemplars.score:.2f} (people: 0.89)" if renders and exemplars \
        and exemplars.score > 0 else ""
    lines.append(f"  2-AFC ({record.independent}, {record.judge} judge; chance 0.50): {scores}{ratio}")
    check = renders.test if renders is not None else None
    if check is not None:
        lines.append(f"  renders against {len(check.null)} sets of as many of its own exemplars: {check.score:.2f} "
                     f"against their median {check.median:.2f}, p = {check.p_value:.2f} (flagged at p <= "
                     f"{check.alpha}: a false-alarm rate of {check.false_alarm:.0%} for renders as informative as "
                     "exemplars)")
    lines.append(f"  what it is: {record.description.text}")
    return "\n".join(lines)


def _kind(score: AFCScore) -> str:
    if score.references != "renders":
        return score.references
    return f"renders ({'both signs' if score.signs == 'both' else 'maximizing only'}, {score.k})"


def _from_atlas(out: Path, layer: Optional[str], units: Optional[str]) -> list[UnitTrust]:
    if layer is None:
        raise InvalidOptionError("--atlas needs --layer (-l)")
    with Atlas(out, create=False, readonly=True) as found:
        stored = found.store.unit_trust(found.layer(layer).id)
    wanted = parse_indices(units, "--units") if units else sorted(stored)
    missing = [u for u in wanted if u not in stored]
    if not stored or missing:
        raise InvalidOptionError(f"The atlas has no trust records for {layer} unit(s) "
                                 f"{', '.join(map(str, missing or wanted))}: atlas build computes them for units with "
                                 "renders and exemplars (build again, without --no-trust)")
    return [stored[u] for u in wanted]


def _from_pngs(pngs: list[Path], images: list[Path], tasks: int, independent: Optional[str], judge_name: Optional[str],
               seed: int, device: str, quiet: bool) -> list[UnitTrust]:
    # (model, weights JSON, weights in words, layer) -> unit -> its renders, and whether one did not rise
    groups: dict[tuple[str, str, str, str], dict[int, list[torch.Tensor]]] = {}
    flat: set[tuple[tuple[str, str, str, str], int]] = set()
    for path in collect_images(pngs):
        meta = read_png_metadata(path)
        if "layer" not in meta or "filter" not in meta:
            raise InvalidOptionError(f"{path} is not a one-unit visualization (no layer and filter in its metadata): "
                                     "trust scores are per unit")
        key = (meta.get("model_source") or meta["model"], meta.get("weights_source") or "", meta.get("weights", ""),
               meta["layer"])
        groups.setdefault(key, {}).setdefault(int(meta["filter"]), []).append(to_tensor(load_image(path))[0])
        if meta.get("status") == "not-improved":
            flat.add((key, int(meta["filter"])))
    files = collect_images(images)
    out: list[UnitTrust] = []
    judge = None
    for key, renders in groups.items():
        name, source, words, layer = key
        loaded = reload_model(name, WeightsSource.recorded(source or None, words), device=device)
        judge = judge or independent_network(independent, explained=loaded.name)
        if not quiet:
            typer.echo(f"{loaded.name} {layer}: {len(renders)} unit(s) over {len(files)} images, judged by "
                       f"{judge.name}", err=True)
        ref = resolve_layer(loaded, layer)
        chosen = sorted(renders)
        with tqdm(total=len(chosen), desc=f"trust {layer}", unit="unit", disable=quiet, leave=False,
                  file=sys.stderr) as bar:

            def advance(done: int, _total: int, bar: tqdm = bar) -> None:
                bar.update(done - bar.n)

            out.extend(trust_units(loaded, ref, chosen, files, judge, seed=seed, tasks=tasks, judge=judge_name,
                                   renders={u: torch.stack(renders[u]) for u in chosen},
                                   statuses={u: "not-improved" if (key, u) in flat else "ok" for u in chosen},
                                   progress=advance))
    return out

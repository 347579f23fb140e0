"""The microscope's pages in a real headless browser: Debian's Chromium (``make test`` installs it),
driven by Playwright from fixtures of our own, against a uvicorn server on 127.0.0.1.

With ``FILTERSCOPE_SCREENSHOT_ATLAS=out/demo/atlas`` the screenshot test also photographs the demo
atlas's layer and unit pages into ``docs/images/`` (``make microscope-pictures``).
"""

import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from filterscope.microscope import RenderJobs, create_app

from ..helpers.atlases import TINY_RECIPE, conv_stack
from ..helpers.images import jpeg_bytes, png_header
from ..helpers.maps import SMALL, build
from ..helpers.recipes import TRUST_RECIPE
from ..helpers.server import Server

pytestmark = pytest.mark.browser

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--no-first-run"]
DOCS = Path(__file__).resolve().parents[2] / "docs" / "images"


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    from playwright.sync_api import sync_playwright

    if not Path(CHROMIUM).exists():
        pytest.fail("Headless Chromium is missing: `make test` installs it (apt-get install -y chromium)")
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        yield launched
        launched.close()


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={"width": 1280, "height": 1800})
    opened = context.new_page()
    errors: list[str] = []
    opened.on("pageerror", lambda error: errors.append(str(error)))
    yield opened
    context.close()
    assert not errors, errors  # no JavaScript error on any page


def images_loaded(page) -> list[tuple[str, int]]:
    """Every image of the page as (src, naturalWidth), after the network has settled."""
    page.wait_for_load_state("networkidle")
    return page.evaluate("""() => Array.from(document.images).map(i => [i.currentSrc || i.src,
                                                                          i.complete ? i.naturalWidth : 0])""")


def test_home_layer_sort_unit_keyboard(atlas, page):
    with Server(create_app(atlas)) as url:
        page.goto(url + "/")
        page.click("a.layer-link:text-is('4')")
        page.wait_for_selector(".card")
        assert page.url == url + "/m/stack/4?sort=index"
        cards = page.locator(".card")
        assert cards.count() == 5
        loaded = images_loaded(page)
        assert len(loaded) == 3 and all(width > 0 for _, width in loaded), loaded
        api = page.request.get(url + "/api/m/stack/4").json()
        page.select_option("#sort", "max")
        order = [int(u) for u in page.locator(".card").evaluate_all("cards => cards.map(c => c.dataset.unit)")]
        assert order == [u["unit"] for u in sorted(api["units"], key=lambda u: (-u["max"], u["unit"]))]
        assert page.url.endswith("?sort=max")
        page.click(".card[data-unit='1']")
        page.wait_for_selector("figure.render img")
        assert page.url == url + "/m/stack/4/1"
        loaded = images_loaded(page)
        assert len(loaded) >= 1 + 3 + 3 and all(width > 0 for _, width in loaded), loaded
        assert page.locator(".exemplars.big .marker").count() == 3 and page.locator(".histogram rect").count() == 32
        page.keyboard.press("ArrowRight")
        page.wait_for_url(url + "/m/stack/4/2")
        page.wait_for_selector("h1:has-text('unit 2')")
        page.keyboard.press("ArrowLeft")
        page.wait_for_url(url + "/m/stack/4/1")
        page.wait_for_selector(".exemplars.big .exemplar")
        page.click(".exemplars.big .exemplar >> nth=0")
        page.wait_for_selector("#outline:not([hidden])")
        assert all(width > 0 for _, width in images_loaded(page))
        page.goto(url + "/m/stack/4")
        page.fill("#jump", "4")
        page.keyboard.press("Enter")
        page.wait_for_url(url + "/m/stack/4/4")
        page.wait_for_selector("text=Not rendered yet.")
        assert page.locator("#render").count() == 0  # no --render: no button
        response = page.goto(url + "/m/stack/4/77")
        assert response.status == 404 and "out of range" in page.text_content("#detail")


def test_walk_a_circuit_by_clicking(atlas, page):
    with Server(create_app(atlas)) as url:
        page.goto(url + "/m/stack/6/0")
        page.wait_for_selector("#weights table.excite")
        assert page.locator("#weights canvas.kernel").count() >= 5  # a heat map per input (excite, inhibit, drive)
        assert "Causal check" in page.text_content("#ablation")
        wanted = ", ".join(f"#weights table.{kind} a.input-link[data-unit='{u}']"  # units of 4 the build wanted
                           for kind in ("excite", "inhibit") for u in range(3))
        first = page.locator(wanted).first
        source_unit = first.get_attribute("data-unit")
        first.click()
        page.wait_for_url(url + f"/m/stack/4/{source_unit}")
        page.wait_for_selector("#weights h3:has-text('Excites')")
        assert "outputs into 6" in page.text_content("#weights")
        page.locator("#weights table.excites a.input-link[data-unit='0'], #weights table.inhibits a.input-link"
                     "[data-unit='0']").first.click()
        page.wait_for_url(url + "/m/stack/6/0")
        page.wait_for_selector("#weights table.excite")


def test_upload_an_image_hover_positions_and_open_a_unit(tmp_path, atlas, page):
    import numpy as np
    from PIL import Image

    from filterscope.microscope.explain import Explainer

    photo = tmp_path / "photo.png"
    Image.fromarray((np.random.default_rng(1).random((40, 48, 3)) * 255).astype(np.uint8)).save(photo)

    (tmp_path / "empty.png").write_bytes(b"")
    (tmp_path / "notes.txt").write_text("not an image")
    (tmp_path / "huge.png").write_bytes(png_header(40_000, 40_000))
    (tmp_path / "cut.jpg").write_bytes(jpeg_bytes()[:300])
    with Server(create_app(atlas, explainer=Explainer(conv_stack(), groups=2))) as url:
        page.goto(url + "/m/stack/4")
        page.click("#image-page")
        page.wait_for_url(url + "/m/stack/4/image")
        for hostile in ("empty.png", "notes.txt", "huge.png", "cut.jpg"):
            page.set_input_files("#upload", str(tmp_path / hostile))
            page.wait_for_function("document.querySelector('#image-status').textContent.startsWith('refused')")
            assert page.locator("#image-status.error").count() == 1
        page.set_input_files("#upload", str(photo))
        page.wait_for_selector("#position-units .unit-link")
        box = page.locator("#picture").bounding_box()
        seen = set()
        for fx, fy in ((0.1, 0.1), (0.9, 0.9), (0.5, 0.3)):
            page.mouse.move(box["x"] + box["width"] * fx, box["y"] + box["height"] * fy)
            seen.add(page.text_content("#position"))
        assert len(seen) == 3  # the dictionary follows the pointer
        assert page.locator("#groups figure").count() == 2 and page.locator("#groups .group-unit").count() == 8
        options = page.locator("#pick option")
        assert options.count() == 1 + 8  # every dataset image is some unit's exemplar here
        page.select_option("#pick", index=3)
        page.wait_for_function("document.querySelector('#image-status').textContent.startsWith('img')")
        page.wait_for_selector("#position-units .unit-link")
        unit = page.locator("#position-units .unit-link").first.get_attribute("data-unit")
        page.locator("#position-units .unit-link").first.click()
        page.wait_for_url(url + f"/m/stack/4/{unit}")
        page.wait_for_selector("h1:has-text('unit')")


def test_render_on_demand_in_the_browser(tmp_path, atlas, page):
    folder = tmp_path / "atlas"
    shutil.copytree(atlas, folder)
    jobs = RenderJobs(folder, conv_stack(), TINY_RECIPE, 0)
    with Server(create_app(folder, jobs=jobs)) as url:
        page.goto(url + "/m/stack/6/2")
        page.click("#render")
        page.wait_for_selector("figure.render img", timeout=60_000)
        assert all(width > 0 for _, width in images_loaded(page))
        assert "ok" in page.text_content("figure.render figcaption")


@pytest.mark.skipif(not os.environ.get("FILTERSCOPE_SCREENSHOT_ATLAS"), reason="make microscope-pictures sets "
                                                                              "FILTERSCOPE_SCREENSHOT_ATLAS")
def test_screenshots_of_the_demo_atlas(browser):
    demo_atlas = Path(os.environ["FILTERSCOPE_SCREENSHOT_ATLAS"])
    context = browser.new_context(viewport={"width": 1200, "height": 900}, device_scale_factor=1)
    shot = context.new_page()
    with Server(create_app(demo_atlas)) as url:
        shot.goto(url + "/m/efficientnet_lite0/_blocks.10?sort=quality")
        shot.wait_for_selector(".card img")
        assert all(width > 0 for _, width in images_loaded(shot))
        shot.screenshot(path=str(DOCS / "microscope_layer.png"))
        shot.goto(url + "/m/efficientnet_lite0/_blocks.10/7")
        shot.wait_for_selector(".exemplars.big img")
        shot.wait_for_selector("#weights canvas.kernel")
        shot.evaluate("window.scrollTo(0, document.body.scrollHeight)")  # the lazy thumbnails at the bottom load
        shot.wait_for_function("Array.from(document.images).every(i => i.complete && i.naturalWidth > 0)")
        shot.evaluate("window.scrollTo(0, 0)")
        assert all(width > 0 for _, width in images_loaded(shot))
        shot.screenshot(path=str(DOCS / "microscope_unit.png"), full_page=True)
        shot.locator("#trust").screenshot(path=str(DOCS / "microscope_trust.png"))
    context.close()


def test_a_layer_of_1280_units_loads_its_thumbnails_lazily(tmp_path, page):
    import dataclasses

    import torch
    from torch import nn

    import filterscope as fs

    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 1280, 1))
    model = fs.wrap_model(net, name="wide", preprocessing=fs.Preprocessing(16, resize_size=16))
    tiny = dataclasses.replace(fs.get_recipe("paper"), size=12, scales=1, steps=1, reference_size=None)
    fs.build_atlas(tmp_path / "atlas", model, "2", recipes=[tiny], scores=False, batch_size=256)
    with Server(create_app(tmp_path / "atlas")) as url:
        started = time.monotonic()
        page.goto(url + "/m/wide/2")
        page.wait_for_selector(".card[data-unit='1279']", state="attached")
        assert page.locator(".card").count() == 1280
        assert time.monotonic() - started < 20
        page.wait_for_load_state("networkidle")
        loaded = page.evaluate("() => Array.from(document.images).filter(i => i.complete && i.naturalWidth > 0).length")
        assert 0 < loaded < 400  # only the thumbnails near the viewport were fetched
        page.locator(".card[data-unit='1279']").scroll_into_view_if_needed()
        page.wait_for_function("() => { const i = document.querySelector(\".card[data-unit='1279'] img\");"
                               " return i && i.complete && i.naturalWidth > 0; }")


def test_the_trust_panel_and_the_flag_filter(tmp_path, page):
    import filterscope as fs

    from ..helpers.models import fooling, smooth_photos

    photos = tmp_path / "photos"
    photos.mkdir()
    for i, image in enumerate(smooth_photos(30)):
        fs.to_pil(image).save(photos / f"p{i:02d}.png")
    fs.build_atlas(tmp_path / "a", fooling(), "conv3", units=[0, 1, 3], recipes=[TRUST_RECIPE], dataset=photos,
                   scores=False, circuits=False)
    with Server(create_app(tmp_path / "a")) as url:
        page.goto(url + "/m/fooling/conv3?show=flagged")
        page.wait_for_selector("#grid .card")
        assert [c.get_attribute("data-unit") for c in page.query_selector_all("#grid .card")] == ["1"]
        assert "another-path" in page.inner_text("#grid .card .flag")
        page.select_option("#show", "trusted")
        assert [c.get_attribute("data-unit") for c in page.query_selector_all("#grid .card")] == ["0", "3"]
        page.goto(url + "/m/fooling/conv3/1")
        page.wait_for_selector("#trust table.paths")
        panel = page.inner_text("#trust")
        assert "⚑ another-path" in panel and "random images (control)" in panel and "What it is:" in panel
        assert len(page.query_selector_all("#trust table.paths tr.outside")) >= 1
        page.goto(url + "/m/fooling/conv3/0")
        page.wait_for_selector("#trust")
        assert "No flags." in page.inner_text("#trust")


def test_the_map_page_pans_zooms_and_shows_a_cells_patches(tmp_path, photo_folder, page):
    build(tmp_path / "m", photo_folder, SMALL)
    with Server(create_app(tmp_path / "m")) as url:
        page.goto(url + "/m/colorclasses/conv2")
        page.click("#map-page")
        page.wait_for_url(url + "/m/colorclasses/conv2/map")
        page.wait_for_selector("canvas#map[data-scale]")
        data = page.request.get(url + "/api/m/colorclasses/conv2/map").json()
        assert len(data["cells"]) > 0 and all(c["icon"] for c in data["cells"])
        icon = page.request.get(url + data["cells"][0]["icon"])
        assert icon.status == 200 and icon.headers["content-type"] == "image/png"
        page.wait_for_load_state("networkidle")
        drawn = page.evaluate("""() => { const c = document.querySelector('canvas#map');
            const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
            let coloured = 0; for (let i = 0; i < d.length; i += 4) if (d[i] + d[i + 1] + d[i + 2] < 720) coloured++;
            return coloured / (c.width * c.height); }""")
        assert drawn > 0.2  # the icons are on the canvas (white where no cell is kept)
        canvas = page.locator("canvas#map")
        before = float(canvas.get_attribute("data-scale"))
        box = canvas.bounding_box()
        page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
        page.mouse.wheel(0, -200)
        page.wait_for_function(f"document.querySelector('canvas#map').dataset.scale > {before}")
        page.click("#zoom-out")
        offset = canvas.get_attribute("data-offset")
        page.mouse.move(box["x"] + 100, box["y"] + 100)
        page.mouse.down()
        page.mouse.move(box["x"] + 160, box["y"] + 130, steps=4)
        page.mouse.up()
        assert canvas.get_attribute("data-offset") != offset  # panned
        cell = data["cells"][0]
        x, y = page.evaluate(f"filterscopeMap.centre({cell['row']}, {cell['col']})")
        page.mouse.move(x, y)
        page.wait_for_selector("#map-tip:not([hidden])")
        assert f"{cell['count']} samples" in page.text_content("#map-tip")
        page.mouse.click(x, y)
        page.wait_for_selector("#patches img")
        # every patch decoded (a broken one never is: this then times out and fails)
        page.wait_for_function("Array.from(document.querySelectorAll('#patches img'))"
                               ".every(i => i.complete && i.naturalWidth > 0)", timeout=30_000)
        assert f"{cell['count']} samples" in page.text_content("#cell-panel h2")
        patches = [(src, width) for src, width in images_loaded(page) if "/img/patch/" in src]
        assert len(patches) == min(cell["count"], 24) and all(width > 0 for _, width in patches), patches
        units = page.locator("#cell-units a")
        assert units.count() == 6  # conv2 has six units: every one, most active first
        units.first.click()
        page.wait_for_url(url + "/m/colorclasses/conv2/*")
        missing = page.request.get(url + "/img/patch/99/0")
        assert missing.status == 404 and "No activation atlas 99" in missing.json()["detail"]
        assert page.request.get(url + "/api/m/colorclasses/conv2/map/cells/999").status == 404


def test_the_diff_page_and_the_same_unit_in_the_other_network(tmp_path, page):
    import torch

    import filterscope as fs
    from filterscope.atlas.stages.diff import DiffSettings

    from ..helpers.atlases import write_images
    from ..helpers.models import small_net

    spec = f"{Path(__file__).parents[1] / 'helpers' / 'models.py'}:small_net"
    write_images(tmp_path / "data", 12)
    torch.save(small_net(7).module.state_dict(), tmp_path / "other.pt")
    fs.build_atlas(tmp_path / "a", small_net(), "features.4", units=[0, 1], recipes=[TINY_RECIPE],
                   dataset=tmp_path / "data", exemplars=2, scores=False, circuits=False, trust=False,
                   stages=[DiffSettings(model=spec, weights=str(tmp_path / "other.pt"), images=12)])
    with Server(create_app(tmp_path / "a")) as url:
        page.goto(url + "/m/smallnet/features.4")
        page.wait_for_selector("#diff-page")
        page.click("#diff-page")
        page.wait_for_selector("#cka")
        assert len(page.query_selector_all("#cka td.best")) == len(page.query_selector_all("#cka tr")) - 1
        rows = page.query_selector_all("#matches tr")
        assert len(rows) == 17  # a header and the 16 units of A
        first = rows[1].query_selector("a")
        unit = first.inner_text()
        first.click()
        page.wait_for_selector("#same-unit")
        text = page.inner_text("#same-unit")
        assert "The same unit in another network" in text and "correlation" in text
        assert page.url.endswith(f"/m/smallnet/features.4/{unit}")
        page.click("#same-unit a")
        page.wait_for_selector("#cka")

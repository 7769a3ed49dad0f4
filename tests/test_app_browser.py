"""End to end: `streamlit run app/main.py` on localhost, driven by Debian's headless Chromium through Playwright.

Presses Generate, waits for the image grid and the FID value, and saves test-artifacts/app.png (on failure
app-failure.png) with the click-to-first-block time in test-artifacts/app_browser.json. Runs on the shipped zoo
when data/checkpoints holds checkpoints (the `make app` path), else on a tiny checkpoint. An elastic checkpoint
gets a page of its own (test-artifacts/app-elastic.png: the depth slider over every D of one file, a held-out D
sampled). The server and browser harness is the one benchmarks/app_first_block.py measures with.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from contextlib import contextmanager
from pathlib import Path

import pytest

from benchmarks.app_first_block import CHROMIUM, click_to_first_image, launch_chromium, open_app, streamlit_server

ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = ROOT / "test-artifacts"

pytestmark = pytest.mark.browser
RUN_IMAGES = '[data-testid="stImage"]:not([data-testid="stExpander"] [data-testid="stImage"]) img'  # not history
DOCS_IMAGES = ROOT / "docs" / "images"
# WORKBENCH_DOC_SCREENSHOTS=1 writes the screenshots of docs/app.md there; a plain run keeps the work tree as it was


def screenshots_folder(tmp_path: Path) -> Path:
    return DOCS_IMAGES if os.environ.get("WORKBENCH_DOC_SCREENSHOTS") == "1" else tmp_path


def require_chromium() -> None:
    """Debian's Chromium, installed by scripts/system_deps.sh when missing (as root); else a skip saying why."""
    if not os.access(CHROMIUM, os.X_OK):
        subprocess.run(["bash", str(ROOT / "scripts" / "system_deps.sh")], check=False, timeout=900)
    if not os.access(CHROMIUM, os.X_OK):
        pytest.skip(
            f"{CHROMIUM} is missing and could not be installed (needs root and Debian's apt): "
            "sudo apt-get install chromium"
        )


@contextmanager
def browser_page(pw, failure_stem: str, height: int = 1700):
    """A page of a fresh headless Chromium (1400 px wide); on any failure inside, a screenshot
    test-artifacts/<failure_stem>-failure.png; the browser closed in every case."""
    browser = launch_chromium(pw)
    page = browser.new_page(viewport={"width": 1400, "height": height})
    try:
        yield page
    except Exception:
        page.screenshot(path=str(ARTIFACTS / f"{failure_stem}-failure.png"), full_page=True)
        raise
    finally:
        browser.close()


def assert_no_errors(page) -> None:
    errors = page.locator('[data-testid="stException"], [data-testid="stAlertContentError"]')
    assert errors.count() == 0, errors.all_inner_texts()


def app_args(tmp_path: Path) -> list[str]:
    if any((ROOT / "data" / "checkpoints").rglob("*.safetensors")):
        return []
    from test_app import write_checkpoint

    return ["--checkpoint", str(write_checkpoint(tmp_path, "D2.safetensors", "tiny/D2", 2))]


def test_generate_in_a_real_browser(tmp_path):
    from playwright.sync_api import expect, sync_playwright

    require_chromium()
    ARTIFACTS.mkdir(exist_ok=True)
    args = app_args(tmp_path)
    with streamlit_server(args, ARTIFACTS / "streamlit.log") as (url, _), sync_playwright() as pw:
        with browser_page(pw, "app") as page:
            first_block_s = click_to_first_image(page, open_app(page, url))
            fid = page.locator('[data-testid="stMetric"]', has_text="FID@")
            expect(fid).to_be_visible(timeout=90_000)
            value = fid.locator('[data-testid="stMetricValue"]').inner_text()
            expect(page.locator('[data-testid="stStatusWidget"]')).to_have_count(0, timeout=60_000)
            expect(page.locator(".js-plotly-plot").first).to_be_visible(timeout=30_000)
            page.wait_for_timeout(500)  # plotly draws its traces after the container appears
            page.screenshot(path=str(ARTIFACTS / "app.png"), full_page=True)
            assert_no_errors(page)
    assert float(value) > 0
    (ARTIFACTS / "app_browser.json").write_text(
        json.dumps({"click_to_first_block_s": round(first_block_s, 3), "fid": value, "app_args": args}, indent=1) + "\n"
    )


def test_stop_keeps_the_finished_blocks_and_ends_the_job(tmp_path):
    """Stop in a real browser: the job ends on the server within a step of the request (its job log line), the
    first block stays on the page, marked as stopped, and the page has no error."""
    from playwright.sync_api import expect, sync_playwright

    require_chromium()
    ARTIFACTS.mkdir(exist_ok=True)
    queue_log = tmp_path / "queue.jsonl"
    with (
        streamlit_server(
            app_args(tmp_path), ARTIFACTS / "streamlit-stop.log", env={"WORKBENCH_QUEUE_LOG": str(queue_log)}
        ) as (url, _),
        sync_playwright() as pw,
    ):
        with browser_page(pw, "app-stop") as page:
            generate = open_app(page, url)
            sliders = page.get_by_role("slider")  # depth, steps, images: the most steps and images, a long run
            sliders.nth(1).press("End")
            sliders.nth(2).press("End")
            generate.click()
            page.locator('[data-testid="stImage"] img').first.wait_for(timeout=120_000)
            page.get_by_test_id("stButton").get_by_role("button", name="Stop").click()  # not the header's Stop
            expect(page.get_by_text(re.compile(r"stopped after block \d/\d"))).to_be_visible(timeout=30_000)
            expect(page.locator('[data-testid="stImage"] img').first).to_be_visible()
            assert_no_errors(page)
            page.screenshot(path=str(ARTIFACTS / "app-stopped.png"), full_page=True)
    jobs = [json.loads(line) for line in queue_log.read_text().splitlines()]
    stopped = [j for j in jobs if j["state"] == "cancelled" and j["blocks"] >= 1]
    assert stopped and all(j["items_after_cancel"] <= 1 for j in stopped), jobs


def test_elastic_checkpoint_slides_over_every_depth_in_a_real_browser(tmp_path):
    """One elastic file: the depth slider moves over D = 1..N, each position saying trained or held out; a held-out
    D generates and the page says it was sampled with allow_untrained_depth."""
    from playwright.sync_api import expect, sync_playwright
    from test_app import ELASTIC_D, write_checkpoint

    require_chromium()
    ARTIFACTS.mkdir(exist_ok=True)
    path = write_checkpoint(tmp_path, "elastic.safetensors", "elastic/E", 2, elastic=ELASTIC_D)
    with (
        streamlit_server(["--checkpoint", str(path)], ARTIFACTS / "streamlit-elastic.log") as (url, _),
        sync_playwright() as pw,
    ):
        with browser_page(pw, "app-elastic", 1500) as page:
            generate = open_app(page, url)
            depth, steps = page.get_by_role("slider").nth(0), page.get_by_role("slider").nth(1)
            labels = []
            for key in ["Home"] + ["ArrowRight"] * 3:  # every position, D=1 to D=4
                depth.press(key)
                labels.append(depth.get_attribute("aria-valuetext"))
            assert labels == ["D=1/N=4 · trained", "D=2/N=4 · trained", "D=3/N=4 · held out", "D=4/N=4 · trained"]
            depth.press("ArrowLeft")  # D=3: held out of training
            steps.press("Home")
            steps.press("ArrowRight")  # S=2: a short run
            generate.click()
            expect(page.get_by_text("held out D=3: allow_untrained_depth")).to_be_visible(timeout=120_000)
            page.locator('[data-testid="stImage"] img').first.wait_for(timeout=120_000)
            expect(page.get_by_text("Held out of training: D=3")).to_be_visible(timeout=120_000)
            expect(page.locator('[data-testid="stStatusWidget"]')).to_have_count(0, timeout=60_000)
            depth.scroll_into_view_if_needed()
            page.wait_for_timeout(500)
            page.screenshot(path=str(ARTIFACTS / "app-elastic.png"), full_page=True)
            assert_no_errors(page)


def test_a_256px_latent_model_shows_each_image_at_its_true_size_in_a_real_browser(tmp_path):
    """A 256 px model on latents of a (tiny, untrained) codec: every generated image is one picture drawn at
    256x256 CSS pixels, neither upscaled nor squeezed into the column; screenshot test-artifacts/app-256px.png."""
    from fluent_fixture import write_fluent, write_tiny_codec
    from playwright.sync_api import expect, sync_playwright
    from test_app import export_model, latent_config

    require_chromium()
    ARTIFACTS.mkdir(exist_ok=True)
    cfg = latent_config(write_fluent(tmp_path / "fluent"), write_tiny_codec(tmp_path / "codec"))
    path = export_model(tmp_path, "T4.safetensors", cfg)
    with (
        streamlit_server(["--checkpoint", str(path)], ARTIFACTS / "streamlit-256px.log") as (url, _),
        sync_playwright() as pw,
    ):
        with browser_page(pw, "app-256px", 1500) as page:
            generate = open_app(page, url)
            steps, images = page.get_by_role("slider").nth(1), page.get_by_role("slider").nth(2)
            steps.press("Home")  # S=1, 6 images: a short run
            images.press("Home")
            for _ in range(5):
                images.press("ArrowRight")
            generate.click()
            expect(page.get_by_text("First block on screen")).to_be_visible(timeout=120_000)  # the run's meter
            expect(page.locator('[data-testid="stStatusWidget"]')).to_have_count(0, timeout=60_000)
            pictures = page.locator(RUN_IMAGES)
            expect(pictures).to_have_count(6, timeout=30_000)
            sizes = pictures.evaluate_all(
                "imgs => imgs.map(i => [i.naturalWidth, i.naturalHeight, "
                "i.getBoundingClientRect().width, i.getBoundingClientRect().height])"
            )
            assert sizes == [[256, 256, 256, 256]] * 6, sizes
            assert_no_errors(page)
            pictures.first.scroll_into_view_if_needed()
            page.screenshot(path=str(ARTIFACTS / "app-256px.png"), full_page=True)


def test_a_link_download_history_and_compare_in_a_real_browser(tmp_path):
    """A link with settings opens the page on them; after Generate the URL holds them, the zip downloads with
    every image and run.json, the history lists the run with a restore button, and compare mode puts another
    family beside it. Screenshots for docs/app.md (docs/images/app-lab.png and app-compare.png) with
    WORKBENCH_DOC_SCREENSHOTS=1."""
    import io
    import zipfile

    from playwright.sync_api import expect, sync_playwright
    from test_app import write_checkpoint

    require_chromium()
    ARTIFACTS.mkdir(exist_ok=True)
    shots = screenshots_folder(tmp_path)
    shots.mkdir(parents=True, exist_ok=True)
    write_checkpoint(tmp_path / "a", "D2.safetensors", "vertical/D2", 2)
    write_checkpoint(tmp_path / "b", "E.safetensors", "elastic/E", 2, elastic=(1, 2, 4))
    args = ["--checkpoints", str(tmp_path)]
    with streamlit_server(args, ARTIFACTS / "streamlit-lab.log") as (url, _), sync_playwright() as pw:
        with browser_page(pw, "app-lab") as page:
            generate = open_app(page, f"{url}/?model=vertical/D2&S=2&seed=3&images=4", previews=True)
            expect(page.get_by_role("slider").nth(1)).to_have_attribute("aria-valuetext", "2")
            generate.click()
            expect(page.get_by_text("First block on screen")).to_be_visible(timeout=120_000)
            expect(page.locator('[data-testid="stStatusWidget"]')).to_have_count(0, timeout=60_000)
            assert "seed=3" in page.url and "images=4" in page.url and "S=2" in page.url
            page.get_by_text("Download · command line").click()
            expect(page.get_by_text("python -m workbench sample")).to_be_visible()
            with page.expect_download() as got:
                page.get_by_role("button", name="All 4 (zip)").click()
            archive = zipfile.ZipFile(io.BytesIO(Path(got.value.path()).read_bytes()))
            assert sorted(archive.namelist()) == ["run.json"] + [f"seed3-image{i:03d}.png" for i in range(4)]
            assert json.loads(archive.read("run.json"))["settings"]["seed"] == 3
            page.get_by_text("History: 1 run of this page").click()
            expect(page.get_by_role("button", name="Restore these settings")).to_be_visible()
            assert_no_errors(page)
            page.screenshot(path=str(shots / "app-lab.png"), full_page=True)
            page.get_by_text("Compare two settings").click()
            family_b = page.get_by_label("Family of B")  # the selectbox of B's family: pick the elastic one
            expect(family_b).to_be_visible(timeout=30_000)
            family_b.click()
            page.get_by_role("option", name=re.compile("^elastic")).click()
            expect(page.get_by_text(re.compile(r"Setting B · elastic"))).to_be_visible(timeout=30_000)
            page.get_by_role("button", name="Generate").click()
            expect(page.get_by_text(re.compile("A − B"))).to_be_visible(timeout=180_000)
            expect(page.locator('[data-testid="stStatusWidget"]')).to_have_count(0, timeout=60_000)
            assert_no_errors(page)
            page.screenshot(path=str(shots / "app-compare.png"), full_page=True)

"""The page in a real browser: Playwright driving Debian's Chromium against a real uvicorn.

Playwright's own browser download cannot work offline, so the test points it at the system's chromium
($GENLAB_CHROMIUM, else `chromium` on PATH) and skips, with the reason, where there is none. The final
screenshot is written to $GENLAB_TEST_ARTIFACTS (or the test's temp dir) as serve-page.png.
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import pytest

from genlab.serve import create_app

from .conftest import live_server
from .helpers import drawn_digit

sync_api = pytest.importorskip(
    "playwright.sync_api", reason="the browser test needs playwright (the test extra)"
)
CHROMIUM = os.environ.get("GENLAB_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
# The machine's closed network: no background fetches, updates or QUIC probes.
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(CHROMIUM is None, reason="no chromium on this machine (apt-get install chromium)"),
]


@pytest.fixture()
def page(catalog):
    with (
        live_server(create_app(catalog, workers=2, queue=16)) as url,
        sync_api.sync_playwright() as playwright,
    ):
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 900})
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        page.on("console", lambda message: message.type == "error" and errors.append(message.text))
        page.goto(url + "/#dae")
        yield page
        browser.close()
        assert errors == []  # no script errors, no CSP violations, no failed loads


def artifact_path(tmp_path: Path) -> Path:
    folder = Path(os.environ.get("GENLAB_TEST_ARTIFACTS") or tmp_path)
    folder.mkdir(parents=True, exist_ok=True)
    return folder / "serve-page.png"


def test_page_samples_seeds_classes_and_reconstructs(page, tmp_path):
    expect = sync_api.expect
    blob = re.compile("^blob:")
    samples = page.locator("#sample-img")
    expect(samples).to_have_attribute("src", blob)
    expect(page.locator("#run-name")).to_contain_text("dae")
    first_src, first_pixels = samples.get_attribute("src"), samples.screenshot()

    # A new seed: a new image.
    page.fill("#seed", "12345")
    page.dispatch_event("#seed", "change")
    expect(samples).not_to_have_attribute("src", first_src)
    expect(page.locator("#samples-note")).to_contain_text("seed 12345")
    page.wait_for_timeout(100)
    assert samples.screenshot() != first_pixels
    second_src = samples.get_attribute("src")
    page.click("#new-seed")
    expect(samples).not_to_have_attribute("src", second_src)

    # The slider moves along the walk.
    frame = page.locator("#walk-frame")
    expect(frame).to_have_attribute("src", blob)
    frame_src = frame.get_attribute("src")
    page.locator("#walk-t").fill("0.9")
    expect(frame).not_to_have_attribute("src", frame_src)
    expect(page.locator("#walk-t-label")).to_have_text("t = 0.90")

    # Upload a digit: its reconstruction, and for this denoising run the noisy and denoised versions with PSNR.
    digit = tmp_path / "digit.png"
    digit.write_bytes(drawn_digit(background=255, ink=0))  # dark ink on paper: the server inverts it
    page.set_input_files("#upload", str(digit))
    expect(page.locator("#recon-output")).to_have_attribute("src", re.compile("^data:image/png"))
    expect(page.locator("#denoised-img")).to_be_visible()
    expect(page.locator("#denoised-caption")).to_contain_text("dB")

    # Draw on the canvas: releasing the pen reconstructs the drawing.
    recon_src = page.locator("#recon-output").get_attribute("src")
    box = page.locator("#draw").bounding_box()
    page.mouse.move(box["x"] + box["width"] * 0.5, box["y"] + box["height"] * 0.2)
    page.mouse.down()
    for fraction in (0.4, 0.6, 0.8):
        page.mouse.move(box["x"] + box["width"] * 0.5, box["y"] + box["height"] * fraction, steps=4)
    page.mouse.up()
    expect(page.locator("#recon-output")).not_to_have_attribute("src", recon_src)
    expect(page.locator("#loss-plots .plot").first).to_be_visible()
    page.screenshot(path=str(artifact_path(tmp_path)), full_page=True)

    # A class-conditional run shows the class picker; picking a class asks for that class.
    page.click("button[data-run='cvae']")
    picker = page.locator("#class-picker")
    expect(picker).to_be_visible()
    with page.expect_request(
        lambda request: request.url.endswith("/sample") and '"label":3' in (request.post_data or "")
    ):
        page.select_option("#class-select", "3")
    # An unconditional run hides it again, and a GAN has no reconstruction panel.
    page.click("button[data-run='gan']")
    expect(picker).to_be_hidden()
    expect(page.locator("#recon-unavailable")).to_be_visible()

    # The API docs render offline from the schema.
    page.click("a.docs-link")
    expect(page.locator(".endpoint")).to_have_count(8)
    expect(page.locator(".endpoint").filter(has_text="/api/runs/{name}/sample")).to_contain_text("≤ 64")

"""Every route of genlab serve's API, its outputs and every validation error, through FastAPI's test client."""

from __future__ import annotations

import json
import re
import shutil

import numpy as np
import pytest
import torch

from genlab import provenance
from genlab.metrics.image_quality import psnr
from genlab.serve import create_app
from genlab.serve.app import MAX_N, MAX_SEED
from genlab.serve.catalog import MAX_CURVE_POINTS, load_served_run, read_loss_curves
from genlab.serve.images import read_provenance
from genlab.serve.pool import InferencePool, ServerBusy

from .helpers import conditional_copy, drawn_digit, from_data_url, pixels


def error_of(response, status: int) -> str:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"} and "\n" not in body["error"] and "Traceback" not in body["error"]
    return body["error"]


# --- the page, the docs, the listing ------------------------------------------------------------------------
def test_page_and_its_assets_are_local(client):
    page = client.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "default-src 'self'" in page.headers["content-security-policy"]
    references = re.findall(r'(?:src|href)="([^"]+)"', page.text)
    assert references and all(ref.startswith(("/", "#", "data:")) for ref in references)
    for asset in ("/static/app.js", "/static/style.css", "/static/api.js"):
        response = client.get(asset)
        text = response.text.replace("http://www.w3.org/2000/svg", "")  # a namespace name, not a download
        assert response.status_code == 200 and "http://" not in text and "https://" not in text


def test_docs_are_offline_and_the_schema_names_every_route(client):
    assert client.get("/docs").status_code == 404 and client.get("/redoc").status_code == 404
    docs = client.get("/api/docs")
    assert docs.status_code == 200 and "/static/api.js" in docs.text
    paths = client.get("/api/openapi.json").json()["paths"]
    for route in (
        "/api/runs",
        "/api/runs/{name}",
        "/api/runs/{name}/sample",
        "/api/runs/{name}/interpolate",
        "/api/runs/{name}/reconstruct",
        "/api/runs/{name}/losses",
        "/api/runs/{name}/figures/{figure}",
    ):
        assert route in paths
    sample = paths["/api/runs/{name}/sample"]["post"]
    assert "image/png" in sample["responses"]["200"]["content"]


def test_health_and_run_listing(client):
    assert client.get("/api/health").json()["status"] == "ok"
    listing = client.get("/api/runs").json()
    assert [run["name"] for run in listing["runs"]] == ["gan", "vae", "dae", "cvae"]
    assert listing["limits"]["n"] == MAX_N
    gan = listing["runs"][0]
    assert gan["model"] == "gan" and gan["epoch"] == 1 and gan["conditional"] is False


def test_run_details(client):
    gan, vae, dae = (client.get(f"/api/runs/{name}").json() for name in ("gan", "vae", "dae"))
    assert gan["can_reconstruct"] is False and vae["can_reconstruct"] is True
    assert gan["image_shape"] == [1, 28, 28] and gan["eval"] is None
    assert gan["class_names"] == [str(i) for i in range(10)]
    assert vae["denoising"] is None and dae["denoising"] == {"noise_std": 0.3, "mask_prob": 0.0}
    assert "loss_curves" in gan["figures"]


def test_eval_figures_come_from_eval_json(served_runs, tmp_path):
    run_dir = shutil.copytree(served_runs["vae"], tmp_path / "vae")
    metrics = {
        "fid": 12.5,
        "kid_mean": float("nan"),
        "class_coverage": {"normalized_entropy": 0.9, "rarest_share": 0.05},
    }
    (run_dir / "eval.json").write_text(json.dumps({"metrics": metrics}))
    figures = {f["key"]: f for f in load_served_run("vae", run_dir).eval_figures}
    assert figures["fid"]["value"] == 12.5 and figures["fid"]["lower_is_better"] is True
    assert figures["class_entropy"]["value"] == 0.9 and "kid_mean" not in figures  # NaN is no JSON figure


def test_losses_route_and_thinning(client, tmp_path):
    series = client.get("/api/runs/gan/losses").json()["series"]
    assert {"loss_d", "loss_g"} <= set(series) and "step" not in series
    assert len(series["loss_d"]["step"]) == len(series["loss_d"]["value"]) > 1
    path = tmp_path / "metrics.jsonl"
    lines = [json.dumps({"step": i, "loss": 1.0 / (i + 1), "epoch": 0}) for i in range(1000)]
    path.write_text("\n".join(lines + ['{"step": 1000, "loss": NaN}', "{half a line"]))
    thinned = read_loss_curves(path)["series"]
    assert list(thinned) == ["loss"] and len(thinned["loss"]["step"]) <= MAX_CURVE_POINTS
    assert thinned["loss"]["step"][0] == 0


def test_figures_route_returns_pngs_with_provenance(client):
    response = client.get("/api/runs/gan/figures/loss_curves")
    assert response.headers["content-type"] == "image/png"
    assert read_provenance(response.content)["operation"] == "figure"
    error_of(client.get("/api/runs/gan/figures/eval_classes"), 404)  # allowed name, not written
    error_of(client.get("/api/runs/gan/figures/config.json"), 404)


# --- sample and interpolate ---------------------------------------------------------------------------------
def test_sample_png_is_seeded_and_carries_provenance(client, catalog, tmp_path):
    first = client.post("/api/runs/gan/sample", json={"n": 4, "seed": 7})
    assert first.status_code == 200 and first.headers["content-type"] == "image/png"
    assert pixels(first.content).shape == (2 * 30 + 2, 2 * 30 + 2)  # 2x2 tiles of 28 with 2-pixel gaps
    assert client.post("/api/runs/gan/sample", json={"n": 4, "seed": 7}).content == first.content
    other = client.post("/api/runs/gan/sample", json={"n": 4, "seed": 8})
    assert not np.array_equal(pixels(other.content), pixels(first.content))
    record = read_provenance(first.content)
    assert record["operation"] == "sample" and record["seed"] == "7" and record["n"] == 4
    assert record["served_as"] == "gan" and record["checkpoint_sha256"] == catalog["gan"].weights_sha256
    (tmp_path / "s.png").write_bytes(first.content)
    official = provenance.read(tmp_path / "s.png")  # genlab's own reader understands served PNGs
    assert official["seed"] == 7 and official["kind"] == "samples" and official["model"] == "gan"
    assert official["digital_source_type"] == provenance.IPTC_TRAINED
    big = client.post("/api/runs/gan/sample", json={"n": 4, "seed": 7, "scale": 3})
    assert pixels(big.content).shape == (3 * 62, 3 * 62)
    assert client.post("/api/runs/vae/sample", json={}).status_code == 200  # every field has a default


def test_interpolate_strip_and_frames(client):
    strip = client.post("/api/runs/vae/interpolate", json={"seed_a": 3, "seed_b": 4, "steps": 5})
    assert pixels(strip.content).shape == (32, 5 * 30 + 2)
    record = read_provenance(strip.content)
    assert record["operation"] == "interpolate" and record["t"] == [0.0, 0.25, 0.5, 0.75, 1.0]
    start = client.post("/api/runs/vae/interpolate", json={"seed_a": 3, "seed_b": 4, "t": 0})
    end = client.post("/api/runs/vae/interpolate", json={"seed_a": 3, "seed_b": 4, "t": 1})
    tiles = pixels(strip.content)
    assert np.array_equal(pixels(start.content), tiles[:, :32])  # the walk starts at seed_a's image
    assert np.array_equal(pixels(end.content)[:, 2:], tiles[:, -30:])  # and ends at seed_b's
    assert client.post("/api/runs/dae/interpolate", json={"t": 0.5}).status_code == 200


# --- reconstruct and denoise -----------------------------------------------------------------------------------
def test_reconstruct_returns_input_reconstruction_and_psnr(client):
    response = client.post("/api/runs/vae/reconstruct", files={"file": ("d.png", drawn_digit(), "image/png")})
    body = response.json()
    assert response.status_code == 200 and body["denoising"] is None and body["image_shape"] == [1, 28, 28]
    given, rebuilt = (pixels(from_data_url(body[key])) for key in ("input", "reconstruction"))
    assert given.shape == rebuilt.shape == (28, 28)
    assert given[:4].max() == 0 and given[14].max() > 200  # MNIST framing: margin on top, ink in the middle
    expected = psnr(torch.tensor(rebuilt / 255.0)[None, None], torch.tensor(given / 255.0)[None, None])
    assert body["psnr_db"] == pytest.approx(expected, abs=0.2)  # the PNGs are rounded to 8 bits
    assert read_provenance(from_data_url(body["reconstruction"]))["kind"] == "reconstruction"
    assert read_provenance(from_data_url(body["input"]))["kind"] == "uploaded input"


def test_dark_ink_on_white_is_inverted_unless_told_not_to(client):
    paper = drawn_digit(background=255, ink=0)
    auto = client.post("/api/runs/vae/reconstruct", files={"file": ("d.png", paper, "image/png")}).json()
    kept = client.post(
        "/api/runs/vae/reconstruct",
        files={"file": ("d.png", paper, "image/png")},
        data={"invert": "no", "crop": "false"},
    ).json()
    assert pixels(from_data_url(auto["input"]))[0, 0] == 0
    assert pixels(from_data_url(kept["input"]))[0, 0] == 255


def test_denoising_run_adds_seeded_noise_and_reports_psnr(client):
    def denoise(seed: int) -> dict:
        files = {"file": ("d.png", drawn_digit(), "image/png")}
        return client.post("/api/runs/dae/reconstruct", files=files, data={"seed": str(seed)}).json()

    body = denoise(5)
    report = body["denoising"]
    assert report["noise_std"] == 0.3 and report["seed"] == 5
    clean, noisy = (pixels(from_data_url(url)) / 255.0 for url in (body["input"], report["noisy"]))
    assert np.abs(noisy - clean).mean() > 0.05  # visibly noisy
    assert report["psnr_noisy_db"] == pytest.approx(
        psnr(torch.tensor(noisy)[None, None], torch.tensor(clean)[None, None]), abs=0.2
    )
    assert np.isfinite(report["psnr_denoised_db"])
    assert (
        denoise(5)["denoising"]["noisy"] == report["noisy"]
        and denoise(6)["denoising"]["noisy"] != report["noisy"]
    )


# --- class-conditional runs (a fake model with the zoo's interface) ---------------------------------------------
@pytest.fixture()
def conditional_client(catalog):
    from fastapi.testclient import TestClient

    runs = {**catalog, "fake": conditional_copy(catalog["vae"], "fake")}
    with TestClient(create_app(runs, workers=1, queue=4)) as test_client:
        yield test_client, runs["fake"].model


def test_labels_reach_the_model_everywhere(conditional_client):
    """A stand-in conditional model records the labels each route passes it."""
    client, model = conditional_client
    detail = client.get("/api/runs/fake").json()
    assert detail["conditional"] is True and detail["num_classes"] == 10
    response = client.post("/api/runs/fake/sample", json={"n": 3, "label": 7})
    assert response.status_code == 200 and model.seen_labels[-1].tolist() == [7, 7, 7]
    assert read_provenance(response.content)["label"] == "7"
    client.post("/api/runs/fake/interpolate", json={"steps": 4, "label": 2})
    assert model.seen_labels[-1].tolist() == [2, 2, 2, 2]
    walk = client.post(
        "/api/runs/fake/interpolate", json={"steps": 3, "seed_a": 11}
    )  # label drawn from seed_a
    assert (
        len(set(model.seen_labels[-1].tolist())) == 1 and read_provenance(walk.content)["label"] is not None
    )
    files = {"file": ("d.png", drawn_digit(), "image/png")}
    assert "class-conditional" in error_of(client.post("/api/runs/fake/reconstruct", files=files), 422)
    assert client.post("/api/runs/fake/reconstruct", files=files, data={"label": "4"}).status_code == 200
    assert model.seen_labels[-1].tolist() == [4]
    assert "0..9" in error_of(client.post("/api/runs/fake/sample", json={"label": 10}), 422)


def test_a_real_conditional_vae_draws_the_class_asked_for(client, catalog):
    """The zoo's CVAE: same seed, different labels, different images; labels are required to reconstruct."""
    detail = client.get("/api/runs/cvae").json()
    assert detail["conditional"] is True and detail["class_names"][:2] == ["0", "1"]
    three, seven = (
        client.post("/api/runs/cvae/sample", json={"n": 4, "seed": 1, "label": k}) for k in (3, 7)
    )
    assert three.status_code == seven.status_code == 200
    assert not np.array_equal(pixels(three.content), pixels(seven.content))
    random_labels = client.post("/api/runs/cvae/sample", json={"n": 4, "seed": 1})
    assert random_labels.status_code == 200
    walk = client.post("/api/runs/cvae/interpolate", json={"steps": 3, "label": 5})
    assert walk.status_code == 200 and read_provenance(walk.content)["label"] == "5"
    assert client.post("/api/runs/cvae/interpolate", json={"t": 0.5}).status_code == 200
    files = {"file": ("d.png", drawn_digit(), "image/png")}
    error_of(client.post("/api/runs/cvae/reconstruct", files=files), 422)
    body = client.post("/api/runs/cvae/reconstruct", files=files, data={"label": "0"}).json()
    assert np.isfinite(body["psnr_db"])


# --- validation: every error a 4xx with a one-line message ------------------------------------------------------
@pytest.mark.parametrize(
    "body, words",
    [
        ({"n": 0}, "n: Input should be greater than or equal to 1"),
        ({"n": MAX_N + 1}, f"n: Input should be less than or equal to {MAX_N}"),
        ({"n": 10**100}, "n:"),
        ({"n": "4"}, "n: Input should be a valid integer"),
        ({"n": 1.5}, "n: Input should be a valid integer"),
        ({"n": True}, "n: Input should be a valid integer"),
        ({"seed": -1}, "seed:"),
        ({"seed": MAX_SEED + 1}, "seed:"),
        ({"scale": 9}, "scale:"),
        ({"label": 1}, "not class-conditional"),
        ({"label": -1}, "label:"),
        ({"colour": "red"}, "colour: Extra inputs are not permitted"),
    ],
)
def test_sample_validation(client, body, words):
    assert words in error_of(client.post("/api/runs/gan/sample", json=body), 422)


@pytest.mark.parametrize(
    "body, words",
    [
        ({"steps": 1}, "steps:"),
        ({"steps": 17}, "steps:"),
        ({"t": 1.5}, "t:"),
        ({"t": -0.1}, "t:"),
        ({"seed_a": "x"}, "seed_a:"),
        ({"label": 3}, "not class-conditional"),
    ],
)
def test_interpolate_validation(client, body, words):
    assert words in error_of(client.post("/api/runs/vae/interpolate", json=body), 422)


def test_body_and_content_type_errors(client):
    url = "/api/runs/gan/sample"
    assert error_of(
        client.post(url, content=b"{not json", headers={"content-type": "application/json"}), 422
    ) == ("request body is not valid JSON")
    assert "JSON object" in error_of(client.post(url, headers={"content-type": "application/json"}), 422)
    assert "dictionary" in error_of(client.post(url, json=[1, 2]), 422)
    assert "application/json" in error_of(
        client.post(url, content=b"n=4", headers={"content-type": "text/plain"}), 415
    )
    assert "got none" in error_of(client.post(url, content=b"{}"), 415)
    assert "multipart/form-data" in error_of(
        client.post("/api/runs/vae/reconstruct", json={"file": "x"}), 415
    )
    error_of(client.get(url), 405)


def test_reconstruct_validation(client):
    url = "/api/runs/vae/reconstruct"
    digit = {"file": ("d.png", drawn_digit(), "image/png")}
    assert "file" in error_of(client.post(url, files={"other": ("d.png", b"x", "image/png")}), 422)
    assert "invert" in error_of(client.post(url, files=digit, data={"invert": "maybe"}), 422)
    assert "seed" in error_of(client.post(url, files=digit, data={"seed": "-3"}), 422)
    assert "not class-conditional" in error_of(client.post(url, files=digit, data={"label": "1"}), 422)
    assert "no encoder" in error_of(client.post("/api/runs/gan/reconstruct", files=digit), 400)


@pytest.mark.parametrize("name", ["nope", "GAN", "gan.", "..", "...", "a" * 300, "runs%2Fgan", "%2e%2e"])
def test_unknown_run_names_are_404_on_every_route(client, name):
    for method, suffix, kwargs in [
        ("get", "", {}),
        ("get", "/losses", {}),
        ("get", "/figures/loss_curves", {}),
        ("post", "/sample", {"json": {}}),
        ("post", "/interpolate", {"json": {}}),
        ("post", "/reconstruct", {"files": {"file": ("d.png", drawn_digit(), "image/png")}}),
    ]:
        response = getattr(client, method)(f"/api/runs/{name}{suffix}", **kwargs)
        message = error_of(response, 404)
        assert len(message) < 200


# --- the bounded pool ------------------------------------------------------------------------------------------------
def test_pool_refuses_past_workers_plus_queue():
    import asyncio
    import threading

    release = threading.Event()
    pool = InferencePool(workers=1, queue=1)

    async def scenario():
        running = asyncio.ensure_future(pool.run(release.wait))
        waiting = asyncio.ensure_future(pool.run(lambda: 2))
        await asyncio.sleep(0.05)
        with pytest.raises(ServerBusy):
            await pool.run(lambda: 3)
        release.set()
        assert await running is True and await waiting == 2
        assert await pool.run(lambda: 4) == 4  # slots come back

    asyncio.run(scenario())
    pool.shutdown()
    with pytest.raises(ValueError):
        InferencePool(workers=0)

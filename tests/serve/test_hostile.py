"""Hostile input: oversized, malformed and bomb uploads, wrong types, broken JSON, odd names. Each is a
clean 4xx with a one-line JSON error, and the server answers normally afterwards."""

from __future__ import annotations

import struct
import zlib

import pytest
from PIL import Image

from genlab.serve.app import MAX_UPLOAD_BYTES

from .helpers import drawn_digit, png_bytes

UPLOAD = "/api/runs/vae/reconstruct"


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_bomb(side: int, complete: bool) -> bytes:
    """A valid-looking grayscale PNG of side x side zero pixels: a few KB that decode to side^2 bytes.
    complete=False declares the size but carries almost no pixel data."""
    header = struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)
    compressor = zlib.compressobj(9)
    row = b"\x00" * (side + 1)  # filter byte + pixels
    rows = side if complete else 1
    data = b"".join(compressor.compress(row) for _ in range(rows)) + compressor.flush()
    return (
        b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", header) + png_chunk(b"IDAT", data) + png_chunk(b"IEND", b"")
    )


def post_file(client, data: bytes, content_type: str = "image/png", name: str = "x.png"):
    return client.post(UPLOAD, files={"file": (name, data, content_type)})


def assert_clean_error(response, *statuses: int) -> str:
    assert response.status_code in statuses, (response.status_code, response.text)
    body = response.json()
    assert set(body) == {"error"} and "\n" not in body["error"] and "Traceback" not in body["error"]
    return body["error"]


@pytest.fixture()
def still_answers(client):
    """After each test: the server still lists runs and samples."""
    yield
    assert client.get("/api/health").status_code == 200
    assert client.post("/api/runs/gan/sample", json={"n": 1}).status_code == 200


@pytest.mark.usefixtures("still_answers")
class TestHostileUploads:
    def test_oversized_upload_is_413_by_content_length(self, client):
        big = b"\x89PNG" + b"\x00" * (MAX_UPLOAD_BYTES + 200_000)
        assert "limit" in assert_clean_error(post_file(client, big), 413)

    def test_oversized_upload_without_content_length_is_413_while_streaming(self, client):
        def chunks():
            for _ in range(6):
                yield b"\x00" * 1_000_000

        headers = {"content-type": "multipart/form-data; boundary=xyz"}
        response = client.post(UPLOAD, content=chunks(), headers=headers)
        assert "limit" in assert_clean_error(response, 413)

    def test_lying_content_length_is_refused(self, client):
        headers = {"content-type": "application/json", "content-length": "abc"}
        assert_clean_error(client.post("/api/runs/gan/sample", content=b"{}", headers=headers), 400)

    def test_png_bombs_are_refused_before_decoding(self, client):
        for bomb in (png_bomb(5000, complete=True), png_bomb(60_000, complete=False)):
            assert len(bomb) < 100_000
            message = assert_clean_error(post_file(client, bomb), 413)  # ours, or Pillow's own guard
            assert "too large" in message or "decompression bomb" in message

    def test_truncated_and_corrupt_images(self, client):
        whole = drawn_digit()
        assert "decode" in assert_clean_error(post_file(client, whole[: len(whole) // 2]), 400)
        corrupt = bytearray(whole)
        corrupt[60:80] = b"\xff" * 20  # garbage inside the compressed pixel data
        assert_clean_error(post_file(client, bytes(corrupt)), 400)
        assert "empty" in assert_clean_error(post_file(client, b""), 400)

    def test_not_an_image_or_a_refused_format(self, client):
        for data, kind in [
            (b"hello, I am text", "text/plain"),
            (b"<svg xmlns='http://www.w3.org/2000/svg'></svg>", "image/svg+xml"),
            (b"\x00" * 1000, "image/png"),
            (png_bytes(Image.new("L", (32, 32)), "TIFF"), "image/tiff"),
            (b"%PDF-1.4 ...", "application/pdf"),
        ]:
            assert "allowed type" in assert_clean_error(post_file(client, data, kind, "x.bin"), 415)

    def test_allowed_formats_and_odd_shapes_are_converted(self, client):
        rgba = Image.new("RGBA", (40, 90), (0, 0, 0, 0))  # transparent, tall
        rgba.paste((255, 255, 255, 255), (10, 20, 30, 70))
        for data in (
            png_bytes(rgba),
            png_bytes(Image.new("RGB", (50, 20), "white"), "JPEG"),
            png_bytes(Image.new("P", (30, 30)), "GIF"),
            png_bytes(Image.new("L", (64, 64)), "BMP"),
            png_bytes(Image.new("RGB", (64, 64)), "WEBP"),
        ):
            response = post_file(client, data)
            assert response.status_code == 200, response.text
            assert response.json()["image_shape"] == [1, 28, 28]

    def test_too_small_image_is_rejected(self, client):
        assert "too small" in assert_clean_error(post_file(client, png_bytes(Image.new("L", (4, 4)))), 422)

    def test_malformed_multipart(self, client):
        for content, ctype in [
            (b"--xyz\r\nbroken", "multipart/form-data; boundary=xyz"),
            (b"anything", "multipart/form-data"),  # no boundary
            (b"", "multipart/form-data; boundary=xyz"),
        ]:
            assert_clean_error(
                client.post(UPLOAD, content=content, headers={"content-type": ctype}), 400, 422
            )


@pytest.mark.usefixtures("still_answers")
class TestHostileJSON:
    @pytest.mark.parametrize(
        "content",
        [b"{", b"", b"null", b"[]", b'"n"', b'{"n": }', b"\xff\xfe\x00", b'{"n": 1e999}', b"[" * 100_000],
    )
    def test_malformed_json(self, client, content):
        response = client.post(
            "/api/runs/gan/sample", content=content, headers={"content-type": "application/json"}
        )
        assert_clean_error(response, 400, 422)

    def test_huge_numbers(self, client):
        for body in ({"n": 10**6}, {"n": 10**400}, {"seed": 2**64}, {"scale": 10**9}):
            assert_clean_error(client.post("/api/runs/gan/sample", json=body), 422)
        assert_clean_error(client.post("/api/runs/gan/interpolate", json={"steps": 10**9}), 422)

    def test_wrong_content_types(self, client):
        for ctype in (
            "text/plain",
            "application/x-www-form-urlencoded",
            "multipart/form-data; boundary=a",
            "image/png",
        ):
            response = client.post("/api/runs/gan/sample", content=b"{}", headers={"content-type": ctype})
            assert_clean_error(response, 415)

    @pytest.mark.parametrize(
        "path",
        [
            "/api/runs/..%2F..%2Fetc%2Fpasswd/sample",
            "/api/runs/%2Fetc%2Fpasswd/sample",
            "/api/runs/gan%00/sample",
            "/api/runs/~/sample",
            "/api/runs/C:%5Cwindows/sample",
            "/api/runs/" + "x" * 5000 + "/sample",
        ],
    )
    def test_path_like_run_names(self, client, path):
        # (Plain "/../" segments are resolved by the client, as browsers do, before a request is sent.)
        response = client.post(path, json={"n": 1})
        assert_clean_error(response, 404, 405)

    def test_static_files_cannot_escape(self, client):
        for path in ("/static/../app.py", "/static/%2e%2e/app.py", "/static/..%2F..%2Fpyproject.toml"):
            assert client.get(path).status_code == 404

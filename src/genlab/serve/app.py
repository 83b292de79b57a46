"""The web app and JSON API over trained runs: `create_app(catalog)` -> a FastAPI app.

GET  /                                   the page (static HTML/CSS/JS in serve/static, works offline)
GET  /api/docs, /api/openapi.json        the API's documentation (rendered locally from the schema)
GET  /api/health                         liveness and the pool's limits
GET  /api/runs, /api/runs/{name}         the served runs; one run's details (eval figures included)
GET  /api/runs/{name}/losses             the loss curves of metrics.jsonl, as JSON series
GET  /api/runs/{name}/figures/{figure}   a figure the run wrote (loss_curves, eval_samples, ...) as PNG
POST /api/runs/{name}/sample             JSON {n, seed, label, scale} -> PNG grid
POST /api/runs/{name}/interpolate        JSON {seed_a, seed_b, steps, t, label, scale} -> PNG strip/frame
POST /api/runs/{name}/reconstruct        multipart image upload -> JSON of PNGs (+ denoising, PSNR)

Model calls and image coding run in a bounded pool (pool.py): past it, 429. Every error is a 4xx JSON
body {"error": "one line"}; every returned PNG carries a provenance record (images.encode_png).
"""

from __future__ import annotations

import contextlib
import logging
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import torch
from fastapi import FastAPI, File, Form, HTTPException, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, Response
from fastapi.staticfiles import StaticFiles
from PIL import Image
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from .. import __version__, viz
from ..errors import GenlabError
from ..metrics.image_quality import mse, psnr
from .catalog import FIGURES, ServedRun
from .guard import RequestGuard, error
from .images import UploadError, data_url, decode_upload, encode_png
from .pool import InferencePool, ServerBusy

STATIC_DIR = Path(__file__).parent / "static"
MAX_N = 64
MAX_STEPS = 16
MAX_SEED = 2**32 - 1
MAX_SCALE = 8
MAX_UPLOAD_BYTES = 4 * 1024 * 1024
PNG = {
    200: {
        "content": {"image/png": {}},
        "description": "a PNG carrying genlab provenance (XMP + genlab:* iTXt)",
    }
}
# IPTC source type of the images the server returns that are the client's upload, resized and framed
UPLOAD_SOURCE_TYPE = "http://cv.iptc.org/newscodes/digitalsourcetype/algorithmicallyEnhanced"
log = logging.getLogger("genlab.serve")

Seed = Annotated[int, Field(ge=0, le=MAX_SEED, description=f"0..{MAX_SEED}; the same seed, the same images")]
Label = Annotated[
    int | None, Field(ge=0, description="class-conditional runs: the class to draw (none: random per seed)")
]
Scale = Annotated[int, Field(ge=1, le=MAX_SCALE, description="nearest-neighbour upscaling of the PNG")]


class StrictBody(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class SampleRequest(StrictBody):
    n: int = Field(16, ge=1, le=MAX_N, description=f"number of images, 1..{MAX_N}")
    seed: Seed = 0
    label: Label = None
    scale: Scale = 1


class InterpolateRequest(StrictBody):
    seed_a: Seed = 0
    seed_b: Seed = 1
    steps: int = Field(8, ge=2, le=MAX_STEPS, description=f"images along the walk, 2..{MAX_STEPS}")
    t: float | None = Field(None, ge=0.0, le=1.0, description="one image at this fraction of the walk")
    label: Label = None
    scale: Scale = 1


def create_app(
    catalog: dict[str, ServedRun],
    workers: int = 2,
    queue: int = 32,
    max_upload_bytes: int = MAX_UPLOAD_BYTES,
) -> FastAPI:
    """The app over already-loaded runs. `workers` threads run inference, `queue` more requests may wait."""
    pool = InferencePool(workers, queue)

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI):
        yield
        pool.shutdown()

    app = FastAPI(
        title="genlab serve",
        version=__version__,
        description='Sample, walk and reconstruct with trained genlab runs. Errors are {"error": message}.',
        docs_url=None,  # FastAPI's docs page loads its assets from a CDN; /api/docs renders the schema locally
        redoc_url=None,
        openapi_url="/api/openapi.json",
        lifespan=lifespan,
    )
    app.state.catalog, app.state.pool = catalog, pool
    app.add_middleware(
        RequestGuard, max_body_bytes=max_upload_bytes + 64 * 1024, max_buffered_bytes=16 * max_upload_bytes
    )
    _add_error_handlers(app)

    def served(name: str) -> ServedRun:
        if name not in catalog:  # the only lookup: a name, never a path
            shown = name if len(name) <= 64 else name[:61] + "..."
            raise HTTPException(404, f"unknown run {shown!r}; served: {', '.join(sorted(catalog))}")
        return catalog[name]

    @app.get("/", include_in_schema=False)
    def page() -> FileResponse:
        return FileResponse(STATIC_DIR / "index.html")

    @app.get("/api/docs", include_in_schema=False)
    def docs() -> FileResponse:
        return FileResponse(STATIC_DIR / "api.html")

    # Cheap routes run on the event loop itself (a plain `def` would take a thread-pool hop per request).
    @app.get("/api/health", summary="Liveness and limits")
    async def health() -> dict[str, Any]:
        return {"status": "ok", "runs": len(catalog), "workers": pool.workers, "queue": pool.queue}

    @app.get("/api/runs", summary="The served runs")
    async def runs() -> dict[str, Any]:
        limits = {"n": MAX_N, "steps": MAX_STEPS, "seed": MAX_SEED, "upload_bytes": max_upload_bytes}
        return {"runs": [run.summary() for run in catalog.values()], "limits": limits}

    @app.get("/api/runs/{name}", summary="One run: family, dataset, progress, eval figures")
    def run_detail(name: str) -> dict[str, Any]:
        return served(name).detail()

    @app.get("/api/runs/{name}/losses", summary="Loss curves from metrics.jsonl")
    def losses(name: str) -> dict[str, Any]:
        return served(name).loss_curves()

    @app.get("/api/runs/{name}/figures/{figure}", summary="A figure the run wrote", responses=PNG)
    async def figure(name: str, figure: str) -> Response:
        run = served(name)
        if figure not in FIGURES or not (run.run.run_dir / FIGURES[figure]).is_file():
            raise HTTPException(404, f"run {name!r} has no figure {figure[:40]!r}")
        return png_response(await pool.run(figure_png, run, figure))

    @app.post("/api/runs/{name}/sample", summary="A grid of samples", responses=PNG)
    async def sample(name: str, request: SampleRequest) -> Response:
        run = served(name)
        check_label(run, request.label)
        return png_response(await pool.run(sample_png, run, request))

    @app.post("/api/runs/{name}/interpolate", summary="A latent walk between two seeds", responses=PNG)
    async def interpolate(name: str, request: InterpolateRequest) -> Response:
        run = served(name)
        check_label(run, request.label)
        return png_response(await pool.run(interpolate_png, run, request))

    @app.post("/api/runs/{name}/reconstruct", summary="Reconstruct (and denoise) an uploaded image")
    async def reconstruct(
        name: str,
        file: Annotated[
            UploadFile, File(description="PNG, JPEG, GIF, BMP or WebP; converted to the run's shape")
        ],
        invert: Annotated[str, Form(pattern="^(auto|yes|no)$", description="grayscale runs")] = "auto",
        seed: Annotated[int, Form(ge=0, le=MAX_SEED, description="seed of the denoising noise")] = 0,
        label: Annotated[int | None, Form(ge=0, description="class-conditional runs")] = None,
        crop: Annotated[bool, Form(description="grayscale runs: frame the ink as MNIST does")] = True,
    ) -> dict[str, Any]:
        run = served(name)
        if not run.can_reconstruct:
            raise HTTPException(
                400, f"run {name!r} is a {run.model.name}: it has no encoder to reconstruct with"
            )
        if run.is_conditional and label is None:
            raise HTTPException(
                422, f"run {name!r} is class-conditional: give a label in 0..{run.num_classes - 1}"
            )
        check_label(run, label)
        data = await file.read()
        choice = {"auto": None, "yes": True, "no": False}[invert]
        return await pool.run(reconstruct_json, run, data, choice, crop, seed, label)

    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    return app


def check_label(run: ServedRun, label: int | None) -> None:
    if label is None:
        return
    if not run.is_conditional:
        raise HTTPException(422, f"run {run.name!r} is not class-conditional: leave out label")
    if label >= run.num_classes:
        raise HTTPException(422, f"label must be in 0..{run.num_classes - 1}, got {label}")


def png_response(png: bytes) -> Response:
    return Response(png, media_type="image/png", headers={"Cache-Control": "no-store"})


# --- the work done on pool threads --------------------------------------------------------------------
def _labels(run: ServedRun, label: int | None, n: int, seed: int) -> torch.Tensor | None:
    """Labels for a conditional model: the one asked for, else drawn from the seed; None otherwise."""
    if not run.is_conditional:
        return None
    if label is not None:
        return torch.full((n,), label, dtype=torch.long)
    return torch.randint(run.num_classes, (1,), generator=torch.Generator().manual_seed(seed)).repeat(n)


def sample_png(run: ServedRun, request: SampleRequest) -> bytes:
    labels = torch.full((request.n,), request.label, dtype=torch.long) if request.label is not None else None
    with torch.no_grad():
        images = run.run.sample(request.n, seed=request.seed, labels=labels).cpu()
    provenance = run.provenance(
        "samples", seed=request.seed, label=request.label, operation="sample", n=request.n
    )
    return encode_png(viz.make_grid(images), provenance, request.scale)


def interpolate_png(run: ServedRun, request: InterpolateRequest) -> bytes:
    model = run.model
    codes = [
        model.sample_latent(1, torch.Generator().manual_seed(s))[0] for s in (request.seed_a, request.seed_b)
    ]
    fractions = torch.linspace(0, 1, request.steps) if request.t is None else torch.tensor([request.t])
    fractions = fractions.to(codes[0].device)
    labels = _labels(run, request.label, len(fractions), request.seed_a)
    with torch.no_grad():
        path = model.interpolate_latents(codes[0], codes[1], fractions)
        images = (model.generate(path) if labels is None else model.generate(path, labels=labels)).cpu()
    provenance = run.provenance(
        "interpolation",
        seed=request.seed_a,
        label=None if labels is None else int(labels[0]),
        operation="interpolate",
        seed_b=request.seed_b,
        t=[round(float(f), 6) for f in fractions],
    )
    return encode_png(viz.make_grid(images, nrow=len(fractions)), provenance, request.scale)


def reconstruct_json(
    run: ServedRun, data: bytes, invert: bool | None, crop: bool, seed: int, label: int | None
) -> dict[str, Any]:
    model = run.model
    clean = decode_upload(data, tuple(model.config.image_shape), invert, crop)  # (1, C, H, W) in [0, 1]
    labels = None if label is None else torch.tensor([label])

    def reconstruct(x: torch.Tensor) -> torch.Tensor:
        x = x.to(model.device)
        with torch.no_grad():
            out = model.reconstruct(x) if labels is None else model.reconstruct(x, labels=labels.to(x.device))
        return out.cpu().clamp(0, 1)

    def png(images: torch.Tensor, kind: str, made_by_model: bool = True) -> str:
        # The converted upload and its noised copy are the client's image, not the model's: said so.
        source = None if made_by_model else UPLOAD_SOURCE_TYPE
        provenance = run.provenance(kind, seed=seed, label=label, source=source, operation="reconstruct")
        return data_url(encode_png(viz.to_uint8_hwc(images)[0], provenance))

    recon = reconstruct(clean)
    result: dict[str, Any] = {
        "run": run.name,
        "image_shape": list(clean.shape[1:]),
        "input": png(clean, "uploaded input", made_by_model=False),
        "reconstruction": png(recon, "reconstruction"),
        "mse": mse(recon, clean),
        "psnr_db": psnr(recon, clean),
        "denoising": None,
    }
    corruption = run.corruption
    if corruption is not None:
        noisy = corrupt(clean, corruption["noise_std"], corruption["mask_prob"], seed)
        denoised = reconstruct(noisy)
        result["denoising"] = {
            **corruption,
            "seed": seed,
            "noisy": png(noisy, "noisy input", made_by_model=False),
            "denoised": png(denoised, "denoised"),
            "psnr_noisy_db": psnr(noisy, clean),
            "psnr_denoised_db": psnr(denoised, clean),
        }
    return result


def corrupt(clean: torch.Tensor, noise_std: float, mask_prob: float, seed: int) -> torch.Tensor:
    """The corruption the denoising autoencoder trained on (Autoencoder.corrupt), drawn from a seeded
    generator instead of the global RNG, which the pool's threads share."""
    generator = torch.Generator().manual_seed(seed)
    noisy = clean + noise_std * torch.randn(clean.shape, generator=generator) if noise_std > 0 else clean
    if mask_prob > 0:
        noisy = noisy * (torch.rand(clean.shape, generator=generator) >= mask_prob)
    return noisy.clamp(0.0, 1.0)


def figure_png(run: ServedRun, figure: str) -> bytes:
    with Image.open(run.run.run_dir / FIGURES[figure]) as image:
        array = np.asarray(image.convert("RGB"))
    return encode_png(array, run.provenance(f"figure {figure}", operation="figure", figure=figure))


# --- errors: always {"error": one line}, never a traceback ---------------------------------------------
def _validation_message(exc: RequestValidationError) -> str:
    first = exc.errors()[0] if exc.errors() else {}
    loc = [str(part) for part in first.get("loc", ())]
    where = ".".join(loc[1:] if loc[:1] == ["body"] and len(loc) > 1 else loc)
    if first.get("type") == "json_invalid":
        return "request body is not valid JSON"
    if first.get("type") == "missing" and tuple(first.get("loc", ())) == ("body",):
        return "request body: a JSON object is required"
    message = str(first.get("msg", "invalid request")).splitlines()[0]
    return f"{where}: {message}" if where else message


def _add_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(RequestValidationError)
    async def invalid(_: Request, exc: RequestValidationError):
        return error(422, _validation_message(exc))

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_: Request, exc: StarletteHTTPException):
        return error(exc.status_code, str(exc.detail))

    @app.exception_handler(ServerBusy)
    async def busy(_: Request, exc: ServerBusy):
        return error(429, str(exc), retry_after=1)

    @app.exception_handler(UploadError)
    async def bad_upload(_: Request, exc: UploadError):
        return error(exc.status, str(exc))

    @app.exception_handler(GenlabError)
    async def genlab_error(_: Request, exc: GenlabError):
        return error(400, str(exc))

    @app.exception_handler(Exception)
    async def unexpected(_: Request, exc: Exception):  # a bug: logged here, one line for the client
        log.exception("unexpected error")
        return error(500, "internal error")

"""Compression: rate-distortion of genlab's codec against JPEG and WebP (Pillow), on the same test images.

genlab: the whole test set compressed into one .glz file per run and --bits (bytes per image = file size
/ N, header included; files as `genlab compress --no-run-path` writes them: by default the run's path
adds its length in bytes), decoded, scored by PSNR and SSIM. Also measured: the payload under plain lzma of
the same quantized symbols (the fallback the entropy coder is weighed against) and the size of a
one-image file. JPEG and WebP: every image its own file (what a user would store), across qualities,
and all images in one mosaic file (the same amortized-header setting as the .glz file). "x fewer bytes
than WebP at equal SSIM": WebP's bytes interpolated (log-linear) along its Pareto front (the quality
settings no other setting beats in both bytes and SSIM) at each genlab point's SSIM.

    python benchmarks/compress.py benchmarks/runs/ae benchmarks/runs/vae
    python benchmarks/compress.py RUN... --ood fashion-mnist     # out-of-domain images through the same AE

Writes benchmarks/results/compress.{json,md} and compress.png.
"""

from __future__ import annotations

import argparse
import io
import json
import lzma
import platform
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

import genlab
from genlab.data import load_dataset
from genlab.errors import GenlabError
from genlab.metrics.image_quality import psnr_per_image, ssim_per_image
from genlab.uses import codec

BITS = (2, 3, 4, 5, 6, 7, 8)
JPEG_QUALITIES = (5, 10, 20, 30, 50, 70, 90)
WEBP_QUALITIES = (0, 5, 10, 20, 30, 50, 70, 90)


def score(decoded: torch.Tensor, clean: torch.Tensor) -> dict:
    return {
        "psnr": float(psnr_per_image(decoded.double(), clean.double()).mean()),
        "ssim": float(ssim_per_image(decoded.double(), clean.double()).mean()),
    }


def pil_round_trip(image: np.ndarray, fmt: str, quality: int) -> tuple[int, np.ndarray]:
    buffer = io.BytesIO()
    options = {"method": 6} if fmt == "WEBP" else {"optimize": True}  # each codec's slowest, smallest mode
    Image.fromarray(image).save(buffer, format=fmt, quality=quality, **options)
    size = buffer.tell()
    buffer.seek(0)
    with Image.open(buffer) as decoded:
        return size, np.asarray(decoded.convert("L"))


def classical_points(clean_uint8: np.ndarray, clean: torch.Tensor) -> list[dict]:
    """JPEG and WebP per image and as one mosaic file, across their quality settings."""
    n, h, w = clean_uint8.shape
    side = int(np.ceil(np.sqrt(n)))
    padded = np.zeros((side * side, h, w), np.uint8)
    padded[:n] = clean_uint8
    mosaic = padded.reshape(side, side, h, w).transpose(0, 2, 1, 3).reshape(side * h, side * w)
    points = []
    for fmt, qualities in (("JPEG", JPEG_QUALITIES), ("WEBP", WEBP_QUALITIES)):
        for quality in qualities:
            sizes, decoded = zip(*(pil_round_trip(image, fmt, quality) for image in clean_uint8))
            images = torch.from_numpy(np.stack(decoded)).float()[:, None] / 255
            points.append(
                {
                    "method": f"{fmt} per image",
                    "setting": quality,
                    "bytes": float(np.mean(sizes)),
                    **score(images, clean),
                }
            )
            size, whole = pil_round_trip(mosaic, fmt, quality)
            tiles = whole.reshape(side, h, side, w).transpose(0, 2, 1, 3).reshape(-1, h, w)[:n]
            images = torch.from_numpy(np.ascontiguousarray(tiles)).float()[:, None] / 255
            points.append(
                {"method": f"{fmt} mosaic", "setting": quality, "bytes": size / n, **score(images, clean)}
            )
    return points


def genlab_points(run_name: str, run, clean: torch.Tensor) -> list[dict]:
    points = []
    for bits in BITS:
        compressed = codec.compress(run, clean, bits=bits, store_run_path=False)
        data = compressed.to_bytes()
        decoded = codec.decompress(run, codec.Compressed.from_bytes(data))
        symbols = codec.quantize(run.model, run.model.embed(clean), bits)
        offset = 2 ** (bits + 1)  # symbols + offset lie in [0, 2**(bits + 2)]: one byte up to 5 bits
        lzma_bytes = len(
            lzma.compress((symbols + offset).astype(np.uint8 if bits <= 5 else np.uint16).tobytes(), preset=9)
        )
        single = len(codec.compress(run, clean[:1], bits=bits, store_run_path=False).to_bytes())
        points.append({
            "method": f"genlab {run_name}", "setting": bits, "bytes": len(data) / len(clean),
            "payload_bytes": len(compressed.payload) / len(clean), "lzma_payload_bytes": lzma_bytes / len(clean),
            "one_image_file_bytes": single, **score(decoded, clean),
        })  # fmt: skip
    return points


def pareto_front(points: list[dict]) -> list[tuple[float, float]]:
    """(ssim, bytes) of the settings no other setting beats on both (small images make WebP's SSIM
    non-monotonic in its quality setting), sorted by SSIM."""
    pts = sorted((p["bytes"], p["ssim"]) for p in points)
    front, best = [], -1.0
    for size, ssim in pts:  # by size; keep a point only if it beats every smaller file's SSIM
        if ssim > best:
            front.append((ssim, size))
            best = ssim
    return front


def bytes_at_ssim(points: list[dict], ssim: float) -> tuple[float, str] | None:
    """A codec's bytes at a given SSIM, log-linearly interpolated ("=") along its Pareto front; below its
    lowest SSIM, its smallest file (">=": it cannot go lower, so the ratio is a lower bound); None above
    its highest SSIM."""
    pts = pareto_front(points)
    if ssim < pts[0][0]:
        return pts[0][1], ">="
    for (s0, b0), (s1, b1) in zip(pts, pts[1:]):
        if s0 <= ssim <= s1:
            t = (ssim - s0) / (s1 - s0)
            return float(np.exp((1 - t) * np.log(b0) + t * np.log(b1))), "="
    return None


def evaluate(dataset: str, runs: dict, n: int) -> list[dict]:
    images = load_dataset(dataset, "test").images[:n]
    clean = images.float() / 255
    points = classical_points(images[:, 0].numpy(), clean)
    for name, run in runs.items():
        points += genlab_points(name, run, clean)
    for method in ("WEBP per image", "WEBP mosaic", "JPEG per image"):
        reference = [p for p in points if p["method"] == method]
        for p in points:
            if p["method"].startswith("genlab"):
                other = bytes_at_ssim(reference, p["ssim"])
                key = f"x_fewer_than_{method.replace(' ', '_')}"
                p[key] = None if other is None else [other[0] / p["bytes"], other[1]]
    return points


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+")
    parser.add_argument("--data", default="mnist-5k")
    parser.add_argument("--ood", nargs="*", default=["fashion-mnist"], help="out-of-domain test sets")
    parser.add_argument("--n", type=int, default=500)
    parser.add_argument("--results", default="benchmarks/results")
    args = parser.parse_args()
    runs = {Path(r).name: genlab.load(r) for r in args.runs}
    started = time.time()
    results = {args.data: evaluate(args.data, runs, args.n)}
    for dataset in args.ood:
        try:
            results[dataset] = evaluate(dataset, runs, args.n)
        except GenlabError as exc:
            print(f"skipping out-of-domain {dataset}: {exc}")
    meta = {
        "command": "python benchmarks/compress.py " + " ".join(args.runs),
        "n": args.n, "seconds": round(time.time() - started),
        "machine": f"{platform.processor() or platform.machine()}, torch {torch.__version__}",
        "date": time.strftime("%Y-%m-%d"),
    }  # fmt: skip
    out = Path(args.results)
    out.mkdir(parents=True, exist_ok=True)
    (out / "compress.json").write_text(json.dumps({"meta": meta, "results": results}, indent=1))
    write_markdown(results, out / "compress.md", meta)
    plot(results, out / "compress.png")
    print((out / "compress.md").read_text())


def _ratio(value) -> str:
    if value is None:
        return "above its range"
    ratio, kind = value
    return f"{'>= ' if kind == '>=' else ''}{ratio:.1f}x"


def write_markdown(results: dict, path: Path, meta: dict) -> None:
    lines = [f"`{meta['command']}`, {meta['n']} test images per dataset\n"]
    for dataset, points in results.items():
        lines += [
            f"**{dataset}**: genlab (whole test set in one file)\n",
            "| run | bits | bytes/image | ANS payload | lzma payload | 1-image file | PSNR | SSIM | vs WebP per image | vs WebP mosaic |",
            "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
        ]
        for p in (p for p in points if p["method"].startswith("genlab")):
            lines.append(
                f"| {p['method'][7:]} | {p['setting']} | {p['bytes']:.1f} | {p['payload_bytes']:.1f} | "
                f"{p['lzma_payload_bytes']:.1f} | {p['one_image_file_bytes']} | {p['psnr']:.2f} | {p['ssim']:.3f} | "
                f"{_ratio(p['x_fewer_than_WEBP_per_image'])} | {_ratio(p['x_fewer_than_WEBP_mosaic'])} |"
            )
        lines += [
            "",
            f"**{dataset}**: JPEG and WebP (Pillow)\n",
            "| codec | quality | bytes/image | PSNR | SSIM |",
            "| --- | --- | --- | --- | --- |",
        ]
        for p in (p for p in points if not p["method"].startswith("genlab")):
            lines.append(
                f"| {p['method']} | {p['setting']} | {p['bytes']:.1f} | {p['psnr']:.2f} | {p['ssim']:.3f} |"
            )
        lines.append("")
    path.write_text("\n".join(lines))


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(results), figsize=(6 * len(results), 4), squeeze=False)
    for ax, (dataset, points) in zip(axes[0], results.items()):
        for method in dict.fromkeys(p["method"] for p in points):
            pts = sorted((p["bytes"], p["ssim"]) for p in points if p["method"] == method)
            ax.plot(*zip(*pts), "-o" if method.startswith("genlab") else "--s", label=method, markersize=3)
        ax.set_xscale("log")
        ax.set_xlabel("bytes per image")
        ax.set_ylabel("SSIM")
        ax.set_title(dataset)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    main()

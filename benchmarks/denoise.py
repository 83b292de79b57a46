"""Denoising: genlab autoencoders against classical filters on the same noisy test digits.

For every noise level (Gaussian sigma 0.1/0.2/0.3/0.5, masking 0.25/0.5; noise added to [0, 1] images and
clamped back, seeded) each method denoises the same noisy images and is scored by PSNR and SSIM against
the clean ones. Classical filters: Gaussian blur and median, each with its best setting per level (chosen
on these very test images, which favours them), scikit-image's non-local means (best h per level) and
BM3D (the `bm3d` package, noise std given: the true sigma, or estimated for masking). BM3D is run on
10x10 mosaics of digits (MNIST backgrounds are black, so the tiles do not bleed): about 0.2 s a digit
instead of 1-4 s, and its block matching may borrow patches from neighbouring digits.

    python benchmarks/denoise.py benchmarks/runs/dae-wide benchmarks/runs/dae benchmarks/runs/ae benchmarks/runs/vae
    python benchmarks/denoise.py RUN... --n 100 --no-bm3d          # a quick look

Writes benchmarks/results/denoise.{json,md} and denoise.png (PSNR per level) and denoise-examples.png.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np
import torch
from scipy import ndimage

import genlab
from genlab.data import load_dataset
from genlab.metrics.image_quality import psnr_per_image, ssim_per_image
from genlab.uses.denoise import add_noise, denoise, parse_noise

LEVELS = ["gaussian:0.1", "gaussian:0.2", "gaussian:0.3", "gaussian:0.5", "mask:0.25", "mask:0.5"]
BLUR_SIGMAS = (0.5, 0.7, 1.0, 1.4, 2.0)
MEDIAN_SIZES = (2, 3, 5)
NLM_FACTORS = (0.4, 0.6, 0.8, 1.0, 1.2)


def score(denoised: np.ndarray, clean: torch.Tensor) -> dict:
    x = torch.from_numpy(np.clip(denoised, 0, 1)).double()
    return {
        "psnr": float(psnr_per_image(x, clean.double()).mean()),
        "ssim": float(ssim_per_image(x, clean.double()).mean()),
    }


def best_of(settings, apply, clean) -> dict:
    """The setting with the best mean PSNR on these images, and its scores."""
    results = [{"setting": s, **score(apply(s), clean)} for s in settings]
    return max(results, key=lambda r: r["psnr"])


def per_image(filter_fn, noisy: np.ndarray) -> np.ndarray:
    return np.stack([filter_fn(image) for image in noisy[:, 0]])[:, None]


def mosaic(images: np.ndarray, side: int = 10) -> tuple[np.ndarray, int]:
    """(N, 1, H, W) -> a list of (side*H, side*W) mosaics (the last one padded with black)."""
    n, _, h, w = images.shape
    per = side * side
    count = -(-n // per)
    padded = np.zeros((count * per, h, w))
    padded[:n] = images[:, 0]
    tiles = (
        padded.reshape(count, side, side, h, w).transpose(0, 1, 3, 2, 4).reshape(count, side * h, side * w)
    )
    return tiles, n


def unmosaic(tiles: np.ndarray, n: int, h: int, w: int, side: int = 10) -> np.ndarray:
    count = tiles.shape[0]
    images = tiles.reshape(count, side, h, side, w).transpose(0, 1, 3, 2, 4).reshape(-1, h, w)
    return images[:n, None]


def classical(noisy: np.ndarray, clean: torch.Tensor, noise, use_bm3d: bool) -> dict:
    from skimage.restoration import denoise_nl_means, estimate_sigma

    sigma = (
        noise.level
        if noise.kind == "gaussian"
        else float(np.mean(estimate_sigma(noisy[:, 0], channel_axis=0)))
    )
    out = {
        "gaussian blur": best_of(
            BLUR_SIGMAS, lambda s: per_image(lambda im: ndimage.gaussian_filter(im, s), noisy), clean
        ),
        "median": best_of(
            MEDIAN_SIZES, lambda s: per_image(lambda im: ndimage.median_filter(im, s), noisy), clean
        ),
        "non-local means": best_of(
            NLM_FACTORS,
            lambda f: per_image(
                lambda im: denoise_nl_means(im, h=f * sigma, sigma=sigma, patch_size=3, patch_distance=5),
                noisy,
            ),
            clean,
        ),
    }
    if use_bm3d:
        import bm3d

        tiles, n = mosaic(noisy)
        denoised = np.stack([bm3d.bm3d(t, sigma_psd=sigma) for t in tiles])
        out["BM3D"] = {"setting": round(sigma, 4), **score(unmosaic(denoised, n, *noisy.shape[2:]), clean)}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", help="run directories of ae/vae runs")
    parser.add_argument("--data", default="mnist-5k")
    parser.add_argument("--n", type=int, default=250, help="test images (every k-th of the test split)")
    parser.add_argument("--levels", nargs="+", default=LEVELS)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-bm3d", action="store_true")
    parser.add_argument("--results", default="benchmarks/results")
    args = parser.parse_args()

    test = load_dataset(args.data, "test").images.float() / 255.0
    step = max(1, len(test) // args.n)
    clean = test[::step][: args.n]
    runs = {Path(r).name: genlab.load(r) for r in args.runs}
    rows, examples = [], {}
    shown = torch.linspace(0, len(clean) - 1, 10).long()  # the test split is ordered by class: spread out
    started = time.time()
    for run_name, run in runs.items():  # reconstructions of clean digits, for reference
        rows.append(
            {"noise": "none", "method": f"genlab {run_name}", **score(denoise(run, clean).numpy(), clean)}
        )
    for level in args.levels:
        noise = parse_noise(level)
        noisy = add_noise(clean, noise, seed=args.seed)
        t0 = time.time()
        rows.append({"noise": level, "method": "noisy input", **score(noisy.numpy(), clean)})
        for method, result in classical(
            noisy.numpy().astype(np.float64), clean, noise, not args.no_bm3d
        ).items():
            rows.append({"noise": level, "method": method, **result})
        for run_name, run in runs.items():
            denoised = denoise(run, noisy)
            rows.append({"noise": level, "method": f"genlab {run_name}", **score(denoised.numpy(), clean)})
            examples[(level, run_name)] = denoised[shown]
        examples[(level, "noisy")] = noisy[shown]
        print(f"{level}: {time.time() - t0:.0f} s", flush=True)

    summary = {}
    for level in args.levels:
        level_rows = [r for r in rows if r["noise"] == level]
        best_classical = max((r for r in level_rows if not r["method"].startswith(("genlab", "noisy"))),
                             key=lambda r: r["psnr"])  # fmt: skip
        best_genlab = max(
            (r for r in level_rows if r["method"].startswith("genlab")), key=lambda r: r["psnr"]
        )
        summary[level] = {
            "best_classical": best_classical["method"], "best_classical_psnr": best_classical["psnr"],
            "best_genlab": best_genlab["method"], "best_genlab_psnr": best_genlab["psnr"],
            "margin_db": best_genlab["psnr"] - best_classical["psnr"],
        }  # fmt: skip
    meta = {
        "command": "python benchmarks/denoise.py " + " ".join(args.runs),
        "data": args.data, "n": len(clean), "seed": args.seed, "seconds": round(time.time() - started),
        "machine": f"{platform.processor() or platform.machine()}, torch {torch.__version__}",
        "date": time.strftime("%Y-%m-%d"),
    }  # fmt: skip
    out = Path(args.results)
    out.mkdir(parents=True, exist_ok=True)
    (out / "denoise.json").write_text(json.dumps({"meta": meta, "rows": rows, "summary": summary}, indent=1))
    write_markdown(rows, summary, args.levels, out / "denoise.md", meta)
    plot(rows, args.levels, out / "denoise.png")
    save_examples(clean[shown], examples, args.levels, list(runs), out / "denoise-examples.png")
    print((out / "denoise.md").read_text())


def write_markdown(rows, summary, levels, path, meta) -> None:
    methods = list(dict.fromkeys(r["method"] for r in rows if r["noise"] != "none"))
    lines = [
        f"PSNR dB / SSIM on {meta['n']} {meta['data']} test digits (`{meta['command']}`)\n",
        "| method | " + " | ".join(["clean", *levels]) + " |",
        "| --- |" + " --- |" * (len(levels) + 1),
    ]
    for method in methods:
        cells = []
        for level in ["none", *levels]:
            hit = [r for r in rows if r["noise"] == level and r["method"] == method]
            cells.append(f"{hit[0]['psnr']:.2f} / {hit[0]['ssim']:.3f}" if hit else "")
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "| noise | best classical | dB | best genlab | dB | margin dB |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for level in levels:
        s = summary[level]
        lines.append(
            f"| {level} | {s['best_classical']} | {s['best_classical_psnr']:.2f} | {s['best_genlab']} | "
            f"{s['best_genlab_psnr']:.2f} | {s['margin_db']:+.2f} |"
        )
    path.write_text("\n".join(lines) + "\n")


def plot(rows, levels, path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    methods = list(dict.fromkeys(r["method"] for r in rows if r["noise"] != "none"))
    fig, ax = plt.subplots(figsize=(8, 4))
    for method in methods:
        values = [
            next((r["psnr"] for r in rows if r["noise"] == lv and r["method"] == method), np.nan)
            for lv in levels
        ]
        style = "-o" if method.startswith("genlab") else "--s"
        ax.plot(range(len(levels)), values, style, label=method)
    ax.set_xticks(range(len(levels)), levels, rotation=20)
    ax.set_ylabel("PSNR (dB)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def save_examples(clean, examples, levels, run_names, path) -> None:
    from genlab import viz

    rows = [clean]
    for level in ("gaussian:0.3", "mask:0.5"):
        if level in levels:
            rows.append(examples[(level, "noisy")])
            rows += [examples[(level, name)] for name in run_names[:2]]
    viz.save_grid(torch.cat(rows), path, nrow=len(clean))


if __name__ == "__main__":
    main()

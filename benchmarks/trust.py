"""Figures for the README's provenance, explain and export sections, on trained runs.

For each run directory: the cost of provenance (hashing the weights file, writing a 64-image grid with
and without metadata, and C2PA-signing it when the c2pa extra is installed), `genlab explain`'s wall
time, and ONNX export: export time, the max abs difference between onnxruntime and PyTorch on 1,000
seeded latents (and encoder outputs on 1,000 test images), and decode throughput of both at batch 256.

    flock /tmp/genlab-cpu.lock python benchmarks/trust.py runs/gan runs/vae runs/ae --out benchmarks/results/trust
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

import numpy as np
import torch
from PIL import Image

import genlab
from genlab import explain, provenance, viz
from genlab.data import load_dataset
from genlab.export import export_onnx


def best_of(fn, repeats: int = 5) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def provenance_costs(run, folder: Path) -> dict:
    images = run.sample(64, seed=0)
    record = provenance.for_run(run, seed=0)
    provenance._file_sha256.cache_clear()
    figures = {
        "weights_mb": provenance.weights_file(run.checkpoint).stat().st_size / 1e6,
        "sha256_s": best_of(
            lambda: (provenance._file_sha256.cache_clear(), provenance.checkpoint_sha256(run.checkpoint))
        ),
        "grid_with_provenance_s": best_of(
            lambda: viz.save_grid(images, folder / "prov.png", provenance=record)
        ),
    }
    with Image.open(folder / "prov.png") as image:  # the same pixels, saved without metadata
        pixels = np.asarray(image)
    figures["grid_plain_s"] = best_of(lambda: Image.fromarray(pixels).save(folder / "plain.png"))
    figures["metadata_bytes"] = (folder / "prov.png").stat().st_size - (folder / "plain.png").stat().st_size
    try:
        sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
        from tests.test_provenance import make_certificate

        signer = provenance.C2paSigner(*make_certificate(folder))
        figures["c2pa_sign_s"] = best_of(lambda: signer.sign(folder / "prov.png", record), repeats=1)
        figures["c2pa_manifest_bytes"] = (folder / "prov.png").stat().st_size - (
            folder / "plain.png"
        ).stat().st_size
        figures["c2pa_verify_s"] = best_of(lambda: provenance.verify_c2pa(folder / "prov.png"), repeats=3)
        figures["c2pa_state"] = provenance.verify_c2pa(folder / "prov.png")[0]
    except (ImportError, provenance.ProvenanceError) as exc:
        figures["c2pa"] = f"not measured: {exc}"
    return figures


def onnx_figures(run, folder: Path) -> dict:
    import onnxruntime as ort

    start = time.perf_counter()
    export_onnx(run, folder)
    figures = {"export_s": time.perf_counter() - start}
    description = json.loads((folder / "model.json").read_text())
    model = run.model
    name = next(n for n in description["graphs"] if n != "encoder")
    decoder = ort.InferenceSession(
        str(folder / description["graphs"][name]["file"]), providers=["CPUExecutionProvider"]
    )
    z = model.sample_latent(1000, torch.Generator().manual_seed(0)).float()
    (onnx_images,) = decoder.run(None, {"z": z.numpy()})
    with torch.no_grad():
        torch_images = model.generate(z)
    figures["decoder_max_abs_diff"] = float(np.abs(onnx_images - torch_images.numpy()).max())
    batch = z[:256]
    with torch.no_grad():
        figures["torch_images_per_s"] = 256 / best_of(lambda: model.generate(batch), repeats=20)
    figures["onnx_images_per_s"] = 256 / best_of(lambda: decoder.run(None, {"z": batch.numpy()}), repeats=20)
    if "encoder" in description["graphs"]:
        encoder = ort.InferenceSession(str(folder / "encoder.onnx"), providers=["CPUExecutionProvider"])
        images = load_dataset(run.config.data, "test").images[:1000].float() / 255.0
        outputs = encoder.run(None, {"images": images.numpy()})
        with torch.no_grad():
            expected = model.encode(images)
        expected = expected if isinstance(expected, tuple) else (expected,)
        figures["encoder_max_abs_diff"] = max(
            float(np.abs(o - e.numpy()).max()) for o, e in zip(outputs, expected)
        )
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+")
    parser.add_argument("--out", default="benchmarks/results/trust")
    args = parser.parse_args()
    results = {
        "date": str(date.today()),
        "machine": f"{platform.processor() or platform.machine()}, torch {torch.__version__}, {torch.get_num_threads()} threads",
        "runs": {},
    }
    for run_dir in args.runs:
        run = genlab.load(run_dir)
        with tempfile.TemporaryDirectory() as scratch:
            scratch = Path(scratch)
            entry = {"model": run.model.name, "preset": run.config.preset, "epoch": run.state.get("epoch")}
            entry["provenance"] = provenance_costs(run, scratch)
            start = time.perf_counter()
            report = explain.explain_run(run, scratch / "explain")
            entry["explain_s"] = time.perf_counter() - start
            entry["explain_figures"] = report.figures
            entry["onnx"] = onnx_figures(run, scratch / "onnx")
        results["runs"][run_dir] = entry
        print(json.dumps({run_dir: entry}, indent=1, default=float))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(results, indent=2, default=float) + "\n")
    print(f"wrote {out.with_suffix('.json')}")


if __name__ == "__main__":
    main()

"""`genlab sample | reconstruct | interpolate | info | models`: use and inspect trained runs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from ..errors import ConfigError
from .common import device, positive_int, test_images
from .trust import add_signing_options, signer_from_args


def register(commands) -> None:
    sample = commands.add_parser("sample", help="write samples of a trained run as a PNG grid or an .npz")
    sample.add_argument("run_dir")
    sample.add_argument("--n", type=positive_int, default=64)
    sample.add_argument(
        "--out", default="samples.png", help=".png for a grid, .npz for uint8 images (N, H, W, C)"
    )
    sample.add_argument("--seed", type=int, default=0)
    sample.add_argument("--device", default="cpu")
    add_signing_options(sample)
    sample.set_defaults(handler=cmd_sample)

    reconstruct = commands.add_parser("reconstruct", help="originals above reconstructions (ae, vae)")
    reconstruct.add_argument("run_dir")
    reconstruct.add_argument("--data", help="dataset (default: the run's own)")
    reconstruct.add_argument("--split", default="test", choices=["train", "test"])
    reconstruct.add_argument("--n", type=positive_int, default=10)
    reconstruct.add_argument("--out", default="reconstructions.png")
    reconstruct.add_argument("--device", default="cpu")
    reconstruct.set_defaults(handler=cmd_reconstruct)

    interpolate = commands.add_parser("interpolate", help="walks through latent space, one per row")
    interpolate.add_argument("run_dir")
    interpolate.add_argument("--out", default="interpolation.png")
    interpolate.add_argument("--steps", type=positive_int, default=10)
    interpolate.add_argument("--rows", type=positive_int, default=4)
    interpolate.add_argument("--seed", type=int, default=0)
    interpolate.add_argument("--data", help="ae/vae: walk between encoded test images of this dataset")
    interpolate.add_argument("--device", default="cpu")
    interpolate.set_defaults(handler=cmd_interpolate)

    info = commands.add_parser("info", help="what a run is: model, settings, checkpoint, progress")
    info.add_argument("run_dir")
    info.add_argument("--json", action="store_true")
    info.set_defaults(handler=cmd_info)

    models = commands.add_parser("models", help="list the registered models and their presets")
    models.set_defaults(handler=cmd_models)


def cmd_sample(args) -> int:
    from .. import provenance, viz
    from ..runs import load

    out = Path(args.out)
    if out.suffix.lower() not in (".png", ".npz"):
        raise ConfigError(f"--out must end in .png or .npz, got {out.name!r}")
    signer = signer_from_args(args)
    if signer and out.suffix.lower() != ".png":
        raise ConfigError("--sign-cert/--sign-key sign PNG files: use an --out ending in .png")
    run = load(args.run_dir, device=device(args.device))
    images = run.sample(args.n, seed=args.seed)
    record = provenance.for_run(run, seed=args.seed)
    if out.suffix.lower() == ".png":
        viz.save_grid(images, out, provenance=record)
        if signer:
            signer.sign(out, record)
    else:
        out.parent.mkdir(parents=True, exist_ok=True)
        np.savez_compressed(out, images=viz.to_uint8_hwc(images), provenance=provenance.npz_field(record))
    print(f"wrote {args.n} samples to {out}" + (" (C2PA-signed)" if signer else ""))
    return 0


def cmd_reconstruct(args) -> int:
    from .. import provenance, viz
    from ..metrics.image_quality import mse
    from ..runs import load

    run = load(args.run_dir, device=device(args.device))
    images = test_images(run, args.data, args.split)
    reconstructions = torch.cat([run.reconstruct(chunk).cpu() for chunk in images.split(500)])
    error = mse(reconstructions, images)
    n = min(args.n, len(images))
    record = provenance.for_run(run, kind="originals above reconstructions", composite=True)
    viz.save_grid(torch.cat([images[:n], reconstructions[:n]]), args.out, nrow=n, provenance=record)
    print(
        f"wrote {n} originals above their reconstructions to {args.out}; "
        f"{args.split} reconstruction MSE per pixel over {len(images)} images: {error:.5f}"
    )
    return 0


def cmd_interpolate(args) -> int:
    from .. import provenance, viz
    from ..runs import load

    run = load(args.run_dir, device=device(args.device))
    model = run.model
    generator = torch.Generator().manual_seed(args.seed)
    if args.data:
        if not hasattr(model, "embed"):
            raise ConfigError(f"model {model.name!r} has no encoder: interpolate without --data")
        images = test_images(run, args.data, "test")
        picks = torch.randperm(len(images), generator=generator)[: 2 * args.rows]
        with torch.no_grad():
            codes = model.embed(images[picks].to(model.device))
    else:
        codes = model.sample_latent(2 * args.rows, generator)
    t = torch.linspace(0, 1, args.steps, device=codes.device)
    path = torch.cat(
        [model.interpolate_latents(codes[2 * r], codes[2 * r + 1], t) for r in range(len(codes) // 2)]
    )
    with torch.no_grad():
        model.eval()
        record = provenance.for_run(run, seed=args.seed, kind="latent interpolations")
        viz.save_grid(model.generate(path), args.out, nrow=args.steps, provenance=record)
    print(f"wrote {len(codes) // 2} interpolations of {args.steps} steps to {args.out}")
    return 0


def cmd_info(args) -> int:
    from ..runs import load

    info = load(args.run_dir).info()
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"genlab run {info['run_dir']}", show_header=False)
    for key, value in info.items():
        if key not in ("model_config", "train_config", "run_dir"):
            table.add_row(key, str(value))
    table.add_row("model settings", ", ".join(f"{k}={v}" for k, v in info["model_config"].items()))
    Console().print(table)
    return 0


def cmd_models(args) -> int:
    from ..registry import get_model_class, list_models

    for name in list_models():
        print(name)
        for preset, recipe in get_model_class(name).presets.items():
            print(f"  {preset:12s} {recipe.description}")
    return 0

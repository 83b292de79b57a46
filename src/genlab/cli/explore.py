"""`genlab sample | reconstruct | interpolate | info | models`: use and inspect trained runs."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from ..errors import ConfigError
from .common import (
    add_sampling_option,
    apply_sampling,
    device,
    device_name,
    positive_int,
    seed_int,
    test_split,
)
from .trust import add_signing_options, signer_from_args


def register(commands) -> None:
    sample = commands.add_parser("sample", help="write samples of a trained run as a PNG grid or an .npz")
    sample.add_argument("run_dir")
    sample.add_argument("--n", type=positive_int, help="number of samples (default 64)")
    sample.add_argument(
        "--out", default="samples.png", help=".png for a grid, .npz for uint8 images (N, H, W, C) and labels"
    )
    sample.add_argument("--seed", type=seed_int, default=0)
    sample.add_argument("--label", help="conditional models: every sample of this class (index or name)")
    sample.add_argument(
        "--per-class",
        type=positive_int,
        metavar="N",
        help="conditional models: N samples of every class, a row each",
    )
    sample.add_argument("--device", type=device_name, default="cpu")
    add_sampling_option(sample)
    add_signing_options(sample)
    sample.set_defaults(handler=cmd_sample)

    reconstruct = commands.add_parser("reconstruct", help="originals above reconstructions (ae, vae)")
    reconstruct.add_argument("run_dir")
    reconstruct.add_argument("--data", help="dataset (default: the run's own)")
    reconstruct.add_argument("--split", default="test", choices=["train", "test"])
    reconstruct.add_argument("--n", type=positive_int, default=10)
    reconstruct.add_argument("--out", default="reconstructions.png")
    reconstruct.add_argument("--device", type=device_name, default="cpu")
    reconstruct.set_defaults(handler=cmd_reconstruct)

    interpolate = commands.add_parser("interpolate", help="walks through latent space, one per row")
    interpolate.add_argument("run_dir")
    interpolate.add_argument("--out", default="interpolation.png")
    interpolate.add_argument("--steps", type=positive_int, default=10)
    interpolate.add_argument("--rows", type=positive_int, default=4)
    interpolate.add_argument("--seed", type=seed_int, default=0)
    interpolate.add_argument("--data", help="ae/vae: walk between encoded test images of this dataset")
    interpolate.add_argument(
        "--label", help="conditional models: walk with this class fixed (default: row r shows class r)"
    )
    interpolate.add_argument("--device", type=device_name, default="cpu")
    interpolate.set_defaults(handler=cmd_interpolate)

    info = commands.add_parser("info", help="what a run is: model, settings, checkpoint, progress")
    info.add_argument("run_dir")
    info.add_argument("--json", action="store_true")
    info.set_defaults(handler=cmd_info)

    models = commands.add_parser(
        "models", help="list the registered models, their presets and (with a name) their settings"
    )
    models.add_argument("name", nargs="?", help="a model: also list its settings, defaults and why each")
    models.set_defaults(handler=cmd_models)


def cmd_sample(args) -> int:
    from .. import provenance, viz
    from ..runs import load

    out = Path(args.out)
    if out.suffix.lower() not in (".png", ".npz"):
        raise ConfigError(f"--out must end in .png or .npz, got {out.name!r}")
    if args.per_class is not None and (args.label is not None or args.n is not None):
        raise ConfigError("--per-class N draws N samples of every class: drop --label and --n")
    signer = signer_from_args(args)
    if signer and out.suffix.lower() != ".png":
        raise ConfigError("--sign-cert/--sign-key sign PNG files: use an --out ending in .png")
    if out.suffix.lower() == ".png" and args.n is not None:
        check_grid_size(args.n, f"sample --n {args.n}", "write an .npz (streamed in chunks) instead")
    run = apply_sampling(load(args.run_dir, device=device(args.device)), args.sampling)
    n, nrow, label = args.n or 64, None, None
    labels_of: Callable[[int, int], torch.Tensor] | None = None  # (start, count) -> labels of those samples
    if args.label is not None:
        label = resolve_label(run, args.label, "--label")
        labels_of = fixed_labels(label)
    elif args.per_class is not None:
        classes = conditional_classes(run, "--per-class")
        n, nrow = classes * args.per_class, args.per_class
        labels_of = class_rows(args.per_class)  # row k: class k
    kind = "samples, a row per class" if args.per_class is not None else "samples"
    record = provenance.for_run(run, seed=args.seed, label=label, kind=kind)
    if out.suffix.lower() == ".png":
        check_grid_size(n, f"sample --per-class {args.per_class}", "write an .npz instead")
        labels = labels_of(0, n) if labels_of else None
        viz.save_grid(run.sample(n, seed=args.seed, labels=labels), out, nrow=nrow, provenance=record)
        if signer:
            signer.sign(out, record)
    else:
        extra = {"provenance": provenance.npz_field(record)}
        if labels_of is not None:
            names = run_class_names(run)
            if names:
                extra["class_names"] = np.array(names)
        write_samples_npz(run, out, n, args.seed, labels_of, extra)
    what = f" of class {label_text(run, label)}" if label is not None else ""
    if args.per_class is not None:
        what = f", {args.per_class} of each of {n // args.per_class} classes (a row each)"
    print(f"wrote {n} samples{what} to {out}" + (" (C2PA-signed)" if signer else ""))
    return 0


# --- large requests -----------------------------------------------------------------------------------
MAX_GRID_IMAGES = 10_000  # a PNG grid of 100 x 100 tiles; past that, an image nobody can look at
SAMPLE_CHUNK = 10_000  # samples drawn and written at a time to an .npz, so memory stays flat for any --n


def fixed_labels(label: int) -> Callable[[int, int], torch.Tensor]:
    def labels_of(start: int, count: int) -> torch.Tensor:
        return torch.full((count,), label, dtype=torch.long)

    return labels_of


def class_rows(per_class: int) -> Callable[[int, int], torch.Tensor]:
    """Labels of samples start..start+count when every class gets per_class samples in class order."""

    def labels_of(start: int, count: int) -> torch.Tensor:
        return torch.arange(start, start + count) // per_class

    return labels_of


def check_grid_size(n: int, request: str, instead: str) -> None:
    if n > MAX_GRID_IMAGES:
        raise ConfigError(
            f"{request} asks for a grid of {n} images; a PNG grid holds at most {MAX_GRID_IMAGES}: {instead}"
        )


def write_samples_npz(
    run, out: Path, n: int, seed: int, labels_of: Callable[[int, int], torch.Tensor] | None, extra: dict
) -> None:
    """n samples to an .npz ('images' uint8 (N, H, W, C), 'labels' when classes were asked for), drawn
    and written SAMPLE_CHUNK at a time. Up to one chunk this is exactly run.sample(n, seed); past it the
    chunks draw from the same generator one after another."""
    from .. import viz

    generator = torch.Generator().manual_seed(seed)
    c, h, w = (int(v) for v in run.model.config.image_shape)

    def chunks():
        for start in range(0, n, SAMPLE_CHUNK):
            count = min(SAMPLE_CHUNK, n - start)
            labels = labels_of(start, count) if labels_of else None
            yield viz.to_uint8_hwc(run.model.sample(count, labels=labels, generator=generator).cpu())

    def label_chunks():
        for start in range(0, n, SAMPLE_CHUNK):
            yield labels_of(start, min(SAMPLE_CHUNK, n - start)).numpy()

    arrays = {"images": ((n, h, w, c), np.uint8, chunks())}
    if labels_of is not None:
        arrays["labels"] = ((n,), np.int64, label_chunks())
    write_npz_streamed(out, arrays, extra)


def write_npz_streamed(path: Path, streamed: dict, small: dict[str, np.ndarray]) -> None:
    """An .npz that np.load reads, written without holding the big arrays: `streamed` maps a name to
    (shape, dtype, iterator of C-order chunks). Written to a temporary name, then renamed into place."""
    import os
    import zipfile

    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.partial")
    try:
        with zipfile.ZipFile(partial, "w", compression=zipfile.ZIP_DEFLATED, allowZip64=True) as archive:
            for name, (shape, dtype, parts) in streamed.items():
                with archive.open(f"{name}.npy", "w", force_zip64=True) as member:
                    header = {"descr": np.lib.format.dtype_to_descr(np.dtype(dtype)), "fortran_order": False}
                    np.lib.format.write_array_header_2_0(member, {**header, "shape": shape})
                    for part in parts:
                        member.write(np.ascontiguousarray(part, dtype=dtype).tobytes())
            for name, array in small.items():
                with archive.open(f"{name}.npy", "w", force_zip64=True) as member:
                    np.lib.format.write_array(member, np.asarray(array), allow_pickle=False)
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)


# --- class labels of conditional models -----------------------------------------------------------------
def run_class_names(run) -> list[str] | None:
    """The class names the run was trained with (config.json's data.class_names), if it recorded them."""
    from ..training.checkpoint import CONFIG_FILE, read_json

    saved = read_json(Path(run.run_dir) / CONFIG_FILE)
    data = saved.get("data") if isinstance(saved, dict) else None
    names = data.get("class_names") if isinstance(data, dict) else None
    return [str(name) for name in names] if isinstance(names, list) else None


def conditional_classes(run, option: str) -> int:
    """The number of classes of a conditional run; a clear error for an unconditional one."""
    if not getattr(run.model, "is_conditional", False):
        raise ConfigError(
            f"{option} needs a conditional model, but {run.run_dir} is an unconditional "
            f"{run.model.name!r}: train one with --set model.conditional=true (or --preset conditional)"
        )
    return int(run.model.config.num_classes)


def resolve_label(run, text: str, option: str = "--label") -> int:
    """A class given as one of the run's class names or as an index 0..C-1. A name wins over an index,
    so for folder classes named '3' and '7', `--label 7` means the class named '7'."""
    classes = conditional_classes(run, option)
    names = run_class_names(run) or []
    if text in names:
        return names.index(text)
    folded = [name.casefold() for name in names]
    if text.casefold() in folded and folded.count(text.casefold()) == 1:
        return folded.index(text.casefold())
    try:
        index = int(text)
    except ValueError:
        known = f": one of {', '.join(names)}" if names else ""
        raise ConfigError(
            f"{option} {text!r} is not a class of {run.run_dir}{known}, or an index 0..{classes - 1}"
        ) from None
    if not 0 <= index < classes:
        raise ConfigError(
            f"{option} {index} is out of range: the model has {classes} classes, 0..{classes - 1}"
        )
    return index


def dataset_labels(run, labels: torch.Tensor | None, data: str | None) -> torch.Tensor:
    if labels is None:
        raise ConfigError(f"{data or run.config.data} has no class labels, which the conditional model needs")
    return labels


def pick_of_class(labels: torch.Tensor, k: int, generator: torch.Generator) -> torch.Tensor:
    """Two random indices of images of class k (the same one twice if the class has one image)."""
    members = torch.nonzero(labels == k).flatten()
    if len(members) == 0:
        raise ConfigError(f"the test split has no image of class {k} to walk from")
    return members[torch.randint(len(members), (2,), generator=generator)]


def label_text(run, index: int) -> str:
    names = run_class_names(run) or []
    return f"{index} ({names[index]})" if index < len(names) and names[index] != str(index) else str(index)


def cmd_reconstruct(args) -> int:
    from .. import provenance, viz
    from ..metrics.image_quality import mse
    from ..runs import load

    check_grid_size(2 * args.n, f"reconstruct --n {args.n}", "ask for fewer images")
    run = load(args.run_dir, device=device(args.device))
    images, labels = test_split(run, args.data, args.split)
    if getattr(run.model, "is_conditional", False):  # a CVAE encodes and decodes given each image's class
        labels = dataset_labels(run, labels, args.data)
        run.model.eval()
        pairs = zip(images.split(500), labels.split(500))
        reconstructions = torch.cat(
            [
                run.model.reconstruct(x.to(run.model.device), labels=y.to(run.model.device)).cpu()
                for x, y in pairs
            ]
        )
    else:
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

    request = f"interpolate --rows {args.rows} --steps {args.steps}"
    check_grid_size(args.rows * args.steps, request, "ask for fewer rows or steps")
    run = load(args.run_dir, device=device(args.device))
    model = run.model
    conditional = getattr(model, "is_conditional", False)
    label = resolve_label(run, args.label, "--label") if args.label is not None else None
    generator = torch.Generator().manual_seed(args.seed)
    # Conditional models keep the class fixed along each walk: --label K for every row, else row r: class r.
    classes = int(model.config.num_classes) if conditional else 1
    row_classes = torch.full((args.rows,), label) if label is not None else torch.arange(args.rows) % classes
    if args.data:
        if not hasattr(model, "embed"):
            raise ConfigError(f"model {model.name!r} has no encoder: interpolate without --data")
        images, labels = test_split(run, args.data, "test")
        if conditional:  # walk between two test images of the row's class, encoded given that class
            labels = dataset_labels(run, labels, args.data)
            picks = torch.cat([pick_of_class(labels, int(c), generator) for c in row_classes])
        else:
            picks = torch.randperm(len(images), generator=generator)[: 2 * args.rows]
        with torch.no_grad():
            extra = {"labels": labels[picks].to(model.device)} if conditional else {}
            codes = model.embed(images[picks].to(model.device), **extra)
    else:
        codes = model.sample_latent(2 * args.rows, generator)
    rows = len(codes) // 2
    t = torch.linspace(0, 1, args.steps, device=codes.device)
    path = torch.cat([model.interpolate_latents(codes[2 * r], codes[2 * r + 1], t) for r in range(rows)])
    extra, what = {}, ""
    if conditional:
        extra["labels"] = row_classes[:rows].repeat_interleave(args.steps).to(model.device)
        what = f" within class {label_text(run, label)}" if label is not None else " within one class per row"
    with torch.no_grad():
        model.eval()
        record = provenance.for_run(run, seed=args.seed, label=label, kind="latent interpolations")
        viz.save_grid(model.generate(path, **extra), args.out, nrow=args.steps, provenance=record)
    print(f"wrote {rows} interpolations of {args.steps} steps{what} to {args.out}")
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
    import dataclasses

    from ..registry import get_model_class, list_models

    for name in [args.name] if args.name else list_models():
        model_class = get_model_class(name)  # an unknown name is a one-line error
        print(name)
        for preset, recipe in model_class.presets.items():
            print(f"  {preset:20s} {recipe.description}")
        if not args.name:
            continue
        print("  settings (--set model.NAME=VALUE), default, why:")
        help_lines = getattr(model_class, "setting_help", {})
        for field in dataclasses.fields(model_class.Config):
            default = getattr(model_class.Config(), field.name)
            print(f"    {field.name:24s} {str(default):22s} {help_lines.get(field.name, '')}")
        if model_class.sampling_settings:
            settings = ", ".join(model_class.sampling_settings)
            print(f"  sampling-only (also `genlab sample|eval RUN --sampling NAME=VALUE`): {settings}")
    if not args.name:
        print("`genlab models NAME` lists a model's settings with a one-line why for each")
    return 0

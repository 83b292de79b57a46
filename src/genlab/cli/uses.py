"""`genlab denoise | compress | decompress | synth`: what trained models are for (see genlab.uses)."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from pathlib import Path

from ..errors import ConfigError, DataError
from .common import device, device_name, int_at_least, int_in, seed_int

PROGRESS_MIN_IMAGES = 2000  # below this the work takes a second or two: no bar
MAX_SYNTH_IMAGES = 1_000_000  # a synthetic dataset is built in memory before it is written


def register(commands) -> None:
    denoise = commands.add_parser("denoise", help="denoise an image, a folder of images or an .npz (ae, vae)")
    denoise.add_argument("run_dir")
    denoise.add_argument("--in", dest="input", required=True, help="an image, a folder of images or an .npz")
    denoise.add_argument("--out", required=True, help="same form as --in: image file, folder or .npz")
    denoise.add_argument("--noise", help="add known noise first: gaussian:SIGMA or mask:SHARE (demos)")
    denoise.add_argument("--seed", type=seed_int, default=0, help="seed of --noise")
    denoise.add_argument("--noisy-out", help="also write the noisy input (with --noise)")
    denoise.add_argument("--device", type=device_name, default="cpu")
    denoise.set_defaults(handler=cmd_denoise)

    compress = commands.add_parser("compress", help="compress images into a .glz file with an autoencoder")
    compress.add_argument("run_dir")
    compress.add_argument("--in", dest="input", required=True, help="an image, a folder of images or an .npz")
    compress.add_argument("--out", required=True, help="the compressed file (e.g. digits.glz)")
    compress.add_argument(
        "--bits", type=int_at_least(1, "bits from 1 to 8"), default=6,
        help="quantization bits per code dimension, 1..8 (the rate: more bits, more bytes, better images)",
    )  # fmt: skip
    compress.add_argument(
        "--no-run-path", action="store_true", help="leave the run's path out (decompress then needs --run)"
    )
    compress.add_argument("--device", type=device_name, default="cpu")
    compress.set_defaults(handler=cmd_compress)

    decompress = commands.add_parser("decompress", help="decode a .glz file with the run that wrote it")
    decompress.add_argument("file")
    decompress.add_argument(
        "--run", dest="run_dir", help="the run that compressed the file (default: the path stored in it)"
    )
    decompress.add_argument("--out", required=True, help="an .npz, an image file (one image) or a folder")
    decompress.add_argument("--device", type=device_name, default="cpu")
    decompress.set_defaults(handler=cmd_decompress)

    synth = commands.add_parser("synth", help="a synthetic dataset: labeled per class, or --n unlabeled")
    synth.add_argument("run_dir")
    count = int_in(1, MAX_SYNTH_IMAGES, "a positive integer")
    synth.add_argument("--per-class", type=count, help="images per class (conditional models)")
    synth.add_argument("--n", type=count, help="number of images (unconditional models)")
    synth.add_argument("--out", required=True, help="a folder (class subfolders of PNGs) or an .npz")
    synth.add_argument("--seed", type=seed_int, default=0)
    synth.add_argument("--device", type=device_name, default="cpu")
    synth.set_defaults(handler=cmd_synth)


@contextlib.contextmanager
def progress_bar(total: int, description: str) -> Iterator[Callable[[int], None] | None]:
    """A bar on stderr for jobs large enough to take a while; None (no bar) for small ones."""
    if total < PROGRESS_MIN_IMAGES:
        yield None
        return
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

    columns = (description, BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with Progress(*columns, console=Console(stderr=True), transient=True) as progress:
        task = progress.add_task(description, total=total)
        yield lambda k: progress.update(task, advance=k)


def _load(run_dir: str, device_text: str):
    from ..runs import load

    return load(run_dir, device=device(device_text))


def cmd_denoise(args) -> int:
    from .. import provenance
    from ..uses import denoise, images

    if args.noisy_out and not args.noise:
        raise ConfigError("--noisy-out needs --noise (without it the input is what was denoised)")
    run = _load(args.run_dir, args.device)
    denoise.require_autoencoder(run, "denoise")
    batch = images.read_images(args.input)
    if images.form_of(Path(args.out)) != batch.form:
        raise ConfigError(
            f"--out {args.out!r} must have the form of --in: {batch.form} (image file, folder or .npz)"
        )
    noisy = batch.images
    if args.noise:
        noisy = denoise.add_noise(noisy, denoise.parse_noise(args.noise), seed=args.seed)
        if args.noisy_out:
            images.write_images(noisy, args.noisy_out, like=batch)
    with progress_bar(len(noisy), "denoising") as advance:
        clean = denoise.denoise(run, noisy, labels=batch.labels, progress=advance)
    record = provenance.for_run(run, kind="denoised images", composite=True)
    images.write_images(clean, args.out, like=batch, record=record)
    print(f"wrote {len(clean)} denoised image(s) to {args.out}")
    return 0


def cmd_compress(args) -> int:
    from ..uses import codec, images

    run = _load(args.run_dir, args.device)
    codec.require_autoencoder(run, "compress")
    if args.bits > codec.MAX_BITS:
        raise ConfigError(f"--bits must lie in [{codec.MIN_BITS}, {codec.MAX_BITS}], got {args.bits}")
    batch = images.read_images(args.input)
    names = batch.names if batch.form == "folder" else None
    compressed = codec.compress(
        run, batch.images, bits=args.bits, names=names, store_run_path=not args.no_run_path
    )
    data = compressed.to_bytes()
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(data)
    raw = batch.images.numel()
    print(
        f"wrote {len(batch.images)} image(s) to {out}: {len(data)} bytes, {len(data) / len(batch.images):.1f} "
        f"bytes per image ({raw / len(data):.1f}x smaller than raw 8-bit pixels), {args.bits} bits per code"
    )
    return 0


def cmd_decompress(args) -> int:
    from .. import provenance
    from ..uses import codec, images

    path = Path(args.file)
    if not path.is_file():
        raise DataError(f"{path} does not exist")
    compressed = codec.Compressed.from_bytes(path.read_bytes(), source=str(path))
    run_dir = args.run_dir or compressed.header.get("run_path")
    if not run_dir:
        raise ConfigError(f"{path} does not name the run that compressed it: give --run RUN")
    run = _load(run_dir, args.device)
    decoded = codec.decompress(run, compressed, source=str(path))
    names = compressed.header.get("names") or []
    like = images.ImageSet(decoded, "folder", [str(n) for n in names]) if names else None
    record = provenance.for_run(run, kind="decompressed images", composite=True)
    images.write_images(decoded, args.out, like=like, record=record)
    print(f"wrote {len(decoded)} image(s) to {args.out}")
    return 0


def cmd_synth(args) -> int:
    from .. import provenance
    from ..uses import synth

    out = Path(args.out)
    run = _load(args.run_dir, args.device)
    total = args.per_class * run.model.config.num_classes if args.per_class else args.n or 0
    if total > MAX_SYNTH_IMAGES:
        raise ConfigError(
            f"synth would make {total} images; at most {MAX_SYNTH_IMAGES}: ask for fewer per class"
        )
    with progress_bar(total, "sampling") as advance:
        images, labels = synth.synthesize(
            run, per_class=args.per_class, n=args.n, seed=args.seed, progress=advance
        )
    record = provenance.for_run(run, seed=args.seed, kind="synthetic dataset")
    names = synth.class_names(run) if labels is not None else None
    synth.write_dataset(images, labels, out, names, record=record)
    kind = f"{args.per_class} per class, labeled" if labels is not None else "unlabeled"
    print(f"wrote {len(images)} synthetic images ({kind}) to {out}")
    return 0

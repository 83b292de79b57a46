"""`genlab train | sample | reconstruct | interpolate | info | models | eval | compare | train-classifier`.

Every user error surfaces as one line on stderr and exit code 2; Ctrl-C during training saves a
checkpoint and exits with 130.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

from .errors import ConfigError, GenlabError


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line and exit code 2, instead of usage + error
        raise ConfigError(f"{message} (see `{self.prog} --help`)")


def _int_at_least(minimum: int, words: str):
    """An argparse type: an integer >= minimum, with a message naming what was expected."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = minimum - 1
        if value < minimum:
            raise argparse.ArgumentTypeError(f"expected {words}, got {text!r}")
        return value

    return parse


_positive_int = _int_at_least(1, "a positive integer")
_nonnegative_int = _int_at_least(0, "an integer >= 0")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="genlab", description="Train, sample and inspect generative image models.")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    train = commands.add_parser(
        "train", help="train a model (defaults: the GAN on the embedded mnist-5k digits)"
    )
    train.add_argument("--model", help="gan, vae or ae (default gan)")
    train.add_argument("--preset", help="a named recipe of the model (default: default); see `genlab models`")
    train.add_argument(
        "--data", help="mnist-5k (default), mnist, fashion-mnist, a folder of images or an .npz"
    )
    train.add_argument("--epochs", type=_positive_int)
    train.add_argument("--batch-size", type=_positive_int, dest="batch_size")
    train.add_argument("--seed", type=int)
    train.add_argument("--device", help="auto (default: cuda, then mps, then cpu), cpu, cuda, cuda:N, mps")
    train.add_argument(
        "--time-limit", type=float, dest="time_limit_minutes", help="minutes; stop cleanly after"
    )
    train.add_argument(
        "--eval-every",
        type=_nonnegative_int,
        dest="eval_every",
        help="epochs between quick evals (classifier FID, class coverage) logged to metrics.jsonl; 0 = off",
    )
    train.add_argument("--out", help="run directory (default runs/<model>)")
    train.add_argument("--config", help="YAML or JSON file of settings")
    train.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a setting, e.g. --set lr_d=1e-4 is model.lr_d; repeatable",
    )
    train.add_argument(
        "--resume", action="store_true", help="continue the run in --out from its last checkpoint"
    )

    sample = commands.add_parser("sample", help="write samples of a trained run as a PNG grid or an .npz")
    sample.add_argument("run_dir")
    sample.add_argument("--n", type=_positive_int, default=64)
    sample.add_argument(
        "--out", default="samples.png", help=".png for a grid, .npz for uint8 images (N, H, W, C)"
    )
    sample.add_argument("--seed", type=int, default=0)
    sample.add_argument("--device", default="cpu")

    reconstruct = commands.add_parser("reconstruct", help="originals above reconstructions (ae, vae)")
    reconstruct.add_argument("run_dir")
    reconstruct.add_argument("--data", help="dataset (default: the run's own)")
    reconstruct.add_argument("--split", default="test", choices=["train", "test"])
    reconstruct.add_argument("--n", type=_positive_int, default=10)
    reconstruct.add_argument("--out", default="reconstructions.png")
    reconstruct.add_argument("--device", default="cpu")

    interpolate = commands.add_parser("interpolate", help="walks through latent space, one per row")
    interpolate.add_argument("run_dir")
    interpolate.add_argument("--out", default="interpolation.png")
    interpolate.add_argument("--steps", type=_positive_int, default=10)
    interpolate.add_argument("--rows", type=_positive_int, default=4)
    interpolate.add_argument("--seed", type=int, default=0)
    interpolate.add_argument("--data", help="ae/vae: walk between encoded test images of this dataset")
    interpolate.add_argument("--device", default="cpu")

    info = commands.add_parser("info", help="what a run is: model, settings, checkpoint, progress")
    info.add_argument("run_dir")
    info.add_argument("--json", action="store_true")

    commands.add_parser("models", help="list the registered models and their presets")
    _add_eval_parsers(commands)
    return parser


def _add_eval_parsers(commands) -> None:
    # Names spelled out rather than imported: genlab.evaluation pulls in scipy, which every command
    # would then pay for at start-up. evaluate_run checks them (tests/test_cli.py keeps them in step).
    evaluate = commands.add_parser(
        "eval", help="FID, KID, precision/recall, coverage, likelihood...: eval.json + eval.md in the run dir"
    )
    evaluate.add_argument("run_dir")
    evaluate.add_argument(
        "--n",
        type=_positive_int,
        default=10_000,
        help="samples (default 10000); test-split metrics use up to n",
    )
    evaluate.add_argument(
        "--metrics",
        nargs="+",
        metavar="METRIC",
        help="default: all that apply; any of fid, kid, prdc, classifier_score, class_coverage, "
        "label_accuracy, memorization, likelihood, reconstruction (space or comma separated)",
    )
    evaluate.add_argument(
        "--extractor", default="classifier", help="features for FID/KID/PRDC: classifier or inception"
    )
    evaluate.add_argument("--seed", type=int, default=0)
    evaluate.add_argument(
        "--nll-k", type=_positive_int, default=100, dest="nll_k", help="importance samples for the VAE NLL"
    )
    evaluate.add_argument("--device", default="auto")
    evaluate.add_argument("--out", help="folder for eval.json, eval.md and PNGs (default: the run dir)")
    evaluate.add_argument("--json", action="store_true", help="print eval.json instead of the table")

    classifier = commands.add_parser(
        "train-classifier", help="train (or show) the domain classifier that eval uses for a dataset"
    )
    classifier.add_argument("--data", default="mnist-5k", help="dataset (default mnist-5k)")
    classifier.add_argument("--retrain", action="store_true", help="train again even if one is cached")
    classifier.add_argument("--device", default="cpu")

    compare = commands.add_parser("compare", help="a table and a plot across runs, from their eval.json")
    compare.add_argument("run_dirs", nargs="+", metavar="RUN_DIR")
    compare.add_argument("--out", default="compare.png", help="the plot (default compare.png)")
    compare.add_argument("--json", action="store_true", help="print the rows as JSON instead of a table")


def main(argv: list[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
        return COMMANDS[args.command](args) or 0
    except GenlabError as exc:
        print(f"genlab: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # unwritable --out, full disk...: the user's to fix, not a traceback
        print(f"genlab: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("genlab: interrupted", file=sys.stderr)
        return 130


def cmd_train(args) -> int:
    from .config import load_config_file, parse_overrides, route_overrides
    from .runs import read_run_config, resolve_config
    from .training.trainer import Trainer

    flags = {
        k: getattr(args, k)
        for k in (
            "model",
            "preset",
            "data",
            "epochs",
            "batch_size",
            "seed",
            "device",
            "time_limit_minutes",
            "eval_every",
        )
    }
    overrides = route_overrides(parse_overrides(args.set))
    file_values = load_config_file(args.config) if args.config else {}
    if args.resume:
        if not args.out:
            raise ConfigError("--resume needs --out RUN_DIR: the run to continue")
        saved, _ = read_run_config(Path(args.out))
        for key in ("model", "preset", "data"):
            if flags[key] is not None and flags[key] != getattr(saved, key):
                raise ConfigError(f"cannot change {key} when resuming ({getattr(saved, key)!r} in the run)")
        file_values = {**saved.to_dict(), **file_values}
    config = resolve_config(file_values, overrides, flags)
    out = Path(args.out) if args.out else Path("runs") / config.model
    result = Trainer(config, out, resume=args.resume).fit()
    print(
        f"{'stopped' if result.interrupted else 'done'}: {result.steps} steps in {result.seconds:.1f}s -> {out}/ "
        f"(samples.png, loss_curves.png, checkpoints/)"
    )
    return 130 if result.interrupted else 0


def cmd_sample(args) -> int:
    from . import viz
    from .runs import load

    run = load(args.run_dir, device=_device(args.device))
    images = run.sample(args.n, seed=args.seed)
    out = Path(args.out)
    if out.suffix.lower() == ".png":
        viz.save_grid(images, out)
    elif out.suffix.lower() == ".npz":
        out.parent.mkdir(parents=True, exist_ok=True)
        np.savez_compressed(out, images=viz.to_uint8_hwc(images))
    else:
        raise ConfigError(f"--out must end in .png or .npz, got {out.name!r}")
    print(f"wrote {args.n} samples to {out}")
    return 0


def _device(name: str) -> str:
    from .training.trainer import resolve_device

    return str(resolve_device(name))


def _test_images(run, data: str | None, split: str) -> torch.Tensor:
    """The dataset's images in [0, 1], checked against the shape the model was trained on."""
    from .data import load_dataset

    dataset = load_dataset(data or run.config.data, split)
    expected = tuple(run.model.config.image_shape)
    if tuple(dataset.image_shape) != expected:
        raise ConfigError(f"dataset images are {tuple(dataset.image_shape)} but the model takes {expected}")
    return dataset.images.float() / 255.0


def cmd_reconstruct(args) -> int:
    from . import viz
    from .runs import load

    run = load(args.run_dir, device=_device(args.device))
    images = _test_images(run, args.data, args.split)
    reconstructions = torch.cat([run.reconstruct(chunk).cpu() for chunk in images.split(500)])
    from .metrics.image_quality import mse

    error = mse(reconstructions, images)
    n = min(args.n, len(images))
    viz.save_grid(torch.cat([images[:n], reconstructions[:n]]), args.out, nrow=n)
    print(
        f"wrote {n} originals above their reconstructions to {args.out}; "
        f"{args.split} reconstruction MSE per pixel over {len(images)} images: {error:.5f}"
    )
    return 0


def cmd_interpolate(args) -> int:
    from . import viz
    from .runs import load

    run = load(args.run_dir, device=_device(args.device))
    model = run.model
    generator = torch.Generator().manual_seed(args.seed)
    if args.data:
        if not hasattr(model, "embed"):
            raise ConfigError(f"model {model.name!r} has no encoder: interpolate without --data")
        images = _test_images(run, args.data, "test")
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
        viz.save_grid(model.generate(path), args.out, nrow=args.steps)
    print(f"wrote {len(codes) // 2} interpolations of {args.steps} steps to {args.out}")
    return 0


def cmd_info(args) -> int:
    from .runs import load

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
    from .registry import get_model_class, list_models

    for name in list_models():
        print(name)
        for preset, recipe in get_model_class(name).presets.items():
            print(f"  {preset:12s} {recipe.description}")
    return 0


def cmd_eval(args) -> int:
    from .evaluation import evaluate_run, print_table, write_report
    from .evaluation.extractors import EXTRACTORS
    from .runs import load

    if args.extractor not in EXTRACTORS:
        raise ConfigError(f"unknown extractor {args.extractor!r}; choose one of: {', '.join(EXTRACTORS)}")
    metrics = [m.strip() for item in args.metrics or [] for m in item.split(",") if m.strip()] or None
    device = _device(args.device)
    run = load(args.run_dir, device=device)
    result = evaluate_run(
        run,
        n=args.n,
        metrics=metrics,
        extractor=args.extractor,
        seed=args.seed,
        nll_k=args.nll_k,
        device=device,
        log=lambda text: print(text, file=sys.stderr),
    )
    written = write_report(result, Path(args.out) if args.out else run.run_dir)
    if args.json:
        print(written[0].read_text())
    else:
        print_table(result)
        print(f"wrote {', '.join(str(p) for p in written[:2])} and {len(written) - 2} PNG(s)")
    return 0


def cmd_train_classifier(args) -> int:
    from .evaluation.extractors import get_classifier

    classifier = get_classifier(
        args.data,
        device=_device(args.device),
        retrain=args.retrain,
        log=lambda text: print(text, file=sys.stderr),
    )
    info = classifier.describe()
    print(
        f"domain classifier for {info['dataset']}: test accuracy {info['test_accuracy']:.4f}, "
        f"sha256 {info['sha256'][:12]}, in {info['path']}"
    )
    return 0


def cmd_compare(args) -> int:
    from .evaluation import comparison_rows, plot_comparison, print_comparison

    rows, warnings = comparison_rows(args.run_dirs)
    for warning in warnings:
        print(f"genlab: warning: {warning}", file=sys.stderr)
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        print_comparison(rows)
    plot_comparison(rows, args.out)
    print(f"wrote {args.out}")
    return 0


COMMANDS = {
    "train": cmd_train,
    "sample": cmd_sample,
    "reconstruct": cmd_reconstruct,
    "interpolate": cmd_interpolate,
    "info": cmd_info,
    "models": cmd_models,
    "eval": cmd_eval,
    "train-classifier": cmd_train_classifier,
    "compare": cmd_compare,
}

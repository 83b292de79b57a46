"""`genlab train`: build the config (preset < file < --set < flags) and run the one trainer."""

from __future__ import annotations

import argparse
import math
from pathlib import Path

from ..errors import ConfigError
from .common import nonnegative_int, positive_int

FLAG_SETTINGS = (
    "model",
    "preset",
    "data",
    "epochs",
    "batch_size",
    "seed",
    "device",
    "time_limit_minutes",
    "eval_every",
    "dp_epsilon",
    "dp_delta",
    "dp_max_grad_norm",
    "precision",
    "compile",
)


def _float_in(low: float, high: float, words: str):
    """An argparse type: a float in the open interval (low, high)."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            value = float("nan")
        if not low < value < high:  # also rejects nan and inf
            raise argparse.ArgumentTypeError(f"expected {words}, got {text!r}")
        return value

    return parse


def register(commands) -> None:
    train = commands.add_parser(
        "train", help="train a model (defaults: the GAN on the embedded mnist-5k digits)"
    )
    train.add_argument("--model", help="gan, vae or ae (default gan)")
    train.add_argument("--preset", help="a named recipe of the model (default: default); see `genlab models`")
    train.add_argument(
        "--data", help="mnist-5k (default), mnist, fashion-mnist, cifar10, a folder of images or an .npz"
    )
    train.add_argument("--epochs", type=positive_int)
    train.add_argument("--batch-size", type=positive_int, dest="batch_size")
    train.add_argument("--seed", type=int)
    train.add_argument("--device", help="auto (default: cuda, then mps, then cpu), cpu, cuda, cuda:N, mps")
    train.add_argument(
        "--time-limit", type=float, dest="time_limit_minutes", help="minutes; stop cleanly after"
    )
    train.add_argument(
        "--eval-every",
        type=nonnegative_int,
        dest="eval_every",
        help="epochs between quick evals (classifier FID, class coverage) logged to metrics.jsonl; 0 = off",
    )
    train.add_argument(
        "--dp-epsilon",
        type=_float_in(0.0, math.inf, "a privacy budget epsilon > 0"),
        dest="dp_epsilon",
        help="train with differential privacy (DP-SGD, Opacus) to this epsilon; see README",
    )
    train.add_argument(
        "--dp-delta",
        type=_float_in(0.0, 1.0, "a delta in (0, 1)"),
        dest="dp_delta",
        help="DP delta (default 1/N, N = training images)",
    )
    train.add_argument(
        "--dp-max-grad-norm",
        type=_float_in(0.0, math.inf, "a clipping norm > 0"),
        dest="dp_max_grad_norm",
        help="DP-SGD clips each example's gradient to this L2 norm (default 1.0)",
    )
    train.add_argument(
        "--precision",
        choices=("fp32", "bf16"),
        help="bf16: autocast forward passes to bfloat16 (GPUs; CPUs with bf16 units); default fp32",
    )
    train.add_argument(
        "--compile",
        action="store_const",
        const=True,
        help="torch.compile the networks (CUDA: with CUDA graphs); pays off on long GPU runs",
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
    train.set_defaults(handler=cmd_train)


def cmd_train(args) -> int:
    from ..config import load_config_file, parse_overrides, route_overrides
    from ..runs import read_run_config, resolve_config
    from ..training.trainer import Trainer

    flags = {key: getattr(args, key) for key in FLAG_SETTINGS}
    overrides = route_overrides(parse_overrides(args.set))
    file_values = load_config_file(args.config) if args.config else {}
    if args.resume:
        if not args.out:
            raise ConfigError("--resume needs --out RUN_DIR: the run to continue")
        saved, _ = read_run_config(Path(args.out))
        for key in ("model", "preset", "data", "dp_epsilon", "dp_delta", "dp_max_grad_norm"):
            if flags[key] is not None and flags[key] != getattr(saved, key):
                raise ConfigError(f"cannot change {key} when resuming ({getattr(saved, key)!r} in the run)")
        file_values = {**saved.to_dict(), **file_values}
    config = resolve_config(file_values, overrides, flags)
    if config.dp_epsilon == 0 and (flags["dp_delta"] is not None or flags["dp_max_grad_norm"] is not None):
        raise ConfigError("--dp-delta and --dp-max-grad-norm need --dp-epsilon (differential privacy is off)")
    out = Path(args.out) if args.out else Path("runs") / config.model
    result = Trainer(config, out, resume=args.resume).fit()
    print(
        f"{'stopped' if result.interrupted else 'done'}: {result.steps} steps in {result.seconds:.1f}s -> {out}/ "
        f"(samples.png, loss_curves.png, checkpoints/)"
    )
    return 130 if result.interrupted else 0

"""`genlab train`: build the config (preset < file < --set < flags) and run the one trainer."""

from __future__ import annotations

import argparse
import math
from pathlib import Path

from ..errors import ConfigError
from .common import device_name, nonnegative_int, positive_int, seed_int

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
    train.add_argument("--seed", type=seed_int)
    train.add_argument(
        "--device", type=device_name, help="auto (default: cuda, then mps, then cpu), cpu, cuda, cuda:N, mps"
    )
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
    train.add_argument(
        "--overwrite", action="store_true", help="replace the run already in --out (its checkpoints go)"
    )
    train.set_defaults(handler=cmd_train)


# Settings a resumed run may change: they set how long, where and how fast it trains, not what it computes.
RESUMABLE_SETTINGS = (
    "epochs",
    "time_limit_minutes",
    "device",
    "log_every",
    "eval_every",
    "grid_every",
    "keep_checkpoints",
    "compile",
)


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
        saved, saved_model = read_run_config(Path(args.out))
        for key in ("model", "preset"):  # before resolving: the saved settings belong to the saved model
            if flags[key] is not None and flags[key] != getattr(saved, key):
                _refuse_on_resume(key, getattr(saved, key), flags[key])
        config = resolve_config({**saved.to_dict(), **file_values}, overrides, flags)
        given = {**file_values, **overrides, **{k: v for k, v in flags.items() if v is not None}}
        check_resume_settings(config, saved, saved_model, given)
    else:
        config = resolve_config(file_values, overrides, flags)
    if config.dp_epsilon == 0 and (flags["dp_delta"] is not None or flags["dp_max_grad_norm"] is not None):
        raise ConfigError("--dp-delta and --dp-max-grad-norm need --dp-epsilon (differential privacy is off)")
    out = Path(args.out) if args.out else Path("runs") / config.model
    trainer = Trainer(config, out, resume=args.resume, overwrite=args.overwrite)
    result = trainer.fit()
    if trainer.dist.is_main:  # under torchrun, one summary for the job
        print(
            f"{'stopped' if result.interrupted else 'done'}: {result.steps} steps in {result.seconds:.1f}s -> {out}/ "
            f"(samples.png, loss_curves.png, checkpoints/)"
        )
    return 130 if result.interrupted else 0


def check_resume_settings(config, saved, saved_model: dict, given: dict) -> None:
    """A resumed run continues exactly: a setting given now that would change what it computes (a model
    setting, the data, batch size, seed, DP...) is an error rather than silently ignored."""
    from ..registry import get_model_class

    model_keys = {k[len("model.") :] for k in given if k.startswith("model.")}
    model_keys |= set(given.get("model_args") or {})
    train_keys = {k for k in given if not k.startswith("model.") and k != "model_args"}
    for key in sorted(train_keys - set(RESUMABLE_SETTINGS)):
        if key in saved.to_dict() and getattr(config, key) != getattr(saved, key):
            _refuse_on_resume(key, getattr(saved, key), getattr(config, key))
    model_config = get_model_class(saved.model).make_config(saved_model)
    for key in sorted(model_keys):
        if config.model_args[key] != getattr(model_config, key):
            _refuse_on_resume(f"model.{key}", getattr(model_config, key), config.model_args[key])


def _refuse_on_resume(key: str, saved, given) -> None:
    raise ConfigError(
        f"cannot change {key} when resuming ({saved!r} in the run, {given!r} given): --resume may change "
        f"only {', '.join(RESUMABLE_SETTINGS)}; start a new run with another --out"
    )

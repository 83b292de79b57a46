"""Corpus: bad settings for `genlab train` (flags, --set, --config files, --resume), refused when the
config is built: before any data loads, so no run directory is made."""

from __future__ import annotations

import dataclasses
import json
import shutil

import pytest

from genlab.config import _CHECKED_ELSEWHERE, TrainConfig
from genlab.registry import get_model_class, list_models

from .corpus import case, check_case, copy_place, params, write_file

OUT = "{tmp}/run"


def train(settings: str, expect: str, id: str, model: str = "gan"):
    """`genlab train --model MODEL SETTINGS --out {tmp}/run`, which must fail before making the run dir."""
    argv = ["train", "--model", model, *settings.split(), "--out", OUT]
    return case(id, argv, expect, absent=OUT)


SETTINGS_CASES = [
    # the examples
    train("--set model.latent_dim=0", "model.latent_dim must be in [1, 65536], got 0", "latent-zero"),
    train("--set model.latent_dim=-4", "model.latent_dim must be in [1, 65536], got -4", "latent-negative"),
    train("--set model.hidden=[a,b]", "bad value ['a', 'b'] for model.hidden", "hidden-strings", "vae"),
    train("--set model.lr=-1", "model.lr must be > 0, got -1", "vae-lr-negative", "vae"),
    train("--set model.beta1=2", "model.beta1 must be in [0, 1), got 2", "beta1-two"),
    train("--set model.gmm_components=0", "model.gmm_components must be in [1, 1000]", "gmm-zero", "ae"),
    train("--set model.loss=hinge", "model.loss must be one of bce, mse, got 'hinge'", "ae-hinge", "ae"),
    train(
        "--set model.likelihood=gaussian --set model.gaussian_scale=0",
        "model.gaussian_scale must be > 0, got 0",
        "gaussian-scale-zero",
        "vae",
    ),
    train("--set model.noise_std=-1", "model.noise_std must be >= 0, got -1", "noise-std-negative", "ae"),
    train("--set model.mask_prob=2", "model.mask_prob must be in [0, 1], got 2", "mask-prob-two", "ae"),
    train("--set model.beta=-1", "model.beta must be >= 0, got -1", "vae-beta-negative", "vae"),
    train("--set epochs=true", "bad value True for epochs: expected an integer", "epochs-bool"),
    # types
    train("--set epochs=1.5", "bad value 1.5 for epochs: expected an integer", "epochs-fraction"),
    train("--set epochs=many", "bad value 'many' for epochs", "epochs-word"),
    train("--set model.latent_dim=[3]", "bad value [3] for model.latent_dim", "latent-list"),
    train("--set model.g_hidden=64", "bad value 64 for model.g_hidden: expected a list", "hidden-scalar"),
    train("--set model.g_hidden=[64,true]", "bad value [64, True] for model.g_hidden", "hidden-bool"),
    train("--set model.g_hidden=[64,1.5]", "expected a list of integers", "hidden-fraction"),
    train("--set model.conditional=maybe", "bad value 'maybe' for model.conditional", "flag-word"),
    train("--set model.arch=[mlp]", "model.arch must be one of mlp, conv, got '[mlp]'", "arch-list"),
    train("--set model.lr_d=lots", "bad value 'lots' for model.lr_d: expected a number", "lr-word"),
    train("--set model.beta1=true", "bad value True for model.beta1", "beta1-bool"),
    # ranges, every family
    train("--set model.lr_d=nan", "model.lr_d must be > 0, got nan", "lr-nan"),
    train("--set model.lr_g=inf", "model.lr_g must be > 0, got inf", "lr-inf"),
    train("--set model.lr_g=0", "model.lr_g must be > 0, got 0", "lr-zero"),
    train("--set model.beta2=1", "model.beta2 must be in [0, 1), got 1", "beta2-one"),
    train("--set model.d_dropout=1", "model.d_dropout must be in [0, 1)", "dropout-one"),
    train("--set model.leaky_slope=-0.1", "model.leaky_slope must be in [0, 1]", "slope-negative"),
    train("--set model.label_smoothing=1", "model.label_smoothing must be in [0, 1)", "smoothing-one"),
    train("--set model.g_hidden=[0]", "model.g_hidden must be a list of integers in [1, 65536]", "width-0"),
    train("--set model.d_hidden=[100000000]", "model.d_hidden must be a list of integers", "width-huge"),
    train("--set model.g_width=0 --set model.arch=conv", "model.g_width must be in [1, 4096]", "g-width"),
    train("--set model.gp_weight=-1", "model.gp_weight must be >= 0", "gp-negative"),
    train("--set model.r1_gamma=-1", "model.r1_gamma must be >= 0", "r1-negative"),
    train("--set model.historical_averaging=-0.5", "model.historical_averaging must be >= 0", "ha-negative"),
    train("--set model.d_minibatch_kernels=-1", "model.d_minibatch_kernels must be in [0, 4096]", "mbd"),
    train("--set model.d_minibatch_kernel_dim=0", "model.d_minibatch_kernel_dim must be in", "mbd-dim"),
    train("--set model.latent_dim=100000000", "model.latent_dim must be in [1, 65536]", "latent-huge"),
    train("--set model.num_classes=0", "model.num_classes must be in [1, 100000]", "classes-zero"),
    train("--set model.image_shape=[1,28]", "model.image_shape must be a list of 3 integers", "shape-2d"),
    train("--set model.kl_warmup_steps=-5", "model.kl_warmup_steps must be >= 0", "warmup", "vae"),
    train("--set model.free_bits=-0.1", "model.free_bits must be >= 0", "free-bits", "vae"),
    train("--set model.conv_width=100000", "model.conv_width must be in [1, 4096]", "conv-width", "vae"),
    train("--set model.hidden=[1e9]", "model.hidden must be a list of integers in [1, 65536]", "ae-w", "ae"),
    train("--set model.lr=0", "model.lr must be > 0", "ae-lr-zero", "ae"),
    # choices
    train("--set model.loss=foo", "model.loss must be one of ns, hinge, wgan-gp, got 'foo'", "gan-loss"),
    train("--set model.arch=transformer", "model.arch must be one of mlp, conv", "arch-unknown"),
    train(
        "--set model.likelihood=poisson", "model.likelihood must be one of bernoulli, gaussian", "lik", "vae"
    ),
    train("--set model.activation=swish", "model.activation must be one of leaky_relu, relu", "act", "ae"),
    train("--set model.arch=5", "model.arch must be one of mlp, conv, got '5'", "arch-number", "ae"),
    # rules across settings
    train(
        "--set model.loss=wgan-gp --set model.d_batch_norm=true", "wgan-gp penalizes each sample", "wgan-bn"
    ),
    train("--set model.label_smoothing=0.1 --set model.loss=hinge", "applies to loss 'ns' only", "ls-hinge"),
    # training settings
    train("--set batch_size=0", "batch_size must be in [1, 1000000], got 0", "batch-zero"),
    train("--set seed=-1", "seed must be in [0, 9223372036854775807], got -1", "seed-negative"),
    train("--set seed=99999999999999999999999", "seed must be in [0, 9223372036854775807]", "seed-set-huge"),
    train("--set ema_decay=1", "ema_decay must be in [0, 1), got 1", "ema-one"),
    train("--set grad_clip=-1", "grad_clip must be >= 0, got -1", "clip-negative"),
    train("--set log_every=0", "log_every must be >= 1, got 0", "log-every-zero"),
    train("--set keep_checkpoints=0", "keep_checkpoints must be >= 1", "keep-zero"),
    train("--time-limit -1", "time_limit_minutes must be >= 0, got -1", "time-limit-negative"),
    train("--set eval_n=5", "eval_n must be in [10, 1000000], got 5", "eval-n-small"),
    train("--set grid_size=100000", "grid_size must be in [1, 1024]", "grid-huge"),
    train("--set device=xyz", "device must be auto, cpu, cuda, cuda:N or mps, got 'xyz'", "set-device"),
    train("--set device=cuda:abc", "device must be auto, cpu, cuda, cuda:N or mps", "set-device-index"),
    train("--epochs 0", "argument --epochs: expected a positive integer, got '0'", "epochs-flag-zero"),
    train("--dp-delta 2", "argument --dp-delta: expected a delta in (0, 1)", "dp-delta"),
    train("--set nosuch=1", "unknown gan setting(s) nosuch", "typo"),
    train("--set model.betta=2", "unknown vae setting(s) betta", "typo-vae", "vae"),
    train("--preset huge", "unknown preset 'huge' for gan", "preset"),
    train("--set epochs", "--set expects key=value, got 'epochs'", "set-no-equals"),
    case("model-unknown", ["train", "--model", "nope", "--out", OUT], "unknown model 'nope'", absent=OUT),
    # config files
    case(
        "config-bool-epochs",
        ["train", "--config", "{tmp}/c.yaml", "--out", OUT],
        "bad value True for epochs",
        write_file("c.yaml", "epochs: true\n"),
        absent=OUT,
    ),
    case(
        "config-latent-negative",
        ["train", "--config", "{tmp}/c.yaml", "--out", OUT],
        "model.latent_dim must be in [1, 65536], got -1",
        write_file("c.yaml", "model: vae\nmodel_args:\n  latent_dim: -1\n"),
        absent=OUT,
    ),
    case(
        "config-json-list",
        ["train", "--config", "{tmp}/c.json", "--out", OUT],
        "must hold a mapping of settings",
        write_file("c.json", json.dumps([1, 2])),
        absent=OUT,
    ),
    case(
        "config-model-args-list",
        ["train", "--config", "{tmp}/c.yaml", "--out", OUT],
        "model_args must be a mapping",
        write_file("c.yaml", "model_args: [1, 2]\n"),
        absent=OUT,
    ),
    case(
        "config-unknown-key",
        ["train", "--config", "{tmp}/c.yaml", "--out", OUT],
        "unknown setting 'epoch'",
        write_file("c.yaml", "epoch: 3\n"),
        absent=OUT,
    ),
    case(
        "config-bad-yaml",
        ["train", "--config", "{tmp}/c.yaml", "--out", OUT],
        "cannot read config file",
        write_file("c.yaml", "epochs: [1,\n"),
        absent=OUT,
    ),
    case("config-missing", ["train", "--config", "{tmp}/none.yaml"], "config file not found"),
]

# models too large to allocate: refused once the data fixes the image size, before any weight is made
SIZE_CASES = [
    case(
        "gan-too-large",
        "train --data {digits} --set model.g_hidden=[65536,65536,65536] --out {tmp}/run",
        "weights; at most 1,000,000,000 fit in memory",
        absent="{tmp}/run/config.json",
    ),
    case(
        "ae-mixture-too-large",
        "train --model ae --data {digits} --set model.latent_dim=65536 --set model.gmm_components=1000 "
        "--out {tmp}/run",
        "weights; at most 1,000,000,000 fit in memory",
        absent="{tmp}/run/config.json",
    ),
]

# --resume: settings that would change what the run computes are refused (never silently ignored)
RESUME_CASES = [
    case(
        "resume-model-setting",
        "train --resume --out {tmp}/copy --set model.latent_dim=7",
        "cannot change model.latent_dim when resuming (4 in the run, 7 given)",
        copy_place("ae"),
    ),
    case(
        "resume-shorthand-setting",
        "train --resume --out {tmp}/copy --set lr=0.5",
        "cannot change model.lr when resuming",
        copy_place("ae"),
    ),
    case(
        "resume-batch-size",
        "train --resume --out {tmp}/copy --batch-size 3",
        "cannot change batch_size when resuming",
        copy_place("ae"),
    ),
    case("resume-seed", "train --resume --out {tmp}/copy --seed 5", "cannot change seed", copy_place("ae")),
    case(
        "resume-data",
        "train --resume --out {tmp}/copy --data mnist-5k",
        "cannot change data when resuming",
        copy_place("ae"),
    ),
    case(
        "resume-model", "train --resume --out {tmp}/copy --model gan", "cannot change model", copy_place("ae")
    ),
    case(
        "resume-bad-setting",
        "train --resume --out {tmp}/copy --set model.latent_dim=0",
        "model.latent_dim must be in [1, 65536]",
        copy_place("ae"),
    ),
    case("resume-without-out", "train --resume", "--resume needs --out RUN_DIR"),
]


@pytest.mark.parametrize("c", params(SETTINGS_CASES + SIZE_CASES + RESUME_CASES))
def test_bad_setting_is_one_line_exit_2(c, tmp_path, capsys, places):
    check_case(c, tmp_path, capsys, places)


def test_resume_may_extend_epochs(tmp_path, places, capsys):
    """The settings --resume may change still work: more epochs (and a same-valued model setting)."""
    shutil.copytree(places["ae"], tmp_path / "copy")
    from genlab.cli import main

    argv = [
        "train",
        "--resume",
        "--out",
        str(tmp_path / "copy"),
        "--epochs",
        "2",
        "--set",
        "model.latent_dim=4",
    ]
    assert main(argv) == 0, capsys.readouterr().err


def test_every_setting_has_a_constraint():
    """Every field of TrainConfig and of every registered family's Config is in its constraints table
    (a bool field listed as FLAG), so a new setting cannot slip in unchecked."""
    configs = [TrainConfig] + [get_model_class(name).Config for name in list_models()]
    for config in configs:
        names = {f.name for f in dataclasses.fields(config)} - set(_CHECKED_ELSEWHERE)
        missing = names - set(config.constraints)
        assert not missing, f"{config.__name__} has no constraint for {sorted(missing)}"

"""The trainer's speed levers: fused optimizers, bf16 autocast, torch.compile, and the CLI flags."""

from __future__ import annotations

import copy

import pytest
import torch

from genlab.cli import main
from genlab.errors import ConfigError
from genlab.training import speed
from genlab.training import trainer as trainer_module
from genlab.training.trainer import Trainer
from tests.training.test_trainer import losses, tiny_config


def test_trainer_optimizers_are_fused_and_step_like_torchs_default_adam(tmp_path, mnist_small):
    trainer = Trainer(tiny_config(epochs=1), tmp_path / "run", dataset=mnist_small)
    assert all(group["fused"] for opt in trainer.optimizers.values() for group in opt.param_groups)
    model = trainer.model
    plain = copy.deepcopy(model)
    fused_opts = speed.fast_optimizers(model.optimizers())
    plain_opts = plain.optimizers()
    assert fused_opts["d"].param_groups[0]["lr"] == plain_opts["d"].param_groups[0]["lr"]
    assert fused_opts["d"].param_groups[0]["betas"] == plain_opts["d"].param_groups[0]["betas"]
    for _ in range(3):
        for net, opts in ((model, fused_opts), (plain, plain_opts)):
            torch.manual_seed(0)
            for p in net.parameters():
                p.grad = torch.randn_like(p)
            for opt in opts.values():
                opt.step()
    for (name, a), b in zip(model.named_parameters(), plain.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-7, msg=name)


def test_levers_reset_and_refuse_unknown_names():
    speed.set_levers(fused_optimizers=False)
    optimizer = torch.optim.Adam([torch.nn.Parameter(torch.zeros(2))])
    assert speed.fast_optimizers({"x": optimizer})["x"] is optimizer
    speed.set_levers()
    assert speed.fast_optimizers({"x": optimizer})["x"].param_groups[0]["fused"]
    with pytest.raises(ValueError, match="unknown speed lever"):
        speed.set_levers(warp_drive=True)


def test_autocast_is_bf16_for_bf16_and_a_no_op_for_fp32():
    a, b = torch.randn(4, 4), torch.randn(4, 4)
    with speed.autocast(torch.device("cpu"), "bf16"):
        assert (a @ b).dtype == torch.bfloat16
    with speed.autocast(torch.device("cpu"), "fp32"):
        assert (a @ b).dtype == torch.float32
    with pytest.raises(ValueError, match="precision"):
        speed.autocast(torch.device("cpu"), "fp8")


def test_bf16_training_runs_and_logs_finite_losses(tmp_path, mnist_small):
    Trainer(tiny_config(epochs=1, precision="bf16"), tmp_path / "run", dataset=mnist_small).fit()
    records = losses(tmp_path / "run")
    assert records and all(torch.isfinite(torch.tensor(r["loss_d"])) for r in records)


def test_bad_precision_is_a_config_error():
    with pytest.raises(ConfigError, match="precision"):
        tiny_config(precision="fp16")


def test_compile_flag_compiles_each_network_and_keeps_checkpoints_loadable(
    tmp_path, mnist_small, monkeypatch
):
    compiled: list[str] = []

    def eager_compile(model, device):  # dynamo's tracing without inductor's minutes of C++ on 2 cores
        names = speed.compile_networks(model, device, backend="eager")
        compiled.extend(names)
        return names

    monkeypatch.setattr(trainer_module, "compile_networks", eager_compile)
    Trainer(tiny_config("vae", epochs=1, compile=True), tmp_path / "c", dataset=mnist_small).fit()
    Trainer(tiny_config("vae", epochs=1), tmp_path / "e", dataset=mnist_small).fit()
    assert compiled == ["encoder", "decoder"]
    from tests.training.test_trainer import assert_same_weights, final_weights

    compiled_weights, eager_weights = final_weights(tmp_path / "c"), final_weights(tmp_path / "e")
    assert compiled_weights.keys() == eager_weights.keys()  # no _orig_mod. prefixes
    for key in eager_weights:
        torch.testing.assert_close(compiled_weights[key], eager_weights[key], rtol=1e-4, atol=1e-5)
    del assert_same_weights


def test_cli_train_precision_and_compile_flags(tmp_path, mnist_small_npz, capsys):
    out = tmp_path / "run"
    args = [
        "train",
        "--data",
        str(mnist_small_npz),
        "--epochs",
        "1",
        "--precision",
        "bf16",
        "--out",
        str(out),
    ]
    args += ["--set", "batch_size=64", "--set", "model.g_hidden=[16]", "--set", "model.d_hidden=[16]"]
    assert main(args) == 0
    assert '"precision": "bf16"' in (out / "config.json").read_text()
    assert main(["train", "--precision", "fp16", "--out", str(tmp_path / "x")]) == 2
    assert "invalid choice: 'fp16'" in capsys.readouterr().err

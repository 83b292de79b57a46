"""Differential privacy: per-example clipping, the accountant, exact resume, layer swaps, bad settings."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from genlab.cli import main
from genlab.errors import ConfigError
from genlab.models.base import Batch, GenerativeModel, ModelConfig, Preset, StepOutput
from genlab.models.gan import GAN, ZeroFeatures
from genlab.training.privacy import RDP_ORDERS, PrivateTraining, make_per_sample_compatible
from tests.conftest import TINY_MODEL_ARGS
from tests.training.test_trainer import assert_same_weights, final_weights, records, tiny_config

pytest.importorskip("opacus")
from opacus.accountants import RDPAccountant  # noqa: E402

from tests.models.test_variants import CONV_GAN


def dp_config(name="vae", **settings):
    return tiny_config(name, **{"dp_epsilon": 3.0, "epochs": 1, **settings})


class _Linear(GenerativeModel):
    """loss = mean_i w . x_i, so example i's gradient is exactly x_i: clipping can be checked by hand."""

    name = "linear-test"

    def __init__(self):
        super().__init__(ModelConfig())
        self.weight = nn.Linear(2, 1, bias=False)
        nn.init.zeros_(self.weight.weight)

    def optimizers(self):
        return {"main": torch.optim.SGD(self.parameters(), lr=1.0)}

    def private_parts(self):
        return {"main": self}

    def training_step(self, batch, optimizer_name):
        return StepOutput(self.weight(batch.images).mean())


def _private(model, max_grad_norm: float, expected_batch_size: int, noise_multiplier: float):
    """DP-SGD on a toy model at a fixed noise level: epsilon/delta only feed the accountant here."""
    return PrivateTraining(
        model,
        model.optimizers(),
        epsilon=1.0,
        delta=1e-5,
        max_grad_norm=max_grad_norm,
        sample_rate=0.1,
        expected_batch_size=expected_batch_size,
        planned_steps=10,
        noise_multiplier=noise_multiplier,
    )


def test_each_example_gradient_is_clipped_then_averaged_over_the_expected_batch():
    model = _Linear()
    # no noise: the step is the clipped sum / expected batch size exactly
    private = _private(model, max_grad_norm=1.0, expected_batch_size=4, noise_multiplier=0.0)
    optimizer = private.optimizers["main"]
    x = torch.tensor([[3.0, 4.0], [0.3, 0.4], [0.0, -2.0]])  # norms 5, 0.5, 2
    private.select("main")
    optimizer.zero_grad(set_to_none=True)
    model.training_step(Batch(x), "main").loss.backward()
    optimizer.step()
    clipped = torch.tensor([[0.6, 0.8], [0.3, 0.4], [0.0, -1.0]])  # each scaled to norm <= 1
    expected_grad = clipped.sum(0) / 4  # / expected batch size, not the 3 examples drawn
    assert torch.allclose(model.weight.weight[0], -expected_grad, atol=1e-5)
    assert private.accountant.history == [(0.0, 0.1, 1)]


def test_gan_d_step_per_example_gradients_add_up_to_the_ordinary_gradient():
    """Without clipping or noise, DP-SGD's D gradient is the plain one: the hooks pair each real image's
    gradient with its fake's (two forward passes through D) and undo the batch mean exactly. The G step
    backpropagates through the frozen D and records no per-example gradients for it."""
    config = GAN.make_config({"d_hidden": (8,), "g_hidden": (8,), "latent_dim": 4, "d_dropout": 0.0})
    gan = GAN(config)
    batch = Batch(torch.rand(6, 1, 28, 28) * 2 - 1)

    def d_loss():
        torch.manual_seed(1)  # the same fakes each time
        return gan.training_step(batch, "d").loss

    gan.zero_grad()
    d_loss().backward()
    plain = [p.grad.clone() for p in gan.discriminator.parameters()]
    private = PrivateTraining(
        gan,
        gan.optimizers(),
        epsilon=1.0,
        delta=1e-5,
        max_grad_norm=1e6,
        sample_rate=0.1,
        expected_batch_size=6,
        planned_steps=10,
        noise_multiplier=0.0,
    )
    optimizer = private.optimizers["d"]
    optimizer.zero_grad(set_to_none=True)
    private.select("d")
    d_loss().backward()
    assert all(p.grad_sample.shape == (6, *p.shape) for p in gan.discriminator.parameters())
    optimizer.pre_step()  # clip, noise and scale, without stepping
    for reference, param in zip(plain, gan.discriminator.parameters()):
        assert torch.allclose(param.grad, reference, atol=1e-5)
    optimizer.zero_grad(set_to_none=True)
    private.select("g")
    gan.training_step(batch, "g").loss.backward()
    assert all(p.grad_sample is None for p in gan.discriminator.parameters())
    assert all(p.grad is not None for p in gan.generator.parameters())


def test_empty_poisson_batch_takes_a_noise_only_step_that_the_accountant_counts():
    model = _Linear()
    private = _private(model, max_grad_norm=1.0, expected_batch_size=4, noise_multiplier=2.0)
    torch.manual_seed(0)
    private.empty_batch_step("main")
    step = model.weight.weight.detach().clone()
    assert torch.all(step != 0)  # pure noise moved the weights
    assert private.accountant.history == [(2.0, 0.1, 1)]


@pytest.mark.parametrize("name", ["vae", "ae", "gan"])
def test_dp_training_runs_logs_epsilon_and_spends_the_target(tmp_path, mnist_small, name):
    from genlab.training.trainer import Trainer

    trainer = Trainer(dp_config(name), tmp_path / name, dataset=mnist_small)
    assert trainer.batches.sampling == "poisson"
    result = trainer.fit()
    log = records(tmp_path / name)
    assert result.steps == 8 and all(torch.isfinite(torch.tensor(list(r.values()))).all() for r in log)
    epsilons = [r["dp_epsilon"] for r in log]
    assert epsilons == sorted(epsilons) and epsilons[0] > 0
    assert epsilons[-1] == pytest.approx(3.0, abs=0.05)  # calibrated for exactly the planned steps
    # Every logged epsilon is Opacus' RDP accountant's for (sigma, q, steps so far)
    sigma, q = trainer.privacy.noise_multiplier, trainer.batches.sample_rate
    for record in log:
        reference = RDPAccountant()
        reference.history = [(sigma, q, record["step"])]
        assert record["dp_epsilon"] == pytest.approx(reference.get_epsilon(1 / 256, alphas=RDP_ORDERS))
    state = json.loads((tmp_path / name / "checkpoints" / "step-0000008" / "state.json").read_text())
    assert state["extra"]["privacy"]["history"] == [[sigma, q, 8]]  # JSON, not pickled
    # The autoencoder's mixture sampler is fitted to training codes outside DP-SGD: said, not hidden
    assert bool(state["extra"]["privacy"]["notes"]) == (name == "ae")


def test_gan_dp_privatizes_only_the_discriminator_and_the_generator_still_learns(tmp_path, mnist_small):
    from genlab.training.trainer import Trainer

    trainer = Trainer(dp_config("gan"), tmp_path / "gan", dataset=mnist_small)
    assert list(trainer.privacy.hooks) == ["d"]
    real = Batch(torch.rand(5, 1, 28, 28), torch.full((5,), 3))
    assert trainer.privacy.batch_for("d", real) is real
    stand_in = trainer.privacy.batch_for("g", real)  # G never reads the data, its labels or their count
    assert stand_in.images.shape == (32, 1, 28, 28) and not stand_in.images.any()
    assert stand_in.labels.shape == (32,) and len(stand_in.labels.unique()) > 1
    assert type(trainer.optimizers["d"]).__name__ == "DPOptimizer"
    assert isinstance(trainer.optimizers["g"], torch.optim.Adam)
    before = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    trainer.fit()
    after = trainer.model.state_dict()
    for net in ("generator", "discriminator"):
        keys = [k for k in before if k.startswith(net) and k.endswith("weight")]
        assert keys and all(not torch.equal(before[k], after[k]) for k in keys), net


@pytest.mark.slow
def test_resume_continues_the_accountant_exactly(tmp_path, mnist_small):
    from genlab.training.trainer import Trainer

    config = dp_config("vae", epochs=2)
    Trainer(config, tmp_path / "full", dataset=mnist_small).fit()
    trainer = Trainer(config, tmp_path / "stopped", dataset=mnist_small)
    trainer.add_step_hook(lambda t: t.request_stop() if t.state.step == 5 else None)
    trainer.fit()
    Trainer(config, tmp_path / "stopped", resume=True, dataset=mnist_small).fit()
    full = {r["step"]: r["dp_epsilon"] for r in records(tmp_path / "full")}
    resumed = {r["step"]: r["dp_epsilon"] for r in records(tmp_path / "stopped")}
    assert resumed.keys() == full.keys() | {5}  # plus the record the stop wrote at step 5
    assert all(resumed[step] == epsilon for step, epsilon in full.items())
    assert_same_weights(final_weights(tmp_path / "stopped"), final_weights(tmp_path / "full"))


def test_batch_layers_are_swapped_with_a_message_never_silently():
    gan = GAN(GAN.make_config({"d_hidden": (8,), "g_hidden": (8,), "d_minibatch_stddev": True}))
    messages = make_per_sample_compatible(gan)
    assert len(messages) == 1 and "MinibatchStdDev" in messages[0] and "ZeroFeatures" in messages[0]
    assert any(isinstance(m, ZeroFeatures) for m in gan.discriminator.modules())

    class WithBatchNorm(_Linear):
        def __init__(self):
            super().__init__()
            self.net = nn.Sequential(nn.Linear(2, 4), nn.BatchNorm1d(4), nn.ReLU())

    model = WithBatchNorm()
    messages = make_per_sample_compatible(model)
    assert len(messages) == 1 and "BatchNorm1d" in messages[0] and "GroupNorm" in messages[0]
    assert isinstance(model.net[1], nn.GroupNorm)


def test_layers_that_cannot_be_made_per_example_are_refused():
    gan = GAN(GAN.make_config({"d_hidden": (8,), "g_hidden": (8,), "d_minibatch_kernels": 3}))
    with pytest.raises(ConfigError, match="MinibatchDiscrimination"):
        make_per_sample_compatible(gan)


def test_g_batch_norm_is_kept_because_g_never_sees_data():
    gan = GAN(GAN.make_config({"d_hidden": (8,), "g_hidden": (8,), "g_batch_norm": True}))
    assert make_per_sample_compatible(gan) == []
    assert any(isinstance(m, nn.BatchNorm1d) for m in gan.generator.modules())


# --- the command line --------------------------------------------------------------------------------
def cli_train(tmp_path, npz, name, *extra):
    from tests.test_cli import train

    return train(tmp_path, npz, name, *extra)


def one_line_error(capsys, code) -> str:
    captured = capsys.readouterr()
    assert code == 2, captured
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in captured.err, captured.err
    return lines[0]


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--dp-epsilon", "0"], "epsilon > 0"),
        (["--dp-epsilon", "-1"], "epsilon > 0"),
        (["--dp-epsilon", "nan"], "epsilon > 0"),
        (["--dp-epsilon", "3", "--dp-delta", "1.5"], "delta in (0, 1)"),
        (["--dp-epsilon", "3", "--dp-delta", "0"], "delta in (0, 1)"),
        (["--dp-epsilon", "3", "--dp-max-grad-norm", "0"], "clipping norm > 0"),
        (["--dp-delta", "1e-5"], "need --dp-epsilon"),
        (["--dp-epsilon", "3", "--set", "d_minibatch_kernels=2"], "MinibatchDiscrimination"),
        (
            ["--dp-epsilon", "3", "--set", "d_spectral_norm=true"],
            "spectral",
        ),
    ],
)
def test_bad_dp_settings_are_one_line_and_exit_2(tmp_path, mnist_small_npz, capsys, extra, message):
    assert message in one_line_error(capsys, cli_train(tmp_path, mnist_small_npz, "gan", *extra))


def test_dp_on_a_model_without_private_parts_exits_2(tmp_path, mnist_small_npz, capsys, monkeypatch):
    from genlab import registry

    class NoPrivateParts(_Linear):
        presets = {"default": Preset("a test model that declares no private parts")}

        def __init__(self, config):
            super().__init__()

        def private_parts(self):
            return {}

    NoPrivateParts.name = "noprivate"
    monkeypatch.setitem(registry._MODELS, "noprivate", NoPrivateParts)
    argv = ["train", "--model", "noprivate", "--data", str(mnist_small_npz), "--dp-epsilon", "3"]
    code = main([*argv, "--out", str(tmp_path / "run")])
    assert "cannot train with differential privacy" in one_line_error(capsys, code)


def test_cli_dp_run_shows_epsilon_in_info_and_resume_cannot_change_it(tmp_path, mnist_small_npz, capsys):
    assert cli_train(tmp_path, mnist_small_npz, "vae", "--dp-epsilon", "2") == 0
    capsys.readouterr()
    assert main(["info", str(tmp_path / "vae"), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    size = json.loads((tmp_path / "vae" / "config.json").read_text())["data"]["size"]
    assert info["dp_epsilon"] == pytest.approx(2.0, abs=0.05) and info["dp_delta"] == pytest.approx(1 / size)
    code = main(["train", "--resume", "--out", str(tmp_path / "vae"), "--dp-epsilon", "8"])
    assert "cannot change dp_epsilon" in one_line_error(capsys, code)


def test_eval_report_states_the_spent_epsilon(tmp_path):
    from genlab.config import TrainConfig
    from genlab.evaluation.report import markdown_report
    from genlab.runs import Run

    summary = {"epsilon": 2.5, "delta": 1e-4, "noise_multiplier": 0.9, "max_grad_norm": 1.0, "steps": 70}
    summary |= {"private_parts": ["d"], "accountant": "rdp"}
    state = {"step": 70, "extra": {"privacy": {**summary, "history": [[0.9, 0.01, 70]]}}}
    run = Run(tmp_path, TrainConfig(), _Linear(), tmp_path / "step-70", state)
    assert run.privacy() == summary and run.info()["dp_epsilon"] == 2.5
    assert Run(tmp_path, TrainConfig(), _Linear(), tmp_path, {"step": 1}).privacy() is None
    result = {"run_dir": "r", "model": "gan", "preset": "default", "checkpoint": "c", "step": 70}
    result |= {"dataset": "mnist-5k", "n_samples": 10, "seed": 0, "metrics": {}, "privacy": run.privacy()}
    assert "differential privacy: epsilon 2.500 spent at delta 0.0001 (DP-SGD on d, 70 steps" in (
        markdown_report(result)
    )


# --- the network variants (conv, conditional, objectives) ----------------------------------------------


@pytest.mark.parametrize(
    "name, model_args",
    [
        ("gan", {**CONV_GAN, "d_batch_norm": True}),  # DCGAN: D's BatchNorm becomes GroupNorm
        ("gan", {"latent_dim": 8, "g_hidden": (16,), "d_hidden": (16,), "conditional": True}),
        ("vae", {"arch": "conv", "latent_dim": 4, "conv_width": 8}),
        ("vae", {"latent_dim": 4, "hidden": (16,), "conditional": True}),
    ],
    ids=["dcgan", "conditional-gan", "conv-vae", "cvae"],
)
def test_dp_training_of_network_variants(tmp_path, mnist_small, name, model_args):
    from genlab.runs import load
    from genlab.training.trainer import Trainer

    trainer = Trainer(dp_config(name, model_args=model_args), tmp_path / "run", dataset=mnist_small)
    assert not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in trainer.privacy.hooks_modules())
    trainer.fit()
    assert records(tmp_path / "run")[-1]["dp_epsilon"] == pytest.approx(3.0, abs=0.05)
    run = load(tmp_path / "run")  # rebuilds the same layer swaps, so the weights fit
    assert run.privacy()["epsilon"] == pytest.approx(3.0, abs=0.05)
    labels = torch.arange(2) if run.model.is_conditional else None
    assert run.model.sample(2, labels=labels).shape[0] == 2


@pytest.mark.parametrize(
    "settings",
    [{"feature_matching": True}, {"r1_gamma": 1.0}, {"loss": "wgan-gp"}, {"historical_averaging": 1e-3}],
)
def test_gan_settings_that_leak_or_break_per_example_gradients_are_refused(tmp_path, mnist_small, settings):
    config = dp_config("gan", model_args={**CONV_GAN, **settings})
    with pytest.raises(ConfigError, match="cannot train with differential privacy"):
        from genlab.training.trainer import Trainer

        Trainer(config, tmp_path / "run", dataset=mnist_small)


@pytest.mark.parametrize("name", ["gan", "vae"])
def test_training_through_empty_poisson_batches(tmp_path, mnist_small, name):
    from genlab.data import ImageDataset
    from genlab.training.trainer import Trainer

    few = ImageDataset("few", mnist_small.images[:64], mnist_small.labels[:64], mnist_small.class_names)
    # (no BatchNorm in G: the D step's fakes match a Poisson batch of maybe 1 example, too few for it)
    model_args = {**TINY_MODEL_ARGS[name], **({"g_batch_norm": False} if name == "gan" else {})}
    config = dp_config(name, batch_size=2, log_every=8, model_args=model_args)
    trainer = Trainer(config, tmp_path / name, dataset=few)
    empty = [b for b in range(32) if len(trainer.batches.poisson_indices(0, b)) == 0]
    assert len(empty) >= 2  # (1 - 1/32)^64 = 13% of the 32 draws
    trainer.fit()
    log = records(tmp_path / name)
    assert log[-1]["step"] == 32 and log[-1]["dp_epsilon"] == pytest.approx(3.0, abs=0.05)
    assert all(torch.isfinite(torch.tensor([v for k, v in r.items() if k != "epoch"])).all() for r in log)

"""The contract every registered model keeps, run on each with a tiny config."""

from __future__ import annotations

import dataclasses

import pytest
import torch

import genlab
from genlab.models.base import Batch, GenerativeModel
from genlab.registry import get_model_class, list_models
from genlab.runs import resolve_config
from genlab.training.trainer import Trainer
from tests.conftest import TINY_MODEL_ARGS


def tiny_model(name: str) -> GenerativeModel:
    cls = get_model_class(name)
    return cls(cls.make_config(TINY_MODEL_ARGS[name]))


def test_every_registered_model_has_tiny_settings():
    missing = sorted(set(list_models()) - set(TINY_MODEL_ARGS))
    assert not missing, f"add tiny settings for {missing} to tests/conftest.py TINY_MODEL_ARGS"
    assert {"gan", "vae", "ae"} <= set(list_models())


@pytest.mark.parametrize("name", list_models())
def test_interface(name):
    cls = get_model_class(name)
    assert cls.input_range in ("tanh", "unit")
    assert "default" in cls.presets
    for preset in cls.presets.values():
        cls.make_config(preset.model)  # every preset names real settings
    model = tiny_model(name)
    images = cls.from_uint8(torch.randint(0, 256, (6, 1, 28, 28), dtype=torch.uint8))
    low, high = (-1.0, 1.0) if cls.input_range == "tanh" else (0.0, 1.0)
    assert images.min() >= low and images.max() <= high
    optimizers = model.optimizers()
    assert optimizers and all(isinstance(o, torch.optim.Optimizer) for o in optimizers.values())
    for opt_name in optimizers:
        output = model.training_step(Batch(images), opt_name)
        assert output.loss.dim() == 0 and torch.isfinite(output.loss)
        assert output.loss.requires_grad
        assert all(torch.as_tensor(v).dim() == 0 for v in output.logs.values())
    model.fit_sampler(images)
    samples = model.sample(5, generator=torch.Generator().manual_seed(3))
    assert samples.shape == (5, 1, 28, 28)
    assert samples.min() >= 0.0 and samples.max() <= 1.0
    again = model.sample(5, generator=torch.Generator().manual_seed(3))
    assert torch.equal(samples, again)


@pytest.mark.parametrize("name", list_models())
def test_train_checkpoint_reload_sample(name, tmp_path, mnist_small):
    config = resolve_config(
        overrides={
            "model": name,
            "epochs": 2,
            "batch_size": 32,
            "log_every": 3,
            "grid_size": 4,
            "model_args": TINY_MODEL_ARGS[name],
        }
    )
    trainer = Trainer(config, tmp_path / "run", dataset=mnist_small)
    result = trainer.fit()
    assert result.steps == 2 * (256 // 32) and not result.interrupted
    for produced in (
        "config.json",
        "metrics.jsonl",
        "samples.png",
        "loss_curves.png",
        "samples/epoch-0002.png",
    ):
        assert (tmp_path / "run" / produced).is_file(), produced
    run = genlab.load(tmp_path / "run")
    assert run.model.name == name
    assert dataclasses.asdict(run.model.config) == dataclasses.asdict(trainer.model.config)
    expected = trainer.sampling_model.sample(7, generator=torch.Generator().manual_seed(11))
    assert torch.equal(run.sample(7, seed=11), expected)
    assert not torch.equal(run.sample(7, seed=12), expected)


def test_gan_discriminator_gets_no_gradient_from_the_generator_step():
    model = tiny_model("gan")
    images = model.from_uint8(torch.randint(0, 256, (4, 1, 28, 28), dtype=torch.uint8))
    model.training_step(Batch(images), "g").loss.backward()
    assert all(p.grad is None for p in model.discriminator.parameters())
    assert all(p.grad is not None for p in model.generator.parameters())
    assert all(p.requires_grad for p in model.discriminator.parameters())  # unfrozen again afterwards
    model.zero_grad(set_to_none=True)
    model.training_step(Batch(images), "d").loss.backward()
    assert all(p.grad is None for p in model.generator.parameters())  # fakes are detached for D


def test_article_preset_is_the_articles_network():
    cls = get_model_class("gan")
    config = resolve_config(overrides={"model": "gan", "preset": "article"})
    model = cls(cls.make_config(config.model_args))
    linears = [m for m in model.generator.modules() if isinstance(m, torch.nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [
        (100, 128),
        (128, 256),
        (256, 512),
        (512, 1024),
        (1024, 784),
    ]
    linears = [m for m in model.discriminator.modules() if isinstance(m, torch.nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [
        (784, 512),
        (512, 256),
        (256, 128),
        (128, 1),
    ]
    assert sum(isinstance(m, torch.nn.Dropout) and m.p == 0.3 for m in model.discriminator.modules()) == 3
    optimizers = model.optimizers()
    assert optimizers["d"].param_groups[0]["lr"] == 2e-4 and optimizers["g"].param_groups[0]["lr"] == 1e-4
    assert config.batch_size == 128


def test_autoencoder_article_preset_is_single_layer():
    config = resolve_config(overrides={"model": "ae", "preset": "article"})
    cls = get_model_class("ae")
    model = cls(cls.make_config(config.model_args))
    linears = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(784, 32), (32, 784)]


def test_denoising_autoencoder_corrupts_input_but_not_target():
    cls = get_model_class("ae")
    model = cls(cls.make_config({**TINY_MODEL_ARGS["ae"], "noise_std": 0.5, "mask_prob": 0.2}))
    clean = torch.full((2, 1, 28, 28), 0.5)
    corrupted = model.corrupt(clean)
    assert not torch.equal(corrupted, clean)
    assert corrupted.min() >= 0 and corrupted.max() <= 1
    assert (corrupted == 0).float().mean() > 0.1  # masking happened


def test_gmm_sampler_recovers_well_separated_clusters():
    from genlab.models.gmm import GaussianMixture

    generator = torch.Generator().manual_seed(0)
    centers = torch.tensor([[-10.0, 0.0], [10.0, 0.0], [0.0, 10.0]])
    codes = torch.cat([c + 0.5 * torch.randn(300, 2, generator=generator) for c in centers])
    gmm = GaussianMixture(3, 2)
    gmm.fit(codes)
    found = sorted(gmm.means.tolist())
    for mean, center in zip(found, sorted(centers.tolist())):
        assert mean == pytest.approx(center, abs=0.2)
    assert gmm.log_weights.exp().tolist() == pytest.approx([1 / 3] * 3, abs=0.02)
    draws = gmm.sample(3000, torch.Generator().manual_seed(1))
    nearest = torch.cdist(draws, centers).argmin(dim=1)
    assert torch.bincount(nearest, minlength=3).min() > 900


@pytest.mark.parametrize(
    "settings",
    [
        {"d_dropout": 0.3},
        {"g_batch_norm": True, "d_minibatch_stddev": True},
        {"d_minibatch_kernels": 4, "d_spectral_norm": True},
    ],
)
def test_gan_weights_saved_by_genlab_0_1_still_load(settings, tmp_path):
    """GAN runs saved before the conv/conditional nets named layers by position in one Sequential per net
    (generator.i, discriminator.i); they must load into today's model and give the same outputs."""
    from genlab.training.checkpoint import load_model_weights

    cls = get_model_class("gan")
    model = cls(cls.make_config({**TINY_MODEL_ARGS["gan"], **settings}))
    # The 0.1 layout: the same layers, flattened into one Sequential each (D's minibatch layers sat
    # between its last hidden layer and its output layer).
    old_generator = nn_sequential_of(model.generator.net)
    old_discriminator = nn_sequential_of(
        *list(model.discriminator.body)[1:], *model.discriminator.batch_layers, model.discriminator.head
    )
    torch.manual_seed(0)
    old_state = {
        **{f"generator.{k}": _perturbed(v) for k, v in old_generator.state_dict().items()},
        **{f"discriminator.{k}": _perturbed(v) for k, v in old_discriminator.state_dict().items()},
    }
    assert not any(k.startswith(("generator.net.", "discriminator.body.")) for k in old_state)
    load_model_weights(model, dict(old_state), tmp_path)
    assert torch.equal(model.generator.net[0].weight, old_state["generator.0.weight"])
    model.eval()
    z = torch.randn(3, model.config.latent_dim)
    images = torch.rand(3, 1, 28, 28) * 2 - 1
    old_generator.load_state_dict({k[len("generator.") :]: v for k, v in old_state.items() if k[0] == "g"})
    old_discriminator.load_state_dict(
        {k[len("discriminator.") :]: v for k, v in old_state.items() if k[0] == "d"}
    )
    old_generator.eval(), old_discriminator.eval()
    with torch.no_grad():
        torch.testing.assert_close(model.generator(z), old_generator(z).view(3, 1, 28, 28))
        torch.testing.assert_close(
            model.discriminate(images), old_discriminator(images.flatten(1)).squeeze(1)
        )


def _perturbed(value: torch.Tensor) -> torch.Tensor:
    """Random positive floats of the same shape (so a wrong mapping shows; BatchNorm's running variance
    must stay positive), integer buffers kept."""
    return torch.rand_like(value) + 0.5 if value.is_floating_point() else value.clone()


def nn_sequential_of(*modules):
    """A Sequential holding the given modules (or a Sequential's children) under positional names."""
    if len(modules) == 1 and isinstance(modules[0], torch.nn.Sequential):
        modules = tuple(modules[0])
    return torch.nn.Sequential(*modules)

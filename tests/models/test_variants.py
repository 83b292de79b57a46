"""Every network/objective setting of each family, tiny, on synthetic data of the shapes the conv nets
tile: a step per optimizer, seeded samples of the right shape and range, and an exact resume."""

from __future__ import annotations

import json

import pytest
import torch

from genlab.data import ImageDataset
from genlab.errors import ConfigError
from genlab.models.base import Batch, GenerativeModel
from genlab.registry import get_model_class, list_models
from genlab.runs import build_model, resolve_config
from genlab.training.checkpoint import latest_checkpoint, load_weights
from genlab.training.trainer import Trainer

CONV_GAN = {
    "arch": "conv",
    "latent_dim": 8,
    "g_width": 8,
    "d_width": 8,
    "g_batch_norm": True,
    "d_dropout": 0.0,
}
MLP_GAN = {"latent_dim": 8, "g_hidden": (16,), "d_hidden": (16,)}
CONV_CODER = {"arch": "conv", "latent_dim": 4, "conv_width": 8}
MNIST, CIFAR, FACES = (1, 28, 28), (3, 32, 32), (3, 64, 64)

# (id, family, settings, image shape)
VARIANTS = [
    ("conv-gan", "gan", {**CONV_GAN, "d_batch_norm": True}, MNIST),
    ("conv-gan-rgb64", "gan", {**CONV_GAN, "d_batch_norm": True}, FACES),
    ("conditional-conv-gan", "gan", {**CONV_GAN, "conditional": True, "loss": "hinge"}, CIFAR),
    ("conditional-mlp-gan", "gan", {**MLP_GAN, "conditional": True}, MNIST),
    ("ac-gan", "gan", {**CONV_GAN, "conditional": True, "ac_weight": 1.0, "augment": "translation"}, MNIST),
    ("hinge", "gan", {**CONV_GAN, "loss": "hinge"}, CIFAR),
    ("wgan-gp", "gan", {**CONV_GAN, "loss": "wgan-gp", "beta2": 0.9}, MNIST),
    ("r1", "gan", {**CONV_GAN, "r1_gamma": 1.0}, MNIST),
    ("spectral-norm-conv", "gan", {**CONV_GAN, "d_spectral_norm": True}, CIFAR),
    ("feature-matching", "gan", {**CONV_GAN, "feature_matching": True}, MNIST),
    ("historical-averaging", "gan", {**CONV_GAN, "historical_averaging": 0.01}, MNIST),
    ("minibatch-mlp", "gan", {**MLP_GAN, "d_minibatch_kernels": 4, "label_smoothing": 0.1}, MNIST),
    ("minibatch-conv", "gan", {**CONV_GAN, "d_minibatch_kernels": 4, "d_minibatch_stddev": True}, CIFAR),
    ("minibatch-stddev-mlp", "gan", {**MLP_GAN, "g_batch_norm": True, "d_minibatch_stddev": True}, MNIST),
    ("spectral-norm-mlp", "gan", {**MLP_GAN, "d_spectral_norm": True}, MNIST),
    ("label-smoothing", "gan", {**CONV_GAN, "label_smoothing": 0.1}, MNIST),
    ("two-time-scale", "gan", {**CONV_GAN, "lr_d": 4e-4, "lr_g": 1e-4}, MNIST),
    (
        "conditional-sn-ac-hinge",
        "gan",
        {**CONV_GAN, "d_spectral_norm": True, "conditional": True, "loss": "hinge", "ac_weight": 1.0},
        CIFAR,
    ),
    ("diffaugment", "gan", {**CONV_GAN, "augment": "color,translation,cutout", "r1_gamma": 1.0}, MNIST),
    ("conv-vae", "vae", CONV_CODER, CIFAR),
    ("conv-vae-gmm-sampler", "vae", {**CONV_CODER, "sampler": "gmm", "gmm_components": 3}, MNIST),
    (
        "cvae-gmm-sampler",
        "vae",
        {**CONV_CODER, "conditional": True, "sampler": "gmm", "gmm_components": 2},
        CIFAR,
    ),
    ("cvae", "vae", {**CONV_CODER, "conditional": True}, MNIST),
    ("mlp-cvae", "vae", {"latent_dim": 4, "hidden": (16,), "conditional": True}, MNIST),
    ("kl-warmup-free-bits", "vae", {**CONV_CODER, "kl_warmup_steps": 5, "free_bits": 0.1}, FACES),
    ("conv-ae", "ae", {**CONV_CODER, "gmm_components": 3}, MNIST),
    ("conv-ae-rgb64", "ae", {**CONV_CODER, "gmm_components": 3}, FACES),
]


def tiny(family: str, settings: dict) -> dict:
    """A preset's settings with its networks shrunk to test size; every other setting kept as it is."""
    tiny_settings = {**settings, "latent_dim": 8 if family == "gan" else 4}
    if family == "gan":
        tiny_settings.update(g_width=8, d_width=8, g_hidden=(16,), d_hidden=(16,))
        if tiny_settings.get("d_minibatch_kernels"):
            tiny_settings["d_minibatch_kernels"] = 4
    else:  # () is the article's single-layer autoencoder: it stays single-layer
        tiny_settings.update(conv_width=8, hidden=(16,) if settings.get("hidden", (16,)) else ())
        tiny_settings["gmm_components"] = min(3, settings.get("gmm_components", 3))
    return tiny_settings


# every registered preset, tiny: the recipes users run get the steps, samples and resume of the variants
PRESET_VARIANTS = [
    (f"preset-{family}-{name}", family, tiny(family, preset.model), MNIST)
    for family in list_models()
    for name, preset in get_model_class(family).presets.items()
]
VARIANTS += PRESET_VARIANTS
IDS = [variant[0] for variant in VARIANTS]


def synthetic(shape: tuple[int, int, int], n: int = 48) -> ImageDataset:
    """n seeded uint8 images: a class-dependent bright square on noise, labels 0..9 in turn."""
    generator = torch.Generator().manual_seed(0)
    images = torch.randint(0, 60, (n, *shape), generator=generator, dtype=torch.uint8)
    labels = torch.arange(n) % 10
    size = shape[1] // 4
    for index, label in enumerate(labels.tolist()):
        top = (label * shape[1]) // 14
        images[index, :, top : top + size, top : top + size] = 250
    return ImageDataset("synthetic", images, labels, [str(k) for k in range(10)])


def build(family: str, settings: dict, shape: tuple[int, int, int]) -> GenerativeModel:
    return build_model(family, {**settings, "image_shape": shape, "num_classes": 10})


@pytest.mark.parametrize(("variant", "family", "settings", "shape"), VARIANTS, ids=IDS)
def test_variant_steps_and_samples(variant, family, settings, shape):
    torch.manual_seed(0)
    model = build(family, settings, shape)
    data = synthetic(shape, n=8)
    batch = Batch(model.from_uint8(data.images), data.labels)
    for name, optimizer in model.optimizers().items():
        model.zero_grad(set_to_none=True)
        output = model.training_step(batch, name)
        assert output.loss.dim() == 0 and torch.isfinite(output.loss), name
        output.loss.backward()
        optimizer.step()
    model.fit_sampler(batch.images, batch.labels)
    samples = model.sample(5, generator=torch.Generator().manual_seed(3))
    assert samples.shape == (5, *shape)
    assert samples.min() >= 0.0 and samples.max() <= 1.0
    assert torch.equal(samples, model.sample(5, generator=torch.Generator().manual_seed(3)))
    assert not torch.equal(samples, model.sample(5, generator=torch.Generator().manual_seed(4)))
    labels = torch.tensor([0, 1, 2, 3, 9])
    if model.is_conditional:
        chosen = model.sample(5, labels=labels, generator=torch.Generator().manual_seed(3))
        assert chosen.shape == (5, *shape)
        with pytest.raises(ValueError, match=r"in \[0, 10\)"):
            model.sample(5, labels=torch.tensor([0, 1, 2, 3, 10]))
        with pytest.raises(ValueError, match="conditional"):
            model.generate(model.sample_latent(2))
        with pytest.raises(ValueError, match="no class labels"):
            model.training_step(Batch(batch.images), next(iter(model.optimizers())))
    else:
        with pytest.raises(ValueError, match="unconditional; it takes no labels"):
            model.sample(5, labels=labels)


def test_conditional_samples_depend_on_the_label_and_draw_labels_from_the_seed():
    model = build("gan", {**CONV_GAN, "conditional": True}, MNIST).eval()
    for module in model.generator.modules():  # as training would: the per-class scales start equal
        if isinstance(module, torch.nn.Embedding):
            torch.nn.init.normal_(module.weight, 1.0, 0.5, generator=torch.Generator().manual_seed(0))
    z = model.sample_latent(4, torch.Generator().manual_seed(0))
    zeros, nines = model.generate(z, torch.zeros(4, dtype=torch.long)), model.generate(z, torch.full((4,), 9))
    assert not torch.allclose(zeros, nines)
    drawn = model.sample(4, generator=torch.Generator().manual_seed(0))
    expected_labels = torch.Generator().manual_seed(0)
    model.sample_latent(4, expected_labels)  # labels are drawn after the codes
    labels = torch.randint(10, (4,), generator=expected_labels)
    assert torch.equal(drawn, model.generate(z, labels))


def test_cvae_encode_and_reconstruct_need_labels():
    model = build("vae", {**CONV_CODER, "conditional": True}, MNIST).eval()
    x = torch.rand(3, *MNIST)
    labels = torch.tensor([1, 2, 3])
    assert model.reconstruct(x, labels=labels).shape == x.shape
    assert model.encode(x, labels)[0].shape == (3, 4)
    with pytest.raises(ValueError, match="conditional"):
        model.reconstruct(x)
    assert model.elbo(x, labels=labels).shape == (3,)
    assert model.importance_sampled_nll(x, k=3, labels=labels).shape == (3,)


@pytest.mark.parametrize("family", ["gan", "vae", "ae"])
@pytest.mark.parametrize("shape", [MNIST, CIFAR, FACES])
def test_conv_nets_tile_each_shape(family, shape):
    settings = CONV_GAN if family == "gan" else CONV_CODER
    model = build(family, settings, shape).eval()
    images = (
        model.generate(model.sample_latent(2)) if family == "gan" else model.decode(model.sample_latent(2))
    )
    assert images.shape == (2, *shape)
    if family == "gan":
        assert model.discriminate(images * 2 - 1).shape == (2,)
    else:
        assert model.embed(images).shape == (2, settings["latent_dim"])


@pytest.mark.parametrize("family", ["gan", "vae", "ae"])
def test_conv_rejects_a_shape_it_cannot_tile(family):
    with pytest.raises(ConfigError, match="cannot tile images of shape"):
        build(family, {"arch": "conv"}, (1, 30, 30))


def test_wgan_gp_refuses_batch_norm_in_the_critic():
    with pytest.raises(ConfigError, match="d_batch_norm=false"):
        build("gan", {**CONV_GAN, "loss": "wgan-gp", "d_batch_norm": True}, MNIST)


def test_presets_build_and_wgan_gp_presets_have_no_batch_norm_in_d():
    for family in list_models():
        cls = get_model_class(family)
        for preset in cls.presets.values():
            model = cls(cls.make_config(preset.model))  # builds (wgan-gp with BN in D would raise)
            if getattr(model.config, "loss", "") == "wgan-gp":
                assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in model.discriminator.modules())
    assert get_model_class("gan").presets["conditional"].model["arch"] == "conv"
    assert get_model_class("vae").presets["conditional"].model["conditional"] is True


@pytest.mark.parametrize("family", list_models())
def test_every_setting_has_a_one_line_why(family):
    import dataclasses

    cls = get_model_class(family)
    fields = {f.name for f in dataclasses.fields(cls.Config)}
    assert set(cls.setting_help) == fields
    assert all(text and "\n" not in text for text in cls.setting_help.values())


def _losses(run_dir):
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return [{k: v for k, v in json.loads(line).items() if k != "images_per_sec"} for line in lines]


@pytest.mark.slow
@pytest.mark.parametrize(("variant", "family", "settings", "shape"), VARIANTS, ids=IDS)
def test_variant_resumes_exactly(tmp_path, variant, family, settings, shape):
    data = synthetic(shape, n=32)

    def config(epochs):
        return resolve_config(
            overrides={
                "model": family,
                "epochs": epochs,
                "batch_size": 16,
                "log_every": 1,
                "grid_size": 2,
                "ema_decay": 0.9,
                "model_args": settings,
            }
        )

    Trainer(config(2), tmp_path / "full", dataset=data).fit()
    Trainer(config(1), tmp_path / "split", dataset=data).fit()
    Trainer(config(2), tmp_path / "split", resume=True, dataset=data).fit()
    assert _losses(tmp_path / "split") == _losses(tmp_path / "full")
    for weights in ("model.safetensors", "ema.safetensors"):
        full = load_weights(latest_checkpoint(tmp_path / "full") / weights)
        split = load_weights(latest_checkpoint(tmp_path / "split") / weights)
        assert full.keys() == split.keys()
        assert all(torch.equal(full[key], split[key]) for key in full), weights

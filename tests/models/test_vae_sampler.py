"""The VAE's optional ex-post sampler: a Gaussian mixture fitted to the posterior means of the training
images (a CVAE's encoded with their labels); the default stays the N(0, I) prior."""

from __future__ import annotations

import torch

from genlab.runs import build_model

SHAPE = (1, 28, 28)
CONV = {"arch": "conv", "latent_dim": 3, "conv_width": 4, "image_shape": SHAPE, "num_classes": 10}


def test_the_prior_sampler_is_the_default_and_draws_standard_normal_codes():
    model = build_model("vae", CONV)
    assert not hasattr(model, "code_mixture")
    codes = model.sample_latent(4, torch.Generator().manual_seed(0))
    torch.testing.assert_close(codes, torch.randn(4, 3, generator=torch.Generator().manual_seed(0)))


def test_the_gmm_sampler_fits_the_posterior_means_and_samples_from_them():
    torch.manual_seed(0)
    model = build_model("vae", {**CONV, "sampler": "gmm", "gmm_components": 1})
    images = torch.rand(50, *SHAPE)
    model.fit_sampler(images)
    means = model.encode(images)[0].detach()
    torch.testing.assert_close(model.code_mixture.means[0], means.mean(0), atol=1e-5, rtol=0)
    codes = model.sample_latent(4000, torch.Generator().manual_seed(0))
    torch.testing.assert_close(codes.mean(0), means.mean(0), atol=0.1 * float(means.std()), rtol=0)
    assert model.training  # fitting put the model back in training mode


def test_a_cvae_fits_its_mixture_to_codes_encoded_with_the_labels():
    torch.manual_seed(0)
    model = build_model("vae", {**CONV, "conditional": True, "sampler": "gmm", "gmm_components": 1})
    images, labels = torch.rand(40, *SHAPE), torch.arange(40) % 10
    model.fit_sampler(images, labels)
    expected = model.encode(images, labels)[0].detach().mean(0)
    torch.testing.assert_close(model.code_mixture.means[0], expected, atol=1e-5, rtol=0)
    assert model.sample(3, labels=torch.tensor([1, 2, 3])).shape == (3, *SHAPE)


def test_a_cvae_samples_each_class_from_that_class_s_own_mixture():
    torch.manual_seed(0)
    model = build_model("vae", {**CONV, "conditional": True, "sampler": "gmm", "gmm_components": 1})
    images, labels = torch.rand(30, *SHAPE), torch.tensor([0, 2] * 15)
    model.fit_sampler(images, labels)
    codes = model.encode(images, labels)[0].detach()
    for k in (0, 2):
        torch.testing.assert_close(
            model.class_mixtures[k].means[0], codes[labels == k].mean(0), atol=1e-5, rtol=0
        )
    assert torch.equal(model.class_mixtures[1].means[0], torch.zeros(3))  # no images of class 1: N(0, I)
    # sample() decodes class k from class k's mixture, in ascending class order from one generator
    asked = torch.tensor([2, 0, 2])
    drawn = model.sample(3, labels=asked, generator=torch.Generator().manual_seed(4))
    generator = torch.Generator().manual_seed(4)
    z = torch.empty(3, 3)
    z[asked == 0] = model.class_mixtures[0].sample(1, generator)
    z[asked == 2] = model.class_mixtures[2].sample(2, generator)
    torch.testing.assert_close(drawn, model.generate(z, asked))
    assert model.sample(4, generator=torch.Generator().manual_seed(1)).shape == (4, *SHAPE)  # labels drawn


def test_a_mixture_fits_a_single_code():
    from genlab.models.gmm import GaussianMixture

    mixture = GaussianMixture(2, 3)
    code = torch.tensor([[0.5, -1.0, 2.0]])
    mixture.fit(code)  # a class with one training image: no covariance to estimate
    torch.testing.assert_close(mixture.means, code.expand(2, 3))
    assert torch.isfinite(mixture.sample(4, torch.Generator().manual_seed(0))).all()


def test_only_the_gmm_sampler_counts_as_a_use_of_data_outside_dp():
    from genlab.training.privacy import uncovered_data_uses

    assert uncovered_data_uses(build_model("vae", CONV)) == []
    notes = uncovered_data_uses(build_model("vae", {**CONV, "sampler": "gmm"}))
    assert len(notes) == 1 and "sampler is fitted to training images" in notes[0]


def test_temperature_scales_the_sampled_codes_spread():
    cold = build_model("vae", {**CONV, "temperature": 0.5})
    torch.testing.assert_close(
        cold.sample_latent(5, torch.Generator().manual_seed(0)),
        0.5 * torch.randn(5, 3, generator=torch.Generator().manual_seed(0)),
    )
    model = build_model("vae", {**CONV, "sampler": "gmm", "gmm_components": 1, "temperature": 0.25})
    model.fit_sampler(torch.rand(40, *SHAPE))
    mixture = model.code_mixture
    codes = model.sample_latent(4000, torch.Generator().manual_seed(0))
    full = mixture.sample(4000, torch.Generator().manual_seed(0))
    torch.testing.assert_close(codes - mixture.means[0], 0.25 * (full - mixture.means[0]))

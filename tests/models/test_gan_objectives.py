"""GAN objectives and regularizers against values computed by hand."""

from __future__ import annotations

import pytest
import torch

from genlab.models import gan_objectives as objectives


def test_hinge_losses():
    real, fake = torch.tensor([0.5, 2.0]), torch.tensor([-2.0, 0.5])
    # D: mean(relu(1 - [0.5, 2])) = mean([0.5, 0]) = 0.25; mean(relu(1 + [-2, 0.5])) = mean([0, 1.5]) = 0.75
    assert objectives.hinge_discriminator_loss(real, fake).item() == pytest.approx(1.0)
    assert objectives.critic_generator_loss(fake).item() == pytest.approx(0.75)


def test_wasserstein_loss():
    real, fake = torch.tensor([1.0, 3.0]), torch.tensor([-1.0, 0.0])
    assert objectives.wasserstein_discriminator_loss(real, fake).item() == pytest.approx(-0.5 - 2.0)


def test_gradient_penalty_of_a_linear_critic_is_closed_form_and_trains_it():
    # d(x) = <w, x>: its gradient is w everywhere, so the penalty is (|w| - 1)^2 = (5 - 1)^2 = 16
    w = torch.tensor([3.0, 4.0], requires_grad=True)

    def critic(x):  # (B, 1, 1, 2) -> (B,)
        return (x.flatten(1) * w).sum(dim=1)

    real, fake = torch.randn(5, 1, 1, 2), torch.randn(5, 1, 1, 2)
    penalty = objectives.gradient_penalty(critic, real, fake, torch.rand(5))
    assert penalty.shape == () and penalty.item() == pytest.approx(16.0)
    penalty.backward()  # d/dw (|w| - 1)^2 = 2 (|w| - 1) w / |w| = 2 * 4 * [3, 4] / 5
    assert w.grad.tolist() == pytest.approx([4.8, 6.4])


def test_gradient_penalty_is_taken_at_the_interpolates():
    # d(x) = sum x^2: gradient 2 x_hat. x_hat = mix * real + (1 - mix) * fake with real = [1, 0], fake = 0:
    # mix 0.5 -> |grad| = 1 -> 0;  mix 1 -> |grad| = 2 -> 1;  mean 0.5
    real = torch.tensor([[1.0, 0.0], [1.0, 0.0]])
    fake = torch.zeros(2, 2)
    penalty = objectives.gradient_penalty(lambda x: x.pow(2).sum(dim=1), real, fake, torch.tensor([0.5, 1.0]))
    assert penalty.item() == pytest.approx(0.5)


def test_r1_penalty():
    # d(x) = sum x^2: |grad|^2 = 4 |x|^2; x rows [1, 2] and [0, 1]: 4 * (5 + 1) / 2 = 12
    x = torch.tensor([[1.0, 2.0], [0.0, 1.0]], requires_grad=True)
    assert objectives.r1_penalty(x.pow(2).sum(dim=1), x).item() == pytest.approx(12.0)


def test_feature_matching_loss():
    real = torch.tensor([[1.0, 2.0], [3.0, 4.0]])  # mean [2, 3]
    fake = torch.tensor([[0.0, 0.0], [2.0, 2.0]], requires_grad=True)  # mean [1, 1]
    loss = objectives.feature_matching_loss(real, fake)
    assert loss.item() == pytest.approx(1.0 + 4.0)
    loss.backward()  # d/dfake_b = -2 (mean_real - mean_fake) / B = -[1, 2]
    assert fake.grad.tolist() == [[-1.0, -2.0], [-1.0, -2.0]]


def test_historical_average_keeps_the_mean_of_past_parameters_in_buffers():
    net = torch.nn.Linear(1, 1, bias=False)
    average = objectives.HistoricalAverage(net)
    with torch.no_grad():
        net.weight.fill_(1.0)
    assert average.penalty(net).item() == pytest.approx(0.0)  # mean of [1] is 1
    with torch.no_grad():
        net.weight.fill_(3.0)
    penalty = average.penalty(net)  # mean of [1, 3] is 2: (3 - 2)^2
    assert penalty.item() == pytest.approx(1.0)
    penalty.backward()
    assert net.weight.grad.item() == pytest.approx(2.0)  # 2 (theta - mean), the mean a constant
    state = average.state_dict()
    assert state["count"].item() == 2 and state["mean_0"].item() == pytest.approx(2.0)
    assert objectives.historical_average_penalty(
        [torch.tensor([1.0, 2.0])], [torch.tensor([0.0, 0.0])]
    ).item() == pytest.approx(5.0)


def _ac_gan(weight: float):
    from genlab.runs import build_model

    torch.manual_seed(0)
    settings = {
        "arch": "conv",
        "latent_dim": 4,
        "g_width": 4,
        "d_width": 4,
        "g_batch_norm": True,
        "d_dropout": 0.0,
    }
    return build_model(
        "gan",
        {**settings, "conditional": True, "ac_weight": weight, "image_shape": (1, 16, 16), "num_classes": 3},
    )


def _step_and_its_fake(model, batch, step: str, seed: int):
    """The loss of one training step from `seed`, and the G(z) that step drew (the same z, redrawn)."""
    torch.manual_seed(seed)
    loss = model.training_step(batch, step).loss
    torch.manual_seed(seed)
    return loss, model.generator(torch.randn(len(batch.images), model.config.latent_dim), batch.labels)


def test_ac_gan_adds_the_weighted_cross_entropy_of_d_classifying_real_images():
    from genlab.models.base import Batch

    model = _ac_gan(0.5)
    real, labels = torch.rand(4, 1, 16, 16) * 2 - 1, torch.tensor([0, 1, 2, 1])
    loss, fake = _step_and_its_fake(model, Batch(real, labels), "d", seed=1)
    d = model.discriminator
    adversarial = (
        torch.log1p(torch.exp(-d(real, labels))).mean() + torch.log1p(torch.exp(d(fake, labels))).mean()
    )
    logits = d.classifier(d.features(real))  # (4, 3)
    cross_entropy = -(logits.exp() / logits.exp().sum(1, keepdim=True))[torch.arange(4), labels].log().mean()
    assert loss.item() == pytest.approx((adversarial + 0.5 * cross_entropy).item(), rel=1e-5)


def test_ac_gan_generator_is_pushed_to_the_class_it_was_asked_for():
    from genlab.models.base import Batch

    model = _ac_gan(2.0)
    real, labels = torch.rand(4, 1, 16, 16) * 2 - 1, torch.tensor([2, 0, 1, 2])
    loss, fake = _step_and_its_fake(model, Batch(real, labels), "g", seed=3)
    d = model.discriminator
    adversarial = torch.log1p(torch.exp(-d(fake, labels))).mean()
    logits = d.classifier(d.features(fake))
    cross_entropy = (torch.logsumexp(logits, 1) - logits[torch.arange(4), labels]).mean()
    assert loss.item() == pytest.approx((adversarial + 2.0 * cross_entropy).item(), rel=1e-5)
    assert all(p.grad is None for p in d.parameters())  # D stays frozen in G's step


def test_ac_gan_needs_a_conditional_model():
    from genlab.errors import ConfigError
    from genlab.runs import build_model

    with pytest.raises(ConfigError, match="ac_weight needs a conditional model"):
        build_model("gan", {"ac_weight": 1.0, "image_shape": (1, 28, 28)})

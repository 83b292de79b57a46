"""The GAN's one-generator-forward step (a speed lever) is the same math as the reference step that runs
G again on the same z for the G update: same losses, same gradients, same weights after each step."""

from __future__ import annotations

import copy

import pytest
import torch

from genlab.models.base import Batch
from genlab.models.gan import GAN
from genlab.runs import build_model
from tests.conftest import TINY_MODEL_ARGS


def tiny_gan(**settings) -> GAN:
    torch.manual_seed(0)
    values = {**TINY_MODEL_ARGS["gan"], "image_shape": (1, 16, 16), "d_dropout": 0.0, **settings}
    return build_model("gan", values)


def train_steps(model: GAN, batches: list[Batch], shared: bool, seed: int) -> list[dict]:
    """The trainer's loop (zero_grad, training_step, backward, step per optimizer), recording each loss
    and gradient. The reference (shared=False) reseeds before the G update so that it draws the same z
    the D update drew, and runs G on it a second time."""
    optimizers = model.optimizers()
    GAN.share_fake_batch = shared
    trace = []
    try:
        for index, batch in enumerate(batches):
            for name, optimizer in optimizers.items():
                if name == "d" or not shared:
                    torch.manual_seed(seed + index)  # the z of this step, for either way of stepping
                optimizer.zero_grad(set_to_none=True)
                output = model.training_step(batch, name)
                output.loss.backward()
                params = [p for group in optimizer.param_groups for p in group["params"]]
                trace.append({"loss": output.loss.detach(), "grads": [p.grad.clone() for p in params]})
                optimizer.step()
    finally:
        GAN.share_fake_batch = True
    return trace


@pytest.mark.parametrize(
    "settings",
    [
        {},  # the article's objective
        {"g_batch_norm": True, "d_minibatch_stddev": True},  # the default preset's nets
        {"loss": "hinge", "arch": "conv", "g_width": 8, "d_width": 8, "g_batch_norm": True},
        {"feature_matching": True},
        {"conditional": True, "num_classes": 3},
    ],
)
def test_shared_generator_forward_matches_the_two_forward_reference(settings):
    shared_model = tiny_gan(**settings)
    reference_model = copy.deepcopy(shared_model)
    generator = torch.Generator().manual_seed(1)
    batches = [
        Batch(
            torch.rand(6, 1, 16, 16, generator=generator) * 2 - 1,
            torch.randint(0, 3, (6,), generator=generator),
        )
        for _ in range(3)
    ]
    if not settings.get("conditional"):
        batches = [Batch(batch.images) for batch in batches]
    shared = train_steps(shared_model, batches, shared=True, seed=10)
    reference = train_steps(reference_model, batches, shared=False, seed=10)
    assert len(shared) == len(reference) == 6
    for ours, theirs in zip(shared, reference):
        torch.testing.assert_close(ours["loss"], theirs["loss"], rtol=1e-5, atol=1e-6)
        for a, b in zip(ours["grads"], theirs["grads"]):
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)
    for (name, a), b in zip(shared_model.named_parameters(), reference_model.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6, msg=name)


def test_the_reference_step_draws_a_fresh_z_so_the_check_above_can_fail():
    """Without the reseed the reference G update sees another z: the losses differ, so the equivalence
    test compares like with like and would catch a shared step that used the wrong fake batch."""
    model = tiny_gan()
    batch = Batch(torch.rand(6, 1, 16, 16) * 2 - 1)
    GAN.share_fake_batch = False
    try:
        torch.manual_seed(3)
        model.training_step(batch, "d")
        fresh = model.training_step(batch, "g").loss
    finally:
        GAN.share_fake_batch = True
    torch.manual_seed(3)
    model.training_step(batch, "d")
    reused = model.training_step(batch, "g").loss
    assert not torch.allclose(fresh, reused)


def test_a_g_update_on_another_batch_runs_its_own_forward_and_nothing_is_left_behind():
    model = tiny_gan()
    model.training_step(Batch(torch.rand(6, 1, 16, 16)), "d")
    output = model.training_step(Batch(torch.zeros(4, 1, 16, 16)), "g")  # a DP stand-in batch, say
    output.loss.backward()
    assert all(p.grad is not None for p in model.generator.parameters())
    assert model._pending_fake is None
    copy.deepcopy(model)  # no autograd graph held by the model between steps

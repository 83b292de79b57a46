"""The trainer's linear learning-rate decay (`lr_decay_start`): the schedule's values, that every optimizer
follows it, and that a run stopped mid-ramp resumes onto the same schedule."""

from __future__ import annotations

import pytest

from genlab.errors import ConfigError
from genlab.training.trainer import Trainer, lr_factor
from tests.training.test_trainer import assert_same_weights, final_weights, losses, tiny_config


def test_the_factor_is_one_then_a_straight_line_down():
    # 10 steps, decay from half way: steps 0-5 at 1, then 4/5, 3/5, 2/5, 1/5 (the last step still learns)
    assert [lr_factor(step, 10, 0.5) for step in range(10)] == [1, 1, 1, 1, 1, 1, 0.8, 0.6, 0.4, 0.2]
    assert [lr_factor(step, 4, 0.0) for step in range(4)] == [1, 0.75, 0.5, 0.25]
    assert {lr_factor(step, 10, 1.0) for step in range(10)} == {1.0}  # 1 = constant
    assert lr_factor(12, 10, 0.5) > 0  # past the configured end (never reached by the trainer): not 0


def test_every_optimizer_ends_on_the_last_steps_rate(tmp_path, mnist_small):
    trainer = Trainer(tiny_config(epochs=2, lr_decay_start=0.5), tmp_path / "decay", dataset=mnist_small)
    result = trainer.fit()
    total = len(trainer.batches) * 2
    assert result.steps == total
    for name, optimizer in trainer.optimizers.items():
        base = trainer._base_lrs[name][0]
        assert optimizer.param_groups[0]["lr"] == pytest.approx(base * lr_factor(total - 1, total, 0.5)), name
        assert optimizer.param_groups[0]["lr"] < base / 2
    Trainer(tiny_config(epochs=2), tmp_path / "constant", dataset=mnist_small).fit()
    decayed, constant = losses(tmp_path / "decay"), losses(tmp_path / "constant")
    half = len(decayed) // 2
    assert decayed[:half] == constant[:half]  # the same steps until the ramp starts...
    assert decayed != constant  # ...then smaller ones


def test_a_run_stopped_on_the_ramp_resumes_onto_the_same_schedule(tmp_path, mnist_small):
    config = tiny_config(epochs=2, lr_decay_start=0.25)
    Trainer(config, tmp_path / "full", dataset=mnist_small).fit()
    trainer = Trainer(config, tmp_path / "stopped", dataset=mnist_small)
    stop_at = len(trainer.batches) + 1  # past a quarter of the steps: on the ramp, mid-epoch
    trainer.add_step_hook(lambda t: t.request_stop() if t.state.step == stop_at else None)
    assert trainer.fit().interrupted
    Trainer(config, tmp_path / "stopped", resume=True, dataset=mnist_small).fit()
    # (the logs differ: the stop flushes a record mid-interval) the weights are the uninterrupted run's
    assert_same_weights(final_weights(tmp_path / "stopped"), final_weights(tmp_path / "full"))


def test_the_start_must_be_a_share_of_the_epochs():
    with pytest.raises(ConfigError, match="lr_decay_start"):
        tiny_config(lr_decay_start=1.5)

"""The training loop: reproducibility, exact resume, stop-and-save, the NaN guard, real improvement."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

import genlab
from genlab.errors import ConfigError, TrainingError
from genlab.runs import resolve_config
from genlab.training.checkpoint import latest_checkpoint, load_weights
from genlab.training.trainer import Trainer, resolve_device
from tests.conftest import TINY_MODEL_ARGS


def tiny_config(name="gan", **settings):
    values = {
        "model": name,
        "epochs": 2,
        "batch_size": 32,
        "log_every": 2,
        "grid_size": 4,
        "model_args": dict(TINY_MODEL_ARGS[name]),
    }
    values.update(settings)
    return resolve_config(overrides=values)


def records(run_dir):
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def losses(run_dir):
    return [{k: v for k, v in r.items() if k != "images_per_sec"} for r in records(run_dir)]


def final_weights(run_dir):
    return load_weights(latest_checkpoint(run_dir) / "model.safetensors")


def assert_same_weights(a, b):
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


def test_same_seed_same_losses(tmp_path, mnist_small):
    for name in ("one", "two"):
        Trainer(tiny_config(seed=5), tmp_path / name, dataset=mnist_small).fit()
    assert losses(tmp_path / "one") == losses(tmp_path / "two")
    Trainer(tiny_config(seed=6), tmp_path / "three", dataset=mnist_small).fit()
    assert losses(tmp_path / "three") != losses(tmp_path / "one")


def test_grid_every_skips_grids_but_not_the_last_and_trains_the_same(tmp_path, mnist_small):
    Trainer(tiny_config(epochs=3, seed=2, grid_every=1), tmp_path / "every", dataset=mnist_small).fit()
    Trainer(tiny_config(epochs=3, seed=2, grid_every=2), tmp_path / "sparse", dataset=mnist_small).fit()
    every = sorted(p.name for p in (tmp_path / "every" / "samples").iterdir())
    sparse = sorted(p.name for p in (tmp_path / "sparse" / "samples").iterdir())
    assert every == ["epoch-0001.png", "epoch-0002.png", "epoch-0003.png"]
    assert sparse == ["epoch-0002.png", "epoch-0003.png"]  # every 2nd epoch, and the last
    last = [np.asarray(Image.open(tmp_path / run / "samples.png")) for run in ("every", "sparse")]
    assert np.array_equal(*last)  # the same pixels (the provenance text differs: it names the settings)
    assert_same_weights(final_weights(tmp_path / "every"), final_weights(tmp_path / "sparse"))


@pytest.mark.parametrize("name", ["gan", "vae", "ae"])
def test_resume_from_epoch_checkpoint_matches_uninterrupted_run(tmp_path, mnist_small, name):
    Trainer(tiny_config(name, epochs=3, ema_decay=0.9), tmp_path / "full", dataset=mnist_small).fit()
    Trainer(tiny_config(name, epochs=1, ema_decay=0.9), tmp_path / "split", dataset=mnist_small).fit()
    config = tiny_config(name, epochs=3, ema_decay=0.9)
    Trainer(config, tmp_path / "split", resume=True, dataset=mnist_small).fit()
    assert losses(tmp_path / "split") == losses(tmp_path / "full")
    assert_same_weights(final_weights(tmp_path / "split"), final_weights(tmp_path / "full"))
    ema = latest_checkpoint(tmp_path / "full") / "ema.safetensors"
    assert_same_weights(
        load_weights(ema), load_weights(latest_checkpoint(tmp_path / "split") / "ema.safetensors")
    )


def test_stop_mid_epoch_saves_and_resume_matches(tmp_path, mnist_small):
    Trainer(tiny_config(epochs=2), tmp_path / "full", dataset=mnist_small).fit()
    trainer = Trainer(tiny_config(epochs=2), tmp_path / "stopped", dataset=mnist_small)
    trainer.add_step_hook(lambda t: t.request_stop() if t.state.step == 5 else None)
    result = trainer.fit()
    assert result.interrupted and result.steps == 5
    state = json.loads((latest_checkpoint(tmp_path / "stopped") / "state.json").read_text())
    assert (state["step"], state["epoch"], state["batch_in_epoch"]) == (5, 0, 5)
    Trainer(tiny_config(epochs=2), tmp_path / "stopped", resume=True, dataset=mnist_small).fit()
    assert_same_weights(final_weights(tmp_path / "stopped"), final_weights(tmp_path / "full"))


def test_nan_loss_stops_with_the_step_and_keeps_the_last_good_checkpoint(tmp_path, mnist_small):
    trainer = Trainer(tiny_config("vae", epochs=3, log_every=1), tmp_path / "run", dataset=mnist_small)
    good = None

    def poison(t):
        nonlocal good
        if t.state.step == 10:  # after the first epoch (8 steps) was checkpointed
            good = latest_checkpoint(t.run_dir)
            with torch.no_grad():
                next(t.model.parameters()).fill_(float("nan"))

    trainer.add_step_hook(poison)
    with pytest.raises(TrainingError, match=r"at step 11 .*last good checkpoint is kept"):
        trainer.fit()
    assert latest_checkpoint(tmp_path / "run") == good
    weights = load_weights(good / "model.safetensors")
    assert all(torch.isfinite(w).all() for w in weights.values())


def test_refuses_to_overwrite_an_existing_run(tmp_path, mnist_small):
    Trainer(tiny_config(epochs=1), tmp_path / "run", dataset=mnist_small).fit()
    with pytest.raises(ConfigError, match="already holds a run"):
        Trainer(tiny_config(epochs=1), tmp_path / "run", dataset=mnist_small)


def test_time_limit_stops_cleanly_with_a_checkpoint(tmp_path, mnist_small):
    config = tiny_config(epochs=1000, time_limit_minutes=0.02)
    result = Trainer(config, tmp_path / "run", dataset=mnist_small).fit()
    assert not result.interrupted and result.epochs_done < 1000
    assert genlab.load(tmp_path / "run").state["step"] == result.steps


def test_checkpoints_are_pruned_but_the_newest_kept(tmp_path, mnist_small):
    Trainer(tiny_config(epochs=4, keep_checkpoints=2), tmp_path / "run", dataset=mnist_small).fit()
    kept = sorted(p.name for p in (tmp_path / "run" / "checkpoints").glob("step-*"))
    assert kept == ["step-0000024", "step-0000032"]
    assert not list((tmp_path / "run" / "checkpoints").glob(".tmp-*"))


def test_device_resolution():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type in ("cpu", "cuda", "mps")
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="CUDA is not available"):
            resolve_device("cuda")


@pytest.mark.parametrize("name", ["vae", "ae"])
def test_short_real_training_measurably_improves(tmp_path, name):
    """Three epochs on the 4,500 embedded digits: held-out reconstruction error must drop clearly, well
    below the 0.068 of always answering the mean digit."""
    from genlab.data import load_dataset

    test_images = load_dataset("mnist-5k", "test").images.float() / 255
    config = resolve_config(overrides={"model": name, "epochs": 3, "log_every": 20, "grid_size": 4})
    trainer = Trainer(config, tmp_path / "run", dataset=load_dataset("mnist-5k", "train"))
    with torch.no_grad():
        before = (trainer.model.reconstruct(test_images) - test_images).pow(2).mean().item()
    trainer.fit()
    after = (genlab.load(tmp_path / "run").reconstruct(test_images) - test_images).pow(2).mean().item()
    assert after < 0.5 * before, (before, after)
    assert after < 0.055


def test_short_gan_training_learns_digit_statistics(tmp_path):
    """Two epochs of the default GAN: samples move from noise towards the digits' pixel statistics."""
    from genlab.data import load_dataset

    train = load_dataset("mnist-5k", "train")
    real_mean = (train.images.float() / 255).mean(dim=0)  # (1, 28, 28) mean digit
    config = resolve_config(overrides={"model": "gan", "epochs": 2, "log_every": 20, "grid_size": 4})
    trainer = Trainer(config, tmp_path / "run", dataset=train)
    generator = torch.Generator().manual_seed(0)
    before = (trainer.sampling_model.sample(500, generator=generator).mean(dim=0) - real_mean).abs().mean()
    trainer.fit()
    after = (genlab.load(tmp_path / "run").sample(500).mean(dim=0) - real_mean).abs().mean()
    assert after < 0.5 * before, (before.item(), after.item())


def test_ema_warms_up_then_averages():
    from genlab.training.ema import EMA

    model = torch.nn.Linear(1, 1, bias=False)
    with torch.no_grad():
        model.weight.fill_(0.0)
    ema = EMA(model, decay=0.99)
    assert ema.decay_at(0) == pytest.approx(0.1) and ema.decay_at(10_000) == 0.99
    with torch.no_grad():
        model.weight.fill_(1.0)
    ema.update(model, step=0)  # 0.1 * 0 + 0.9 * 1
    assert ema.model.weight.item() == pytest.approx(0.9)
    ema.update(model, step=10_000)  # 0.99 * 0.9 + 0.01 * 1
    assert ema.model.weight.item() == pytest.approx(0.901)


def test_a_learned_sampler_is_refitted_on_a_schedule_of_epochs_and_at_the_end(
    tmp_path, mnist_small, monkeypatch
):
    from genlab.models.ae import Autoencoder

    fitted_after = []
    original = Autoencoder.fit_sampler

    def spy(self, images, labels=None):
        fitted_after.append(trainer.state.epoch)
        return original(self, images, labels)

    monkeypatch.setattr(Autoencoder, "fit_sampler", spy)
    small = type(mnist_small)(
        "tiny", mnist_small.images[:32], mnist_small.labels[:32], mnist_small.class_names
    )
    trainer = Trainer(tiny_config("ae", epochs=13), tmp_path / "run", dataset=small)
    trainer.fit()
    assert fitted_after == [1, 2, 4, 8, 10, 13]  # powers of two, every 10th, and the last epoch

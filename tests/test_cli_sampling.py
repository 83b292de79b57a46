"""`--sampling key=value` on `genlab sample` and `genlab eval` (and Run.with_sampling): sampling-only
settings of a trained run, such as a GAN's refinement steps, changed without touching its weights."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import genlab
from genlab.cli import main
from genlab.errors import ConfigError
from tests.test_cli import error_of, train


@pytest.fixture(scope="module")
def refining_runs(tmp_path_factory, mnist_small_npz):
    """A tiny GAN that refines its samples (3 Langevin steps with a large step, so they visibly move)
    and a tiny VAE, one epoch each."""
    root = tmp_path_factory.mktemp("sampling-runs")
    gan_sets = ["--set", "model.refine_steps=3", "--set", "model.refine_step_size=0.5"]
    assert train(root, mnist_small_npz, "gan", *gan_sets) == 0
    assert train(root, mnist_small_npz, "vae") == 0
    return root


def npz_images(path):
    with np.load(path) as data:
        return data["images"], json.loads(str(data["provenance"]))


def test_sample_with_sampling_overrides(refining_runs, tmp_path):
    gan = str(refining_runs / "gan")
    assert main(["sample", gan, "--n", "6", "--out", str(tmp_path / "refined.npz")]) == 0
    argv = ["sample", gan, "--n", "6", "--out", str(tmp_path / "same.npz"), "--sampling", "refine_steps=3"]
    assert main(argv) == 0
    argv = ["sample", gan, "--n", "6", "--out", str(tmp_path / "plain.npz"), "--sampling", "refine_steps=0"]
    assert main(argv) == 0
    refined, record = npz_images(tmp_path / "refined.npz")
    same, _ = npz_images(tmp_path / "same.npz")
    plain, plain_record = npz_images(tmp_path / "plain.npz")
    assert np.array_equal(refined, same)  # the saved setting, restated: the same images
    assert not np.array_equal(refined, plain)  # the codes were refined; now they are not
    assert "sampling" not in record and plain_record["sampling"] == {"refine_steps": 0}
    # the API does the same: plain G(z) of the first draw of seed 0
    run = genlab.load(gan).with_sampling(refine_steps=0)
    assert run.model.config.refine_steps == 0 and run.sampling_overrides == {"refine_steps": 0}
    expected = (run.sample(6, seed=0) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
    assert np.abs(expected.astype(int) - plain.astype(int)).max() <= 1


def test_rejection_sampling_from_the_cli(refining_runs, tmp_path):
    gan = str(refining_runs / "gan")
    base = ["sample", gan, "--n", "64", "--sampling", "refine_steps=0"]
    assert main([*base, "--out", str(tmp_path / "plain.npz")]) == 0
    for name in ("kept", "kept-again"):
        argv = [*base, "--sampling", "rejection=true", "--out", str(tmp_path / f"{name}.npz")]
        assert main(argv) == 0
    plain, _ = npz_images(tmp_path / "plain.npz")
    kept, record = npz_images(tmp_path / "kept.npz")
    assert np.array_equal(kept, npz_images(tmp_path / "kept-again.npz")[0])  # seeded like any sampling
    assert not np.array_equal(kept, plain)  # some of the first draws were rejected and drawn again
    assert record["sampling"] == {"refine_steps": 0, "rejection": True}


def test_eval_records_its_sampling_settings(refining_runs, tmp_path):
    gan = str(refining_runs / "gan")
    out = tmp_path / "plain-eval"
    argv = ["eval", gan, "--n", "50", "--metrics", "fid", "--device", "cpu", "--out", str(out)]
    assert main([*argv, "--sampling", "refine_steps=0", "--sampling", "refine_d_weight=2"]) == 0
    assert json.loads((out / "eval.json").read_text())["sampling"] == {
        "refine_steps": 0,
        "refine_d_weight": 2.0,
    }


def test_vae_temperature_is_a_sampling_setting(refining_runs, tmp_path):
    vae = str(refining_runs / "vae")
    for name, value in (("hot", "1.0"), ("cold", "0.2")):
        argv = [
            "sample",
            vae,
            "--n",
            "4",
            "--out",
            str(tmp_path / f"{name}.npz"),
            "--sampling",
            f"temperature={value}",
        ]
        assert main(argv) == 0
    assert not np.array_equal(npz_images(tmp_path / "hot.npz")[0], npz_images(tmp_path / "cold.npz")[0])


def test_models_lists_the_sampling_settings(capsys):
    assert main(["models", "gan"]) == 0
    assert (
        "--sampling NAME=VALUE`): refine_steps, refine_step_size, refine_d_weight, rejection"
        in capsys.readouterr().out
    )
    assert main(["models", "ae"]) == 0
    assert "sampling-only" not in capsys.readouterr().out  # the autoencoder has none


def test_bad_sampling_settings_are_one_line_and_exit_2(refining_runs, tmp_path, capsys):
    gan, vae = str(refining_runs / "gan"), str(refining_runs / "vae")
    out = ["--out", str(tmp_path / "x.png")]
    message = error_of(capsys, ["sample", gan, *out, "--sampling", "lr_d=1"])
    assert "not a sampling setting of model 'gan'" in message and "refine_steps" in message  # names the valid
    assert "refine_steps" in error_of(capsys, ["sample", gan, *out, "--sampling", "refine_steps=-1"])
    assert "bad value" in error_of(capsys, ["sample", gan, *out, "--sampling", "refine_steps=many"])
    assert "rejection" in error_of(capsys, ["sample", gan, *out, "--sampling", "rejection=maybe"])
    assert "key=value" in error_of(capsys, ["sample", gan, *out, "--sampling", "refine_steps"])
    message = error_of(capsys, ["eval", vae, "--n", "50", "--sampling", "refine_steps=0"])
    assert "not a sampling setting of model 'vae'" in message and "temperature" in message
    assert not (tmp_path / "x.png").exists()
    with pytest.raises(ConfigError, match="not a sampling setting"):
        genlab.load(gan).with_sampling(latent_dim=4)

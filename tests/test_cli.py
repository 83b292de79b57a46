"""The CLI end to end in temp dirs, its errors included: one line on stderr, exit code 2, no traceback."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from genlab.cli import main
from tests.conftest import TINY_MODEL_ARGS


def tiny_sets(name: str) -> list[str]:
    sets = ["--set", "grid_size=4", "--set", "log_every=4"]
    for key, value in TINY_MODEL_ARGS[name].items():
        value = list(value) if isinstance(value, tuple) else value
        sets += ["--set", f"model.{key}={value if isinstance(value, str) else json.dumps(value)}"]
    return sets


def train(tmp_path, npz, name: str, *extra: str) -> int:
    argv = [
        "train",
        "--model",
        name,
        "--data",
        str(npz),
        "--epochs",
        "1",
        "--batch-size",
        "32",
        "--out",
        str(tmp_path / name),
        *tiny_sets(name),
        *extra,
    ]
    return main(argv)


@pytest.fixture(scope="module")
def runs(tmp_path_factory, mnist_small_npz):
    root = tmp_path_factory.mktemp("runs")
    for name in ("gan", "vae", "ae"):
        assert train(root, mnist_small_npz, name) == 0
    return root


def test_train_writes_the_promised_files(runs):
    for name in ("gan", "vae", "ae"):
        for produced in (
            "samples.png",
            "loss_curves.png",
            "metrics.jsonl",
            "config.json",
            "checkpoints/LATEST",
        ):
            assert (runs / name / produced).is_file()


def test_sample_png_and_npz(runs, tmp_path, capsys):
    assert main(["sample", str(runs / "gan"), "--n", "6", "--out", str(tmp_path / "g.png")]) == 0
    assert Image.open(tmp_path / "g.png").size[0] > 28
    assert (
        main(["sample", str(runs / "vae"), "--n", "5", "--out", str(tmp_path / "v.npz"), "--seed", "3"]) == 0
    )
    images = np.load(tmp_path / "v.npz")["images"]
    assert images.shape == (5, 28, 28, 1) and images.dtype == np.uint8
    assert (
        main(["sample", str(runs / "vae"), "--n", "5", "--out", str(tmp_path / "w.npz"), "--seed", "3"]) == 0
    )
    assert np.array_equal(np.load(tmp_path / "w.npz")["images"], images)  # same seed, same images


def test_reconstruct_interpolate_info_models(runs, tmp_path, mnist_small_npz, capsys):
    out = tmp_path / "rec.png"
    assert (
        main(["reconstruct", str(runs / "ae"), "--data", str(mnist_small_npz), "--n", "8", "--out", str(out)])
        == 0
    )
    assert "reconstruction MSE" in capsys.readouterr().out
    assert Image.open(out).size[1] > Image.open(out).size[0] / 8  # two rows
    for name in ("gan", "vae", "ae"):
        assert (
            main(["interpolate", str(runs / name), "--out", str(tmp_path / f"{name}.png"), "--steps", "5"])
            == 0
        )
    assert (
        main(
            [
                "interpolate",
                str(runs / "vae"),
                "--data",
                str(mnist_small_npz),
                "--out",
                str(tmp_path / "walk.png"),
            ]
        )
        == 0
    )
    capsys.readouterr()
    assert main(["info", str(runs / "vae"), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["model"] == "vae" and info["step"] == 7  # 230 training images (10% held out) // 32
    assert main(["models"]) == 0
    assert "article" in capsys.readouterr().out


def test_models_lists_every_setting_with_its_why(capsys):
    from genlab.registry import get_model_class

    assert main(["models", "gan"]) == 0
    lines = capsys.readouterr().out.splitlines()
    for setting, why in get_model_class("gan").setting_help.items():
        assert any(line.split()[:1] == [setting] and why in line for line in lines), setting
    assert main(["models", "nope"]) == 2
    assert "unknown model 'nope'" in capsys.readouterr().err


def test_resume_extends_a_run(runs, tmp_path, mnist_small_npz):
    import shutil

    shutil.copytree(runs / "vae", tmp_path / "vae")
    assert main(["train", "--resume", "--out", str(tmp_path / "vae"), "--epochs", "2"]) == 0
    info = json.loads((tmp_path / "vae" / "checkpoints" / "LATEST").read_text())
    assert info["checkpoint"] == "step-0000014"


def error_of(capsys, argv) -> str:
    code = main(argv)
    captured = capsys.readouterr()
    assert code == 2, captured
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1, captured.err
    assert "Traceback" not in captured.err
    return lines[0]


def test_bad_input_is_one_line_and_exit_2(runs, tmp_path, capsys, mnist_small_npz):
    assert "unknown model 'wgan'" in error_of(capsys, ["train", "--model", "wgan"])
    assert "unknown dataset" in error_of(
        capsys, ["train", "--data", "imagenet", "--out", str(tmp_path / "x")]
    )
    assert "positive integer" in error_of(capsys, ["train", "--epochs", "zero"])
    assert "unknown preset" in error_of(capsys, ["train", "--model", "vae", "--preset", "huge"])
    assert "unknown vae setting" in error_of(capsys, ["train", "--model", "vae", "--set", "model.betta=2"])
    assert "bad value" in error_of(capsys, ["train", "--model", "vae", "--set", "model.beta=lots"])
    assert "key=value" in error_of(capsys, ["train", "--set", "epochs"])
    assert "config file not found" in error_of(capsys, ["train", "--config", str(tmp_path / "none.yaml")])
    assert "not found" in error_of(capsys, ["sample", str(tmp_path / "missing")])
    (tmp_path / "foreign").mkdir()
    assert "not a genlab run" in error_of(capsys, ["info", str(tmp_path / "foreign")])
    assert ".png or .npz" in error_of(capsys, ["sample", str(runs / "gan"), "--out", str(tmp_path / "x.jpg")])
    assert "already holds a run" in error_of(capsys, ["train", "--model", "gan", "--out", str(runs / "gan")])
    assert "cannot reconstruct" in error_of(
        capsys, ["reconstruct", str(runs / "gan"), "--data", str(mnist_small_npz)]
    )
    assert "invalid choice" in error_of(capsys, ["frobnicate"])


def test_wrong_shaped_and_corrupt_data(runs, tmp_path, capsys):
    np.savez(tmp_path / "small.npz", images=np.zeros((20, 14, 14), dtype=np.uint8))
    assert "(1, 14, 14)" in error_of(
        capsys, ["reconstruct", str(runs / "vae"), "--data", str(tmp_path / "small.npz")]
    )
    np.savez(tmp_path / "bad.npz", pictures=np.zeros((20, 14, 14), dtype=np.uint8))
    error_of(capsys, ["train", "--data", str(tmp_path / "bad.npz"), "--out", str(tmp_path / "y")])
    (tmp_path / "junk.npz").write_bytes(b"not a zip file")
    error_of(capsys, ["train", "--data", str(tmp_path / "junk.npz"), "--out", str(tmp_path / "z")])


def test_corrupt_checkpoint(runs, tmp_path, capsys):
    import shutil

    shutil.copytree(runs / "ae", tmp_path / "ae")
    latest = json.loads((tmp_path / "ae" / "checkpoints" / "LATEST").read_text())["checkpoint"]
    (tmp_path / "ae" / "checkpoints" / latest / "model.safetensors").write_bytes(b"\x01\x02")
    assert "corrupt weights file" in error_of(capsys, ["sample", str(tmp_path / "ae")])


def test_module_entry_point_in_a_subprocess(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "genlab", "sample", str(tmp_path / "nope")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2
    assert result.stderr.startswith("genlab: error:") and "Traceback" not in result.stderr
    result = subprocess.run(
        [sys.executable, "-m", "genlab", "--help"], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0 and "train" in result.stdout


# --- eval, compare, train-classifier ---------------------------------------------------------------------
@pytest.fixture(scope="module")
def eval_runs(tmp_path_factory):
    """A VAE and a GAN (the GAN with --eval-every 1) on 250 digits of all ten classes."""
    from genlab.data import load_dataset

    root = tmp_path_factory.mktemp("eval-runs")
    full = load_dataset("mnist-5k", "train")  # sorted by class: every 18th digit covers all ten
    npz = root / "digits10.npz"
    np.savez(npz, images=full.images[::18, 0].numpy(), labels=full.labels[::18].numpy())
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny nets: one thread is as fast, and two crawl on a busy machine
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("GENLAB_DATA", str(root / "data"))
        patch.setenv("GENLAB_OFFLINE", "1")
        assert train(root, npz, "vae") == 0
        assert train(root, npz, "gan", "--eval-every", "1", "--set", "eval_n=50") == 0
    torch.set_num_threads(threads)
    return root, npz


def test_eval_writes_report_and_compare_tables_two_runs(eval_runs, tmp_path, capsys):
    root, npz = eval_runs
    torch.set_num_threads(1)  # restored by conftest's _fixed_threads
    records = [json.loads(line) for line in (root / "gan" / "metrics.jsonl").read_text().splitlines()]
    assert any("eval_fid" in record for record in records)  # --eval-every reached metrics.jsonl
    vae, gan = str(root / "vae"), str(root / "gan")
    assert main(["eval", vae, "--n", "60", "--nll-k", "4", "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert "FID" in out and "NLL bits/dim" in out and "domain-classifier" in out
    for name in ("eval.json", "eval.md", "eval_samples.png", "eval_nearest.png", "eval_classes.png"):
        assert (root / "vae" / name).is_file(), name
    report = json.loads((root / "vae" / "eval.json").read_text())
    assert report["extractor"]["sha256"] in (root / "vae" / "eval.md").read_text()
    assert main(["eval", gan, "--n", "60", "--metrics", "fid,kid", "prdc", "--out", str(tmp_path / "g")]) == 0
    assert set(json.loads((tmp_path / "g" / "eval.json").read_text())["metrics"]) >= {
        "fid",
        "kid_mean",
        "recall",
    }
    capsys.readouterr()
    assert main(["compare", vae, str(tmp_path / "g"), "--out", str(tmp_path / "cmp.png")]) == 0
    captured = capsys.readouterr()
    assert "[1] vae" in captured.out and "[2] gan" in captured.out and "FID" in captured.out
    assert Image.open(tmp_path / "cmp.png").size[0] > 100
    assert main(["train-classifier", "--data", str(npz)]) == 0
    assert "test accuracy" in capsys.readouterr().out


def test_eval_errors_are_one_line(eval_runs, tmp_path, capsys, offline_data_dir):
    root, _ = eval_runs
    vae = str(root / "vae")
    assert "not found" in error_of(capsys, ["eval", str(tmp_path / "missing")])
    inception = error_of(capsys, ["eval", vae, "--extractor", "inception", "--n", "20"])
    assert str(offline_data_dir / "weights" / "pt_inception-2015-12-05-6726825d.pth") in inception
    assert "unknown metric 'fidd'" in error_of(capsys, ["eval", vae, "--metrics", "fidd"])
    assert "positive integer" in error_of(capsys, ["eval", vae, "--n", "0"])
    assert "unknown extractor" in error_of(capsys, ["eval", vae, "--extractor", "clip"])
    assert "cannot compute likelihood" in error_of(
        capsys, ["eval", str(root / "gan"), "--metrics", "likelihood"]
    )
    (tmp_path / "bare").mkdir()
    assert "genlab eval" in error_of(capsys, ["compare", str(tmp_path / "bare")])
    assert "integer >= 0" in error_of(capsys, ["train", "--eval-every", "-1"])


def test_eval_help_names_every_metric_and_extractor(capsys):
    from genlab.evaluation import EXTRACTORS, METRICS

    with pytest.raises(SystemExit):
        main(["eval", "--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    assert all(name in help_text for name in METRICS + EXTRACTORS)

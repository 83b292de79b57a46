"""Conditional sampling on the command line: `sample --label/--per-class`, `interpolate --label`.

A small fake conditional model (never registered globally: `genlab.runs.load` is monkeypatched to return
it for one run dir) paints its label into pixel (0, 0), so every test can read back which class each
sample was asked for; the rest of the image follows the latent code, so walks can be checked too.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import Tensor, nn

import genlab.runs
from genlab.cli import main
from genlab.config import TrainConfig
from genlab.models.base import GenerativeModel, ModelConfig
from tests.test_cli import error_of, train

CLASSES = ["zero", "one", "two", "seven"]
SIDE = 4


class FakeConditional(GenerativeModel):
    name = "fake-conditional"

    def __init__(self) -> None:
        super().__init__(ModelConfig(image_shape=(1, SIDE, SIDE), num_classes=len(CLASSES), latent_dim=2))
        self.anchor = nn.Parameter(torch.zeros(1))  # gives the model a device

    @property
    def is_conditional(self) -> bool:
        return True

    def generate(self, z: Tensor, labels: Tensor | None = None) -> Tensor:
        if labels is None:
            raise ValueError("conditional: labels required")
        images = torch.sigmoid(z[:, :1, None, None]).expand(len(z), 1, SIDE, SIDE).clone()
        images[:, 0, 0, 0] = labels.float() / (len(CLASSES) - 1)
        return images

    def sample(
        self, n: int, labels: Tensor | None = None, generator: torch.Generator | None = None
    ) -> Tensor:
        z = self.sample_latent(n, generator)
        if labels is None:
            labels = torch.randint(len(CLASSES), (n,), generator=generator)
        return self.generate(z, labels)


def labels_of(images: np.ndarray) -> list[int]:
    """Decode the fake model's painted labels from uint8 (N, H, W, C) images."""
    return np.rint(images[:, 0, 0, 0] / 255 * (len(CLASSES) - 1)).astype(int).tolist()


@pytest.fixture
def conditional_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    run_dir = tmp_path / "cgan"
    run_dir.mkdir()
    (run_dir / "config.json").write_text(json.dumps({"data": {"class_names": CLASSES}}))
    real_load = genlab.runs.load
    fake = genlab.runs.Run(run_dir, TrainConfig(), FakeConditional().eval(), run_dir, {})

    def load(path, device: str = "cpu"):
        return fake if Path(path) == run_dir else real_load(path, device=device)

    monkeypatch.setattr(genlab.runs, "load", load)
    return run_dir


@pytest.fixture(scope="module")
def gan_run(tmp_path_factory, mnist_small_npz) -> Path:
    root = tmp_path_factory.mktemp("uncond")
    assert train(root, mnist_small_npz, "gan") == 0
    return root / "gan"


@pytest.mark.parametrize(("label", "index"), [("2", 2), ("seven", 3), ("SEVEN", 3), ("3", 3)])
def test_sample_label_by_index_or_name(conditional_run: Path, tmp_path: Path, capsys, label, index) -> None:
    out = tmp_path / "s.npz"
    assert main(["sample", str(conditional_run), "--label", label, "--n", "5", "--out", str(out)]) == 0
    saved = np.load(out)
    assert labels_of(saved["images"]) == [index] * 5 and saved["labels"].tolist() == [index] * 5
    assert saved["class_names"].tolist() == CLASSES
    assert f"wrote 5 samples of class {index} ({CLASSES[index]})" in capsys.readouterr().out


def test_per_class_grid_and_npz(conditional_run: Path, tmp_path: Path) -> None:
    out = tmp_path / "grid.npz"
    assert main(["sample", str(conditional_run), "--per-class", "3", "--out", str(out)]) == 0
    saved = np.load(out)
    expected = [k for k in range(len(CLASSES)) for _ in range(3)]  # one row per class
    assert labels_of(saved["images"]) == expected and saved["labels"].tolist() == expected
    png = tmp_path / "grid.png"
    assert main(["sample", str(conditional_run), "--per-class", "3", "--out", str(png)]) == 0
    width, height = Image.open(png).size
    assert height > width  # 3 columns, 4 rows of square cells


def test_unlabelled_sampling_of_a_conditional_model_still_works(
    conditional_run: Path, tmp_path: Path
) -> None:
    out = tmp_path / "any.npz"
    assert main(["sample", str(conditional_run), "--n", "40", "--out", str(out)]) == 0
    assert set(labels_of(np.load(out)["images"])) == set(range(len(CLASSES)))  # uniform over classes


def test_interpolate_within_a_class(conditional_run: Path, tmp_path: Path, monkeypatch, capsys) -> None:
    from genlab import viz

    grids: list[tuple[Tensor, int]] = []
    monkeypatch.setattr(
        viz, "save_grid", lambda images, path, nrow=None, provenance=None: grids.append((images, nrow))
    )
    argv = [
        "interpolate",
        str(conditional_run),
        "--steps",
        "5",
        "--rows",
        "3",
        "--out",
        str(tmp_path / "w.png"),
    ]
    assert main([*argv, "--label", "seven"]) == 0
    assert "within class 3 (seven)" in capsys.readouterr().out
    images, nrow = grids[-1]
    assert nrow == 5 and len(images) == 15
    assert images[:, 0, 0, 0].tolist() == [1.0] * 15  # class 3 of 4 is painted as 3/3
    body = images[:, 0, 1, 1].reshape(3, 5)
    assert (body[:, 0] != body[:, -1]).all()  # each row walks between two different codes
    assert main(argv) == 0  # without --label: row r shows class r
    rows = (grids[-1][0][:, 0, 0, 0] * 3).round().reshape(3, 5)
    assert rows.tolist() == [[0.0] * 5, [1.0] * 5, [2.0] * 5]


def test_conditional_errors_are_one_line(
    conditional_run: Path, gan_run: Path, tmp_path: Path, capsys
) -> None:
    cond, out = str(conditional_run), str(tmp_path / "x.png")
    assert "out of range: the model has 4 classes, 0..3" in error_of(capsys, ["sample", cond, "--label", "4"])
    assert "out of range" in error_of(capsys, ["sample", cond, "--label", "-1", "--out", out])
    message = error_of(capsys, ["sample", cond, "--label", "eight", "--out", out])
    assert "'eight' is not a class" in message and "zero, one, two, seven" in message
    assert "drop --label" in error_of(
        capsys, ["sample", cond, "--label", "1", "--per-class", "2", "--out", out]
    )
    assert "drop --label and --n" in error_of(capsys, ["sample", cond, "--n", "3", "--per-class", "2"])
    assert "--data" in error_of(capsys, ["interpolate", cond, "--data", "mnist-5k", "--out", out])
    gan = str(gan_run)
    for argv in (
        ["sample", gan, "--label", "3", "--out", out],
        ["sample", gan, "--per-class", "2", "--out", out],
        ["interpolate", gan, "--label", "3", "--out", out],
    ):
        assert "needs a conditional model" in error_of(capsys, argv)
    assert not (tmp_path / "x.png").exists()


# --- real tiny conditional runs (a conditional MLP GAN and the conv CVAE preset) ------------------------
@pytest.fixture(scope="module")
def real_runs(tmp_path_factory, mnist_small_npz) -> Path:
    root = tmp_path_factory.mktemp("conditional")
    assert train(root, mnist_small_npz, "gan", "--set", "model.conditional=true") == 0
    assert train(root, mnist_small_npz, "vae", "--preset", "conditional") == 0
    return root


@pytest.mark.slow
def test_real_conditional_sampling(real_runs: Path, tmp_path: Path) -> None:
    for name in ("gan", "vae"):
        run = str(real_runs / name)
        for label in ("3", "4"):
            out = tmp_path / f"{name}-{label}.npz"
            assert main(["sample", run, "--label", label, "--n", "4", "--out", str(out)]) == 0
            assert np.load(out)["labels"].tolist() == [int(label)] * 4
            assert np.load(out)["class_names"].tolist() == [str(k) for k in range(10)]
        three, four = (np.load(tmp_path / f"{name}-{k}.npz")["images"] for k in "34")
        assert three.shape == (4, 28, 28, 1) and not np.array_equal(
            three, four
        )  # same codes, the class matters
        grid = tmp_path / f"{name}-grid.npz"
        assert main(["sample", run, "--per-class", "2", "--out", str(grid)]) == 0
        assert np.load(grid)["labels"].tolist() == [k for k in range(10) for _ in range(2)]
        walk = ["interpolate", run, "--label", "5", "--steps", "4", "--rows", "2"]
        assert main([*walk, "--out", str(tmp_path / f"{name}-walk.png")]) == 0
    assert (
        main(
            [
                "sample",
                str(real_runs / "gan"),
                "--label",
                "3",
                "--n",
                "4",
                "--out",
                str(tmp_path / "again.npz"),
            ]
        )
        == 0
    )
    assert np.array_equal(
        np.load(tmp_path / "again.npz")["images"], np.load(tmp_path / "gan-3.npz")["images"]
    )


@pytest.mark.slow
def test_real_cvae_reconstructs_and_walks_given_the_class(
    real_runs: Path, tmp_path, mnist_small_npz, capsys
) -> None:
    run, data = str(real_runs / "vae"), str(mnist_small_npz)
    assert main(["reconstruct", run, "--data", data, "--n", "4", "--out", str(tmp_path / "r.png")]) == 0
    assert "reconstruction MSE" in capsys.readouterr().out
    for extra in ([], ["--label", "2"]):
        argv = [
            "interpolate",
            run,
            "--data",
            data,
            "--steps",
            "3",
            "--rows",
            "2",
            "--out",
            str(tmp_path / "w.png"),
        ]
        assert main([*argv, *extra]) == 0
    assert "within class 2" in capsys.readouterr().out

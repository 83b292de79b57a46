"""`genlab denoise | compress | decompress | synth` end to end on tiny runs, and their one-line errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from genlab.cli import main
from tests.test_cli import error_of
from tests.uses.test_synth import make_conditional


@pytest.fixture(scope="module")
def inputs(tmp_path_factory, mnist_small):
    """The same 12 digits as one PNG, a folder with a class subfolder, and an .npz with labels."""
    root = tmp_path_factory.mktemp("inputs")
    digits = mnist_small.images[:12, 0].numpy()
    Image.fromarray(digits[0]).save(root / "one.png")
    for i, digit in enumerate(digits):
        (root / "folder" / f"c{i % 2}").mkdir(parents=True, exist_ok=True)
        Image.fromarray(digit).save(root / "folder" / f"c{i % 2}" / f"d{i}.png")
    np.savez(root / "digits.npz", images=digits, labels=mnist_small.labels[:12].numpy())
    return root


def test_denoise_keeps_the_input_form(use_runs, inputs, tmp_path, capsys):
    ae = str(use_runs / "ae")
    assert main(["denoise", ae, "--in", str(inputs / "one.png"), "--out", str(tmp_path / "one.png")]) == 0
    assert Image.open(tmp_path / "one.png").size == (28, 28)
    argv = ["denoise", str(use_runs / "vae"), "--in", str(inputs / "folder"), "--out", str(tmp_path / "dn")]
    assert main([*argv, "--noise", "mask:0.5", "--noisy-out", str(tmp_path / "noisy")]) == 0
    assert sorted(
        p.relative_to(tmp_path / "dn").as_posix() for p in (tmp_path / "dn").rglob("*.png")
    ) == sorted(p.relative_to(inputs / "folder").as_posix() for p in (inputs / "folder").rglob("*.png"))
    assert len(list((tmp_path / "noisy").rglob("*.png"))) == 12
    out = tmp_path / "dn.npz"
    assert (
        main(
            ["denoise", ae, "--in", str(inputs / "digits.npz"), "--out", str(out), "--noise", "gaussian:0.3"]
        )
        == 0
    )
    with np.load(out) as archive:
        assert archive["images"].shape == (12, 28, 28, 1) and archive["labels"].shape == (12,)
    assert "wrote 12 denoised" in capsys.readouterr().out
    from genlab import provenance

    for written in (tmp_path / "one.png", next((tmp_path / "dn").rglob("*.png")), out):
        record = provenance.read(written)
        assert record["kind"] == "denoised images" and record["model"] in ("ae", "vae"), written
    assert provenance.read(next((tmp_path / "noisy").rglob("*.png"))) is None  # noise is no model output


def test_compress_decompress_round_trip(use_runs, inputs, tmp_path, capsys):
    ae = str(use_runs / "ae")
    glz = tmp_path / "digits.glz"
    assert main(["compress", ae, "--in", str(inputs / "digits.npz"), "--out", str(glz), "--bits", "5"]) == 0
    assert "bytes per image" in capsys.readouterr().out
    assert main(["decompress", str(glz), "--run", ae, "--out", str(tmp_path / "back.npz")]) == 0
    with np.load(tmp_path / "back.npz") as archive:
        assert archive["images"].shape == (12, 28, 28, 1)
    folder_glz = tmp_path / "folder.glz"
    assert main(["compress", ae, "--in", str(inputs / "folder"), "--out", str(folder_glz)]) == 0
    assert (
        main(["decompress", str(folder_glz), "--out", str(tmp_path / "back")]) == 0
    )  # run path from the file
    assert (tmp_path / "back" / "c1" / "d3.png").is_file()
    from genlab import provenance

    assert provenance.read(tmp_path / "back" / "c1" / "d3.png")["kind"] == "decompressed images"
    one = tmp_path / "one.glz"
    assert main(["compress", ae, "--in", str(inputs / "one.png"), "--out", str(one), "--no-run-path"]) == 0
    assert "give --run" in error_of(capsys, ["decompress", str(one), "--out", str(tmp_path / "one.png")])
    assert main(["decompress", str(one), "--run", ae, "--out", str(tmp_path / "one.png")]) == 0


def test_synth_unconditional_and_conditional(use_runs, tmp_path, monkeypatch, capsys):
    assert main(["synth", str(use_runs / "gan"), "--n", "5", "--out", str(tmp_path / "u")]) == 0
    assert len(list((tmp_path / "u").glob("*.png"))) == 5
    import genlab.runs

    real_load = genlab.runs.load
    monkeypatch.setattr(
        genlab.runs, "load", lambda *a, **k: make_conditional(monkeypatch, real_load(*a, **k))
    )
    assert main(["synth", str(use_runs / "gan"), "--per-class", "2", "--out", str(tmp_path / "c.npz")]) == 0
    with np.load(tmp_path / "c.npz") as archive:
        assert archive["labels"].tolist() == [c for c in range(10) for _ in range(2)]
    assert main(["synth", str(use_runs / "gan"), "--per-class", "1", "--out", str(tmp_path / "c")]) == 0
    assert sorted(p.name for p in (tmp_path / "c").iterdir()) == [str(i) for i in range(10)]
    from genlab import provenance

    record = provenance.read(next((tmp_path / "c" / "7").glob("*.png")))
    assert record["kind"] == "synthetic dataset" and record["label"] == 7 and record["seed"] == 0
    assert provenance.read(tmp_path / "c.npz")["model"] == "gan"


def test_errors_are_one_line_exit_2(use_runs, inputs, tmp_path, capsys):
    ae, gan = str(use_runs / "ae"), str(use_runs / "gan")
    png = str(inputs / "one.png")
    assert "run directory not found" in error_of(
        capsys, ["denoise", str(tmp_path / "nope"), "--in", png, "--out", "x.png"]
    )
    assert "no encoder" in error_of(capsys, ["denoise", gan, "--in", png, "--out", str(tmp_path / "x.png")])
    assert "no encoder" in error_of(capsys, ["compress", gan, "--in", png, "--out", str(tmp_path / "x.glz")])
    assert "unconditional" in error_of(
        capsys, ["synth", gan, "--per-class", "3", "--out", str(tmp_path / "s")]
    )
    assert "bad noise" in error_of(
        capsys, ["denoise", ae, "--in", png, "--out", str(tmp_path / "x.png"), "--noise", "salt"]
    )
    assert "form of --in" in error_of(capsys, ["denoise", ae, "--in", png, "--out", str(tmp_path / "x.npz")])
    rgb = tmp_path / "rgb.png"
    Image.new("RGB", (28, 28), (200, 10, 10)).save(rgb)
    assert "channel" in error_of(capsys, ["denoise", ae, "--in", str(rgb), "--out", str(tmp_path / "y.png")])
    big = tmp_path / "big.png"
    Image.new("L", (32, 32)).save(big)
    assert "resize" in error_of(capsys, ["compress", ae, "--in", str(big), "--out", str(tmp_path / "b.glz")])
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG not really")
    assert "cannot read image" in error_of(
        capsys, ["denoise", ae, "--in", str(broken), "--out", str(tmp_path / "z.png")]
    )
    assert "--bits" in error_of(
        capsys, ["compress", ae, "--in", png, "--out", str(tmp_path / "c.glz"), "--bits", "12"]
    )
    glz = tmp_path / "good.glz"
    assert main(["compress", ae, "--in", png, "--out", str(glz)]) == 0
    data = glz.read_bytes()
    (tmp_path / "cut.glz").write_bytes(data[:-5])
    assert "truncated" in error_of(
        capsys, ["decompress", str(tmp_path / "cut.glz"), "--run", ae, "--out", "o.png"]
    )
    flipped = bytearray(data)
    flipped[len(data) // 2] ^= 0xFF
    (tmp_path / "flip.glz").write_bytes(bytes(flipped))
    assert "corrupt" in error_of(
        capsys, ["decompress", str(tmp_path / "flip.glz"), "--run", ae, "--out", "o.png"]
    )
    assert "run that compressed it" in error_of(
        capsys, ["decompress", str(glz), "--run", str(use_runs / "vae"), "--out", str(tmp_path / "o.png")]
    )
    (tmp_path / "foreign.glz").write_bytes(b"GIF89a....")
    assert "not a genlab compressed file" in error_of(
        capsys, ["decompress", str(tmp_path / "foreign.glz"), "--run", ae, "--out", "o.png"]
    )
    assert torch.get_num_threads() >= 1

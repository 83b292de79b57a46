"""Corpus: bad command-line arguments for every subcommand: devices, seeds, counts, large requests,
missing or wrong inputs. In-process through genlab.cli.main; a few through the real console script."""

from __future__ import annotations

import numpy as np
import pytest

from .corpus import case, check_case, check_error_output, params, run_console, write_file

DEVICE_USERS = {  # every command with --device, with the arguments it needs besides
    "sample": "sample {ae} --out {tmp}/s.png",
    "reconstruct": "reconstruct {ae} --out {tmp}/r.png",
    "interpolate": "interpolate {ae} --out {tmp}/i.png",
    "eval": "eval {ae} --out {tmp}/eval",
    "train-classifier": "train-classifier --data {digits}",
    "denoise": "denoise {ae} --in {digits} --out {tmp}/d.npz",
    "compress": "compress {ae} --in {digits} --out {tmp}/c.glz",
    "decompress": "decompress {tmp}/c.glz --out {tmp}/d.npz",
    "synth": "synth {ae} --n 4 --out {tmp}/s.npz",
    "explain": "explain {ae} --out {tmp}/x",
    "serve": "serve ae={ae} --port 0",
    "train": "train --data {digits} --out {tmp}/run",
}
SEED_USERS = ("sample", "interpolate", "eval", "denoise", "synth", "explain", "train")

DEVICE_CASES = [
    case(
        f"{command}-device-{name}",
        f"{argv} --device {device}",
        f"expected a device: auto, cpu, cuda, cuda:N or mps, got '{device}'",
    )
    for command, argv in DEVICE_USERS.items()
    for name, device in (("word", "xyz"), ("index", "cuda:abc"))
]
SEED_CASES = [
    case(
        f"{command}-seed-huge",
        f"{DEVICE_USERS[command]} --seed 99999999999999999999999",
        "expected a seed from 0 to 2**63 - 1",
    )
    for command in SEED_USERS
] + [
    case("sample-seed-negative", "sample {ae} --seed -1", "expected a seed from 0 to 2**63 - 1, got '-1'"),
    case("train-seed-2-63", "train --seed 9223372036854775808", "expected a seed from 0 to 2**63 - 1"),
    case("synth-seed-word", "synth {ae} --n 4 --out {tmp}/s.npz --seed x", "got 'x'"),
]

LARGE_CASES = [
    case(
        "sample-n-huge-png", "sample {ae} --n 100000000 --out {tmp}/s.png", "a PNG grid holds at most 10000"
    ),
    case("interpolate-rows-huge", "interpolate {ae} --rows 100000000 --out {tmp}/i.png", "at most 10000"),
    case("interpolate-steps-huge", "interpolate {ae} --steps 100000000 --out {tmp}/i.png", "at most 10000"),
    case("reconstruct-n-huge", "reconstruct {ae} --n 100000000 --out {tmp}/r.png", "at most 10000"),
    case("explain-grid-huge", "explain {ae} --dims 1000 --steps 1000 --out {tmp}/x", "at most 10000"),
    case("eval-n-huge", "eval {ae} --n 100000000 --out {tmp}/e", "at most 200000"),
    case("synth-n-huge", "synth {ae} --n 100000000 --out {tmp}/s.npz", "at most 1000000"),
]

ARGUMENT_CASES = [
    # sample / reconstruct / interpolate / info / models
    case("sample-n-zero", "sample {ae} --n 0", "argument --n: expected a positive integer, got '0'"),
    case("sample-n-word", "sample {ae} --n lots", "expected a positive integer, got 'lots'"),
    case("sample-out-jpg", "sample {ae} --out {tmp}/s.jpg", "--out must end in .png or .npz"),
    case("sample-missing-run", "sample {tmp}/nothing --out {tmp}/s.png", "run directory not found"),
    case(
        "sample-per-class-unconditional",
        "sample {ae} --per-class 2 --out {tmp}/s.png",
        "needs a conditional model",
    ),
    case(
        "sample-label-unconditional", "sample {gan} --label 3 --out {tmp}/s.png", "needs a conditional model"
    ),
    case("sample-per-class-and-n", "sample {ae} --per-class 2 --n 3", "drop --label and --n"),
    # --sampling: only a family's sampling-only settings, checked like --set
    case(
        "sample-sampling-no-equals",
        "sample {gan} --sampling refine_steps --out {tmp}/s.png",
        "--sampling expects key=value",
    ),
    case(
        "sample-sampling-weights",
        "sample {gan} --sampling lr_d=1 --out {tmp}/s.png",
        "not a sampling setting of model 'gan'",
    ),
    case(
        "sample-sampling-ae",
        "sample {ae} --sampling temperature=0.5 --out {tmp}/s.png",
        "its sampling settings: none",
    ),
    case(
        "sample-sampling-negative",
        "sample {gan} --sampling refine_steps=-3 --out {tmp}/s.png",
        "model.refine_steps",
    ),
    case(
        "sample-sampling-nan",
        "sample {gan} --sampling refine_step_size=nan --out {tmp}/s.png",
        "refine_step_size",
    ),
    case(
        "eval-sampling-word", "eval {gan} --sampling refine_d_weight=lots --out {tmp}/e", "bad value 'lots'"
    ),
    case(
        "sample-sampling-rejection-word",
        "sample {gan} --sampling rejection=sometimes --out {tmp}/s.png",
        "rejection",
    ),
    case(
        "sample-sign-half",
        ["sample", "{ae}", "--sign-key", "{tmp}/k.pem"],
        "needs both --sign-cert and --sign-key",
    ),
    case("reconstruct-gan", "reconstruct {gan} --out {tmp}/r.png", "cannot reconstruct"),
    case("reconstruct-split", "reconstruct {ae} --split val", "invalid choice: 'val'"),
    case(
        "reconstruct-data-unknown",
        "reconstruct {ae} --data imagenet --out {tmp}/r.png",
        "unknown dataset 'imagenet'",
    ),
    case("interpolate-data-gan", "interpolate {gan} --data {digits} --out {tmp}/i.png", "has no encoder"),
    case("interpolate-rows-zero", "interpolate {ae} --rows 0", "expected a positive integer, got '0'"),
    case("info-missing", "info {tmp}/nothing", "run directory not found"),
    case("info-plain-folder", "info {tmp}", "is not a genlab run directory"),
    case("models-unknown", "models nope", "unknown model 'nope'"),
    # eval / train-classifier / compare
    case("eval-extractor", "eval {ae} --extractor pixels --out {tmp}/e", "unknown extractor 'pixels'"),
    case("eval-metric", "eval {ae} --metrics fidd --out {tmp}/e", "unknown metric 'fidd'"),
    case("eval-n-zero", "eval {ae} --n 0", "expected a positive integer"),
    case("eval-nll-k-zero", "eval {ae} --nll-k 0", "expected a positive integer"),
    case("train-classifier-data", "train-classifier --data {tmp}/none.npz", "unknown dataset"),
    case("compare-missing", "compare {tmp}/nothing --out {tmp}/c.png", "no such run directory"),
    # denoise / compress / decompress / synth
    case(
        "denoise-noise-kind",
        "denoise {ae} --in {digits} --out {tmp}/d.npz --noise salt:0.2",
        "bad noise 'salt:0.2'",
    ),
    case(
        "denoise-noise-level",
        "denoise {ae} --in {digits} --out {tmp}/d.npz --noise mask:2",
        "a mask share lies in [0, 1]",
    ),
    case(
        "denoise-noisy-out-alone",
        "denoise {ae} --in {digits} --out {tmp}/d.npz --noisy-out {tmp}/n.npz",
        "--noisy-out needs --noise",
    ),
    case("denoise-form", "denoise {ae} --in {digits} --out {tmp}/d.png", "must have the form of --in"),
    case("denoise-gan", "denoise {gan} --in {digits} --out {tmp}/d.npz", "cannot denoise: it has no encoder"),
    case("denoise-missing-in", "denoise {ae} --in {tmp}/none.npz --out {tmp}/d.npz", "none.npz"),
    case("denoise-no-in", "denoise {ae} --out {tmp}/d.npz", "the following arguments are required: --in"),
    case(
        "compress-bits-nine",
        "compress {ae} --in {digits} --out {tmp}/c.glz --bits 9",
        "--bits must lie in [1, 8]",
    ),
    case(
        "compress-bits-zero",
        "compress {ae} --in {digits} --out {tmp}/c.glz --bits 0",
        "expected bits from 1 to 8",
    ),
    case(
        "compress-gan", "compress {gan} --in {digits} --out {tmp}/c.glz", "cannot compress: it has no encoder"
    ),
    case("decompress-missing", "decompress {tmp}/none.glz --out {tmp}/d.npz", "none.glz does not exist"),
    case(
        "decompress-garbage",
        "decompress {tmp}/bad.glz --out {tmp}/d.npz",
        "is not a genlab compressed file",
        write_file("bad.glz", b"not a glz file at all"),
    ),
    case(
        "synth-per-class-unconditional",
        "synth {ae} --per-class 3 --out {tmp}/s.npz",
        "unconditional: give --n N",
    ),
    case("synth-n-zero", "synth {ae} --n 0 --out {tmp}/s.npz", "expected a positive integer"),
    # export / explain / provenance / serve
    case("export-opset-zero", "export {ae} --out {tmp}/onnx --opset 0", "expected a positive integer"),
    case("export-format", "export {ae} --out {tmp}/onnx --format tflite", "invalid choice: 'tflite'"),
    case("export-missing-run", "export {tmp}/nothing --out {tmp}/onnx", "run directory not found"),
    case("explain-dims-zero", "explain {ae} --dims 0", "expected a positive integer"),
    case("explain-missing-run", "explain {tmp}/nothing --out {tmp}/x", "run directory not found"),
    case("provenance-missing", "provenance {tmp}/none.png", "none.png: no such file"),
    case(
        "provenance-plain-text",
        "provenance {tmp}/a.txt",
        "not an image genlab can read",
        write_file("a.txt", "hello"),
    ),
    case("serve-port", "serve ae={ae} --port 70000", "--port must be 0..65535"),
    case("serve-workers-zero", "serve ae={ae} --workers 0", "expected a positive integer"),
    case("serve-missing-run", "serve x={tmp}/nothing --port 0", "run directory not found"),
    # the command line itself
    case("no-command", [], "the following arguments are required: command"),
    case("unknown-command", "trian", "invalid choice: 'trian'"),
    case("unknown-option", "sample {ae} --nn 3", "unrecognized arguments: --nn 3"),
]


@pytest.mark.parametrize("c", params(DEVICE_CASES + SEED_CASES + LARGE_CASES + ARGUMENT_CASES))
def test_bad_argument_is_one_line_exit_2(c, tmp_path, capsys, places):
    check_case(c, tmp_path, capsys, places)


@pytest.mark.parametrize(
    ("argv", "expect"),
    [
        (["sample", "{ae}", "--device", "cuda:abc"], "expected a device"),
        (["train", "--seed", "99999999999999999999999"], "expected a seed"),
        (["train", "--set", "model.latent_dim=0", "--out", "{tmp}/run"], "model.latent_dim must be in"),
        (["interpolate", "{ae}", "--rows", "100000000", "--out", "{tmp}/i.png"], "at most 10000"),
    ],
    ids=["device", "seed", "setting", "large"],
)
def test_console_script_gives_one_line(argv, expect, tmp_path, places):
    """The real process: exit status 2 and one line on stderr, as a user's shell sees them."""
    done = run_console([a.format(tmp=tmp_path, **places) for a in argv], cwd=tmp_path)
    check_error_output(done.returncode, done.stderr, expect)


def test_sample_npz_is_written_in_chunks(tmp_path, places, monkeypatch):
    """Past SAMPLE_CHUNK, samples are drawn and written chunk by chunk into a normal .npz; within one chunk
    the result is exactly run.sample(n, seed)."""
    import genlab
    from genlab import viz
    from genlab.cli import explore, main

    assert main(["sample", str(places["ae"]), "--n", "10", "--out", str(tmp_path / "one.npz")]) == 0
    exact = viz.to_uint8_hwc(genlab.load(places["ae"]).sample(10, seed=0))
    assert np.array_equal(np.load(tmp_path / "one.npz")["images"], exact)
    monkeypatch.setattr(explore, "SAMPLE_CHUNK", 3)
    assert main(["sample", str(places["ae"]), "--n", "10", "--out", str(tmp_path / "chunked.npz")]) == 0
    with np.load(tmp_path / "chunked.npz") as archive:
        assert archive["images"].shape == exact.shape and archive["images"].dtype == np.uint8
        assert "provenance" in archive.files
    assert not list(tmp_path.glob(".*partial"))


def test_streamed_npz_keeps_labels_in_step_with_images(tmp_path, monkeypatch):
    """Chunked sampling with classes: every chunk's labels go to the model and to 'labels' in order."""
    import types

    import torch

    from genlab import viz
    from genlab.cli import explore

    class ClassPainter:
        """A stand-in model whose sample k is filled with (its label + 1) / 10."""

        config = types.SimpleNamespace(image_shape=(1, 4, 4))

        def sample(self, n, labels=None, generator=None):
            return (labels.float()[:, None, None, None] + 1).expand(n, 1, 4, 4) / 10

    monkeypatch.setattr(explore, "SAMPLE_CHUNK", 4)
    run = types.SimpleNamespace(model=ClassPainter())
    out = tmp_path / "s.npz"
    explore.write_samples_npz(run, out, 9, seed=0, labels_of=explore.class_rows(3), extra={"x": np.arange(2)})
    with np.load(out) as archive:
        labels, images = archive["labels"], archive["images"]
        assert labels.tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2] and archive["x"].tolist() == [0, 1]
    expected = torch.tensor(labels + 1, dtype=torch.float32)[:, None, None, None].expand(9, 1, 4, 4) / 10
    assert np.array_equal(images, viz.to_uint8_hwc(expected))

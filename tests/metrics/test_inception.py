"""Tests for the FID InceptionV3: architecture vs the weights file's layout, and the weights loader.

The real weights are not downloadable here, so the loader is exercised with a random model's
state_dict served from a local HTTP server; a real-weights test runs only where the file is cached.
"""

from __future__ import annotations

import functools
import hashlib
import http.server
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from torch import nn

from genlab.errors import DataError, GenlabError
from genlab.metrics import inception as inc
from genlab.metrics.inception import FIDInceptionV3, inception_hash, inception_weights_path, load_inception

# --------------------------------------------------------------------------------------------------
# Expected layout of pt_inception-2015-12-05-6726825d.pth, derived independently of the module from
# the published architecture (TF graph -> PyTorch names as in pytorch-fid / torch-fidelity's converter):
# every BasicConv2d `p` contributes p.conv.weight (out, in, kh, kw) and p.bn.{weight,bias,running_mean,
# running_var} (out,); then fc.{weight,bias} for 1008 classes. 94 convs -> 94 * 5 + 2 = 472 tensors.
# --------------------------------------------------------------------------------------------------


# fmt: off
def _a(p: str, cin: int, pool: int) -> list[tuple[str, int, int, int, int]]:
    return [(f"{p}.branch1x1", cin, 64, 1, 1), (f"{p}.branch5x5_1", cin, 48, 1, 1),
            (f"{p}.branch5x5_2", 48, 64, 5, 5), (f"{p}.branch3x3dbl_1", cin, 64, 1, 1),
            (f"{p}.branch3x3dbl_2", 64, 96, 3, 3), (f"{p}.branch3x3dbl_3", 96, 96, 3, 3),
            (f"{p}.branch_pool", cin, pool, 1, 1)]


def _c(p: str, c7: int) -> list[tuple[str, int, int, int, int]]:
    return [(f"{p}.branch1x1", 768, 192, 1, 1), (f"{p}.branch7x7_1", 768, c7, 1, 1),
            (f"{p}.branch7x7_2", c7, c7, 1, 7), (f"{p}.branch7x7_3", c7, 192, 7, 1),
            (f"{p}.branch7x7dbl_1", 768, c7, 1, 1),
            (f"{p}.branch7x7dbl_2", c7, c7, 7, 1), (f"{p}.branch7x7dbl_3", c7, c7, 1, 7),
            (f"{p}.branch7x7dbl_4", c7, c7, 7, 1), (f"{p}.branch7x7dbl_5", c7, 192, 1, 7),
            (f"{p}.branch_pool", 768, 192, 1, 1)]


def _e(p: str, cin: int) -> list[tuple[str, int, int, int, int]]:
    return [(f"{p}.branch1x1", cin, 320, 1, 1), (f"{p}.branch3x3_1", cin, 384, 1, 1),
            (f"{p}.branch3x3_2a", 384, 384, 1, 3), (f"{p}.branch3x3_2b", 384, 384, 3, 1),
            (f"{p}.branch3x3dbl_1", cin, 448, 1, 1), (f"{p}.branch3x3dbl_2", 448, 384, 3, 3),
            (f"{p}.branch3x3dbl_3a", 384, 384, 1, 3), (f"{p}.branch3x3dbl_3b", 384, 384, 3, 1),
            (f"{p}.branch_pool", cin, 192, 1, 1)]


CONVS = [
    ("Conv2d_1a_3x3", 3, 32, 3, 3), ("Conv2d_2a_3x3", 32, 32, 3, 3), ("Conv2d_2b_3x3", 32, 64, 3, 3),
    ("Conv2d_3b_1x1", 64, 80, 1, 1), ("Conv2d_4a_3x3", 80, 192, 3, 3),
    *_a("Mixed_5b", 192, 32), *_a("Mixed_5c", 256, 64), *_a("Mixed_5d", 288, 64),
    ("Mixed_6a.branch3x3", 288, 384, 3, 3), ("Mixed_6a.branch3x3dbl_1", 288, 64, 1, 1),
    ("Mixed_6a.branch3x3dbl_2", 64, 96, 3, 3), ("Mixed_6a.branch3x3dbl_3", 96, 96, 3, 3),
    *_c("Mixed_6b", 128), *_c("Mixed_6c", 160), *_c("Mixed_6d", 160), *_c("Mixed_6e", 192),
    ("Mixed_7a.branch3x3_1", 768, 192, 1, 1), ("Mixed_7a.branch3x3_2", 192, 320, 3, 3),
    ("Mixed_7a.branch7x7x3_1", 768, 192, 1, 1), ("Mixed_7a.branch7x7x3_2", 192, 192, 1, 7),
    ("Mixed_7a.branch7x7x3_3", 192, 192, 7, 1), ("Mixed_7a.branch7x7x3_4", 192, 192, 3, 3),
    *_e("Mixed_7b", 1280), *_e("Mixed_7c", 2048),
]
# fmt: on


def _expected_file_layout() -> dict[str, tuple[int, ...]]:
    layout: dict[str, tuple[int, ...]] = {}
    for name, cin, cout, kh, kw in CONVS:
        layout[f"{name}.conv.weight"] = (cout, cin, kh, kw)
        for stat in ("weight", "bias", "running_mean", "running_var"):
            layout[f"{name}.bn.{stat}"] = (cout,)
    layout["fc.weight"] = (1008, 2048)
    layout["fc.bias"] = (1008,)
    return layout


def _randomize(model: nn.Module, seed: int = 0) -> nn.Module:
    """He-init convs and random BN statistics: O(1) features, and the buffers matter in a round trip."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.Conv2d):
                fan_in = m.weight[0].numel()
                m.weight.copy_(torch.randn(m.weight.shape, generator=gen) * (2.0 / fan_in) ** 0.5)
            elif isinstance(m, nn.BatchNorm2d):
                c = m.num_features
                m.weight.copy_(1.0 + 0.1 * torch.randn(c, generator=gen))
                m.bias.copy_(0.1 * torch.randn(c, generator=gen))
                m.running_mean.copy_(0.1 * torch.randn(c, generator=gen))
                m.running_var.copy_(1.0 + 0.1 * torch.rand(c, generator=gen))
    return model


# --------------------------------------------------------------------------------------------------
# Architecture
# --------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def fresh() -> FIDInceptionV3:
    """One randomly initialised model for the read-only tests (building one takes ~0.2 s)."""
    return FIDInceptionV3()


def test_state_dict_matches_weights_file_layout(fresh: FIDInceptionV3) -> None:
    sd = fresh.state_dict()
    file_keys = {k: tuple(v.shape) for k, v in sd.items() if not k.endswith("num_batches_tracked")}
    expected = _expected_file_layout()
    assert len(CONVS) == 94 and len(expected) == 472
    assert file_keys.keys() == expected.keys()
    assert {k: s for k, s in file_keys.items() if expected[k] != s} == {}
    # The only extra keys are BN counters, which torch fills in when loading the plain-dict file.
    assert {k.rsplit(".", 1)[0] for k in sd if k.endswith("num_batches_tracked")} == {
        f"{c[0]}.bn" for c in CONVS
    }
    assert sum(v.numel() for k, v in sd.items() if k in expected) == 23_885_392
    assert sum(p.numel() for p in fresh.parameters()) == 23_850_960


def test_basic_conv_is_biasless_with_tf_batchnorm_eps(fresh: FIDInceptionV3) -> None:
    model = fresh
    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert len(bns) == len(convs) == 94
    assert all(b.eps == 0.001 for b in bns) and all(c.bias is None for c in convs)


def test_forward_grayscale_gives_finite_nonnegative_features(fresh: FIDInceptionV3) -> None:
    model = fresh
    x = torch.rand(2, 1, 28, 28, generator=torch.Generator().manual_seed(1))  # (N, 1, H, W) in [0, 1]
    with torch.no_grad():
        feats = model(x)
    assert feats.shape == (2, 2048)
    assert torch.isfinite(feats).all() and (feats >= 0).all()
    # Grayscale is the same image repeated to RGB (checked on the cheap preprocessing, not a 2nd forward).
    torch.testing.assert_close(model.preprocess(x), model.preprocess(x.expand(-1, 3, -1, -1)))


def test_preprocess_resizes_and_scales_to_minus_one_one(fresh: FIDInceptionV3) -> None:
    model = fresh
    x = torch.stack([torch.zeros(3, 32, 32), torch.ones(3, 32, 32)])
    out = model.preprocess(x)
    assert out.shape == (2, 3, 299, 299)
    # bilinear resizing of a constant image is that constant up to float rounding (kernel-dependent)
    assert torch.allclose(out[0], torch.full_like(out[0], -1.0), atol=1e-6)
    assert torch.allclose(out[1], torch.full_like(out[1], 1.0), atol=1e-6)
    ramp = torch.linspace(0, 1, 299).expand(1, 1, 299, 299)
    torch.testing.assert_close(model.preprocess(ramp)[:, 0], 2 * ramp[:, 0] - 1)  # 299 input: no resampling


@pytest.mark.parametrize(
    "x, match",
    [
        (torch.rand(2, 2, 8, 8), "shape"),
        (torch.rand(8, 8), "shape"),
        (torch.randint(0, 255, (1, 3, 8, 8), dtype=torch.uint8), "divide by 255"),
        (torch.rand(1, 3, 8, 8) * 2 - 1, r"\(x \+ 1\) / 2"),
        (torch.full((1, 3, 8, 8), float("nan")), "NaN"),
    ],
)
def test_bad_inputs_raise_one_line_data_error(fresh: FIDInceptionV3, x: torch.Tensor, match: str) -> None:
    with pytest.raises(DataError, match=match) as err:
        fresh(x)
    assert "\n" not in str(err.value)


def test_stays_in_eval_mode(fresh: FIDInceptionV3) -> None:
    model = fresh
    nn.Sequential(model).train()
    assert not any(m.training for m in model.modules())


def _identity_pool_branch(block: nn.Module, channels: int) -> None:
    """Make block.branch_pool pass its first `channels` input channels through unchanged."""
    conv, bn = block.branch_pool.conv, block.branch_pool.bn
    with torch.no_grad():
        conv.weight.zero_()
        conv.weight[:, :channels, 0, 0] = torch.eye(conv.out_channels, channels)
        bn.weight.fill_(1.0)
        bn.bias.zero_()
        bn.running_mean.zero_()
        bn.running_var.fill_(1.0 - bn.eps)  # so BN divides by exactly sqrt(1) = 1


@pytest.mark.parametrize(
    "block_name, cin, pool", [("Mixed_5b", 192, 32), ("Mixed_6b", 768, 192), ("Mixed_7b", 1280, 192)]
)
def test_avg_pool_branches_ignore_padding(block_name: str, cin: int, pool: int) -> None:
    block = getattr(FIDInceptionV3(), block_name)
    _identity_pool_branch(block, pool)
    with torch.no_grad():
        out = block(torch.ones(1, cin, 5, 5))[:, -pool:]  # (1, pool, 5, 5): the pool branch
    # count_include_pad=True would give 4/9 in the corners and 6/9 on the edges.
    torch.testing.assert_close(out, torch.ones_like(out))


def test_last_block_uses_max_pool() -> None:
    block = FIDInceptionV3().Mixed_7c
    _identity_pool_branch(block, 192)
    x = torch.zeros(1, 2048, 5, 5)
    x[:, :, 2, 2] = 1.0
    with torch.no_grad():
        out = block(x)[0, -192:]  # (192, 5, 5)
    expected = torch.zeros(5, 5)
    expected[1:4, 1:4] = 1.0  # max spreads the peak unchanged; an average would give 1/9
    torch.testing.assert_close(out, expected.expand_as(out))


# --------------------------------------------------------------------------------------------------
# Weights: download, verification, loading
# --------------------------------------------------------------------------------------------------


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path, FIDInceptionV3]]:
    """A random model's weights at http://127.0.0.1:<port>/weights.pth (base URL, file, model)."""
    root = tmp_path_factory.mktemp("served")
    model = _randomize(FIDInceptionV3())
    torch.save(model.state_dict(), root / "weights.pth")
    handler = functools.partial(_QuietHandler, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", root / "weights.pth", model
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """Fresh GENLAB_DATA, online, and no proxy between us and the local server."""
    monkeypatch.setenv("GENLAB_DATA", str(tmp_path / "data"))
    monkeypatch.delenv("GENLAB_OFFLINE", raising=False)
    for var in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    return tmp_path / "data"


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_weights_path_uses_genlab_data(env: Path) -> None:
    assert inception_weights_path() == env / "weights" / "pt_inception-2015-12-05-6726825d.pth"


def test_download_verify_load_round_trip(served, env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    base, file, source = served
    sha = _sha(file)
    monkeypatch.setattr(inc, "INCEPTION_URL", f"{base}/weights.pth")
    monkeypatch.setattr(inc, "INCEPTION_SHA256_PREFIX", sha[:8])
    model = load_inception()
    cached = inception_weights_path()
    assert cached.is_file() and inception_hash(cached) == sha
    assert [p.name for p in cached.parent.iterdir()] == [cached.name]  # no temp file left behind
    assert not model.training and not any(p.requires_grad for p in model.parameters())
    assert model.weights_sha256 == sha
    loaded, saved = model.state_dict(), source.state_dict()
    assert all(torch.equal(loaded[k], saved[k]) for k in saved)
    # The full forward (resize to 299) is covered above; an 80x80 input to the same layers is 14x cheaper.
    x = torch.rand(1, 3, 80, 80, generator=torch.Generator().manual_seed(2)) * 2 - 1  # preprocessed range
    with torch.no_grad():
        ref, got = source.features(x), model.features(x)
    assert ref.abs().mean() > 1e-3  # the randomized model gives O(1) features, so equality means something
    torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-6)
    # Second load comes from the cache: a dead URL does not matter.
    monkeypatch.setattr(inc, "INCEPTION_URL", f"{base}/gone.pth")
    assert load_inception(download=False).state_dict().keys() == model.state_dict().keys()


def test_wrong_checksum_is_rejected_and_not_cached(
    served, env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    base, file, _ = served
    wrong = "00000000" if not _sha(file).startswith("00000000") else "ffffffff"
    monkeypatch.setattr(inc, "INCEPTION_SHA256_PREFIX", wrong)
    with pytest.raises(GenlabError, match="corrupt or not the FID InceptionV3 weights") as err:
        load_inception(url=f"{base}/weights.pth")
    assert "\n" not in str(err.value)
    weights_dir = inception_weights_path().parent
    assert not weights_dir.exists() or list(weights_dir.iterdir()) == []


def test_failed_download_is_one_line_error_without_leftovers(served, env: Path) -> None:
    base, _, _ = served
    with pytest.raises(GenlabError, match="Could not download") as err:
        load_inception(url=f"{base}/missing.pth")  # HTTP 404
    assert "\n" not in str(err.value) and str(inception_weights_path()) in str(err.value)
    assert list(inception_weights_path().parent.iterdir()) == []


@pytest.mark.parametrize("how", ["offline", "no-download"])
def test_missing_weights_offline_names_the_path(env: Path, monkeypatch: pytest.MonkeyPatch, how: str) -> None:
    monkeypatch.setattr(inc, "INCEPTION_URL", "http://127.0.0.1:9/never-contacted.pth")
    if how == "offline":
        monkeypatch.setenv("GENLAB_OFFLINE", "1")
    with pytest.raises(GenlabError) as err:
        load_inception(download=how != "no-download")
    msg = str(err.value)
    assert msg == (
        "InceptionV3 weights not found: put pt_inception-2015-12-05-6726825d.pth "
        f"(from http://127.0.0.1:9/never-contacted.pth) at {inception_weights_path()}"
    )
    assert not inception_weights_path().parent.exists()


_UNPICKLED: list[str] = []


def _mark_unpickled() -> str:
    _UNPICKLED.append("ran")
    return "ran"


class _Payload:
    """Pickles as a call to _mark_unpickled: only a full (unsafe) unpickler would run it."""

    def __reduce__(self) -> tuple[object, tuple[()]]:
        return (_mark_unpickled, ())


def test_pickle_with_arbitrary_object_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "evil.pth"
    torch.save({"fc.bias": torch.zeros(1008), "payload": _Payload()}, path)
    with pytest.raises(GenlabError, match="corrupt or not the FID InceptionV3 weights") as err:
        load_inception(path, download=False, verify=False)  # no hash check: reach torch.load
    assert "\n" not in str(err.value) and "UnpicklingError" in str(err.value)
    assert _UNPICKLED == []


@pytest.mark.parametrize("content", ["garbage", "list", "nested", "missing-key", "wrong-shape"])
def test_not_the_fid_weights_is_rejected(tmp_path: Path, content: str) -> None:
    path = tmp_path / "w.pth"
    sd = FIDInceptionV3().state_dict()
    if content == "garbage":
        path.write_bytes(b"not a torch file at all")
    elif content == "list":
        torch.save([torch.zeros(3)], path)
    elif content == "nested":
        torch.save({"state_dict": sd}, path)
    elif content == "missing-key":
        del sd["fc.weight"]
        torch.save(sd, path)
    else:
        sd["fc.weight"] = torch.zeros(1000, 2048)
        torch.save(sd, path)
    with pytest.raises(GenlabError, match="corrupt or not the FID InceptionV3 weights") as err:
        load_inception(path, download=False, verify=False)  # past the hash check: the structure is wrong
    assert "\n" not in str(err.value)


def test_right_layout_with_wrong_hash_is_refused_unless_verify_off(env: Path) -> None:
    """A random state dict of the right shape would give plausible but meaningless FIDs."""
    path = inception_weights_path()
    path.parent.mkdir(parents=True)
    torch.save(FIDInceptionV3().state_dict(), path)
    with pytest.raises(GenlabError, match=r"expected 6726825d\.\.\.\): delete it") as err:
        load_inception(download=False)
    assert "\n" not in str(err.value) and str(path) in str(err.value)
    assert load_inception(download=False, verify=False).weights_sha256 == _sha(path)


def test_plain_dict_without_bn_counters_loads(tmp_path: Path) -> None:
    """The converted TF file is a plain dict without num_batches_tracked; strict loading must accept it."""
    source = _randomize(FIDInceptionV3(), seed=3)
    plain = {k: v for k, v in source.state_dict().items() if not k.endswith("num_batches_tracked")}
    torch.save(plain, tmp_path / "plain.pth")
    model = load_inception(tmp_path / "plain.pth", download=False, verify=False)
    torch.testing.assert_close(
        model.Mixed_7c.branch_pool.bn.running_var, source.Mixed_7c.branch_pool.bn.running_var
    )


# Captured at import, before conftest's autouse fixture points GENLAB_DATA at an empty temp dir.
_REAL_WEIGHTS = inception_weights_path()


def test_real_weights_if_cached() -> None:
    path = _REAL_WEIGHTS
    if not path.is_file():
        pytest.skip(f"real FID inception weights not cached at {path}")
    assert inception_hash(path).startswith(inc.INCEPTION_SHA256_PREFIX)
    state = torch.load(path, map_location="cpu", weights_only=True)
    assert {k: tuple(v.shape) for k, v in state.items() if not k.endswith("num_batches_tracked")} == (
        _expected_file_layout()
    )
    model = load_inception(path, download=False)
    with torch.no_grad():
        feats = model(torch.full((2, 3, 64, 64), 0.5))
    assert feats.shape == (2, 2048) and torch.isfinite(feats).all() and (feats >= 0).all()

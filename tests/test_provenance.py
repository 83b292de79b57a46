"""Provenance: XMP + genlab fields on every image genlab writes, the `genlab provenance` command, and C2PA
signing/verification with a throwaway certificate made here."""

from __future__ import annotations

import datetime
import hashlib
import io
import json
import struct
import sys
import zlib
from pathlib import Path
from types import SimpleNamespace
from xml.etree import ElementTree

import numpy as np
import pytest
import torch
from PIL import Image

import genlab
from genlab import provenance, viz
from genlab.cli import main


@pytest.fixture
def vae_run(tiny_runs) -> Path:
    return tiny_runs["vae"]


def test_save_grid_writes_xmp_and_genlab_fields(tmp_path):
    record = {**provenance.basic(), "model": "vae", "preset": "default", "run": "r1", "seed": 7, "label": 3}
    path = tmp_path / "grid.png"
    viz.save_grid(torch.rand(4, 1, 8, 8), path, provenance=record)
    with Image.open(path) as image:
        text = image.text
    root = ElementTree.fromstring(text[provenance.XMP_KEY])  # well-formed XMP, read as XML
    description = root.find(".//{http://www.w3.org/1999/02/22-rdf-syntax-ns#}Description")
    source = description.get("{http://iptc.org/std/Iptc4xmpExt/2008-02-29/}DigitalSourceType")
    assert source == provenance.IPTC_TRAINED
    assert text["genlab:seed"] == "7" and text["genlab:model"] == "vae"
    assert provenance.read(path) == record


def test_every_png_has_at_least_the_basic_record(tmp_path):
    viz.save_grid(torch.rand(2, 3, 4, 4), tmp_path / "plain.png")
    record = provenance.read(tmp_path / "plain.png")
    assert record["digital_source_type"] == provenance.IPTC_TRAINED
    assert record["version"] == provenance.basic()["version"]


def test_foreign_png_has_none(tmp_path):
    Image.fromarray(np.zeros((4, 4), np.uint8)).save(tmp_path / "other.png")
    assert provenance.read(tmp_path / "other.png") is None
    with pytest.raises(provenance.ProvenanceError, match="no such file"):
        provenance.read(tmp_path / "missing.png")


def test_for_run_hashes_the_weights_the_run_loads(vae_run):
    run = genlab.load(vae_run)
    weights = run.checkpoint / "ema.safetensors"
    assert weights.is_file()  # the run kept EMA weights, and those are what it samples with
    record = provenance.for_run(run, seed=5, label=2)
    assert record["checkpoint_sha256"] == hashlib.sha256(weights.read_bytes()).hexdigest()
    assert (record["model"], record["preset"], record["run"], record["seed"], record["label"]) == (
        "vae",
        "default",
        "vae",
        5,
        2,
    )


def test_training_grids_name_their_run(vae_run):
    for path in (vae_run / "samples.png", next((vae_run / "samples").glob("epoch-*.png"))):
        record = provenance.read(path)
        assert (record["model"], record["preset"], record["run"]) == ("vae", "default", "vae")
        assert record["kind"] == "training grid, epoch 1"


def test_cli_sample_png_and_npz_carry_provenance(vae_run, tmp_path, capsys):
    assert main(["sample", str(vae_run), "--n", "4", "--seed", "11", "--out", str(tmp_path / "s.png")]) == 0
    assert main(["sample", str(vae_run), "--n", "4", "--seed", "11", "--out", str(tmp_path / "s.npz")]) == 0
    capsys.readouterr()
    assert main(["provenance", str(tmp_path / "s.png"), str(tmp_path / "s.npz"), "--json"]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    for line in lines:
        assert line["seed"] == 11 and line["model"] == "vae" and line["c2pa"] == "unsigned"
        assert line["digital_source_type"] == provenance.IPTC_TRAINED
    assert lines[0]["checkpoint_sha256"] == lines[1]["checkpoint_sha256"]
    with np.load(tmp_path / "s.npz", allow_pickle=False) as archive:  # readable without pickle
        assert archive["images"].shape == (4, 28, 28, 1)


def test_reconstructions_are_marked_composite(vae_run, tmp_path, mnist_small_npz):
    out = tmp_path / "rec.png"
    assert (
        main(["reconstruct", str(vae_run), "--data", str(mnist_small_npz), "--n", "3", "--out", str(out)])
        == 0
    )
    assert provenance.read(out)["digital_source_type"] == provenance.IPTC_COMPOSITE


def test_file_without_provenance_is_exit_2_one_line(tmp_path, capsys):
    Image.fromarray(np.zeros((4, 4), np.uint8)).save(tmp_path / "other.png")
    assert main(["provenance", str(tmp_path / "other.png")]) == 2
    captured = capsys.readouterr()
    assert "other.png: no genlab provenance" in captured.out
    assert captured.err.count("\n") == 1 and "no genlab provenance" in captured.err
    assert main(["provenance", str(tmp_path / "nope.png")]) == 2
    assert capsys.readouterr().err.count("\n") == 1


# --- C2PA ------------------------------------------------------------------------------------------------
def make_certificate(folder: Path, name: str = "signer") -> tuple[Path, Path]:
    """A throwaway CA and an end-entity certificate it signed (C2PA rejects self-signed signers)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    def subject(common_name: str) -> x509.Name:
        return x509.Name(
            [
                x509.NameAttribute(NameOID.COMMON_NAME, common_name),
                x509.NameAttribute(NameOID.ORGANIZATION_NAME, "genlab tests"),
            ]
        )

    def usage(signing: bool) -> x509.KeyUsage:
        return x509.KeyUsage(signing, False, False, False, False, not signing, not signing, False, False)

    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())

    def builder(name_of: str, issuer: x509.Name, public_key) -> x509.CertificateBuilder:
        return (
            x509.CertificateBuilder()
            .subject_name(subject(name_of))
            .issuer_name(issuer)
            .public_key(public_key)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=7))
        )

    ca = (
        builder("genlab test CA", subject("genlab test CA"), ca_key.public_key())
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(usage(False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    leaf = (
        builder(name, ca.subject, key.public_key())
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(usage(True), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.EMAIL_PROTECTION]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    cert_path, key_path = folder / f"{name}.pem", folder / f"{name}.key"
    pem = serialization.Encoding.PEM
    cert_path.write_bytes(leaf.public_bytes(pem) + ca.public_bytes(pem))
    key_path.write_bytes(
        key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return cert_path, key_path


def tamper_pixels(path: Path) -> None:
    """Change one pixel inside the IDAT data, keeping the PNG valid (recompressed, CRC fixed), and
    every other chunk (the C2PA manifest included) as it was."""
    data = path.read_bytes()
    chunks, offset = [], 8
    while offset < len(data):
        length, kind = struct.unpack(">I4s", data[offset : offset + 8])
        chunks.append((kind, data[offset + 8 : offset + 8 + length]))
        offset += 12 + length
    width, height, _, colour_type = struct.unpack(">IIBB", chunks[0][1][:10])  # IHDR, 8-bit images
    stride = 1 + width * {0: 1, 2: 3, 4: 2, 6: 4}[colour_type]
    out = bytearray(data[:8])
    for kind, body in chunks:
        if kind == b"IDAT":
            raw = bytearray(zlib.decompress(body))
            raw[stride * (height // 2) + stride // 2] ^= 0x40  # a pixel mid-image (not a row's filter byte)
            body = zlib.compress(bytes(raw))
        out += struct.pack(">I4s", len(body), kind) + body + struct.pack(">I", zlib.crc32(kind + body))
    path.write_bytes(bytes(out))


@pytest.fixture(scope="module")
def certificate(tmp_path_factory) -> tuple[Path, Path]:
    pytest.importorskip("c2pa", reason="the c2pa extra is not installed")
    pytest.importorskip("cryptography")
    return make_certificate(tmp_path_factory.mktemp("pki"))


def test_c2pa_signed_valid_tampered_invalid_unsigned(vae_run, certificate, tmp_path, capsys):
    cert, key = certificate
    signed, unsigned = tmp_path / "signed.png", tmp_path / "unsigned.png"
    argv = ["sample", str(vae_run), "--n", "4", "--seed", "2"]
    assert main([*argv, "--out", str(signed), "--sign-cert", str(cert), "--sign-key", str(key)]) == 0
    assert main([*argv, "--out", str(unsigned)]) == 0
    assert provenance.read(signed)["seed"] == 2  # signing kept genlab's own fields
    state, detail = provenance.verify_c2pa(signed)
    assert state == "valid" and "signed by signer" in detail and "no trust list" in detail
    assert provenance.verify_c2pa(unsigned)[0] == "unsigned"
    with Image.open(signed) as a, Image.open(unsigned) as b:  # same pixels: the manifest is metadata
        assert np.array_equal(np.asarray(a), np.asarray(b))

    tampered = tmp_path / "tampered.png"
    tampered.write_bytes(signed.read_bytes())
    tamper_pixels(tampered)
    state, detail = provenance.verify_c2pa(tampered)
    assert state == "invalid" and "dataHash.mismatch" in detail

    capsys.readouterr()
    assert main(["provenance", str(signed), str(unsigned)]) == 0
    out = capsys.readouterr().out
    assert "c2pa: valid" in out and "c2pa: unsigned" in out
    assert main(["provenance", str(tampered)]) == 2
    captured = capsys.readouterr()
    assert "c2pa: invalid" in captured.out and captured.err.count("\n") == 1


def test_provenance_command_signs_existing_files(vae_run, certificate, tmp_path, capsys):
    cert, key = certificate
    out = tmp_path / "s.png"
    assert main(["sample", str(vae_run), "--n", "4", "--out", str(out)]) == 0
    assert main(["provenance", str(out), "--sign-cert", str(cert), "--sign-key", str(key)]) == 0
    assert "c2pa: valid" in capsys.readouterr().out


def test_signing_errors_are_one_line_exit_2(vae_run, certificate, tmp_path, capsys):
    cert, key = certificate
    _, other_key = make_certificate(tmp_path, "other")
    out = str(tmp_path / "s.png")
    cases = {
        "does not match": ["--sign-cert", str(cert), "--sign-key", str(other_key)],
        "needs both": ["--sign-cert", str(cert)],
        "cannot read": ["--sign-cert", str(tmp_path / "nope.pem"), "--sign-key", str(key)],
        "not a PEM certificate": ["--sign-cert", str(key), "--sign-key", str(key)],
    }
    for message, options in cases.items():
        capsys.readouterr()
        assert main(["sample", str(vae_run), "--n", "2", "--out", out, *options]) == 2
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1, err
    assert not Path(out).exists()  # checked before anything is written


def test_missing_c2pa_extra_is_named(vae_run, tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "c2pa", None)  # import c2pa now raises ImportError
    key = tmp_path / "k.pem"
    key.write_text("x")
    assert (
        main(
            [
                "sample",
                str(vae_run),
                "--out",
                str(tmp_path / "s.png"),
                "--sign-cert",
                str(key),
                "--sign-key",
                str(key),
            ]
        )
        == 2
    )
    assert "pip install 'genlab[c2pa]'" in capsys.readouterr().err


def test_png_written_to_a_buffer_carries_provenance(tmp_path):
    """What a server does: encode into memory, send the bytes."""
    buffer = io.BytesIO()
    viz.save_grid(torch.rand(2, 1, 4, 4), buffer, provenance={**provenance.basic(), "seed": 4, "label": 1})
    (tmp_path / "served.png").write_bytes(buffer.getvalue())
    record = provenance.read(tmp_path / "served.png")
    assert (record["seed"], record["label"]) == (4, 1)


def test_a_run_without_a_weights_file_has_no_hash(tmp_path):
    run = SimpleNamespace(
        model=SimpleNamespace(name="vae"),
        config=SimpleNamespace(preset="default"),
        run_dir=tmp_path,
        checkpoint=tmp_path,
    )
    record = provenance.for_run(run, seed=1)
    assert "checkpoint_sha256" not in record and record["seed"] == 1

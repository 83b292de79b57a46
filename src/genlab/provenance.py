"""Provenance of the images genlab writes: IPTC digital source type in XMP, genlab's own PNG text fields,
and optional C2PA content credentials.

Every image writer calls `png_info(record)` (viz.save_image does) with a record from `for_run(run, ...)`
(a loaded run), `for_config(config, run_dir)` (a run being trained) or `basic()` (nothing known but genlab).
A record is a flat dict of strings/ints; .npz files store it as JSON in a `provenance` array.
"""

from __future__ import annotations

import functools
import hashlib
import json
import re
from pathlib import Path
from typing import Any

from .errors import GenlabError

IPTC_TRAINED = "http://cv.iptc.org/newscodes/digitalsourcetype/trainedAlgorithmicMedia"
# Images that mix generated tiles with real ones (originals above reconstructions, nearest-neighbour pairs).
IPTC_COMPOSITE = "http://cv.iptc.org/newscodes/digitalsourcetype/compositeWithTrainedAlgorithmicMedia"
XMP_KEY = "XML:com.adobe.xmp"
FIELD_PREFIX = "genlab:"
# The fields genlab writes, in the order `describe` prints them; digital_source_type lives in the XMP.
FIELDS = ("version", "model", "preset", "run", "checkpoint_sha256", "seed", "label", "kind")
NPZ_KEY = "provenance"

_XMP_TEMPLATE = """<?xpacket begin="\ufeff" id="W5M0MpCehiHzreSzNTczkc9d"?>
<x:xmpmeta xmlns:x="adobe:ns:meta/">
 <rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">
  <rdf:Description rdf:about=""
    xmlns:Iptc4xmpExt="http://iptc.org/std/Iptc4xmpExt/2008-02-29/"
    Iptc4xmpExt:DigitalSourceType="{source}"/>
 </rdf:RDF>
</x:xmpmeta>
<?xpacket end="r"?>"""
_SOURCE_PATTERN = re.compile(r'DigitalSourceType\s*=\s*"([^"]+)"|<Iptc4xmpExt:DigitalSourceType>([^<]+)<')


class ProvenanceError(GenlabError):
    """A file without genlab provenance, or a C2PA signing/verification problem."""


def _genlab_version() -> str:
    from . import __version__

    return __version__


def basic(kind: str = "samples", composite: bool = False) -> dict[str, Any]:
    """The record of an image genlab wrote with no run at hand: the source type and genlab's version."""
    return {
        "digital_source_type": IPTC_COMPOSITE if composite else IPTC_TRAINED,
        "version": _genlab_version(),
        "kind": kind,
    }


def for_config(config, run_dir: str | Path, kind: str = "training grid") -> dict[str, Any]:
    """The record of an image drawn while a run trains (no checkpoint file exists yet to hash)."""
    return {
        **basic(kind),
        "model": config.model,
        "preset": config.preset,
        "run": Path(run_dir).resolve().name,
    }


def for_run(
    run,
    seed: int | None = None,
    label: int | str | None = None,
    kind: str = "samples",
    composite: bool = False,
) -> dict[str, Any]:
    """The record of an image made from a loaded run (genlab.runs.Run): model, preset, run name, the
    SHA-256 of the weights file it loaded, and the seed and class label when there are ones."""
    record = {
        **basic(kind, composite),
        "model": run.model.name,
        "preset": run.config.preset,
        "run": Path(run.run_dir).resolve().name,
    }
    digest = checkpoint_sha256(run.checkpoint)
    if digest is not None:
        record["checkpoint_sha256"] = digest
    if seed is not None:
        record["seed"] = int(seed)
    if label is not None:
        record["label"] = label if isinstance(label, str) else int(label)
    if getattr(run, "sampling_overrides", None):
        record["sampling"] = dict(run.sampling_overrides)
    return record


def weights_file(checkpoint_dir: str | Path) -> Path:
    """The weights a run loads from a checkpoint folder: the EMA weights when it kept them."""
    checkpoint_dir = Path(checkpoint_dir)
    ema = checkpoint_dir / "ema.safetensors"
    return ema if ema.is_file() else checkpoint_dir / "model.safetensors"


def checkpoint_sha256(checkpoint_dir: str | Path) -> str | None:
    """SHA-256 of the weights file the run loads; None for a run held only in memory (no such file)."""
    path = weights_file(checkpoint_dir)
    if not path.is_file():
        return None
    stat = path.stat()
    return _file_sha256(str(path.resolve()), stat.st_mtime_ns, stat.st_size)


@functools.lru_cache(maxsize=32)
def _file_sha256(path: str, mtime_ns: int, size: int) -> str:
    """Hashed once per file version (the cache key holds mtime and size): a run's every image reuses it."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


# --- PNG -------------------------------------------------------------------------------------------------
def png_info(record: dict[str, Any]):
    """A Pillow PngInfo with the XMP packet (IPTC digital source type) and one iTXt chunk per genlab field."""
    from PIL.PngImagePlugin import PngInfo

    info = PngInfo()
    source = record.get("digital_source_type", IPTC_TRAINED)
    info.add_itxt(XMP_KEY, _XMP_TEMPLATE.format(source=source))
    for field in FIELDS:
        if record.get(field) is not None:
            info.add_itxt(FIELD_PREFIX + field, str(record[field]))
    return info


def read(path: str | Path) -> dict[str, Any] | None:
    """The genlab provenance record of a PNG or .npz, or None when the file has none.
    Raises ProvenanceError for a missing or unreadable file."""
    path = Path(path)
    if not path.is_file():
        raise ProvenanceError(f"{path}: no such file")
    if path.suffix.lower() == ".npz":
        return _read_npz(path)
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            # info holds the text chunks before the pixel data, where genlab writes them; reading
            # image.text would decode the pixels too (and fail on a tampered file before we could say so)
            text = {k: v for k, v in image.info.items() if isinstance(v, str)}
    except (UnidentifiedImageError, OSError) as exc:
        raise ProvenanceError(f"{path}: not an image genlab can read ({exc})") from exc
    fields = {k[len(FIELD_PREFIX) :]: v for k, v in text.items() if k.startswith(FIELD_PREFIX)}
    if not fields:
        return None
    match = _SOURCE_PATTERN.search(text.get(XMP_KEY, ""))
    record: dict[str, Any] = {"digital_source_type": (match.group(1) or match.group(2)) if match else None}
    for field in FIELDS:
        if field in fields:
            value = fields[field]
            numeric = field in ("seed", "label") and value.lstrip("-").isdigit()
            record[field] = int(value) if numeric else value  # as for_run made them
    return record


def _read_npz(path: Path) -> dict[str, Any] | None:
    import numpy as np

    try:
        with np.load(path, allow_pickle=False) as archive:
            if NPZ_KEY not in archive.files:
                return None
            return json.loads(str(archive[NPZ_KEY]))
    except (ValueError, OSError) as exc:
        raise ProvenanceError(f"{path}: not a readable .npz ({exc})") from exc


def npz_field(record: dict[str, Any]):
    """The record as a 0-d unicode array, to pass as `provenance=` to np.savez (readable without pickle)."""
    import numpy as np

    return np.array(json.dumps(record, sort_keys=True))


def describe(record: dict[str, Any]) -> list[str]:
    source = record.get("digital_source_type") or "missing"
    lines = [f"digital source type: {source.rsplit('/', 1)[-1]} ({source})"]
    lines += [f"{field}: {record[field]}" for field in FIELDS if record.get(field) is not None]
    return lines


# --- C2PA content credentials (optional: the `c2pa` extra) -----------------------------------------------
C2PA_MISSING = "C2PA signing and verification need the c2pa extra: pip install 'genlab[c2pa]' (c2pa-python, cryptography)"
_UNTRUSTED = "signingCredential.untrusted"  # a valid signature by a certificate no trust list knows


class C2paSigner:
    """A certificate chain (PEM, signer first) and its private key (PEM), checked to belong together."""

    def __init__(self, cert_path: str | Path, key_path: str | Path):
        try:
            from cryptography import x509
            from cryptography.hazmat.primitives import serialization
        except ImportError as exc:
            raise ProvenanceError(C2PA_MISSING) from exc
        _require_c2pa()
        self.chain_pem, self.key_pem = (
            _read_bytes(cert_path, "--sign-cert"),
            _read_bytes(key_path, "--sign-key"),
        )
        try:
            chain = x509.load_pem_x509_certificates(self.chain_pem)
        except ValueError as exc:
            raise ProvenanceError(f"--sign-cert {cert_path}: not a PEM certificate chain ({exc})") from exc
        try:
            key = serialization.load_pem_private_key(self.key_pem, password=None)
        except (ValueError, TypeError) as exc:
            raise ProvenanceError(
                f"--sign-key {key_path}: not an unencrypted PEM private key ({exc})"
            ) from exc

        def spki(public_key) -> bytes:
            return public_key.public_bytes(
                serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
            )

        if spki(chain[0].public_key()) != spki(key.public_key()):
            raise ProvenanceError(
                f"--sign-key {key_path} does not match the certificate in --sign-cert {cert_path}"
            )
        self.algorithm = _signing_algorithm(key)

    def sign(self, path: str | Path, record: dict[str, Any]) -> None:
        """Embed a signed C2PA manifest in the PNG at `path` (rewritten atomically): a `c2pa.created`
        action with the IPTC digital source type, and genlab's record as an `org.genlab.provenance` assertion."""
        import os

        import c2pa

        path = Path(path)
        if path.suffix.lower() != ".png":
            raise ProvenanceError(f"{path}: genlab signs PNG files only")
        manifest = {
            "claim_generator_info": [{"name": "genlab", "version": _genlab_version()}],
            "title": path.name,
            "assertions": [
                {
                    "label": "c2pa.actions",
                    "data": {
                        "actions": [
                            {
                                "action": "c2pa.created",
                                "digitalSourceType": record.get("digital_source_type", IPTC_TRAINED),
                                "softwareAgent": {"name": "genlab", "version": _genlab_version()},
                            }
                        ]
                    },
                },
                {"label": "org.genlab.provenance", "data": record},
            ],
        }
        info = c2pa.C2paSignerInfo(self.algorithm, self.chain_pem, self.key_pem, None)
        temporary = path.with_name(f".{path.name}.c2pa-tmp")
        try:
            signer = c2pa.Signer.from_info(info)
            with open(path, "rb") as source, open(temporary, "w+b") as dest:
                c2pa.Builder(json.dumps(manifest), context=_no_thumbnail()).sign(
                    signer, "image/png", source, dest
                )
            os.replace(temporary, path)
        except c2pa.C2paError as exc:
            raise ProvenanceError(f"{path}: C2PA signing failed: {exc}") from exc
        finally:
            temporary.unlink(missing_ok=True)


def _no_thumbnail():
    """Builder settings without the embedded thumbnail: it would add ~65 kB to a ~20 kB grid, and these
    small images are their own thumbnail."""
    import c2pa

    return c2pa.Context(c2pa.Settings.from_dict({"builder": {"thumbnail": {"enabled": False}}}))


def verify_c2pa(path: str | Path) -> tuple[str, str]:
    """("unsigned" | "valid" | "invalid" | "unverified", one line of detail) for the file's C2PA manifest.
    "valid" means the signature and every hash check out; a certificate on no trust list is said so."""
    path = Path(path)
    if path.suffix.lower() != ".png":
        return "unsigned", "genlab signs PNG files only"
    if not _png_has_c2pa(path):
        return "unsigned", "no C2PA manifest"
    try:
        import c2pa
    except ImportError:
        return "unverified", "a C2PA manifest is present; " + C2PA_MISSING
    try:
        reader = c2pa.Reader(str(path))
    except c2pa.C2paError as exc:
        if "ManifestNotFound" in type(exc).__name__ or "no JUMBF" in str(exc):
            return "unsigned", "no C2PA manifest"
        return "invalid", f"unreadable C2PA manifest: {exc}"
    with reader:
        state = reader.get_validation_state()
        results = reader.get_validation_results() or {}
        store = json.loads(reader.json())
    manifest = store.get("manifests", {}).get(store.get("active_manifest"), {})
    failures = [item["code"] for item in results.get("activeManifest", {}).get("failure", [])]
    signature = manifest.get("signature_info", {})
    signer = f"signed by {signature.get('common_name', '?')} (issuer {signature.get('issuer', '?')})"
    if state == "Invalid" or [code for code in failures if code != _UNTRUSTED]:
        return "invalid", f"{signer}; failed checks: {', '.join(c for c in failures if c != _UNTRUSTED)}"
    trust = "certificate on no trust list" if _UNTRUSTED in failures else "trusted certificate"
    return "valid", f"{signer}; signature and content hashes verified; {trust}"


def _require_c2pa() -> None:
    try:
        import c2pa  # noqa: F401
    except ImportError as exc:
        raise ProvenanceError(C2PA_MISSING) from exc


def _read_bytes(path: str | Path, option: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise ProvenanceError(f"{option} {path}: cannot read it ({exc.strerror})") from exc


def _signing_algorithm(key):
    import c2pa
    from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

    if isinstance(key, ec.EllipticCurvePrivateKey):
        table = {"secp256r1": c2pa.C2paSigningAlg.ES256, "secp384r1": c2pa.C2paSigningAlg.ES384}
        table["secp521r1"] = c2pa.C2paSigningAlg.ES512
        if key.curve.name in table:
            return table[key.curve.name]
    if isinstance(key, rsa.RSAPrivateKey):
        return c2pa.C2paSigningAlg.PS256
    if isinstance(key, ed25519.Ed25519PrivateKey):
        return c2pa.C2paSigningAlg.ED25519
    raise ProvenanceError("--sign-key: C2PA needs an EC P-256/P-384/P-521, RSA or Ed25519 key")


def _png_has_c2pa(path: Path) -> bool:
    """Whether a PNG holds a `caBX` chunk (where C2PA embeds its manifest), without decoding the image."""
    import struct

    with open(path, "rb") as handle:
        if handle.read(8) != b"\x89PNG\r\n\x1a\n":
            return False
        while header := handle.read(8):
            if len(header) < 8:
                return False
            length, kind = struct.unpack(">I4s", header)
            if kind == b"caBX":
                return True
            if kind == b"IEND":
                return False
            handle.seek(length + 4, 1)
    return False

"""Leak check throughput and what it finds, on an image the size of the serving image.

Pushes to the local registry (default 127.0.0.1:5000) an image made of the locked base image's layers,
a layer holding this Python environment's installed packages (tens of thousands of files, as in the
serving image, whose virtualenv holds torch and transformers), and a small layer that hides a build
secret in every form the leak check decodes. Then runs `check_image` with the project's default build
secrets (the host CA bundle) plus a token and a pip.conf, against the base image as the public
reference, `--repeat` times, and prints the best time, files, bytes and MB/s, and which hidden forms
were found. The pushed image is deleted afterwards.

Usage: python benchmarks/leak_check.py [--registry 127.0.0.1:5000] [--max-files 48600] [--repeat 3] [--keep]
       python benchmarks/leak_check.py --image HOST/REPO@sha256:...   (scan an existing image instead)

To compare two versions of the check on one image: push with --keep, then run each version's copy of
this script with --image (the hidden forms are reported for pushed images only).
"""

from __future__ import annotations

import argparse
import base64
import gzip
import hashlib
import io
import json
import os
import secrets
import statistics
import sys
import sysconfig
import tarfile
import time
import zlib
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipeline.adapters.registry import RegistryClient, split_repository
from pipeline.baselock import require_lock
from pipeline.supplychain.leak import check_image

REPO = Path(__file__).resolve().parents[1]
NAME = "llmgate/bench-leak"
CA = Path("/etc/ssl/certs/ca-certificates.crt")
LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"


def hidden_forms(token: bytes, pip_line: bytes) -> dict[str, bytes]:
    """One file per way a build step commonly hides a secret in a layer."""
    wrapped = base64.b64encode(b"[global]\n" + pip_line + b"\n").decode()
    return {
        "plain": b"x=" + token,
        "base64": b"t=" + base64.b64encode(b"Bearer " + token),
        "base64url": b"t=" + base64.urlsafe_b64encode(b"\xfb\xff" + token),
        "hex": token.hex().encode(),
        "HEX": token.hex().upper().encode(),
        "gzip": gzip.compress(b"token: " + token + b"\n", mtime=0),
        "zlib": zlib.compress(b"token=" + token),
        "reversed": token[::-1],
        "split across a line break": token[:13] + b"\\\n    " + token[13:],
        "base64 wrapped at 76 columns": "\n".join(wrapped[i:i + 76] for i in range(0, len(wrapped), 76)).encode(),
    }


def _tar(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def _tree_layer(root: Path, max_files: int) -> tuple[bytes, int]:
    buf = io.BytesIO()
    n = 0
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames.sort()
            for f in sorted(filenames):
                p = Path(dirpath) / f
                if n >= max_files or p.is_symlink() or not p.is_file():
                    continue
                tar.add(p, arcname=str(p.relative_to(root.parent)))
                n += 1
    return buf.getvalue(), n


def push_image(reg: RegistryClient, base: str, max_files: int, planted: dict[str, bytes]) -> tuple[str, int]:
    """The base image's layers, the environment's packages and the planted files, as one image."""
    _host, base_name = split_repository(base.split("@")[0])
    base_manifest = reg.image_manifest(base_name, base.split("@")[1])
    _raw, base_config = reg.config(base_manifest, base_name)
    descs, diff_ids = [], list(base_config["rootfs"]["diff_ids"])
    for layer in base_manifest.layers:
        blob = reg.blob_to_file(base_name, layer["digest"])
        try:
            data = blob.read()
        finally:
            blob.close()
        descs.append({"mediaType": layer["mediaType"], "digest": reg.upload_blob(NAME, data), "size": len(data)})
    tree, files = _tree_layer(Path(sysconfig.get_paths()["purelib"]), max_files)
    for tar in (tree, _tar({f"srv/hidden/{k.replace(' ', '_')}": v for k, v in planted.items()})):
        blob = gzip.compress(tar, compresslevel=1, mtime=0)
        descs.append({"mediaType": LAYER, "digest": reg.upload_blob(NAME, blob), "size": len(blob)})
        diff_ids.append("sha256:" + hashlib.sha256(tar).hexdigest())
    cfg = {**base_config, "rootfs": {"type": "layers", "diff_ids": diff_ids},
           "history": [*base_config.get("history", []), {"created_by": "bench: packages"},
                       {"created_by": "bench: hidden secrets"}]}
    raw_cfg = json.dumps(cfg).encode()
    manifest = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                           "digest": reg.upload_blob(NAME, raw_cfg), "size": len(raw_cfg)},
                "layers": descs}
    digest = reg.put_manifest(NAME, "bench", json.dumps(manifest).encode(), manifest["mediaType"])
    return digest, files + len(planted)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--registry", default="127.0.0.1:5000")
    ap.add_argument("--max-files", type=int, default=48_600)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--image", help="scan this image (HOST/REPO@sha256:...) instead of pushing one")
    ap.add_argument("--keep", action="store_true", help="keep the pushed image (to scan it again with --image)")
    args = ap.parse_args()

    token = ("tok_" + secrets.token_hex(24)).encode()
    pip_line = b"index-url = https://bench:" + secrets.token_hex(16).encode() + b"@pypi.example/simple"
    values = {"ca_bundle": CA.read_bytes(), "token": token, "pip_conf": b"[global]\n" + pip_line + b"\n"}
    planted = hidden_forms(token, pip_line)
    base = require_lock(REPO / "dockerfiles" / "base.lock.json")
    reference = f"{base.repository}@{base.digest}"
    with RegistryClient(args.registry) as reg:
        if args.image:
            repository, digest = args.image.split("@")
            files, pushed = None, False
        else:
            t0 = time.perf_counter()
            digest, files = push_image(reg, reference, args.max_files, planted)
            repository, pushed = f"{args.registry}/{NAME}", True
            print(f"pushed {repository}@{digest} ({files} files) in {time.perf_counter() - t0:.1f}s", flush=True)
        try:
            times, report = [], None
            for _ in range(args.repeat):
                t0 = time.perf_counter()
                report = check_image(reg, repository, digest, values, reference=reference)
                times.append(time.perf_counter() - t0)
        finally:
            if pushed and not args.keep:
                reg.delete_manifest(NAME, digest)
    assert report is not None
    found = {f.path.rsplit("/", 1)[-1] for f in report.findings if f.path and f.path.startswith("srv/hidden/")}
    forms = {k: k.replace(" ", "_") in found for k in planted} if not args.image else {}
    best = min(times)
    result = {
        "image": f"{repository}@{digest}", "files_scanned": report.files_scanned, "layers": report.layers_scanned,
        "bytes_scanned": report.bytes_scanned, "best_s": round(best, 2), "median_s": round(statistics.median(times), 2),
        "mb_per_s": round(report.bytes_scanned / best / 1e6, 1), "findings": len(report.findings),
        "hidden_forms_found": forms, "needles": report.needles,
    }
    print(json.dumps(result, indent=2))
    if forms:
        print(f"hidden forms found: {sum(forms.values())} of {len(forms)}; "
              f"missed: {', '.join(k for k, v in forms.items() if not v) or 'none'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

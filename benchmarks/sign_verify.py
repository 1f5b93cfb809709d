"""Wall time of signing and verifying against a registry: image signature and one attestation.

Pushes a small image (one random 256-byte layer) per round to a throwaway `trust-bench-*` repository
of the registry (default: the local stack's 127.0.0.1:5000; start it with `llmgate stack up`),
makes a key pair in a temp dir (not timed: scrypt is paid once per process when a key is loaded),
then times, per round, with the Python signer:

  sign    sign the digest and push the .sig manifest
  verify  fetch and verify the image signature
  attest  sign an in-toto statement (a verdict-sized predicate) and push the .att manifest
  vatt    fetch and verify the attestation of that type

and prints the median and best of each, then deletes every manifest it pushed.

Usage: python benchmarks/sign_verify.py [--registry 127.0.0.1:5000] [--rounds 5]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipeline.adapters import cosign_layout as L
from pipeline.adapters.registry import RegistryClient
from pipeline.adapters.signer import PythonSigner
from pipeline.supplychain import cosign_keys as ck


def push_image(reg: RegistryClient, name: str, tag: str) -> str:
    layer = os.urandom(256)
    ld = reg.upload_blob(name, layer)
    config = json.dumps({"architecture": "amd64", "os": "linux", "rootfs": {"type": "layers", "diff_ids": [ld]}}).encode()
    cd = reg.upload_blob(name, config)
    manifest = json.dumps({"schemaVersion": 2, "mediaType": L.OCI_MANIFEST,
                           "config": {"mediaType": L.OCI_CONFIG, "size": len(config), "digest": cd},
                           "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "size": len(layer),
                                       "digest": ld}]}).encode()
    return reg.put_manifest(name, tag, manifest, L.OCI_MANIFEST)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--registry", default="127.0.0.1:5000")
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    reg = RegistryClient(args.registry)
    if not reg.ping():
        print(f"registry {args.registry} not reachable (start it with `llmgate stack up`)", file=sys.stderr)
        return 3
    name = f"trust-bench-{uuid.uuid4().hex[:8]}/img"
    with tempfile.TemporaryDirectory() as tmp:
        files = ck.write_key_pair(tmp, b"bench")
        key = ck.load_private_key_file(files.private_key, b"bench")
        pub = ck.public_pem(ck.load_public_key_file(files.public_key))
    predicate = {"run_id": "bench", "decision": "pass", "gates": [{"name": f"g{i}", "status": "pass", "value": i}
                                                                  for i in range(20)]}
    ptype = "https://llmgate.dev/verdict/v1"
    signer = PythonSigner({args.registry: reg})
    times: dict[str, list[float]] = {"sign": [], "verify": [], "attest": [], "vatt": []}
    digests: list[str] = []
    try:
        for i in range(args.rounds):
            digest = push_image(reg, name, f"r{i}")
            digests.append(digest)
            image = f"{args.registry}/{name}@{digest}"
            steps: list[tuple[str, Callable[[str], Any]]] = [
                ("sign", lambda img: signer.sign_image(img, key)),
                ("verify", lambda img: signer.verify_image(img, pub)),
                ("attest", lambda img: signer.attest(img, ptype, predicate, key)),
                ("vatt", lambda img: signer.verify_attestations(img, ptype, pub)),
            ]
            for step, fn in steps:
                t0 = time.perf_counter()
                result = fn(image)
                times[step].append(time.perf_counter() - t0)
                if step in ("verify", "vatt") and not result.verified:
                    print(f"{step} did not verify: {result.reason}", file=sys.stderr)
                    return 1
    finally:
        for d in digests:
            for suffix in (L.SIG_SUFFIX, L.ATT_SUFFIX):
                found = reg.resolve(name, L.tag_for(d, suffix))
                if found:
                    reg.delete_manifest(name, found)
            reg.delete_manifest(name, d)
        reg.close()
    print(f"registry {args.registry}, {args.rounds} rounds, Python signer (ECDSA P-256)")
    for step, label in (("sign", "sign + push .sig"), ("verify", "verify signature"), ("attest", "attest + push .att"),
                        ("vatt", "verify attestation")):
        xs = times[step]
        print(f"{label:<20} median {statistics.median(xs) * 1000:7.1f} ms   best {min(xs) * 1000:7.1f} ms")
    total = [sum(times[s][i] for s in times) for i in range(args.rounds)]
    print(f"{'all four':<20} median {statistics.median(total) * 1000:7.1f} ms   best {min(total) * 1000:7.1f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())

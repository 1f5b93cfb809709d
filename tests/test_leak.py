"""The leak gate: value-level proof that no build secret's bytes are in an image.

Real registry throughout: synthetic images pushed through the distribution API (gzip, zstd and
plain tar layers, config labels, history) for exact placement, and real BuildKit builds: the clean
CPU image passes, a build that plants the secret (COPY of the file, RUN copying the mounted secret,
LABEL, a line of it in a RUN command) is caught at each place."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import secrets
import tarfile
from pathlib import Path

import pytest
import zstandard

from pipeline.adapters.registry import RegistryClient
from pipeline.errors import BadInput, InfraError
from pipeline.models import ImageRef, RunRecord, StageResult, StageStatus
from pipeline.schemas import LeakDetails
from pipeline.stages.leak import leak_stage
from pipeline.supplychain.leak import MIN_LINE, _Matcher, build_needles, check_image
from pipeline.workspace import Workspace
from tests.conftest import delete_from_registry, make_build_config
from tests.stage_helpers import stage_ctx

CA = Path("/etc/ssl/certs/ca-certificates.crt")


def _fake_key() -> bytes:
    body = "\n".join(secrets.token_urlsafe(48)[:64] for _ in range(6))
    return f"-----BEGIN PRIVATE KEY-----\n{body}\n-----END PRIVATE KEY-----\n".encode()


# -- needles (pure) ----------------------------------------------------------------------------------


def test_needles_whole_value_and_distinctive_lines():
    key = _fake_key()
    needles, excluded = build_needles({"key": key})
    labels = [n.label for n in needles]
    assert labels[0] == "value" and needles[0].data == key.strip()
    assert labels[1:] == [f"line {i}" for i in range(2, 8)]  # armour lines 1 and 8 are not evidence
    assert all(len(n.data) >= MIN_LINE for n in needles)
    assert excluded == {"key": 0}


def test_the_one_distinctive_line_of_a_multi_line_secret_is_a_needle_of_its_own():
    """A pip.conf has one line long enough to be evidence: a copy of that line alone is a leak, so it is
    searched besides the whole file; a one-line secret is its own value and gets no line needle."""
    line = b"index-url = https://ci:" + secrets.token_hex(16).encode() + b"@pypi.example/simple"
    needles, excluded = build_needles({"pip": b"[global]\n" + line + b"\n"})
    assert [(n.label, n.data) for n in needles] == [("value", b"[global]\n" + line), ("line 2", line)]
    assert excluded == {"pip": 0}
    token = ("tok_" + secrets.token_hex(20)).encode()
    needles, excluded = build_needles({"tok": b"  " + token + b"\n"})
    assert [(n.label, n.data) for n in needles] == [("value", token)] and excluded == {}


def test_a_line_is_evidence_from_20_bytes():
    """docs/SUPPLY_CHAIN.md: each distinctive line of 20 bytes or more is a needle; a 19-byte line is too
    common a shape (base64 tails, key prefixes) to count."""
    nineteen, twenty = b"x" * 15 + b"_19b", b"y" * 16 + b"_20b"
    assert (len(nineteen), len(twenty)) == (19, 20)
    needles, _ = build_needles({"s": nineteen + b"\n" + twenty + b"\n"})
    assert [(n.label, n.data) for n in needles] == [("value", nineteen + b"\n" + twenty), ("line 2", twenty)]


def test_public_lines_are_excluded():
    key = _fake_key()
    public = {key.splitlines()[2].strip()}
    needles, excluded = build_needles({"key": key}, public)
    assert excluded == {"key": 1}
    assert all(n.data not in public for n in needles)


def test_too_short_secret_cannot_be_proven_absent():
    with pytest.raises(BadInput) as exc:
        build_needles({"pin": b"1234\n"})
    assert exc.value.where == "build.secrets.pin"


def test_match_across_chunk_border():
    needle = b"s3cr3t-" + secrets.token_hex(16).encode()
    m = _Matcher(build_needles({"t": needle})[0])
    data = b"x" * 1000 + needle + b"y" * 10
    hits, n = m.search_stream([data[:1010], data[1010:]])
    assert hits == {0} and n == len(data)
    hits, _ = m.search_stream([b"x" * 1000, b"y" * 1000])
    assert hits == set()


# -- synthetic images on the real registry -------------------------------------------------------------


def _tar(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def _push_image(reg: RegistryClient, name: str, tag: str, layers: list[tuple[bytes, str]], config: dict) -> str:
    """layers: (tar bytes, compression 'gzip'|'zstd'|'none')."""
    descs = []
    diff_ids = []
    for tar, comp in layers:
        blob = {"gzip": lambda b: gzip.compress(b, mtime=0), "zstd": zstandard.ZstdCompressor().compress,
                "none": lambda b: b}[comp](tar)
        media = {"gzip": "application/vnd.oci.image.layer.v1.tar+gzip",
                 "zstd": "application/vnd.oci.image.layer.v1.tar+zstd",
                 "none": "application/vnd.oci.image.layer.v1.tar"}[comp]
        descs.append({"mediaType": media, "digest": reg.upload_blob(name, blob), "size": len(blob)})
        diff_ids.append("sha256:" + hashlib.sha256(tar).hexdigest())
    cfg = {"architecture": "amd64", "os": "linux", "rootfs": {"type": "layers", "diff_ids": diff_ids}, **config}
    raw_cfg = json.dumps(cfg).encode()
    manifest = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                           "digest": reg.upload_blob(name, raw_cfg), "size": len(raw_cfg)},
                "layers": descs}
    return reg.put_manifest(name, tag, json.dumps(manifest).encode(), "application/vnd.oci.image.manifest.v1+json")


@pytest.fixture()
def registry(local_stack):
    with RegistryClient(local_stack.registry) as reg:
        yield reg


@pytest.mark.docker
def test_synthetic_image_every_place_is_reported(registry, local_stack):
    name = "llmgate/test-leak-synthetic"
    token = ("tok_" + secrets.token_hex(20)).encode()
    key = _fake_key()
    key_line = key.splitlines()[3]
    layers = [
        (_tar({"etc/app/token": b"prefix " + token + b" suffix", "etc/clean": b"nothing here"}), "gzip"),
        (_tar({"srv/key-copy.txt": b"junk\n" + key_line + b"\njunk"}), "zstd"),
        (_tar({f"var/cache/{token.decode()}": b"name carries it"}), "none"),
    ]
    config = {"config": {"Labels": {"note": "k=" + token.decode()}},
              "history": [{"created_by": "/bin/sh -c echo clean"},
                          {"created_by": f"/bin/sh -c echo {key_line.decode()} > /dev/null"}]}
    digest = _push_image(registry, name, "planted", layers, config)
    try:
        report = check_image(registry, f"{local_stack.registry}/{name}", digest, {"token": token, "key": key})
        layer_digests = [d["digest"] for d in registry.image_manifest(name, digest).layers]
    finally:
        registry.delete_manifest(name, digest)
    by_path = {f.path: f.layer_digest for f in report.findings if f.where == "layer"}
    assert by_path["etc/app/token"] == layer_digests[0] and by_path["srv/key-copy.txt"] == layer_digests[1]
    places = {(f.secret_id, f.where, f.path, f.in_name, f.history_index) for f in report.findings}
    assert ("token", "layer", "etc/app/token", False, None) in places
    assert ("key", "layer", "srv/key-copy.txt", False, None) in places  # one line of it, zstd layer
    assert ("token", "layer", "var/cache/[REDACTED]", True, None) in places  # the place, never the bytes
    assert ("token", "config", "config.Labels.note", False, None) in places
    assert ("key", "history", "created_by", False, 1) in places
    assert not any(f.path == "etc/clean" for f in report.findings)
    assert not any(f.where == "history" and f.history_index == 0 for f in report.findings)
    assert report.layers_scanned == 3 and report.history_entries == 2
    dumped = report.model_dump_json()
    assert token.decode() not in dumped
    assert key_line.decode() not in dumped


@pytest.mark.docker
def test_the_image_manifest_under_an_index_is_searched_too(registry, local_stack):
    """A multi-platform image is pulled through its index: the platform's own manifest (its annotations)
    is searched as well as the index."""
    name = "llmgate/test-leak-synthetic"
    token = ("tok_" + secrets.token_hex(20)).encode()
    plain = _push_image(registry, name, "child", [(_tar({"etc/clean": b"nothing here"}), "gzip")], {})
    doc = json.loads(registry.manifest(name, plain).raw) | {"annotations": {"org.example.note": "t=" + token.decode()}}
    annotated = json.dumps(doc).encode()
    child = registry.put_manifest(name, "child", annotated, "application/vnd.oci.image.manifest.v1+json")
    registry.delete_manifest(name, plain)
    index = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
             "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": child,
                            "size": len(annotated), "platform": {"os": "linux", "architecture": "amd64"}}]}
    top = registry.put_manifest(name, "multi", json.dumps(index).encode(), "application/vnd.oci.image.index.v1+json")
    try:
        report = check_image(registry, f"{local_stack.registry}/{name}", top, {"token": token})
    finally:
        registry.delete_manifest(name, top)
        registry.delete_manifest(name, child)
    assert {(f.where, f.path) for f in report.findings} == {("manifest", "annotations.org.example.note")}
    assert report.layers_scanned == 1


@pytest.mark.docker
def test_a_layer_cut_short_is_an_infrastructure_error_naming_it(registry, local_stack):
    """A gzip layer that ends before its end-of-stream marker (a truncated upload) cannot be proven free of
    secrets: the check stops with an infrastructure error naming the layer, never a clean report."""
    name = "llmgate/test-leak-synthetic"
    whole = _push_image(registry, name, "cut", [(_tar({"srv/data": secrets.token_bytes(50_000)}), "gzip")], {})
    manifest = json.loads(registry.manifest(name, whole).raw)
    blob = gzip.compress(_tar({"srv/data": secrets.token_bytes(50_000)}), mtime=0)
    cut = blob[: len(blob) // 2]
    manifest["layers"] = [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                           "digest": registry.upload_blob(name, cut), "size": len(cut)}]
    digest = registry.put_manifest(name, "cut", json.dumps(manifest).encode(), manifest["mediaType"])
    try:
        with pytest.raises(InfraError) as exc:
            check_image(registry, f"{local_stack.registry}/{name}", digest, {"token": b"tok_" + b"1" * 40})
    finally:
        registry.delete_manifest(name, digest)
        registry.delete_manifest(name, whole)
    assert "layer is not a readable tar" in exc.value.message and exc.value.where == f"{name}@{manifest['layers'][0]['digest']}"


@pytest.mark.docker
def test_lines_the_reference_image_holds_as_is_are_public_and_not_reported(registry, local_stack):
    """A line of a secret that the public reference image holds as is (a public CA certificate in both
    bundles) is not evidence; a line the reference holds only encoded (hex) or compressed is not public, and
    stays a needle."""
    name = "llmgate/test-leak-synthetic"
    key = _fake_key()
    public, encoded, packed = key.splitlines()[2:5]
    ref = _push_image(registry, name, "reference", [(_tar({"etc/ssl/bundle.pem": b"x\n" + public + b"\n",
                                                          "etc/hexdump": encoded.hex().encode(),
                                                          "etc/notes.gz": gzip.compress(packed, mtime=0)}),
                                                     "gzip")], {})
    copy = _tar({"etc/ssl/copy.pem": public + b"\n" + encoded + b"\n" + packed})
    image = _push_image(registry, name, "with-lines", [(copy, "gzip")], {})
    try:
        report = check_image(registry, f"{local_stack.registry}/{name}", image, {"key": key},
                             reference=f"{local_stack.registry}/{name}@{ref}")
    finally:
        registry.delete_manifest(name, image)
        registry.delete_manifest(name, ref)
    assert report.public_lines_excluded == {"key": 1}
    assert {(f.needle, f.path) for f in report.findings} == {("line 4", "etc/ssl/copy.pem"),
                                                             ("line 5", "etc/ssl/copy.pem")}


@pytest.mark.docker
def test_a_link_target_holding_a_secret_is_reported_by_the_link(registry, local_stack):
    name = "llmgate/test-leak-synthetic"
    token = ("tok_" + secrets.token_hex(20)).encode()
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        info = tarfile.TarInfo("etc/app/current")
        info.type, info.linkname = tarfile.SYMTYPE, "/run/" + token.decode()
        tar.addfile(info)
    digest = _push_image(registry, name, "link", [(buf.getvalue(), "gzip")], {})
    try:
        report = check_image(registry, f"{local_stack.registry}/{name}", digest, {"token": token})
    finally:
        registry.delete_manifest(name, digest)
    assert {(f.secret_id, f.where, f.path, f.in_name) for f in report.findings} == {
        ("token", "layer", "etc/app/current", True)}


@pytest.mark.docker
def test_synthetic_clean_image_has_no_findings(registry, local_stack):
    name = "llmgate/test-leak-synthetic"
    token = ("tok_" + secrets.token_hex(20)).encode()
    content = b"token_file=/run/secrets/t"
    digest = _push_image(registry, name, "clean", [(_tar({"etc/app/config": content}), "gzip")],
                         {"config": {"Env": ["TOKEN_FILE=/run/secrets/t"]}, "history": [{"created_by": "x"}]})
    try:
        report = check_image(registry, f"{local_stack.registry}/{name}", digest, {"token": token})
    finally:
        registry.delete_manifest(name, digest)
    assert report.findings == [] and report.leaks == 0
    assert report.files_scanned == 1 and report.needles == {"token": 1}
    assert (report.bytes_scanned, report.files_decompressed, report.layers_scanned) == (len(content), 0, 1)
    assert 0 <= report.duration_s < 600


# -- real builds ----------------------------------------------------------------------------------------


@pytest.mark.docker
@pytest.mark.slow
def test_clean_cpu_build_leaks_nothing(built_cpu_image, local_stack):
    b = built_cpu_image
    assert b.run.stages["build"].status is StageStatus.OK, b.run.stages["build"].reason
    res = leak_stage(b.run, stage_ctx(b.cfg, b.ws))
    assert res.status is StageStatus.OK
    assert res.metrics["leaks"] == 0, res.reason
    d = res.details_as(LeakDetails)
    assert d is not None and d.findings == []
    assert d.layers_scanned >= 5 and d.history_entries >= 10 and d.files_scanned > 10_000
    assert d.needles["pip_conf"] >= 2  # the whole file and its token line
    # Every CA line also present in the public base image is excluded; the rest (the host's own CAs) is searched.
    assert d.public_lines_excluded["ca_bundle"] > 0 and d.needles["ca_bundle"] > 1
    assert d.reference_image == local_stack.base_ref


PLANTED = """\
ARG BASE_IMAGE
FROM ${BASE_IMAGE}
LABEL org.example.note="TOKEN_VALUE"
COPY token.txt /etc/app/token
RUN --mount=type=secret,id=key cp /run/secrets/key /opt/key.pem
RUN echo KEY_LINE > /dev/null
USER 1000
"""


@pytest.mark.docker
def test_planted_secret_is_caught_by_leak_stage(local_stack, tmp_path):
    from pipeline.stages.build import build_stage

    token = "tok_" + secrets.token_hex(20)
    key = _fake_key()
    key_line = key.decode().splitlines()[2]
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "token.txt").write_text(token + "\n")
    (ctx / "key.pem").write_bytes(key)
    (ctx / "Dockerfile").write_text(PLANTED.replace("TOKEN_VALUE", token).replace("KEY_LINE", key_line))
    repository = f"{local_stack.registry}/llmgate/test-leak-planted"
    cfg = make_build_config(local_stack, repository=repository, tag="planted", dockerfile=ctx / "Dockerfile",
                            context=ctx, secret_files={"token": ctx / "token.txt", "key": ctx / "key.pem"},
                            wheels=False)
    ws = Workspace(tmp_path / "ws")
    run = RunRecord(image=ImageRef(repository=repository))
    try:
        run.add_stage(build_stage(run, stage_ctx(cfg, ws)))
        assert run.stages["build"].status is StageStatus.OK, run.stages["build"].reason
        res = leak_stage(run, stage_ctx(cfg, ws))
    finally:
        delete_from_registry(local_stack.registry, repository, run.image.digest)
        from pipeline.adapters.docker_build import DockerBuilder

        DockerBuilder().remove(f"{repository}:planted")
    report = res.details_as(LeakDetails)
    assert report is not None
    found = {(f.secret_id, f.where, f.path) for f in report.findings}
    assert ("token", "layer", "etc/app/token") in found
    assert ("key", "layer", "opt/key.pem") in found
    assert ("token", "config", "config.Labels.org.example.note") in found
    assert any(s == "key" and w == "history" for s, w, _ in found)
    assert res.metrics["leaks"] == len(report.findings) >= 4
    assert token not in (res.reason or "") and key_line not in (res.reason or "")
    assert token not in (ws.run_dir(run.run_id) / "leak.json").read_text()


@pytest.mark.docker
def test_registry_down_during_leak_check_is_infra_error(tmp_path):
    import socket

    from pipeline.config import PipelineConfig, SecretSource
    from pipeline.errors import InfraError

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    run = RunRecord(image=ImageRef(repository=f"127.0.0.1:{port}/llmgate/x", digest="sha256:" + "0" * 64))
    run.add_stage(StageResult(stage="build", status=StageStatus.OK))
    secret = tmp_path / "t"
    secret.write_bytes(b"t" * 20)
    cfg = PipelineConfig()
    cfg.build.secrets = {"t": SecretSource(file=str(secret))}
    with pytest.raises(InfraError) as exc:
        leak_stage(run, stage_ctx(cfg, Workspace(tmp_path / "ws")))
    assert f"127.0.0.1:{port}" in (exc.value.where or "")
    assert "llmgate stack up" in (exc.value.hint or "")

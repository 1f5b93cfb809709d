"""Hostile and careless input through the real CLI, one table row per case: each gets its own exit code
(2 bad input, 3 infrastructure, 1 a gate/check refused) and a message naming the file, field or
endpoint; none prints a Python traceback; none that is refused leaves a run record behind; nothing
from outside (a tag, a reason, a server body) is read as rich markup.

Most rows run in-process through typer's CliRunner (the same click command tree `llmgate` runs); a
few also run as `python -m pipeline` subprocesses, the way CI calls it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from pipeline.cli import app
from pipeline.models import ImageRef, RunRecord, Stage, StageResult, StageStatus

REPO = Path(__file__).resolve().parents[1]
DIGEST = "sha256:" + "cd" * 32
MARKUP = "[/boom] [bold]not bold[/bold] [link=x]"


@dataclass
class Case:
    id: str
    args: list[str]  # "{w}" is the world directory; "{run}", "{hostile}", "{hostile2}", "{local}" stored run ids
    code: int
    fragment: str  # in the output (stdout and stderr together)
    files: dict[str, bytes | str | dict[str, Any]] = field(default_factory=dict)  # written under {w} first
    config: dict[str, Any] | None = None  # merged into the world's llmgate.yaml, written as {w}/bad.yaml
    leaves_no_run: bool = False  # a refused `run`/`new-run`/`build`: the store holds no new run after it
    env: dict[str, str] = field(default_factory=dict)  # on top of the test's environment


def _config(w: Path) -> dict[str, Any]:
    return {"gates_file": str(REPO / "gates.local.yaml"),
            "boot": {"model_dir": str(w / "model")},
            "eval": {"ground_truth": str(REPO / "ground_truth" / "v1")},
            "build": {"repository": "127.0.0.1:5000/llmgate/hostile-cli", "context": str(REPO),
                      "dockerfile": str(REPO / "dockerfiles" / "cpu.Dockerfile")},
            "stack": {"lock_file": str(REPO / "dockerfiles" / "base.lock.json")},
            "sign": {"key": {"file": str(w / "no-key")}, "public_key": str(w / "no-key.pub")}}


def _bad(section: str, key: str, value: Any) -> dict[str, Any]:
    return {section: {key: value}}


RUN = ["run", "--config", "{w}/llmgate.yaml", "--model-dir", "{w}/model"]
NEW_RUN = ["new-run", "--config", "{w}/llmgate.yaml", "--model-dir", "{w}/model"]
XSTEST = str(REPO.parent / "shared/fixtures/xstest/completions_gpt4.csv")
PUB = str(REPO.parent / "shared/fixtures/cosign/cosign_generated_encrypted_empty_private.pub")
BAD_CONFIG_RUN = ["run", "--config", "{w}/bad.yaml", "--model-dir", "{w}/model"]

CASES: list[Case | Any] = [
    # -- the config file: every number that sizes or bounds work, the file itself ---------------------------
    *[Case(f"config-{sec}.{key}={val!r}", BAD_CONFIG_RUN, 2, f"{sec}.{key}", config=_bad(sec, key, val),
           leaves_no_run=True)
      for sec, key, val in [
          ("bench", "requests", -1), ("bench", "requests", 0), ("bench", "concurrency", 0),
          ("bench", "deadline_s", 0), ("bench", "request_timeout_s", -1), ("bench", "warmup", -1),
          ("bench", "rate_rps", 0), ("bench", "max_tokens", 0), ("bench", "requests", True),
          ("bench", "requests", "40"), ("bench", "sweep_levels", []), ("bench", "deadline_s", float("inf")),
          ("boot", "ready_timeout_s", 0), ("boot", "probe_interval_s", 0), ("boot", "container_port", 0),
          ("boot", "repetitions", 0), ("boot", "log_tail_lines", 0),
          ("eval", "concurrency", 0), ("eval", "max_tokens", 0), ("eval", "request_timeout_s", 0),
          ("eval", "deadline_s", float("nan")), ("eval", "retries", -1),
          ("scan", "timeout_s", 0), ("sign", "timeout_s", -1), ("build", "timeout_s", float("inf")),
          ("build", "push_timeout_s", 0), ("promote", "lock_lease_s", 0), ("build", "tag", "[/x]"),
      ]],
    Case("config-is-a-directory", ["run", "--config", "{w}"], 2, "is a directory, not a config file",
         leaves_no_run=True),
    Case("config-not-utf8", ["run", "--config", "{w}/latin1.yaml"], 2, "not UTF-8 text",
         files={"latin1.yaml": b"target: caf\xe9\n"}, leaves_no_run=True),
    Case("config-missing", ["run", "--config", "{w}/nope.yaml"], 2, "nope.yaml: file not found", leaves_no_run=True),
    Case("config-duplicate-key", ["run", "--config", "{w}/dup.yaml"], 2, "duplicate key 'requests'",
         files={"dup.yaml": "bench:\n  requests: 10\n  requests: 0\n"}, leaves_no_run=True),
    Case("config-unknown-key", ["run", "--config", "{w}/typo.yaml"], 2, "bench.requets",
         files={"typo.yaml": "bench:\n  requets: 10\n"}, leaves_no_run=True),
    Case("config-not-a-mapping", ["run", "--config", "{w}/list.yaml"], 2, "expected a mapping",
         files={"list.yaml": "- a\n- b\n"}, leaves_no_run=True),
    Case("config-not-yaml", ["run", "--config", "{w}/broken.yaml"], 2, "not valid YAML",
         files={"broken.yaml": "bench: {requests: [1,\n"}, leaves_no_run=True),
    Case("config-section-null", ["run", "--config", "{w}/null.yaml"], 2, "bench",
         files={"null.yaml": "bench: null\n"}, leaves_no_run=True),
    Case("config-markup-in-value", ["run", "--config", "{w}/mk.yaml"], 2, "[/boom]",
         files={"mk.yaml": "bench: {'[/boom]': 1}\n"}, leaves_no_run=True),
    # -- `llmgate run` options, refused before any side effect ---------------------------------------
    Case("run-tag-markup", [*RUN, "--tag", "[/x]"], 2, "not an image tag: '[/x]'", leaves_no_run=True),
    Case("run-tag-empty", [*RUN, "--tag", ""], 2, "--tag", leaves_no_run=True),
    Case("run-tag-path", [*RUN, "--tag", "../../etc"], 2, "not an image tag", leaves_no_run=True),
    Case("run-skip-unknown", [*RUN, "--skip", "bogus"], 2, "unknown stage(s) ['bogus']", leaves_no_run=True),
    Case("run-skip-markup", [*RUN, "--skip", "[/x]"], 2, "--skip", leaves_no_run=True),
    Case("run-model-dir-missing", ["run", "--config", "{w}/llmgate.yaml", "--model-dir", "{w}/nope"], 2,
         "model directory not found", leaves_no_run=True),
    Case("run-model-dir-is-a-file", ["run", "--config", "{w}/llmgate.yaml", "--model-dir", "{w}/llmgate.yaml"], 2,
         "model directory not found", leaves_no_run=True),
    Case("run-model-dir-empty", ["run", "--config", "{w}/llmgate.yaml", "--model-dir", "{w}/empty"], 2,
         "no model at", files={"empty/.keep": ""}, leaves_no_run=True),
    Case("run-policy-dir", [*RUN, "--policy", "{w}"], 2, "is a directory", leaves_no_run=True),
    Case("run-policy-not-utf8", [*RUN, "--policy", "{w}/latin1-policy.yaml"], 2, "not UTF-8",
         files={"latin1-policy.yaml": b"gates: {caf\xe9: {}}\n"}, leaves_no_run=True),
    Case("run-policy-missing", [*RUN, "--policy", "{w}/nope-policy.yaml"], 2, "file not found", leaves_no_run=True),
    Case("run-policy-duplicate-threshold", [*RUN, "--policy", "{w}/dup-policy.yaml"], 2, "duplicate key 'threshold'",
         files={"dup-policy.yaml": "extends: " + str(REPO / "gates.yaml") + "\ngates:\n  - name: error_rate\n"
                                   "    threshold: 0.01\n    threshold: 0.99\n"}, leaves_no_run=True),
    Case("run-server-url-not-a-url", [*RUN, "--server-url", "notaurl"], 2, "--server-url", leaves_no_run=True),
    Case("run-server-url-ftp", [*RUN, "--server-url", "ftp://127.0.0.1:8000"], 2, "not an http(s) URL",
         leaves_no_run=True),
    Case("run-server-url-bad-port", [*RUN, "--server-url", "http://127.0.0.1:99999"], 2, "--server-url",
         leaves_no_run=True),
    Case("run-unknown-option-markup", ["run", "--[/x]"], 2, "No such option", leaves_no_run=True),
    Case("run-build-arg-named-token", ["run", "--config", "{w}/bad.yaml", "--model-dir", "{w}/model"], 2,
         "build.build_args.API_TOKEN: build arg API_TOKEN carries", leaves_no_run=True,
         config={"build": {"build_args": {"API_TOKEN": "pip-token-value-0042"},
                           "secrets": {"pip": {"file": "{w}/pip.conf"}}}},
         files={"pip.conf": "[global]\ntoken = pip-token-value-0042\n"}),
    Case("run-dockerfile-missing", ["run", "--config", "{w}/bad.yaml", "--model-dir", "{w}/model"], 2,
         "build.dockerfile", config={"build": {"dockerfile": "{w}/nope.Dockerfile"}}, leaves_no_run=True),
    Case("run-secret-file-is-a-dir", ["run", "--config", "{w}/bad.yaml", "--model-dir", "{w}/model"], 2,
         "is a directory, not a secret file", config={"build": {"secrets": {"ca": {"file": "{w}"}}}},
         leaves_no_run=True),
    Case("run-repository-without-registry", ["run", "--config", "{w}/bad.yaml", "--model-dir", "{w}/model"], 2,
         "must name its registry host", config={"build": {"repository": "server"}}, leaves_no_run=True),
    Case("build-tag-markup", ["build", "--config", "{w}/llmgate.yaml", "--model-dir", "{w}/model", "--tag", "[/x]"],
         2, "not an image tag", leaves_no_run=True),
    # -- new-run / stage ----------------------------------------------------------------------------------
    Case("new-run-tag-markup", ["new-run", "--config", "{w}/llmgate.yaml", "--image", f"r.example/x@{DIGEST}",
                                "--model-dir", "{w}/model", "--tag", "[/x]"], 2, "not an image tag",
         leaves_no_run=True),
    Case("new-run-bad-digest", ["new-run", "--config", "{w}/llmgate.yaml", "--image", "r.example/x@sha256:zz",
                                "--model-dir", "{w}/model"], 2, "not a sha256 digest", leaves_no_run=True),
    Case("new-run-by-tag", ["new-run", "--config", "{w}/llmgate.yaml", "--image", "r.example/x:v1",
                            "--model-dir", "{w}/model"], 2, "not pinned by digest", leaves_no_run=True),
    Case("new-run-empty-image", ["new-run", "--config", "{w}/llmgate.yaml", "--image", "@" + DIGEST,
                                 "--model-dir", "{w}/model"], 2, "empty repository", leaves_no_run=True),
    Case("new-run-unknown-plan", ["new-run", "--plan", "[/x]", "--image", f"r.example/x@{DIGEST}"], 2,
         "unknown plan '[/x]'", leaves_no_run=True),
    Case("stage-unknown", ["stage", "[/x]"], 2, "is not one of"),
    Case("stage-promote-not-asked", ["stage", "promote", "--run", "{run}", "--config", "{w}/llmgate.yaml"], 2,
         "runs only when asked for"),
    Case("stage-leak-before-build", ["stage", "leak", "--run", "{run}", "--config", "{w}/llmgate.yaml"], 2,
         "no 'build' result"),
    Case("stage-bench-bad-server-url", ["stage", "bench", "--run", "{run}", "--config", "{w}/llmgate.yaml",
                                        "--server-url", "ftp://x"], 2, "--server-url"),
    # -- run ids ------------------------------------------------------------------------------------------------
    Case("run-id-markup", ["gate", "--run", "[/x]"], 2, "not a run id: '[/x]'"),
    Case("run-id-path", ["gate", "--run", "../../etc/passwd"], 2, "no path separators"),
    Case("run-id-empty", ["gate", "--run", ""], 2, "not a run id"),
    Case("run-id-unknown", ["gate", "--run", "feedfacefeed"], 2, "no run with id 'feedfacefeed'"),
    Case("run-id-ambiguous", ["gate", "--run", "cafe"], 2, "matches more than one run"),
    # -- gate -----------------------------------------------------------------------------------------------------
    Case("gate-hostile-strings", ["gate", "--run", "{hostile}", "--config", "{w}/llmgate.yaml"], 1, "[/x]"),
    Case("gate-junit-unwritable", ["gate", "--run", "{run}", "--config", "{w}/llmgate.yaml", "--junit",
                                   "/nonexistent/dir/j.xml"], 2, "the verdict is saved in the store"),
    Case("gate-policy-dir", ["gate", "--run", "{run}", "--config", "{w}/llmgate.yaml", "--policy", "{w}"], 2,
         "is a directory"),
    Case("gate-policy-inf", ["gate", "--run", "{run}", "--config", "{w}/llmgate.yaml", "--policy",
                             "{w}/inf-policy.yaml"], 2, "must be a finite number (got inf)",
         files={"inf-policy.yaml": "extends: " + str(REPO / "gates.yaml")
                + "\ngates:\n  - name: error_rate\n    threshold: .inf\n    reason: r\n"}),
    # -- the store --------------------------------------------------------------------------------------------------
    Case("store-corrupt", ["--store", "{w}/corrupt.db", "gate"], 2, "corrupt.db: unusable SQLite store",
         files={"corrupt.db": b"SQLite format 3\x00" + b"\xde\xad" * 600}),
    Case("store-not-sqlite", ["--store", "{w}/llmgate.yaml", "gate"], 2, "is not a SQLite database"),
    Case("store-is-a-directory", ["--store", "{w}", "gate"], 2, "is a directory"),
    Case("store-empty", ["--store", "{w}/fresh.db", "gate"], 2, "the store holds no run yet"),
    Case("workdir-is-a-file", ["--workdir", "/etc/passwd", "gate"], 2,
         "--workdir /etc/passwd: cannot use it as the work dir"),
    Case("workdir-cannot-be-made", ["--workdir", "/proc/llmgate-x", "gate"], 2, "cannot use it as the work dir"),
    # -- policy check ------------------------------------------------------------------------------------------------
    Case("policy-check-dir", ["policy", "check", "{w}"], 2, "is a directory, not a policy file"),
    Case("policy-check-not-utf8", ["policy", "check", "{w}/latin1-policy.yaml"], 2, "not UTF-8",
         files={"latin1-policy.yaml": b"gates: {caf\xe9: {}}\n"}),
    Case("policy-check-duplicate", ["policy", "check", "{w}/dup-policy.yaml"], 2, "duplicate key",
         files={"dup-policy.yaml": "gates:\n  a: {}\n  a: {}\n"}),
    Case("policy-check-nan", ["policy", "check", "{w}/nan-policy.yaml"], 2, "must be a finite number (got nan)",
         files={"nan-policy.yaml": "extends: " + str(REPO / "gates.yaml")
                + "\ngates:\n  - name: error_rate\n    threshold: .nan\n    reason: r\n"}),
    Case("policy-check-unknown-plan", ["policy", "check", str(REPO / "gates.yaml"), "--plan", "bogus"], 2,
         "unknown plan"),
    Case("policy-check-relax-locked", ["policy", "check", "{w}/relax.yaml"], 2, "no_secret_in_image",
         files={"relax.yaml": "extends: " + str(REPO / "gates.yaml")
                + "\ngates:\n  - name: no_secret_in_image\n    required: false\n    reason: \"y\"\n"}),
    # -- scan --report: unprovable reports fail closed, broken ones are bad input -------------------------------
    Case("scan-report-bare-schema", ["scan", "--report", "{w}/bare.json", "--policy", str(REPO / "gates.yaml")], 1,
         "not proven", files={"bare.json": {"SchemaVersion": 2}}),
    Case("scan-report-missing", ["scan", "--report", "{w}/nope.json"], 2, "report not found"),
    Case("scan-report-not-json", ["scan", "--report", "{w}/llmgate.yaml"], 2, "not valid JSON"),
    Case("scan-report-dir", ["scan", "--report", "{w}"], 2, "cannot read report"),
    Case("scan-report-deep", ["scan", "--report", "{w}/deep.json"], 2, "nested too deeply",
         files={"deep.json": b"[" * 100_000}),
    Case("scan-report-other-sarif", ["scan", "--report", "{w}/other.sarif"], 2, "not Trivy",
         files={"other.sarif": {"version": "2.1.0", "runs": [{"tool": {"driver": {"name": "[/x]"}}, "results": []}]}}),
    # -- verify, keys -----------------------------------------------------------------------------------------------
    Case("verify-by-tag", ["verify", "r.example/x:v1", "--key", str(REPO.parent / "shared/fixtures/cosign/"
                                                                      "cosign_generated_encrypted_empty_private.pub")],
         2, "never a tag"),
    Case("verify-bad-digest", ["verify", "r.example/x@sha256:zz", "--key", "{w}/llmgate.yaml"], 2, "PEM"),
    Case("verify-key-dir", ["verify", f"r.example/x@{DIGEST}", "--key", "{w}"], 2, "{w}"),
    Case("verify-key-garbage", ["verify", f"r.example/x@{DIGEST}", "--key", "{w}/llmgate.yaml"], 2,
         "not a PEM key file"),
    Case("keys-generate-unwritable", ["keys", "generate", "--out", "/etc/passwd/x"], 2,
         "/etc/passwd is not a directory"),
    # -- export, ground truth, lint, eval options ------------------------------------------------------------------
    Case("export-unwritable", ["export", "--run", "{run}", "--out", "/etc/passwd/x"], 2, "cannot write there"),
    Case("export-no-out", ["export", "--run", "{run}"], 2, "give --out DIR"),
    Case("export-hostile-run", ["export", "--run", "{hostile2}", "--out", "{w}/exported"], 1, "exported run"),
    Case("ground-truth-not-vN", ["ground-truth", "check", "{w}"], 2, "must be named vN"),
    Case("ground-truth-duplicate-id", ["ground-truth", "check", "{w}/gt/v1"], 2, "duplicate id",
         files={"gt/v1/data/test.jsonl": "\n".join(json.dumps(
             {"id": "a", "question": "q?", "contexts": [], "reference": "r", "expected_behaviour": "answer",
              "category": ""}) for _ in range(2)) + "\n"}),
    Case("ground-truth-markup-field", ["ground-truth", "check", "{w}/gt2/v1"], 2, "[/x]",
         files={"gt2/v1/data/test.jsonl": json.dumps({"id": "a", "[/x]": 1}) + "\n"}),
    Case("lint-build-arg-no-equals", ["lint-dockerfiles", "--no-hadolint", "--build-arg", "NOEQ"], 2, "NAME=VALUE"),
    Case("eval-judge-url-alone", ["eval", "--run", "{run}", "--config", "{w}/llmgate.yaml", "--judge-url",
                                  "http://judge"], 2, "go together"),
    Case("eval-rescore-with-server", ["eval", "--run", "{run}", "--config", "{w}/llmgate.yaml", "--rescore",
                                      "--server-url", "http://127.0.0.1:9"], 2, "takes no --server-url"),
    Case("stack-config-dir", ["stack", "status", "--config", "{w}"], 2, "is a directory"),
    Case("lint-dockerfile-is-a-dir", ["lint-dockerfiles", "--no-hadolint", "{w}"], 2, "cannot read the Dockerfile"),
    Case("lint-dockerfile-not-utf8", ["lint-dockerfiles", "--no-hadolint", "{w}/latin1.Dockerfile"], 2, "not UTF-8",
         files={"latin1.Dockerfile": b"FROM x\nLABEL a=caf\xe9\n"}),
    Case("scan-ignore-file-dir", ["scan", "--report", "{w}/bare.json", "--ignore-file", "{w}", "--scanners",
                                  "vuln,secret,misconfig", "--policy", str(REPO / "gates.yaml")], 2,
         "cannot read the ignore file", files={"bare.json": {"SchemaVersion": 2}}),
    Case("scan-unknown-scanner", ["scan", "--report", "{w}/bare.json", "--scanners", "[/x]"], 2,
         "unknown scanner '[/x]'", files={"bare.json": {"SchemaVersion": 2}}),
    Case("demo-model-onto-a-file", ["demo-model", "/etc/passwd"], 2, "/etc/passwd: exists and is not a directory"),
    Case("report-out-unwritable", ["report", "--run", "{run}", "--out", "/etc/passwd/x"], 2, "/etc/passwd/x"),
    pytest.param(Case("runs-show-hostile", ["runs", "show", "{hostile2}"], 0, "[/x]"), id="runs-show-hostile"),
    # -- round 3 (issue 26): each was a traceback-free but wrong exit code, or a misleading message -----------
    # S: bad input that ended as "unexpected ...", exit 3
    Case("policy-symlink-loop", ["policy", "check", "{w}/loop-a.yaml"], 2, "loop-a.yaml: cannot read: a symlink loop"),
    Case("run-policy-symlink-loop", [*RUN, "--policy", "{w}/loop-a.yaml"], 2, "a symlink loop", leaves_no_run=True),
    Case("calibrate-boot-0", ["calibrate", "refusal", "--labels", XSTEST, "--boot", "0"], 2, "'--boot'"),
    Case("calibrate-boot-negative", ["calibrate", "refusal", "--labels", XSTEST, "--boot", "-1"], 2, "'--boot'"),
    Case("calibrate-seed-negative", ["calibrate", "refusal", "--labels", XSTEST, "--seed", "-1"], 2, "'--seed'"),
    Case("serve-dashboard-port-65536", ["serve-dashboard", "--port", "65536"], 2, "'--port'"),
    Case("summary-output-dir", ["summary", "--run", "{run}", "--output", "{w}"], 2,
         "--output {w}: is a directory, not a summary file"),
    Case("summary-output-dev-full", ["summary", "--run", "{run}", "--output", "/dev/full"], 2,
         "--output /dev/full: is a character device"),
    Case("store-url-unclosed-ipv6", ["runs", "list"], 2, "LLMGATE_STORE_URL: not a database URL",
         env={"LLMGATE_STORE_URL": "postgresql://u:p4ssw0rd-hostile@[::1/db"}),
    Case("store-url-port-out-of-range", ["runs", "list"], 2, "port 99999 is out of range",
         env={"LLMGATE_STORE_URL": "postgresql://u@db.example:99999/db"}),
    # U: a tag with a trailing newline (Python's `$` matches before it)
    Case("run-tag-newline", [*RUN, "--tag", "b7\n"], 2, "not an image tag: 'b7\\n'", leaves_no_run=True),
    Case("new-run-tag-newline", [*NEW_RUN, "--image", f"r.example/x@{DIGEST}", "--tag", "b7\n"], 2,
         "not an image tag", leaves_no_run=True),
    Case("new-run-image-tag-newline", [*NEW_RUN, "--image", f"r.example/x:b7\n@{DIGEST}"], 2,
         "whitespace or a control character", leaves_no_run=True),
    Case("new-run-digest-newline", [*NEW_RUN, "--image", f"r.example/x@{DIGEST}\n"], 2,
         "whitespace or a control character", leaves_no_run=True),
    # V: nothing listening is infrastructure, not a bad setting
    Case("eval-server-unreachable", ["eval", "--run", "{local}", "--config", "{w}/llmgate.yaml", "--server-url",
                                     "http://127.0.0.1:1"], 3, "server not reachable"),
    # W: a reference written as a URL
    Case("verify-url-scheme", ["verify", f"http://127.0.0.1:5000/x@{DIGEST}", "--key", PUB], 2,
         "drop 'http://'"),
    Case("new-run-url-scheme", [*NEW_RUN, "--image", f"http://127.0.0.1:5000/x@{DIGEST}"], 2, "drop 'http://'",
         leaves_no_run=True),
    # Y: a device as the store
    Case("store-dev-null", ["--store", "/dev/null", "gate"], 2, "/dev/null: is a character device, not a SQLite store"),
    # the smaller ones
    Case("policy-threshold-exponent", ["policy", "check", "{w}/t1e9.yaml"], 0, "<= 1e+09",
         files={"t1e9.yaml": "gates:\n  - name: e2e_ceiling\n    source: bench.e2e_p99_s\n    threshold: 1e9\n"
                             "    direction: max\n"}),
    Case("run-id-underscore", ["gate", "--run", "_"], 2, "a letter or digit, then letters, digits"),
    Case("run-id-newline", ["gate", "--run", "{run}\n"], 2, "not a run id"),
    Case("keys-generate-onto-a-file", ["keys", "generate", "--out", "/etc/passwd"], 2,
         "/etc/passwd: is not a directory; --out names the directory"),
    Case("keys-generate-out-empty", ["keys", "generate", "--out", ""], 2, "'--out': an empty path"),
    Case("workdir-empty", ["--workdir", "", "gate"], 2, "'--workdir': an empty path"),
    Case("report-out-empty", ["report", "--out", ""], 2, "'--out': an empty path"),
    Case("export-out-empty", ["export", "--run", "{run}", "--out", " "], 2, "'--out': an empty path"),
    *[Case(f"calibrate-judge-timeout-{v}", ["calibrate", "judge", "--labels", XSTEST, "--dimension", "faithfulness",
                                            "--judge-url", "http://127.0.0.1:9/v1", "--judge-model", "j", "--timeout",
                                            v], 2, "'--timeout'") for v in ("-1", "0", "nan", "inf")],
    Case("calibrate-judge-concurrency-0", ["calibrate", "judge", "--labels", XSTEST, "--dimension", "faithfulness",
                                           "--judge-url", "http://127.0.0.1:9/v1", "--judge-model", "j",
                                           "--concurrency", "0"], 2, "'--concurrency'"),
    Case("store-option-and-store-url", ["--store", "{w}/other.db", "runs", "list"], 2,
         "--store: names a store, and so does LLMGATE_STORE_URL; give one",
         env={"LLMGATE_STORE_URL": "sqlite:///{w}/shared.db"}),
    Case("store-option-and-store-url-file", ["--store", "{w}/other.db", "runs", "list"], 2,
         "so does LLMGATE_STORE_URL_FILE", env={"LLMGATE_STORE_URL_FILE": "{w}/url.txt"},
         files={"url.txt": "sqlite:///shared.db\n"}),
]


# -- the world the cases run in ------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def world(tmp_path_factory) -> dict[str, Any]:
    from pipeline.config import load_config
    from pipeline.orchestrate.plan import get_plan
    from pipeline.orchestrate.runner import Runner
    from pipeline.workspace import Workspace

    w = tmp_path_factory.mktemp("hostile-cli")
    (w / "model").mkdir()
    (w / "model" / "config.json").write_text("{}")
    (w / "model" / "weights.bin").write_bytes(b"\0" * 64)
    (w / "llmgate.yaml").write_text(yaml.safe_dump(_config(w)))
    ws = Workspace(w / "ws")
    runner = Runner(ws=ws, cfg=load_config(w / "llmgate.yaml"), plan=get_plan("dagger"))
    run = runner.create(image=ImageRef(repository="r.example/hostile", digest=DIGEST), model_dir=w / "model")
    # Stored as an older release could have stored them, past today's input checks: markup in the tag,
    # the reasons and the decision. One is gated by a case, the other only read (export, runs show).
    for rid in ("h05711e", "h05711f"):
        hostile = RunRecord(run_id=rid, image=ImageRef(repository="r.example/hostile", tag="[/x]", digest=DIGEST),
                            model=run.model, ground_truth=run.ground_truth, policy=run.policy,
                            labels=dict(run.labels), decision_reason=MARKUP)
        for stage in (Stage.BOOT, Stage.BENCH):
            hostile.add_stage(StageResult(stage=stage, status=StageStatus.FAILED,
                                          reason=f"server said {MARKUP}").finish())
        ws.checkpoint(hostile)
    for rid in ("cafe0001", "cafe0002"):
        ws.checkpoint(RunRecord(run_id=rid, image=ImageRef(repository="r.example/x", digest=DIGEST)))
    local = Runner(ws=ws, cfg=load_config(w / "llmgate.yaml"), plan=get_plan("local")).create(
        image=ImageRef(repository="r.example/local", digest=DIGEST), model_dir=w / "model")
    local.add_stage(StageResult(stage=Stage.BOOT, status=StageStatus.OK, reason="attached to a server").finish())
    ws.checkpoint(local)
    (w / "loop-a.yaml").symlink_to(w / "loop-b.yaml")
    (w / "loop-b.yaml").symlink_to(w / "loop-a.yaml")
    return {"w": w, "ws": ws, "run": run.run_id, "hostile": "h05711e", "hostile2": "h05711f", "local": local.run_id}


def _fill(args: list[str], world: dict[str, Any]) -> list[str]:
    return [a.replace("{w}", str(world["w"])).replace("{run}", world["run"]).replace("{hostile}", world["hostile"])
            .replace("{hostile2}", world["hostile2"]).replace("{local}", world["local"]) for a in args]


def _prepare(case: Case, world: dict[str, Any]) -> None:
    w: Path = world["w"]
    for name, content in case.files.items():
        p = w / name
        p.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            p.write_bytes(content)
        elif isinstance(content, dict):
            p.write_text(json.dumps(content))
        else:
            p.write_text(content)
    if case.config is not None:
        cfg = _config(w)
        for sec, values in json.loads(json.dumps(case.config).replace("{w}", str(w))).items():
            cfg.setdefault(sec, {}).update(values)
        text = yaml.safe_dump(cfg).replace("nan", ".nan").replace("inf", ".inf")
        (w / "bad.yaml").write_text(text)


# No case may reach a build: should one get past the checks it is meant to fail, the engine is not there
# (exit 3, and a run left behind), instead of a real image being built and pushed.
NO_ENGINE = {"DOCKER_HOST": "unix:///nonexistent/llmgate-hostile-cli.sock"}


def _run_ids(world: dict[str, Any]) -> set[str]:
    return {r.run_id for r in world["ws"].store.runs(limit=1000)}


def _global(world: dict[str, Any], args: list[str]) -> list[str]:
    """Every case runs in the world's work dir (and its store, unless the case names another)."""
    return ["--workdir", str(world["w"] / "ws"), *args]


def test_the_table_is_large_and_every_case_has_an_expectation() -> None:
    cases = [c.values[0] if hasattr(c, "values") else c for c in CASES]
    assert len(cases) >= 60 and len({c.id for c in cases}) == len(cases)
    assert all(c.code in (0, 1, 2, 3) and c.fragment for c in cases)


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_hostile_input(case: Case, world: dict[str, Any]) -> None:
    _prepare(case, world)
    before = _run_ids(world)
    env = {k: _fill([v], world)[0] for k, v in case.env.items()}
    res = CliRunner().invoke(app, _global(world, _fill(case.args, world)), env={"COLUMNS": "200", **NO_ENGINE, **env})
    output = res.output
    assert "Traceback" not in output, output
    assert res.exception is None or isinstance(res.exception, SystemExit), repr(res.exception)
    assert "unexpected" not in output, output  # an unexpected exception type is never how bad input ends
    assert res.exit_code == case.code, output
    fragment = _fill([case.fragment], world)[0]
    assert fragment in " ".join(output.split()) or fragment in output, output
    if case.leaves_no_run:
        assert _run_ids(world) == before, "a refused command left a run record behind"


# -- the same contract at the real entry point ---------------------------------------------------------------
@pytest.mark.parametrize("case_id", ["config-bench.requests=-1", "run-tag-markup", "run-id-markup",
                                     "gate-hostile-strings", "config-not-utf8"])
def test_as_ci_runs_it(case_id: str, world: dict[str, Any]) -> None:
    case = next(c for c in CASES if isinstance(c, Case) and c.id == case_id)
    _prepare(case, world)
    r = subprocess.run([sys.executable, "-m", "pipeline", *_global(world, _fill(case.args, world))],
                       capture_output=True, text=True, timeout=120, cwd=world["w"], check=False,
                       env={**os.environ, **NO_ENGINE})  # not a COLUMNS=80 a C library left in the environment
    assert "Traceback" not in r.stderr and "Traceback" not in r.stdout
    assert r.returncode == case.code, r.stdout[-2000:] + r.stderr[-2000:]
    assert case.fragment in " ".join((r.stdout + r.stderr).split())


def test_debug_shows_the_traceback_and_keeps_the_exit_code(world: dict[str, Any],
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """`--debug` adds a traceback; it never changes the exit code: bad input stays 2, an unexpected
    exception is 3 (Python's own 1 would read as "a gate failed")."""
    from pipeline.cli.app import state
    from pipeline.report import markdown

    monkeypatch.setattr(state, "debug", False)  # --debug sets it for the process; restored afterwards
    res = CliRunner().invoke(app, ["--debug", *_global(world, ["gate", "--run", "[/x]"])], env=NO_ENGINE)
    assert res.exit_code == 2 and "Traceback" not in res.output, res.output

    def boom(*_a: Any, **_k: Any) -> str:
        raise RuntimeError("renderer broke")

    monkeypatch.setattr(markdown, "render_summary", boom)
    res = CliRunner().invoke(app, ["--debug", *_global(world, ["summary", "--run", world["run"]])], env=NO_ENGINE)
    assert res.exit_code == 3, (res.exit_code, res.output)
    assert "Traceback" in res.output and "unexpected RuntimeError: renderer broke" in res.output


@pytest.mark.parametrize("url", ["postgresql://u:p4ssw0rd-hostile@[::1/db", "postgresql://u:p4ssw0rd-hostile@h:x/db",
                                 "postgresql://u:p4ssw0rd-hostile@h:99999/db"])
def test_a_malformed_store_url_is_bad_input_that_never_shows_its_password(world: dict[str, Any], url: str) -> None:
    res = CliRunner().invoke(app, _global(world, ["runs", "list"]), env={"LLMGATE_STORE_URL": url, **NO_ENGINE})
    assert res.exit_code == 2 and "LLMGATE_STORE_URL" in res.output, res.output
    assert "p4ssw0rd-hostile" not in res.output and "unexpected" not in res.output

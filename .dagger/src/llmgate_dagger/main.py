"""The llmgate Dagger module: containers, secrets and services around `pipeline/`.

Thin by design: every decision (secret ids, tool pins, command lines, digest checks) comes from
`pipeline.ci_plan`, and every stage runs as the `llmgate` CLI inside this project's own image, so the
logic that decides a release is the one tested in `tests/`. Secrets are only ever `dagger.Secret`.
"""

from __future__ import annotations

from typing import Annotated

import dagger
from dagger import DefaultPath, Doc, Ignore, dag, function, object_type

from pipeline import ci_plan

SOURCE_IGNORE = [".venv", ".llmgate", ".git", "**/__pycache__", ".pytest_cache", "tests/artifacts"]


@object_type
class Llmgate:
    """Build, scan, sign, measure, gate and promote an LLM-serving image by digest."""

    source: Annotated[
        dagger.Directory,
        DefaultPath("."),
        Ignore(SOURCE_IGNORE),
        Doc("The llmgate project: Dockerfiles, gates.yaml, ground truth, manifests."),
    ]

    # -- images ------------------------------------------------------------------------------------
    async def _secrets(self, dockerfile: str, provided: dict[str, dagger.Secret | None]) -> list[dagger.Secret]:
        text = await self.source.file(dockerfile).contents()
        matched = ci_plan.match_build_secrets(dockerfile, text, provided)
        # BuildKit mounts a secret under its name: rename each to the id the Dockerfile mounts.
        return [dag.set_secret(sid, await secret.plaintext()) for sid, secret in matched.items()]  # type: ignore[union-attr]

    def _tool(self) -> dagger.Container:
        """This project's own image: the `llmgate` CLI with the scorers, used to run stage clients."""
        return (
            self.source.docker_build(dockerfile=ci_plan.TOOL_DOCKERFILE)
            .with_directory(ci_plan.WORK, self.source)
            .with_workdir(ci_plan.WORK)
        )

    @function
    async def build(
        self,
        dockerfile: Annotated[str, Doc("Dockerfile of the serving image, relative to the source.")] = ci_plan.SERVER_DOCKERFILE,
        pip_credentials: Annotated[dagger.Secret | None, Doc("pip credentials (netrc/pip.conf) mounted as BuildKit secret 'pip_credentials'.")] = None,
        ca_bundle: Annotated[dagger.Secret | None, Doc("CA bundle for the package index, BuildKit secret 'ca_bundle'.")] = None,
        build_args: Annotated[list[str] | None, Doc("KEY=VALUE build arguments (never credentials).")] = None,
    ) -> dagger.Container:
        """Build the serving image with BuildKit secrets; nothing secret reaches a layer."""
        secrets = await self._secrets(dockerfile, {"pip_credentials": pip_credentials, "ca_bundle": ca_bundle})
        args = [dagger.BuildArg(name=k, value=v) for k, v in ci_plan.parse_build_args(build_args or []).items()]
        return self.source.docker_build(dockerfile=dockerfile, secrets=secrets, build_args=args)

    @function(cache="never")
    async def publish(
        self,
        address: Annotated[str, Doc("Repository to push to, e.g. registry.example.com/llm/server:TAG.")],
        dockerfile: Annotated[str, Doc("Dockerfile of the serving image.")] = ci_plan.SERVER_DOCKERFILE,
        registry_username: Annotated[str, Doc("Registry user name.")] = "",
        registry_password: Annotated[dagger.Secret | None, Doc("Registry password or token.")] = None,
        pip_credentials: Annotated[dagger.Secret | None, Doc("BuildKit secret 'pip_credentials'.")] = None,
        ca_bundle: Annotated[dagger.Secret | None, Doc("BuildKit secret 'ca_bundle'.")] = None,
    ) -> str:
        """Build and push; returns the digest reference (repo@sha256:…) that identifies the run from here on."""
        ctr = await self.build(dockerfile=dockerfile, pip_credentials=pip_credentials, ca_bundle=ca_bundle)
        if registry_password is not None:
            ctr = ctr.with_registry_auth(address, registry_username, registry_password)
        return ci_plan.require_digest(await ctr.publish(address), where="publish")

    # -- supply chain: the same `llmgate scan/sign` stages, inside the tool image ------------------
    def _with_run(self, image: str, run: dagger.File | None) -> dagger.Container:
        tool = self._tool()
        if run is not None:
            return tool.with_file(ci_plan.RUN_FILE, run)
        return tool.with_exec(ci_plan.new_run_command(image))

    @function(cache="never")
    async def scan(
        self,
        image: Annotated[str, Doc("Image by digest (repo@sha256:…).")],
        run: Annotated[dagger.File | None, Doc("Run record to extend (default: a new one for this digest).")] = None,
        registry_username: Annotated[str, Doc("Registry user name.")] = "",
        registry_password: Annotated[dagger.Secret | None, Doc("Registry password or token.")] = None,
    ) -> dagger.File:
        """Scan with trivy (vuln, secret, misconfig; its DB cached in a volume) and apply the scan policy.

        Returns run.json with the scan stage, the trivy JSON and SARIF kept as its artifacts.
        """
        ctr = self._with_run(image, run).with_mounted_cache(
            ci_plan.TRIVY_CACHE_DIR, dag.cache_volume(ci_plan.TRIVY_CACHE_VOLUME)
        )
        if registry_password is not None:
            ctr = ctr.with_env_variable("TRIVY_USERNAME", registry_username).with_secret_variable(
                "TRIVY_PASSWORD", registry_password
            )
        return ctr.with_exec(ci_plan.stage_command("scan")).file(ci_plan.RUN_FILE)

    @function(cache="never")
    async def sign(
        self,
        image: Annotated[str, Doc("Image by digest (repo@sha256:…).")],
        cosign_key: Annotated[dagger.Secret, Doc("cosign private key (PEM), passed as COSIGN_PRIVATE_KEY.")],
        cosign_password: Annotated[dagger.Secret, Doc("Password of the cosign key.")],
        run: Annotated[dagger.File | None, Doc("Run record to extend (default: a new one for this digest).")] = None,
        registry_password: Annotated[dagger.Secret | None, Doc("Registry password or token.")] = None,
    ) -> dagger.File:
        """Sign the digest with cosign (key-based; sigstore bundle as OCI referrer), verify it, attest the scan.

        Returns run.json with the signature reference recorded.
        """
        ctr = (
            self._with_run(image, run)
            .with_secret_variable("COSIGN_PRIVATE_KEY", cosign_key)
            .with_secret_variable("COSIGN_PASSWORD", cosign_password)
        )
        if registry_password is not None:
            ctr = ctr.with_secret_variable("COSIGN_REGISTRY_PASSWORD", registry_password)
        return ctr.with_exec(ci_plan.stage_command("sign")).file(ci_plan.RUN_FILE)

    # -- serving: boot as a service, measure from the tool image ------------------------------------
    def _server(self, image: str, model: dagger.Directory, gpus: bool) -> dagger.Service:
        ctr = (
            dag.container()
            .from_(ci_plan.require_digest(image))
            .with_mounted_directory("/models", model)
            .with_env_variable("MODEL_PATH", "/models")
            .with_exposed_port(ci_plan.SERVER_PORT)
        )
        if gpus:
            ctr = ctr.experimental_with_all_gp_us()
        return ctr.as_service(use_entrypoint=True)

    def _client(self, image: str, model: dagger.Directory, gpus: bool, run: dagger.File | None) -> dagger.Container:
        return self._with_run(image, run).with_service_binding(ci_plan.SERVER_ALIAS, self._server(image, model, gpus))

    @function(cache="never")
    async def bench(
        self,
        image: Annotated[str, Doc("Serving image by digest.")],
        model: Annotated[dagger.Directory, Doc("Model weights directory, mounted read-only at /models.")],
        gpus: Annotated[bool, Doc("Give the server every GPU of the runner.")] = True,
        run: Annotated[dagger.File | None, Doc("Run record to extend (default: a new one for this digest).")] = None,
    ) -> dagger.File:
        """Boot the image as a service and measure TTFT, TPOT, throughput and errors; returns run.json."""
        ctr = self._client(image, model, gpus, run).with_exec(ci_plan.stage_command("bench", url=ci_plan.server_url()))
        return ctr.file(ci_plan.RUN_FILE)

    @function(cache="never")
    async def evaluate(
        self,
        image: Annotated[str, Doc("Serving image by digest.")],
        model: Annotated[dagger.Directory, Doc("Model weights directory, mounted read-only at /models.")],
        gpus: Annotated[bool, Doc("Give the server every GPU of the runner.")] = True,
        run: Annotated[dagger.File | None, Doc("Run record to extend (default: a new one for this digest).")] = None,
        judge_api_key: Annotated[dagger.Secret | None, Doc("API key of the OpenAI-compatible judge.")] = None,
    ) -> dagger.File:
        """Score the served model on the versioned ground truth, per dimension; returns run.json."""
        ctr = self._client(image, model, gpus, run)
        if judge_api_key is not None:
            ctr = ctr.with_secret_variable("LLMGATE_JUDGE_API_KEY", judge_api_key)
        return ctr.with_exec(ci_plan.stage_command("eval", url=ci_plan.server_url())).file(ci_plan.RUN_FILE)

    # -- decision and promotion -----------------------------------------------------------------------
    @function(cache="never")
    async def gate(
        self,
        run: Annotated[dagger.File, Doc("Run record (run.json) with the measured stages.")],
        policy: Annotated[str, Doc("Gate policy file in the source.")] = "gates.yaml",
    ) -> dagger.Directory:
        """Apply the gate policy; returns run.json, verdict.json and junit.xml (the exec fails when blocked)."""
        ctr = (
            self._tool()
            .with_file(ci_plan.RUN_FILE, run)
            .with_exec(ci_plan.stage_command("gate", extra=["--policy", policy]), expect=dagger.ReturnType.ANY)
        )
        return ctr.directory(ci_plan.WORK)

    @function(cache="never")
    async def promote(
        self,
        run: Annotated[dagger.File, Doc("Run record whose decision is pass.")],
        target: Annotated[str, Doc("Promotion target (overlay / cluster name).")],
        kubeconfig: Annotated[dagger.Secret | None, Doc("kubeconfig for cluster promotion of the Rollout.")] = None,
        cosign_public_key: Annotated[dagger.Secret | None, Doc("Public key the signature must verify against.")] = None,
        dry_run: Annotated[bool, Doc("Print exactly what would change, change nothing.")] = True,
    ) -> str:
        """Promote the run's digest into the canary rollout, only if every gate passed and the signature verifies."""
        ctr = self._tool().with_file(ci_plan.RUN_FILE, run)
        extra = ["--target", target]
        if kubeconfig is not None:
            ctr = ctr.with_mounted_secret("/secrets/kubeconfig", kubeconfig)
            extra += ["--kubeconfig", "/secrets/kubeconfig"]
        if cosign_public_key is not None:
            # the promotion guard verifies against sign.public_key (cosign.pub in the source by default)
            ctr = ctr.with_mounted_secret(f"{ci_plan.WORK}/cosign.pub", cosign_public_key)
        if dry_run:
            extra.append("--dry-run")
        return await ctr.with_exec(ci_plan.stage_command("promote", extra=extra)).stdout()

    @function(cache="never")
    async def run(
        self,
        address: Annotated[str, Doc("Repository to publish the serving image to (with tag).")],
        model: Annotated[dagger.Directory, Doc("Model weights directory, mounted read-only at /models.")],
        cosign_key: Annotated[dagger.Secret, Doc("cosign private key (PEM).")],
        cosign_password: Annotated[dagger.Secret, Doc("Password of the cosign key.")],
        dockerfile: Annotated[str, Doc("Dockerfile of the serving image.")] = ci_plan.SERVER_DOCKERFILE,
        registry_username: Annotated[str, Doc("Registry user name.")] = "",
        registry_password: Annotated[dagger.Secret | None, Doc("Registry password or token.")] = None,
        pip_credentials: Annotated[dagger.Secret | None, Doc("BuildKit secret 'pip_credentials'.")] = None,
        ca_bundle: Annotated[dagger.Secret | None, Doc("BuildKit secret 'ca_bundle'.")] = None,
        judge_api_key: Annotated[dagger.Secret | None, Doc("API key of the OpenAI-compatible judge.")] = None,
        gpus: Annotated[bool, Doc("Give the server every GPU of the runner.")] = True,
        policy: Annotated[str, Doc("Gate policy file in the source.")] = "gates.yaml",
        promote_target: Annotated[str, Doc("Promote to this target when every gate passes (empty: gates only).")] = "",
        kubeconfig: Annotated[dagger.Secret | None, Doc("kubeconfig for cluster promotion.")] = None,
    ) -> dagger.Directory:
        """The main job: publish → scan → sign → bench → evaluate → gate [→ promote]; returns the run record and reports."""
        image = await self.publish(
            address,
            dockerfile=dockerfile,
            registry_username=registry_username,
            registry_password=registry_password,
            pip_credentials=pip_credentials,
            ca_bundle=ca_bundle,
        )
        record = await self.scan(image, registry_username=registry_username, registry_password=registry_password)
        record = await self.sign(image, cosign_key, cosign_password, run=record, registry_password=registry_password)
        record = await self.bench(image, model, gpus=gpus, run=record)
        record = await self.evaluate(image, model, gpus=gpus, run=record, judge_api_key=judge_api_key)
        out = await self.gate(record, policy=policy)
        if promote_target:
            await self.promote(out.file("run.json"), promote_target, kubeconfig=kubeconfig, dry_run=False)
        return out

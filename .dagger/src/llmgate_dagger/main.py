"""The llmgate Dagger module: `dagger call run` runs the dagger plan through the same Runner as `llmgate run`.

Thin by design. The module does what only Dagger can do: it builds the images, publishes the serving image,
starts it as a GPU service and wires containers, secrets and services. The steps run inside this project's
own image (dockerfiles/llmgate.Dockerfile) through the Runner's step loop (`llmgate run --run ID --only …`),
so parallel groups, stop-on-failure, reuse and checkpoints are the CLI's; `pipeline.ci_plan` cuts the one
plan (`pipeline.orchestrate.plan.DAGGER`) where the server comes up and goes down, and says which command
and which credentials each segment gets. Every credential is a `dagger.Secret`, reaching the tool container
only as a secret variable or a mounted secret file, and only for the segments whose steps read it.
An llmgate error ends the call with its message (file, field, hint), not with a traceback.
"""

from __future__ import annotations

import functools
import sys
import uuid
from collections.abc import Awaitable, Callable
from typing import Annotated, ParamSpec, TypeVar

import dagger
from dagger import DefaultPath, Doc, Ignore, dag, function, object_type
from dagger.mod._exceptions import FunctionError

from pipeline import ci_plan
from pipeline.errors import BadInput, InfraError, LlmgateError
from pipeline.orchestrate.plan import Credential

P = ParamSpec("P")
R = TypeVar("R")

SOURCE_IGNORE = [".venv", ".llmgate", ".git", "**/__pycache__", ".pytest_cache", "tests/artifacts"]

Secret = dagger.Secret | None
CaBundle = Annotated[
    Secret, Doc("CA bundle for pip (a TLS-intercepting proxy or a private index): BuildKit secret 'ca_bundle'.")
]
PipConf = Annotated[Secret, Doc("pip.conf for a private index or the CPU torch index: BuildKit secret 'pip_conf'.")]
Dockerfile = Annotated[str, Doc("Dockerfile of the serving image, relative to the source.")]
BuildArgs = Annotated[list[str] | None, Doc("KEY=VALUE build arguments of the serving image (never credentials).")]
Address = Annotated[
    str, Doc("Repository and tag to publish the serving image to, e.g. registry.example.com/llm/server:v1.")
]
RegistryUsername = Annotated[str, Doc("Registry user name (not a secret).")]
RegistryPassword = Annotated[Secret, Doc("Registry password or token.")]


def clear_errors(fn: Callable[P, Awaitable[R]]) -> Callable[P, Awaitable[R]]:
    """An llmgate error ends the call with its rendered message: the SDK reports a `FunctionError` as it
    is, where any other exception is logged with its traceback (dagger/mod/_module.py `Module.call`)."""

    @functools.wraps(fn)
    async def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return await fn(*args, **kwargs)
        except LlmgateError as exc:
            raise FunctionError(exc.render()) from None

    return wrapper


@object_type
class Llmgate:
    """Publish an LLM-serving image, measure and gate it by digest, and promote it only on a pass."""

    source: Annotated[
        dagger.Directory,
        DefaultPath("."),
        Ignore(SOURCE_IGNORE),
        Doc("The llmgate project: Dockerfiles, gates.yaml, ground truth, manifests."),
    ]

    # -- images -----------------------------------------------------------------------------------
    async def _build_secrets(self, dockerfile: str, ca_bundle: Secret, pip_conf: Secret) -> list[dagger.Secret]:
        text = await self.source.file(dockerfile).contents()
        matched = ci_plan.match_build_secrets(dockerfile, text, {"ca_bundle": ca_bundle, "pip_conf": pip_conf})
        # BuildKit mounts a Dagger secret at /run/secrets/<its name>, and a secret given as env://,
        # file:// or cmd:// has no name. Dagger 0.21 names a secret only through `set_secret`, so a
        # build secret is re-registered under the id the Dockerfile mounts, inside the engine session.
        return [dag.set_secret(sid, await s.plaintext()) for sid, s in matched.items()]  # type: ignore[union-attr]

    def _context(self) -> dagger.Directory:
        ctx = self.source
        for d in ci_plan.STAGED_CONTEXT_DIRS:  # merged with an empty directory: created when missing
            ctx = ctx.with_directory(d, dag.directory())
        return ctx

    @function
    @clear_errors
    async def tool(
        self,
        base_image: Annotated[str, Doc("Base of the tool image: Debian bookworm with python3-venv, by digest.")] = (
            ci_plan.TOOL_BASE_IMAGE
        ),
        ca_bundle: CaBundle = None,
        pip_conf: PipConf = None,
    ) -> dagger.Container:
        """The tool image, from dockerfiles/llmgate.Dockerfile: the llmgate CLI with its scorers and scanners."""
        secrets = await self._build_secrets(ci_plan.TOOL_DOCKERFILE, ca_bundle, pip_conf)
        return self._context().docker_build(
            dockerfile=ci_plan.TOOL_DOCKERFILE,
            build_args=[dagger.BuildArg(name="BASE_IMAGE", value=ci_plan.pinned(base_image, where="base_image"))],
            secrets=secrets,
        )

    @function
    @clear_errors
    async def build(
        self,
        dockerfile: Dockerfile = ci_plan.SERVER_DOCKERFILE,
        build_args: BuildArgs = None,
        ca_bundle: CaBundle = None,
        pip_conf: PipConf = None,
    ) -> dagger.Container:
        """Build the serving image with BuildKit secrets (the ids its Dockerfile mounts), none in a layer."""
        secrets = await self._build_secrets(dockerfile, ca_bundle, pip_conf)
        args = [dagger.BuildArg(name=k, value=v) for k, v in ci_plan.parse_build_args(build_args or []).items()]
        return self._context().docker_build(dockerfile=dockerfile, build_args=args, secrets=secrets)

    @function(cache="never")
    @clear_errors
    async def publish(
        self,
        address: Address,
        dockerfile: Dockerfile = ci_plan.SERVER_DOCKERFILE,
        build_args: BuildArgs = None,
        registry_username: RegistryUsername = "",
        registry_password: RegistryPassword = None,
        ca_bundle: CaBundle = None,
        pip_conf: PipConf = None,
    ) -> str:
        """Build and push the serving image; returns repo@sha256:…, the digest that identifies the run."""
        ctr = await self.build(dockerfile=dockerfile, build_args=build_args, ca_bundle=ca_bundle, pip_conf=pip_conf)
        if registry_password is not None:
            ctr = ctr.with_registry_auth(address, registry_username, registry_password)
        return ci_plan.require_digest(await ctr.publish(address), where="publish")

    # -- the run ------------------------------------------------------------------------------------
    @function(cache="never")
    @clear_errors
    async def run(
        self,
        address: Address,
        model: Annotated[dagger.Directory, Doc("Model weights, mounted read-only at /models (server and tool).")],
        dockerfile: Dockerfile = ci_plan.SERVER_DOCKERFILE,
        build_args: BuildArgs = None,
        tool_base: Annotated[str, Doc("Base of the tool image (Debian bookworm with python3-venv), by digest.")] = (
            ci_plan.TOOL_BASE_IMAGE
        ),
        registry_username: RegistryUsername = "",
        registry_password: RegistryPassword = None,
        cosign_key: Annotated[Secret, Doc("Signing key, cosign's encrypted PEM.")] = None,
        cosign_password: Annotated[Secret, Doc("Password of the signing key.")] = None,
        cosign_public_key: Annotated[Secret, Doc("Public key signatures and attestations must verify with.")] = None,
        judge_api_key: Annotated[Secret, Doc("API key of the OpenAI-compatible LLM judge.")] = None,
        kubeconfig: Annotated[Secret, Doc("kubeconfig for promoting into the cluster's Rollout.")] = None,
        store_url: Annotated[
            Secret, Doc("Results store URL (PostgreSQL) every runner shares: baselines, the promotion lock.")
        ] = None,
        ca_bundle: CaBundle = None,
        pip_conf: PipConf = None,
        gpus: Annotated[bool, Doc(
            "Give the server every GPU of the runner (the dagger CLI needs _EXPERIMENTAL_DAGGER_GPU_SUPPORT=1); "
            "--gpus=false on a CPU runner.")] = True,
        target: Annotated[
            str, Doc("Deployment target: the baseline the gates compare against, where promotion goes.")
        ] = "",
        promote: Annotated[
            bool, Doc("Run the promotion step (needs --target); it promotes only on a signed passing verdict.")
        ] = False,
    ) -> dagger.Directory:
        """Run the dagger plan: publish, then every step through the Runner in the tool image, the server as a
        GPU service while boot, bench and eval need it.

        The directory holds run.json, verdict.json, junit.xml, summary.md and report.html at its root,
        whatever the verdict: a blocked gate is a result, not an error (read `decision` in run.json). A
        step that fails stops the run there (the Runner's stop-on-failure); the export still runs.
        """
        if promote and not target:
            raise BadInput("promotion needs a target", where="--target")
        given: dict[str, dagger.Secret | None] = {
            "registry_password": registry_password, "cosign_key": cosign_key, "cosign_password": cosign_password,
            "cosign_public_key": cosign_public_key, "judge_api_key": judge_api_key, "kubeconfig": kubeconfig,
            "store_url": store_url,
        }
        unwired = {c.name for c in ci_plan.credentials()} - set(given)
        if unwired:
            raise BadInput(f"the dagger plan reads credentials this module does not take: {sorted(unwired)}")
        if gpus:  # before the builds: an engine without GPUs fails here, in seconds, with what to do
            await self._check_gpus(tool_base)

        image = await self.publish(address, dockerfile=dockerfile, build_args=build_args,
                                   registry_username=registry_username, registry_password=registry_password,
                                   ca_bundle=ca_bundle, pip_conf=pip_conf)
        tool = await self._tool_container(tool_base, model, given, ca_bundle, pip_conf)

        def container(state: dagger.Directory, creds: list[Credential]) -> dagger.Container:
            ctr = tool.with_mounted_directory(ci_plan.STATE, state, owner=ci_plan.TOOL_UID)
            ctr = _with_credentials(ctr, creds, given)
            reads_registry = any(c.name == "registry_password" for c in creds)
            if reads_registry and registry_password is not None and registry_username:
                ctr = ctr.with_env_variable(ci_plan.REGISTRY_USERNAME_ENV, registry_username)
            return ctr

        started = (
            container(dag.directory(), [])
            .with_env_variable(ci_plan.INVOCATION_ENV, uuid.uuid4().hex)
            .with_exec(ci_plan.new_run_command(image, tag=ci_plan.image_tag(address), target=target))
        )
        printed = await started.stdout()
        run_id = ci_plan.parse_run_id(printed)
        state = started.directory(ci_plan.STATE)
        server = self._server(image, model, ci_plan.parse_model_digest(printed), gpus, address, registry_username,
                              registry_password)

        for segment in ci_plan.segments(promote=promote):
            ctr = container(state, ci_plan.segment_credentials(segment))
            service: dagger.Service | None = None
            if segment.server:
                # Started right before the segment that boots it: boot measures the load time from its start.
                service = await self._start(server, gpus)
                ctr = ctr.with_service_binding(ci_plan.SERVER_ALIAS, service)
            try:
                done = ctr.with_exec(ci_plan.segment_command(segment, run_id, target=target),
                                     expect=dagger.ReturnType.ANY)
                code = await done.exit_code()
            finally:
                if service is not None:
                    await service.stop()
            print(f"llmgate {segment.name}: exit {code}", file=sys.stderr)
            state = done.directory(ci_plan.STATE)
            if not ci_plan.continues(code):
                break  # the Runner stopped the run (or the gate blocked it); the record says why
        exported = container(state, []).with_exec(ci_plan.export_command(run_id), expect=dagger.ReturnType.ANY)
        out = exported.directory(ci_plan.OUT)
        # Export's exit code says whether the gates judged the run; what must hold is that the files the
        # record calls for are there (a run stopped before its gates has no verdict.json or junit.xml).
        entries = await out.entries()
        record = await out.file("run.json").contents() if "run.json" in entries else None
        missing = ci_plan.missing_export_files(entries, ci_plan.expected_export_files(record))
        if missing:
            code, err = await exported.exit_code(), await exported.stderr()
            raise InfraError(f"`llmgate export` (exit {code}) wrote no {', '.join(missing)}: {err.strip()[-2000:]}",
                             where=ci_plan.OUT)
        return out

    async def _check_gpus(self, base_image: str) -> None:
        """A container with every GPU runs `true`, or the engine cannot give GPUs: a clear error, not an
        engine error deep inside the run."""
        probe = (dag.container().from_(ci_plan.pinned(base_image, where="tool_base"))
                 .experimental_with_all_gp_us()
                 .with_env_variable(ci_plan.INVOCATION_ENV, uuid.uuid4().hex)  # asked of this engine, not a cache
                 .with_exec(["true"]))
        try:
            await probe.sync()
        except dagger.QueryError as exc:
            raise ci_plan.no_gpus(str(exc)) from None

    async def _start(self, server: dagger.Service, gpus: bool) -> dagger.Service:
        try:
            return await server.start()
        except dagger.QueryError as exc:
            if gpus and "gpu" in str(exc).lower():
                raise ci_plan.no_gpus(str(exc)) from None
            raise InfraError(f"the serving image did not start as a service: {str(exc).strip()[:2000]}",
                             where="run") from None

    async def _tool_container(self, base_image: str, model: dagger.Directory, given: dict[str, dagger.Secret | None],
                              ca_bundle: Secret, pip_conf: Secret) -> dagger.Container:
        """The one tool container every command runs in: the project at /work/src, the weights, the store."""
        ctr = (
            (await self.tool(base_image=base_image, ca_bundle=ca_bundle, pip_conf=pip_conf))
            .with_mounted_directory(ci_plan.SOURCE, self.source, owner=ci_plan.TOOL_UID)
            .with_workdir(ci_plan.SOURCE)
            .with_mounted_directory(ci_plan.MODELS, model, read_only=True)
            .with_mounted_cache(ci_plan.TRIVY_CACHE_DIR, dag.cache_volume(ci_plan.TRIVY_CACHE_VOLUME),
                                owner=ci_plan.TOOL_UID)
        )
        run_wide = ci_plan.run_wide_credentials()
        ctr = _with_credentials(ctr, run_wide, given)
        store = next(c for c in run_wide if c.name == "store_url")
        if given["store_url"] is not None and store.file:
            ctr = ctr.with_env_variable(ci_plan.STORE_URL_FILE_ENV, store.file)  # a path, not the URL
        return ctr

    def _server(self, image: str, model: dagger.Directory, model_digest: str, gpus: bool, address: str,
                username: str, password: Secret) -> dagger.Service:
        """The published digest as a service: weights read-only at /models (their digest given, which the
        image's entrypoint checks before the server starts), port 8000, all GPUs."""
        ctr = dag.container()
        if password is not None:
            ctr = ctr.with_registry_auth(address, username, password)
        ctr = (
            ctr.from_(ci_plan.require_digest(image))
            .with_mounted_directory(ci_plan.MODELS, model, read_only=True)
            .with_env_variable("MODEL_PATH", ci_plan.MODELS)
            .with_env_variable(ci_plan.MODEL_DIGEST_ENV, model_digest)
            # Readiness is the boot stage's measurement (port, health, first completion), not Dagger's.
            .with_exposed_port(ci_plan.SERVER_PORT, experimental_skip_healthcheck=True)
        )
        if gpus:
            ctr = ctr.experimental_with_all_gp_us()
        return ctr.as_service(use_entrypoint=True)


def _with_credentials(ctr: dagger.Container, creds: list[Credential],
                      given: dict[str, dagger.Secret | None]) -> dagger.Container:
    """Each credential where the plan says the CLI reads it: a secret variable or a mounted secret file."""
    for cred in creds:
        secret = given[cred.name]
        if secret is None:
            continue
        if cred.env:
            ctr = ctr.with_secret_variable(cred.env, secret)
        elif cred.file:
            ctr = ctr.with_mounted_secret(cred.file, secret, owner=ci_plan.TOOL_UID, mode=0o400)
    return ctr

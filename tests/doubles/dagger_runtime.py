"""TEST DOUBLE "dagger module runtime": the process the engine starts for one function call of a module.

The engine runs a Python module's functions by starting its runtime with `DAGGER_SESSION_PORT` and
`DAGGER_SESSION_TOKEN` set; the SDK's entrypoint (`dagger.mod.cli.app`) asks `currentFunctionCall`
what to run, runs it and answers with `returnValue` or `returnError`. This runs that same entrypoint
as a local process, for the module in `.dagger/src`, against whatever endpoint the session variables
name (tests/doubles/dagger_engine.py here).

`python -m tests.doubles.dagger_runtime SRC_DIR`; exits with the entrypoint's code (0, or 1/2 after
it has sent `returnError`).

One deliberate difference from this project's venv: the module's runtime installs llmgate without
extras, so it has no `httpx2` (the eval extra's openai, huggingface_hub and langsmith pull it in).
Where `httpx2` is importable, gql 4.4 builds its transport on it while dagger-io 0.21.11 hands that
transport `httpx` objects, and no session can start. The import is hidden here, as in the runtime.
"""

from __future__ import annotations

import sys


def main(argv: list[str]) -> int:
    sys.modules["httpx2"] = None  # type: ignore[assignment]  # absent from the module runtime (see above)
    sys.path.insert(0, argv[0])
    from dagger.mod.cli import app
    from llmgate_dagger import Llmgate

    return app(Llmgate.__dagger_module__) or 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))

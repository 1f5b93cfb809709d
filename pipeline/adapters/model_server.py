"""The server under test, as the stages see it apart from the load itself: is it there, and which model
does it serve. (The timed streaming requests are the bench harness's own, `pipeline.bench.client`.)"""

from __future__ import annotations

from typing import Protocol

import httpx

from pipeline.errors import InfraError


class ModelServer(Protocol):
    def reachable(self, base_url: str) -> bool:
        """Any HTTP answer, even a 404, means the server is there."""
        ...

    def require_up(self, base_url: str) -> None:
        """InfraError naming the URL when nothing answers."""
        ...

    def served_models(self, base_url: str) -> list[str]:
        """The model ids `/v1/models` lists; [] when it lists none or does not answer."""
        ...


class HttpModelServer:
    """An OpenAI-compatible server over HTTP. Proxies from the environment are ignored: the server under
    test is reached directly, as the bench reaches it."""

    def __init__(self, timeout_s: float = 5.0) -> None:
        self.timeout_s = timeout_s

    def _get(self, url: str) -> httpx.Response:
        with httpx.Client(trust_env=False, timeout=self.timeout_s) as c:
            return c.get(url)

    def reachable(self, base_url: str) -> bool:
        try:
            self._get(base_url + "/")
            return True
        except httpx.HTTPError:
            return False

    def require_up(self, base_url: str) -> None:
        try:
            self._get(base_url + "/")
        except httpx.HTTPError as exc:
            why = str(exc) or type(exc).__name__  # httpx timeouts carry no message
            raise InfraError(f"server not reachable: {why}", where=base_url, hint="is it still running?") from exc

    def served_models(self, base_url: str) -> list[str]:
        try:
            r = self._get(base_url + "/v1/models")
            data = r.json().get("data") or [] if r.status_code == 200 else []
            return [str(d["id"]) for d in data if isinstance(d, dict) and "id" in d]
        except (httpx.HTTPError, ValueError, AttributeError, TypeError):
            return []

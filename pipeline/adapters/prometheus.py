"""Prometheus' HTTP query API, behind a Protocol: the instant value of one PromQL expression.

Used where no controller runs the canary analysis for us (KServe): the promotion backend evaluates the
same queries an Argo Rollouts AnalysisTemplate would.
"""

from __future__ import annotations

from typing import Protocol

import httpx

from pipeline.errors import BadInput, InfraError

QUERY_TIMEOUT_S = 30


class PromQL(Protocol):
    def query(self, expr: str) -> float | None:
        """The expression's value now: the single sample of an instant vector or scalar; None when the
        result is empty (no data). NaN stays NaN."""
        ...


class PrometheusHttp:
    """`PromQL` through `GET /api/v1/query` (Prometheus HTTP API, "Instant queries")."""

    def __init__(self, base_url: str, *, timeout_s: float = QUERY_TIMEOUT_S) -> None:
        self.base_url = base_url.rstrip("/")
        self._client = httpx.Client(timeout=timeout_s, trust_env=False)

    def close(self) -> None:
        self._client.close()

    def query(self, expr: str) -> float | None:
        where = f"{self.base_url}/api/v1/query"
        try:
            r = self._client.get(where, params={"query": expr})
        except httpx.HTTPError as exc:
            raise InfraError(f"Prometheus unreachable: {exc}", where=where) from exc
        try:
            body = r.json()
        except ValueError as exc:
            raise InfraError(f"Prometheus answered HTTP {r.status_code} with no JSON", where=where) from exc
        if r.status_code == 400 or body.get("errorType") == "bad_data":
            raise BadInput(f"PromQL refused: {body.get('error', 'bad_data')}", where=where)
        if r.status_code != 200 or body.get("status") != "success":
            raise InfraError(f"Prometheus error {r.status_code}: {body.get('error', '')}", where=where)
        data = body.get("data") or {}
        result = data.get("result")
        if data.get("resultType") == "scalar":
            return _num(result[1]) if result else None
        if not result:
            return None
        if len(result) > 1:
            raise BadInput(f"query returned {len(result)} series, expected one (aggregate it)", where=expr)
        return _num(result[0]["value"][1])


def _num(text: str) -> float:
    return float(text)  # Prometheus encodes NaN and ±Inf as "NaN", "+Inf", "-Inf"; float() reads them

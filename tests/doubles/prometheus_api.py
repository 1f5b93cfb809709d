"""TEST DOUBLE "Prometheus query API": `GET /api/v1/query` on 127.0.0.1, answering from a table.

Not Prometheus: there is no Prometheus scraping canary pods here. It answers the instant-query endpoint
in the shape the Prometheus HTTP API documents ("Expression queries", "Instant queries"):
`{"status":"success","data":{"resultType":"vector","result":[{"metric":{},"value":[<ts>,"<value>"]}]}}`,
an empty `result` for an expression with no data, and `400 {"status":"error","errorType":"bad_data",…}`
for an expression it was not told about (standing in for a parse error). Values are strings, with
"NaN" for NaN, as Prometheus encodes them. `answers` maps a substring of the expression (e.g. the
metric name) to a list of values returned in turn (the last one repeats); None means no data.
"""

from __future__ import annotations

import json
import math
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlparse


class FakePrometheus:
    def __init__(self, answers: dict[str, list[float | None]]) -> None:
        self.answers = {k: list(v) for k, v in answers.items()}
        self.queries: list[str] = []
        api = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *a: Any) -> None:
                pass

            def _send(self, code: int, body: dict[str, Any]) -> None:
                data = json.dumps(body).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:
                url = urlparse(self.path)
                if url.path != "/api/v1/query":
                    return self._send(404, {"status": "error", "errorType": "not_found", "error": "not found"})
                expr = (parse_qs(url.query).get("query") or [""])[0]
                api.queries.append(expr)
                key = next((k for k in api.answers if k in expr), None)
                if key is None:
                    return self._send(400, {"status": "error", "errorType": "bad_data",
                                            "error": f"1:1: parse error: unexpected expression {expr[:40]!r}"})
                values = api.answers[key]
                value = values.pop(0) if len(values) > 1 else values[0]
                text = "NaN" if value is not None and math.isnan(value) else repr(value)
                result = [] if value is None else [{"metric": {}, "value": [1767225600.0, text]}]
                self._send(200, {"status": "success", "data": {"resultType": "vector", "result": result}})

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def __enter__(self) -> FakePrometheus:  # noqa: PYI034
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()

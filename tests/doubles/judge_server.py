"""TEST DOUBLE "judge server": an OpenAI-compatible chat-completions server that plays an LLM judge.

It is not a model. It reads the prompts ragas 0.4.3 sends for Faithfulness (statement generation, then
NLI verdicts) and AnswerRelevancy (question generation), parses the `input: {...}` block ragas puts at
the end of each prompt, and answers with the JSON ragas' pydantic output models expect, computed by
simple deterministic rules:

- statements: one per sentence of the answer;
- NLI verdict: 1 when at least 60% of a statement's content words occur in the context, else 0;
- answer relevance: the first sentence of the response turned into a question, `noncommittal` 1 for
  "I don't know"-style answers.

Scripted answers: `script` maps a substring of the prompt to a JSON object returned verbatim.
Fault modes, global (`fault=`) or per request with the marker `[[judge:<mode>]]` anywhere in the input:
`timeout` (sleeps `hang_s` before answering), `malformed` (content that is not JSON), `nan` (no
statements / an empty question, which ragas turns into NaN for Faithfulness), `http500`, `truncated`
(half a JSON answer with finish_reason "length": a judge that ran out of max_tokens).

It records every request (`requests`) and the largest number handled at once (`max_in_flight`) so that
tests can check the caller's concurrency bound. Standard library only; binds 127.0.0.1 on port 0.
"""

from __future__ import annotations

import json
import re
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Self

_FAULT = re.compile(r"\[\[judge:(timeout|malformed|nan|http500|truncated)\]\]")
_WORD = re.compile(r"[a-z0-9]+")
_STOP = frozenset(["a", "an", "the", "of", "to", "in", "on", "at", "by", "for", "and", "or", "is", "are", "was", "were", "be", "it", "its", "this", "that", "with", "as"])
_NONCOMMITTAL = re.compile(r"i don't know|i do not know|i'm not sure|i am not sure|it depends", re.IGNORECASE)


def _words(text: str) -> set[str]:
    return {w for w in _WORD.findall(text.lower()) if w not in _STOP}


def _sentences(text: str) -> list[str]:
    return [s.strip() for s in re.split(r"(?<=[.!?])\s+", text) if s.strip()]


def _input_block(prompt: str) -> dict[str, Any]:
    """The JSON object after the last `input:` in a ragas prompt."""
    idx = prompt.lower().rfind("input: {")
    if idx < 0:
        return {}
    text = prompt[idx + len("input: ") :]
    end = text.rfind("Output:")
    text = text[:end] if end >= 0 else text
    try:
        obj, _ = json.JSONDecoder().raw_decode(text.strip())
    except ValueError:
        return {}
    return obj if isinstance(obj, dict) else {}


def judge_answer(prompt: str, *, nan: bool = False) -> dict[str, Any]:
    """The JSON a well-behaved judge would return for this ragas prompt."""
    inp = _input_block(prompt)
    if "answer" in inp and "question" in inp:  # Faithfulness step 1: statement generation
        return {"statements": [] if nan else _sentences(str(inp["answer"]))}
    if "statements" in inp and "context" in inp:  # Faithfulness step 2: NLI
        ctx = _words(str(inp["context"]))
        out = []
        for st in inp["statements"]:
            w = _words(str(st))
            ok = bool(w) and len(w & ctx) / len(w) >= 0.6
            out.append({"statement": st, "reason": "words found in context" if ok else "not in context",
                        "verdict": int(ok)})
        return {"statements": [] if nan else out}
    if "response" in inp:  # AnswerRelevancy: generate the question this response answers
        resp = str(inp["response"])
        first = (_sentences(resp) or [resp])[0].rstrip(".!")
        return {"question": "" if nan else f"{first}?", "noncommittal": int(bool(_NONCOMMITTAL.search(resp)))}
    return {"error": "unrecognised prompt"}


class JudgeServer:
    """Start with `with JudgeServer() as js: js.base_url`."""

    def __init__(
        self,
        *,
        fault: str | None = None,
        hang_s: float = 5.0,
        delay_s: float = 0.0,
        script: dict[str, dict[str, Any]] | None = None,
        model: str = "scripted-judge",
        api_key: str | None = None,
        echo_key: bool = False,
    ) -> None:
        self.fault = fault
        self.hang_s = hang_s
        self.delay_s = delay_s  # every answer takes this long, so that overlapping requests are visible
        self.script = script or {}
        self.model = model
        self.api_key = api_key
        # A misconfigured proxy that quotes the credentials it refused back in its 401 body, as some do
        self.echo_key = echo_key
        self.requests: list[dict[str, Any]] = []
        self.auth_headers: list[str | None] = []
        self.in_flight = 0
        self.max_in_flight = 0
        self._lock = threading.Lock()
        self._httpd: ThreadingHTTPServer | None = None

    @property
    def base_url(self) -> str:
        assert self._httpd is not None
        return f"http://127.0.0.1:{self._httpd.server_address[1]}/v1"

    def __enter__(self) -> Self:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:  # keep test output quiet
                pass

            def _send(self, code: int, body: bytes, ctype: str = "application/json") -> None:
                try:
                    self.send_response(code)
                    self.send_header("Content-Type", ctype)
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (timeout mode)

            def do_GET(self) -> None:
                if self.path.rstrip("/").endswith("/models"):
                    self._send(200, json.dumps({"object": "list", "data": [{"id": server.model}]}).encode())
                else:
                    self._send(404, b"{}")

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                req = json.loads(self.rfile.read(length) or b"{}")
                with server._lock:
                    server.requests.append(req)
                    server.auth_headers.append(self.headers.get("Authorization"))
                    server.in_flight += 1
                    server.max_in_flight = max(server.max_in_flight, server.in_flight)
                try:
                    self._answer(req)
                finally:
                    with server._lock:
                        server.in_flight -= 1

            def _answer(self, req: dict[str, Any]) -> None:
                if server.api_key and self.headers.get("Authorization") != f"Bearer {server.api_key}":
                    sent = self.headers.get("Authorization") or ""
                    message = f"bad key: {sent}" if server.echo_key else "bad key"
                    self._send(401, json.dumps({"error": {"message": message}}).encode())
                    return
                msgs = req.get("messages") or []
                prompt = "\n".join(str(m.get("content", "")) for m in msgs if m.get("role") == "user")
                m = _FAULT.search(prompt)
                fault = m.group(1) if m else server.fault
                if fault == "http500":
                    self._send(500, b'{"error": {"message": "scripted failure"}}')
                    return
                time.sleep(server.delay_s)
                if fault == "timeout":
                    time.sleep(server.hang_s)
                finish = "stop"
                if fault == "malformed":
                    content = "Sure! Here is my verdict: statements = [oops"
                elif fault == "truncated":
                    content, finish = '{"statements": ["Paris is', "length"
                else:
                    scripted = next((v for k, v in server.script.items() if k in prompt), None)
                    content = json.dumps(scripted if scripted is not None else judge_answer(prompt, nan=fault == "nan"))
                body = {
                    "id": f"chatcmpl-{len(server.requests)}",
                    "object": "chat.completion",
                    "created": int(time.time()),
                    "model": server.model,
                    "choices": [{"index": 0, "finish_reason": finish,
                                 "message": {"role": "assistant", "content": content}}],
                    "usage": {"prompt_tokens": len(prompt) // 4, "completion_tokens": len(content) // 4,
                              "total_tokens": (len(prompt) + len(content)) // 4},
                }
                self._send(200, json.dumps(body).encode())

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        threading.Thread(target=self._httpd.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()

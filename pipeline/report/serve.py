"""`llmgate serve-dashboard`: the static site, served locally for a quick look.

The site is regenerated from the store when the store changed since the last request, so a run that
finishes while the dashboard is open shows up on reload. Binds 127.0.0.1 only.
"""

from __future__ import annotations

import functools
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from pipeline.report.site import write_site_from_store
from pipeline.store import Store


class _Site:
    def __init__(self, store: Store, out_dir: Path) -> None:
        self.store, self.out_dir = store, out_dir
        self._lock = threading.Lock()
        self._stamp: object = None

    def _store_stamp(self) -> object:
        return self.store.change_stamp()

    def refresh(self) -> None:
        with self._lock:
            stamp = self._store_stamp()
            if stamp != self._stamp:
                write_site_from_store(self.store, self.out_dir)
                self._stamp = stamp


class _Handler(SimpleHTTPRequestHandler):
    site: _Site

    def do_GET(self) -> None:
        if self.path.split("?")[0] in ("/", "/index.html"):
            self.site.refresh()
        super().do_GET()

    def log_message(self, format: str, *args: Any) -> None:
        pass  # quiet: the CLI prints the URL once


def make_server(store: Store, out_dir: Path, port: int = 0, host: str = "127.0.0.1") -> ThreadingHTTPServer:
    site = _Site(store, out_dir)
    site.refresh()
    handler = type("Handler", (_Handler,), {"site": site})
    return ThreadingHTTPServer((host, port), functools.partial(handler, directory=str(out_dir)))

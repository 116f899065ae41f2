"""moto's S3 server, with the per-request atomicity real S3 has.

moto checks a conditional put's precondition (`If-None-Match: *`, `If-Match`) and then writes,
as two steps on a threaded server: two concurrent `If-None-Match: *` puts of the same key can
both succeed, which S3 never allows (one gets 412 Precondition Failed). The registry's version
numbers, the alias's compare-and-swap and the contract verdicts rely on that guarantee, so the
concurrency tests ran against a weaker store than production's. Here every write request is
handled whole before the next starts; reads stay concurrent.

`python -m tests.s3server PORT` runs it in a process of its own.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable, Iterable
from typing import Any

WRITES = frozenset({"PUT", "POST", "DELETE"})


class SerializedWrites:
    """WSGI middleware: one write request at a time, each handled to its last byte."""

    def __init__(self, app: Callable[..., Iterable[bytes]]) -> None:
        self.app = app
        self.lock = threading.Lock()

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        if environ.get("REQUEST_METHOD") not in WRITES:
            return self.app(environ, start_response)
        with self.lock:
            return list(self.app(environ, start_response))


def make(host: str, port: int) -> Any:
    """A threaded werkzeug server of moto's S3 (and other) backends, writes serialized."""
    from moto.moto_server.werkzeug_app import (
        DomainDispatcherApplication,
        MotoRequestHandler,
        create_backend_app,
    )
    from werkzeug.serving import make_server

    app = SerializedWrites(DomainDispatcherApplication(create_backend_app))
    return make_server(host, port, app, threaded=True, request_handler=MotoRequestHandler)


class ThreadedServer:
    """The server in a daemon thread of this process (the `s3_endpoint` fixture)."""

    def __init__(self, host: str, port: int) -> None:
        self.server = make(host, port)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.thread.join()


if __name__ == "__main__":
    make("127.0.0.1", int(sys.argv[1])).serve_forever()

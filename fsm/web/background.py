"""`fsm serve`'s app in a background thread: the demo shows its database live while it runs,
and the tests drive a real HTTP server. The thread ends with `stop()`; nothing outlives it."""

from __future__ import annotations

import socket
import threading
import time

from fastapi import FastAPI

from fsm.web.app import ServeSettings, close, create_app

DEFAULT_PORT = 8321


def free_port(preferred: int | None = None) -> int:
    """`preferred` if nobody listens there, else any free port on 127.0.0.1."""
    for port in ([preferred] if preferred else []) + [0]:
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue
            chosen: int = probe.getsockname()[1]
            return chosen
    raise OSError("no free port on 127.0.0.1")


class BackgroundServer:
    """uvicorn serving `app` on 127.0.0.1 in a daemon thread."""

    def __init__(self, app: FastAPI, port: int | None = None) -> None:
        import uvicorn

        self.app = app
        self.port = free_port(port)
        config = uvicorn.Config(
            app, host="127.0.0.1", port=self.port, log_level="warning", lifespan="off"
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, name="fsm-web", daemon=True)

    @property
    def address(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 20.0) -> BackgroundServer:
        self.thread.start()
        deadline = time.monotonic() + timeout
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                self.stop()
                raise OSError(f"the web view did not start on port {self.port}")
            time.sleep(0.05)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        if self.thread.is_alive():
            self.thread.join(timeout=10)
        close(self.app)


def serve_in_background(url: str, port: int | None = DEFAULT_PORT) -> BackgroundServer:
    """A read-only view of `url` (its schema must be the newest), started."""
    return BackgroundServer(create_app(ServeSettings(url)), port).start()

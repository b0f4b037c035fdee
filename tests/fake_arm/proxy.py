"""An HTTPS forward proxy (HTTP CONNECT) that reaches only the fake Azure Files.

Clients honour `HTTPS_PROXY`; a CONNECT to `<account>.file.core.windows.net:443` is tunnelled to
the fake Files server (TLS end to end: the client verifies that server's certificate for the
name it asked for), anything else is refused with 403, so no test request leaves this machine.
"""

from __future__ import annotations

import contextlib
import selectors
import socket
import socketserver
import threading

from tests.fake_arm.files import SUFFIX


class ForwardProxy:
    def __init__(self, files_port: int) -> None:
        self.tunnels: list[str] = []
        self.refused: list[str] = []
        proxy = self

        class Handler(socketserver.StreamRequestHandler):
            def handle(self) -> None:
                line = self.rfile.readline(65537).decode("latin-1").strip()
                while self.rfile.readline(65537) not in (b"\r\n", b"\n", b""):
                    pass  # the request's headers: nothing in them changes where it goes
                method, _, rest = line.partition(" ")
                target = rest.split(" ")[0]
                host, _, port = target.rpartition(":")
                if method != "CONNECT" or not host.lower().endswith(SUFFIX) or port != "443":
                    proxy.refused.append(line)
                    self.wfile.write(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n")
                    return
                proxy.tunnels.append(host.lower())
                with socket.create_connection(("127.0.0.1", files_port), timeout=30) as upstream:
                    self.wfile.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
                    self.wfile.flush()
                    _relay(self.connection, upstream)

        self.server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def _relay(client: socket.socket, upstream: socket.socket) -> None:
    """Copy bytes both ways until either side closes."""
    selector = selectors.DefaultSelector()
    selector.register(client, selectors.EVENT_READ, upstream)
    selector.register(upstream, selectors.EVENT_READ, client)
    try:
        while True:
            for key, _ in selector.select(timeout=60):
                source: socket.socket = key.fileobj  # type: ignore[assignment]
                try:
                    data = source.recv(65536)
                except OSError:
                    return
                if not data:
                    return
                with contextlib.suppress(OSError):
                    key.data.sendall(data)
    finally:
        selector.close()

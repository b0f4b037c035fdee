"""Health checks of local services: an HTTP GET or a TCP connect, each with a short timeout."""

from __future__ import annotations

import http.client
import socket


def http_ok(host: str, port: int, path: str, timeout: float) -> bool:
    """True for a 2xx/3xx answer to GET `path`; any error or other status is a failed ping."""
    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        conn.request("GET", path)
        status = conn.getresponse().status
    except (OSError, http.client.HTTPException):
        return False
    finally:
        conn.close()
    return 200 <= status < 400


def tcp_ok(host: str, port: int, timeout: float) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def free_port(host: str = "127.0.0.1") -> int:
    """A port nobody listens on right now (the service binds it moments later)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])

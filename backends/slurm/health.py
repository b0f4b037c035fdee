"""Health pings: an HTTP GET of a path, or a bare TCP connect, with a short timeout.

A ping answers only "the service answers now"; it never raises, so one bad service cannot
break the observation of the others.
"""

from __future__ import annotations

import http.client
import socket
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import NamedTuple


class Target(NamedTuple):
    host: str
    port: int


def ping(target: Target, path: str | None, timeout: float) -> tuple[bool, str]:
    """(ok, detail): HTTP 2xx/3xx on `path`, or, with no path, an accepted TCP connection."""
    if path is None:
        try:
            with socket.create_connection(target, timeout=timeout):
                return True, "tcp connect ok"
        except OSError as exc:
            return False, f"tcp connect: {exc}"
    conn = http.client.HTTPConnection(target.host, target.port, timeout=timeout)
    try:
        conn.request("GET", path, headers={"User-Agent": "fsm-slurm-health"})
        response = conn.getresponse()
        response.read(65536)
        ok = 200 <= response.status < 400
        return ok, f"HTTP {response.status}"
    except (OSError, http.client.HTTPException) as exc:
        return False, f"http: {type(exc).__name__}: {exc}"
    finally:
        conn.close()


def ping_all(
    targets: Sequence[Target], path: str | None, timeout: float, workers: int = 16
) -> list[tuple[bool, str]]:
    """Ping many services at once, so a few dead ones cost one timeout, not one each."""
    if not targets:
        return []
    if len(targets) == 1:
        return [ping(targets[0], path, timeout)]
    with ThreadPoolExecutor(max_workers=min(workers, len(targets))) as pool:
        return list(pool.map(lambda t: ping(t, path, timeout), targets))

"""SSH tunnels to services on a remote cluster's nodes: one per entity, re-opened when dead."""

from __future__ import annotations

import logging
from typing import Any

from backends.slurm.transport import Transport, Tunnel
from fsm import Entity

log = logging.getLogger(__name__)


class Tunnels:
    """The tunnels this process opened, by entity id, and the ones earlier runs recorded."""

    def __init__(self, transport: Transport) -> None:
        self.transport = transport
        self._open: dict[str, Tunnel] = {}

    def alive(self, entity_id: str, node: str, port: int) -> Tunnel | None:
        """The tunnel this process opened for the entity, if it is alive and points there."""
        tunnel = self._open.get(entity_id)
        if tunnel is None or (tunnel.node, tunnel.remote_port) != (node, port):
            return None
        return tunnel if self.transport.tunnel_alive(tunnel) else None

    def alive_any(self, entity_id: str) -> Tunnel | None:
        """The tunnel this process holds for the entity (None when it needs none)."""
        return self._open.get(entity_id)

    def for_entity(self, entity: Entity, node: str, port: int) -> Tunnel | None:
        """The entity's tunnel if it is alive and still points at node:port, else a new one.

        Looked for in this process's memory first (opened since the data was last written),
        then in the entity's data (opened by an earlier run: its pid and command line must
        still match, so a recycled pid is never taken for it)."""
        for old in (self._open.get(entity.id), Tunnel.from_data(entity.data.get("tunnel"))):
            if old is None:
                continue
            if old.node == node and old.remote_port == port and self.transport.tunnel_alive(old):
                self._open[entity.id] = old
                return old
            self.transport.close_tunnel(old)
            log.info("slurm: tunnel %s of %s is gone; opening a new one", old.spec(), entity.id)
        tunnel = self.transport.open_tunnel(node, port)
        if tunnel is not None:
            self._open[entity.id] = tunnel
        return tunnel

    def drop(self, entity: Entity) -> dict[str, Any]:
        """Close the entity's tunnel; the data to record (nothing if it had none)."""
        cached = self._open.pop(entity.id, None)
        recorded = Tunnel.from_data(entity.data.get("tunnel"))
        for tunnel in {cached, recorded} - {None}:
            assert tunnel is not None
            self.transport.close_tunnel(tunnel)
        return {"tunnel": None} if recorded is not None else {}

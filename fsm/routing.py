"""Backend profiles: which backend instance drives which entity (TEAM contract 6).

A run config names its backends (`backends: [{name: laptop, kind: local}, {name: sim, kind:
sim}]`); an entity created with `profile="laptop"` is driven by that instance, one without a
profile by its lifecycle's default route: the unnamed backend that drives the lifecycle, else
the first named one that does (one unnamed backend per lifecycle, as before profiles).

`routes_for(config)` builds the instances once. Where profiles are in use, the worker is given
one `ProfileRouter` that looks like a single backend and dispatches per entity: `observe` makes
one batched call per backend instance for the entities routed to it, `execute` and `release`
go to the entity's own backend. An entity whose profile this config does not name is observed
as failed (`missing`, naming the profile) and its commands are refused, never sent elsewhere.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from datetime import datetime
from typing import Any

from fsm.config import make_backend
from fsm.errors import FsmError
from fsm.observation import FailureKind, Observation
from storage import EntityRow


class UnknownProfile(FsmError):
    def __init__(self, entity_id: str, profile: str, known: Sequence[str]) -> None:
        self.profile = profile
        super().__init__(
            f"{entity_id} is driven by profile {profile!r}, which this config does not name "
            f"(profiles: {', '.join(known) or 'none'})"
        )


class Routes(Mapping[str, Any]):
    """Profile name -> backend instance, plus each lifecycle's default route."""

    def __init__(self, entries: Sequence[tuple[str | None, Any]]) -> None:
        self.entries = list(entries)
        self._profiles = {name: backend for name, backend in entries if name is not None}
        self.defaults: dict[str, Any] = {}
        for unnamed in (True, False):  # an unnamed backend's lifecycles first
            for name, backend in entries:
                if (name is None) == unnamed:
                    for lifecycle in sorted(backend.lifecycles):
                        self.defaults.setdefault(lifecycle, backend)

    def __getitem__(self, profile: str) -> Any:
        return self._profiles[profile]

    def __iter__(self) -> Iterator[str]:
        return iter(self._profiles)

    def __len__(self) -> int:
        return len(self._profiles)

    def backend_for(self, entity: EntityRow) -> Any | None:
        """The entity's backend; None when nothing drives its lifecycle. Raises UnknownProfile."""
        if entity.profile is None:
            return self.defaults.get(entity.lifecycle)
        backend = self._profiles.get(entity.profile)
        if backend is None:
            raise UnknownProfile(entity.id, entity.profile, sorted(self._profiles))
        return backend

    def instances(self) -> list[Any]:
        return [backend for _name, backend in self.entries]

    def for_worker(self) -> list[Any]:
        """What `Worker(engine, backends)` takes: the backends themselves without profiles,
        else one router in front of all of them."""
        if not self._profiles:
            return self.instances()
        return [ProfileRouter(self)]


def routes_for(config: Any) -> Routes:
    """Build every backend of a run config (`RunConfig.backends`), keyed by profile name."""
    entries: list[tuple[str | None, Any]] = []
    for settings in config.backends:
        own = {k: v for k, v in settings.items() if k != "name"}
        entries.append((settings.get("name"), make_backend(own)))
    return Routes(entries)


class ProfileRouter:
    """One backend to the worker; per entity, the backend its profile (or lifecycle) names."""

    releases = True

    def __init__(self, routes: Routes) -> None:
        self.routes = routes
        backends = routes.instances()
        self.name = "+".join(dict.fromkeys(getattr(b, "name", "backend") for b in backends))
        self.lifecycles: frozenset[str] = frozenset(routes.defaults)
        self.commands: frozenset[str] = frozenset().union(*(b.commands for b in backends))
        for bound in ("observe_timeout", "command_timeout", "release_timeout"):
            values = [getattr(b, bound) for b in backends if hasattr(b, bound)]
            if values:
                setattr(self, bound, max(values))

    def source_for(self, entity: EntityRow) -> str:
        """The name of the backend that observed `entity`: the source of what it caused."""
        try:
            backend = self.routes.backend_for(entity)
        except UnknownProfile:
            return self.name
        return self.name if backend is None else str(getattr(backend, "name", self.name))

    def observe_safely(self, entities: Sequence[EntityRow], now: datetime) -> list[Observation]:
        """One batched call per backend instance, for the entities routed to it."""
        groups: dict[int, tuple[Any, list[EntityRow]]] = {}
        found: list[Observation] = []
        for entity in entities:
            try:
                backend = self.routes.backend_for(entity)
            except UnknownProfile as exc:
                found.append(Observation.failed(entity.id, FailureKind.MISSING, str(exc)))
                continue
            if backend is None:
                found.append(Observation.failed(entity.id, FailureKind.MISSING, "no backend"))
                continue
            groups.setdefault(id(backend), (backend, []))[1].append(entity)
        for backend, group in groups.values():
            found.extend(backend.observe_safely(group, now))
        return found

    def _backend(self, entity: EntityRow) -> Any:
        backend = self.routes.backend_for(entity)
        if backend is None:
            raise FsmError(f"no backend drives {entity.id} ({entity.lifecycle})")
        return backend

    def execute(
        self, entity: EntityRow, command: str, arguments: Mapping[str, Any], now: datetime
    ) -> Any:
        return self._backend(entity).execute(entity, command, arguments, now)

    def release(self, entity: EntityRow, now: datetime) -> None:
        backend = self._backend(entity)
        if getattr(backend, "releases", True):
            backend.release(entity, now)

    def close(self) -> None:
        for backend in self.routes.instances():
            close = getattr(backend, "close", None)
            if close is not None:
                close()

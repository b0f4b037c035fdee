"""A deterministic simulator for services, hosts and operations, with fault injection.

Nothing is kept per entity: an entity's whole future is a pure function of the seed, its id, its
creation time and the commands recorded in its data. So the simulator holds 100k entities in no
memory, gives the same answers in every process (workers, restarts after SIGKILL) and can say
what each entity's final state must be (`expected_final_state`), which the tests compare with
what the engine recorded.
"""

from __future__ import annotations

import hashlib
import random
import struct
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from backends.base import HOST_COMMAND_OUTCOMES, Backend, CommandFailed, CommandResult
from fsm import Engine, Entity, FsmError, NewEntity
from fsm.observation import FailureKind, Observation

SERVICE_FATES = ("healthy", "fails", "never_healthy", "flaps", "requeued")
HOST_COMMANDS = HOST_COMMAND_OUTCOMES
_FAULTS = (FailureKind.TIMEOUT, FailureKind.ERROR, FailureKind.GARBAGE, FailureKind.THROTTLED)


def _rng(*parts: object) -> random.Random:
    digest = hashlib.blake2b(":".join(map(str, parts)).encode(), digest_size=8).digest()
    return random.Random(int.from_bytes(digest, "big"))


_UNITS = struct.Struct(">6I")  # six draws in [0, 1): all a service plan needs


def _units(*parts: object) -> list[float]:
    """Six uniform draws in [0, 1) from one hash of `parts`: the per-look plan needs no
    `random.Random`, whose seeding alone cost more than the rest of an observation."""
    digest = hashlib.blake2b(":".join(map(str, parts)).encode(), digest_size=24).digest()
    return [v / 4294967296.0 for v in _UNITS.unpack(digest)]


@dataclass(frozen=True, slots=True)
class ServicePlan:
    """One service's scripted future, in seconds after its creation."""

    fate: str
    run_start: float  # when the (last) run of the job starts
    first_run: tuple[float, float] | None  # (start, end) of a run that gets requeued
    boot: float  # seconds of running before the health check answers
    end: float  # when the job ends (FAILED for "fails", TIMEOUT otherwise)
    flap_period: float
    starting_limit: float  # STARTING's time limit, recorded in the entity's data

    def job_state(self, t: float) -> str:
        if self.first_run is not None:
            start, stop = self.first_run
            if start <= t < stop:
                return "RUNNING"
        if t < self.run_start:
            return "PENDING"
        if t < self.end:
            return "RUNNING"
        return "FAILED" if self.fate == "fails" else "TIMEOUT"

    def ping_ok(self, t: float) -> bool:
        if self.job_state(t) != "RUNNING" or self.fate == "never_healthy":
            return False
        up_since = self.run_start + self.boot
        if t < up_since:
            return False
        if self.fate == "flaps":
            return int((t - up_since) / self.flap_period) % 2 == 0
        return True


class SimBackend(Backend):
    """Simulated services, hosts and operations. Deterministic for a given seed.

    `time_scale` stretches every simulated duration (1.0: seconds, as in the demos and tests);
    `fault_rate` is the share of observations that fail (timeout, error, garbage, throttled);
    `batch_fault_rate` the share of whole `observe` calls that fail.
    """

    name = "sim"
    lifecycles = frozenset({"service", "host", "operation"})

    def __init__(
        self,
        seed: int = 0,
        *,
        time_scale: float = 1.0,
        fault_rate: float = 0.0,
        batch_fault_rate: float = 0.0,
        fates: Sequence[str] = SERVICE_FATES,
        host_failure_rate: float = 0.0,
        operation_seconds: float = 2.0,
        operation_failure_rate: float = 0.2,
    ) -> None:
        unknown = set(fates) - set(SERVICE_FATES)
        if unknown or not fates:
            raise ValueError(f"unknown service fates {sorted(unknown)}; known: {SERVICE_FATES}")
        for name, rate in (
            ("fault_rate", fault_rate),
            ("batch_fault_rate", batch_fault_rate),
            ("host_failure_rate", host_failure_rate),
            ("operation_failure_rate", operation_failure_rate),
        ):
            if not 0.0 <= rate <= 1.0:
                raise ValueError(f"{name} must be between 0 and 1, got {rate}")
        if time_scale <= 0 or operation_seconds <= 0:
            raise ValueError("time_scale and operation_seconds must be positive")
        self.seed = seed
        self.time_scale = time_scale
        self.fault_rate = fault_rate
        self.batch_fault_rate = batch_fault_rate
        self.fates = tuple(fates)
        self.host_failure_rate = host_failure_rate
        self.operation_seconds = operation_seconds
        self.operation_failure_rate = operation_failure_rate
        self.calls = 0  # observe calls made: one per batch

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> SimBackend:
        allowed = {
            "seed",
            "time_scale",
            "fault_rate",
            "batch_fault_rate",
            "fates",
            "host_failure_rate",
            "operation_seconds",
            "operation_failure_rate",
        }
        unknown = set(config) - allowed - {"kind", "lifecycles"}
        if unknown:
            raise ValueError(f"unknown sim backend settings: {sorted(unknown)}")
        return cls(**{k: v for k, v in config.items() if k in allowed})

    # -- plans -------------------------------------------------------------------------------

    def service_plan(self, entity_id: str) -> ServicePlan:
        u = _units(self.seed, "service", entity_id)
        s = self.time_scale
        fate = self.fates[int(u[0] * len(self.fates))]
        queue = (0.5 + 2.5 * u[1]) * s
        boot = (0.5 + 1.5 * u[2]) * s
        starting_limit = boot + 6.0 * s
        first_run = None
        run_start = queue
        if fate == "requeued":
            first_run = (queue, queue + (0.5 + 1.0 * u[3]) * s)
            run_start = first_run[1] + (0.5 + 1.5 * u[4]) * s
        if fate == "fails":
            end = run_start + boot + (1.0 + 3.0 * u[5]) * s
        else:
            end = run_start + starting_limit + (3.0 + 5.0 * u[5]) * s
        return ServicePlan(fate, run_start, first_run, boot, end, 1.5 * s, starting_limit)

    def service_data(self, entity_id: str) -> dict[str, Any]:
        """Data to create a simulated service with (its STARTING time limit, scaled)."""
        return {"time_limits": {"STARTING": self.service_plan(entity_id).starting_limit}}

    def expected_final_state(self, entity: Entity) -> str:
        """The state the engine must end in, from the plan and the recorded commands."""
        if entity.lifecycle == "service":
            plan = self.service_plan(entity.id)
            # `sim_stop_at` is recorded only with an accepted stop: the stop won the race
            # against whatever else the job was doing, so STOPPED is the truth
            if _seconds(entity.data.get("sim_stop_at"), entity.created_at) is not None:
                return "STOPPED"
            return {"fails": "FAILED"}.get(plan.fate, "TIMEOUT")
        if entity.lifecycle == "operation":
            return "FAILED" if self._operation_fails(entity.id) else "SUCCEEDED"
        return "DEPROVISIONED"

    # -- observing ---------------------------------------------------------------------------

    def observe(self, entities: Sequence[Entity], now: datetime) -> list[Observation]:
        self.calls += 1
        call = _rng(self.seed, "call", now.isoformat(), len(entities))
        if self.batch_fault_rate and call.random() < self.batch_fault_rate:
            return [
                Observation.failed(e.id, FailureKind.TIMEOUT, "sim: call timed out")
                for e in entities
            ]
        return [self._observe_one(e, now) for e in entities]

    def _observe_one(self, entity: Entity, now: datetime) -> Observation:
        if self.fault_rate:
            rng = _rng(self.seed, "fault", entity.id, now.isoformat())
            if rng.random() < self.fault_rate:
                kind = rng.choice(_FAULTS)
                retry = 1.0 * self.time_scale if kind is FailureKind.THROTTLED else None
                return Observation.failed(
                    entity.id, kind, f"sim: injected {kind}", retry_after=retry
                )
        t = (now - entity.created_at).total_seconds()
        if entity.lifecycle == "service":
            events = self._service_events(entity, t)
        elif entity.lifecycle == "host":
            events = self._host_events(entity, now)
        elif entity.lifecycle == "operation":
            events = self._operation_events(entity, t)
        else:
            return Observation.failed(entity.id, FailureKind.MISSING, "sim: unknown lifecycle")
        return Observation(entity.id, events, {"t": round(t, 3)}, observed_at=now)

    def _service_events(self, entity: Entity, t: float) -> tuple[str, ...]:
        stop_at = _seconds(entity.data.get("sim_stop_at"), entity.created_at)
        plan = self.service_plan(entity.id)
        if stop_at is not None and t >= stop_at and stop_at < plan.end:
            return ("job_cancelled",)
        job = plan.job_state(t)
        if job == "PENDING":
            return ("job_pending",)
        if job == "RUNNING":
            return ("job_running", "ping_ok" if plan.ping_ok(t) else "ping_failed")
        return ("job_failed",) if job == "FAILED" else ("job_timeout",)

    def _host_events(self, entity: Entity, now: datetime) -> tuple[str, ...]:
        op = entity.data.get("sim_op")
        if not isinstance(op, Mapping):
            return ()
        started = datetime.fromisoformat(str(op.get("at")))
        if (now - started).total_seconds() < self.operation_seconds * self.time_scale:
            return ()  # still in progress: the transitional state stands
        command = str(op.get("command"))
        if command == "provision" and self.provision_fails(entity.id):
            return () if entity.state == "FAILED" else ("failed",)  # said once is enough
        return (HOST_COMMANDS[command],) if command in HOST_COMMANDS else ()

    def provision_fails(self, entity_id: str) -> bool:
        """Whether provisioning this host fails (decided by the seed, like everything)."""
        return _rng(self.seed, "host", entity_id).random() < self.host_failure_rate

    def _operation_fails(self, entity_id: str) -> bool:
        return _rng(self.seed, "operation", entity_id).random() < self.operation_failure_rate

    def _operation_events(self, entity: Entity, t: float) -> tuple[str, ...]:
        duration = self.operation_seconds * self.time_scale
        if t < duration / 2:
            return ()
        if t < duration:
            return ("start",) if entity.state == "PENDING" else ("progress",)
        return ("fail",) if self._operation_fails(entity.id) else ("succeed",)

    # -- commands ----------------------------------------------------------------------------

    def execute(
        self, entity: Entity, command: str, arguments: Mapping[str, Any], now: datetime
    ) -> CommandResult:
        if entity.lifecycle == "service" and command == "stop":
            already = entity.data.get("sim_stop_at")
            return CommandResult(data={"sim_stop_at": already or now.isoformat()})
        if entity.lifecycle == "host" and command in HOST_COMMANDS:
            return CommandResult(data={"sim_op": {"command": command, "at": now.isoformat()}})
        raise CommandFailed(
            command, entity.id, f"the simulator has no {command!r} for {entity.lifecycle}"
        )


def _seconds(value: Any, origin: datetime) -> float | None:
    if not isinstance(value, str):
        return None
    try:
        return (datetime.fromisoformat(value) - origin).total_seconds()
    except ValueError:
        return None


def populate(
    engine: Engine,
    sim: SimBackend,
    *,
    services: int = 0,
    hosts: int = 0,
    operations: int = 0,
    prefix: str = "sim",
    stop_every: int = 0,
    chunk: int = 2000,
) -> list[str]:
    """Create simulated entities (and the commands that drive simulated hosts).

    Every `stop_every`-th service gets a scheduled stop; each host is provisioned now,
    stopped, started again and deprovisioned by scheduled commands.
    """
    from fsm.worker import Worker

    items = [
        NewEntity("service", sim.service_data(f"{prefix}-svc-{i:06d}"), f"{prefix}-svc-{i:06d}")
        for i in range(services)
    ]
    items += [NewEntity("host", {}, f"{prefix}-host-{i:05d}") for i in range(hosts)]
    items += [NewEntity("operation", {}, f"{prefix}-op-{i:05d}") for i in range(operations)]
    for start in range(0, len(items), chunk):
        engine.create_many(items[start : start + chunk])
    worker = Worker(engine, [sim])
    step = sim.operation_seconds * sim.time_scale * 2
    for i in range(hosts):
        host = f"{prefix}-host-{i:05d}"
        # a host whose provisioning fails is only deprovisioned: FAILED refuses stop and start,
        # and a command the simulator knows will be refused is not scheduled (no warnings)
        failing = sim.provision_fails(host)
        for n, command in enumerate(("provision", "stop", "start", "deprovision")):
            if not (failing and command in ("stop", "start")):
                worker.schedule(host, command, delay=n * step)
    if stop_every:
        for i in range(0, services, stop_every):
            name = f"{prefix}-svc-{i:06d}"
            plan = sim.service_plan(name)
            at = plan.run_start + plan.boot + 1
            if plan.job_state(at + sim.time_scale) == "RUNNING":  # still running by then
                worker.schedule(name, "stop", delay=at)
    return [item.id for item in items if item.id is not None]


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m backends.sim --db URL --services N ...`: fill a database with sim entities."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m backends.sim", description=main.__doc__)
    parser.add_argument("--db", default=None, help="database URL (default: $FSM_DB or fsm.db)")
    parser.add_argument("--services", type=int, default=0)
    parser.add_argument("--hosts", type=int, default=0)
    parser.add_argument("--operations", type=int, default=0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--time-scale", type=float, default=1.0)
    parser.add_argument(
        "--stop-every", type=int, default=0, help="schedule a stop for every N-th service"
    )
    parser.add_argument("--prefix", default="sim")
    args = parser.parse_args(argv)
    if min(args.services, args.hosts, args.operations, args.stop_every) < 0:
        parser.error("counts must not be negative")
    engine = Engine(args.db)
    try:
        sim = SimBackend(args.seed, time_scale=args.time_scale)
        created = populate(
            engine,
            sim,
            services=args.services,
            hosts=args.hosts,
            operations=args.operations,
            prefix=args.prefix,
            stop_every=args.stop_every,
        )
    except (FsmError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    finally:
        engine.close()
    print(f"created {len(created)} simulated entities in {engine.store}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

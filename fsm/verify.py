"""Replays stored histories against the definitions that wrote them and reports every violation."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from fsm.definition import SAME_STATE
from fsm.lifecycle import Lifecycle
from storage import EntityRow, Store, TransitionRow

PAGE = 500
#: re-reads of an entity whose page read raced a writer, before its violations count
RECHECKS = 5


@dataclass(frozen=True, slots=True)
class Violation:
    """One broken invariant of one entity."""

    entity_id: str
    kind: str
    detail: str

    def __str__(self) -> str:
        return f"{self.entity_id}: {self.kind}: {self.detail}"


@dataclass(frozen=True, slots=True)
class _Rules:
    initial: str
    terminal: frozenset[str]
    moves: frozenset[tuple[str, str, str]]  # (trigger, from, to)


def _rules(body: Mapping[str, Any]) -> _Rules:
    states = body.get("states", [])
    initial = next((s["name"] for s in states if s.get("initial")), "")
    terminal = frozenset(s["name"] for s in states if s.get("terminal"))
    moves = set()
    for t in body.get("transitions", []):
        for source in t["source"]:
            dest = source if t["dest"] == SAME_STATE else t["dest"]
            moves.add((t["trigger"], source, dest))
    return _Rules(initial, terminal, frozenset(moves))


def rule_book(store: Store, lifecycles: Mapping[str, Lifecycle]) -> dict[tuple[str, str], _Rules]:
    """The rules of every definition version stored or registered, by (name, version)."""
    bodies = store.definitions()
    for lc in lifecycles.values():
        bodies.setdefault((lc.name, lc.version), lc.definition.to_dict())
    return {key: _rules(body) for key, body in bodies.items()}


def verify_store(store: Store, lifecycles: Mapping[str, Lifecycle]) -> list[Violation]:
    """Check invariants 1-4 of DESIGN.md for every entity, page by page."""
    rules = rule_book(store, lifecycles)
    violations: list[Violation] = []
    after: str | None = None
    while True:
        page = store.list_entities(limit=PAGE, after_id=after)
        if not page:
            return violations
        histories = store.histories([e.id for e in page])
        for entity in page:
            found = check_entity(entity, histories[entity.id], rules)
            if found:
                violations.extend(_settled(store, entity, found, rules))
        after = page[-1].id


def _settled(
    store: Store, entity: EntityRow, found: list[Violation], rules: Mapping[tuple[str, str], _Rules]
) -> list[Violation]:
    """The violations of `entity` read consistently. A page and its histories are two reads, so
    a transition committed between them (a live worker; a killed worker's last COMMIT still
    landing on the server) shows a head behind its history. Reading the entity, its history and
    the entity again with the same version is one consistent view: any commit that adds a
    transition also bumps the version."""
    for _ in range(RECHECKS):
        before = store.get_entity(entity.id)
        history = store.history(entity.id)
        again = store.get_entity(entity.id)
        if before is None or again is None:
            return found  # deleted meanwhile: report what was seen
        if before.version == again.version:
            return check_entity(again, history, rules)
    return found


def check_entity(
    entity: EntityRow,
    history: list[TransitionRow],
    rules: Mapping[tuple[str, str], _Rules],
) -> list[Violation]:
    found: list[Violation] = []

    def bad(kind: str, detail: str) -> None:
        found.append(Violation(entity.id, kind, detail))

    created_with = rules.get((entity.lifecycle, entity.definition_version))
    first_rules = rules.get((entity.lifecycle, history[0].definition_version)) if history else None
    initial_rules = first_rules or created_with
    state = initial_rules.initial if initial_rules else None
    for expected_seq, t in enumerate(history, start=1):
        if t.seq != expected_seq:
            bad("sequence", f"expected seq {expected_seq}, found {t.seq}")
        if state is not None and t.from_state != state:
            bad("continuity", f"seq {t.seq} leaves {t.from_state}, but the entity was in {state}")
        r = rules.get((entity.lifecycle, t.definition_version))
        if r is None:
            bad(
                "definition", f"seq {t.seq} names unknown definition version {t.definition_version}"
            )
        else:
            if t.from_state in r.terminal:
                bad("terminal", f"seq {t.seq} leaves terminal state {t.from_state}")
            if (t.event, t.from_state, t.to_state) not in r.moves:
                bad(
                    "illegal",
                    f"seq {t.seq}: {t.event} {t.from_state} -> {t.to_state} "
                    "is not in the definition",
                )
            if t.from_state == t.to_state:
                bad("self-loop", f"seq {t.seq} records a transition that keeps {t.to_state}")
        state = t.to_state
    expected_state = (
        history[-1].to_state
        if history
        else (initial_rules.initial if initial_rules else entity.state)
    )
    if entity.state != expected_state:
        bad("head", f"entity is {entity.state}, but its history ends in {expected_state}")
    if entity.seq != len(history):
        bad("head", f"entity seq is {entity.seq}, but it has {len(history)} transitions")
    head_rules = rules.get((entity.lifecycle, entity.definition_version))
    if head_rules is None:
        bad("definition", f"entity names unknown definition version {entity.definition_version}")
    elif entity.terminal != (entity.state in head_rules.terminal):
        bad("head", f"terminal flag {entity.terminal} is wrong for state {entity.state}")
    return found

"""Definitions: validation reports every problem at once, versions, files, guards and callbacks."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from fsm import (
    BUILTIN_NAMES,
    CallbackError,
    Definition,
    DefinitionError,
    Engine,
    Event,
    EventContext,
    Lifecycle,
    builtin_definition,
    load_definition,
)
from fsm.testing import check_definition

DEFINITIONS = {name: builtin_definition(name) for name in BUILTIN_NAMES}
BUILTINS = {name: definition.to_dict() for name, definition in DEFINITIONS.items()}


def _problems(raw: Any, **kwargs: Any) -> tuple[str, ...]:
    with pytest.raises(DefinitionError) as error:
        Definition.from_dict(raw, **kwargs)
    return error.value.problems


def _base() -> dict[str, Any]:
    """A small valid lifecycle the defects below are applied to."""
    return {
        "name": "job",
        "states": [
            {"name": "NEW", "initial": True},
            {"name": "RUNNING", "time_limit": 60, "on_time_limit": "expire"},
            {"name": "DONE", "terminal": True},
            {"name": "LOST", "terminal": True},
        ],
        "transitions": [
            {"trigger": "start", "source": "NEW", "dest": "RUNNING"},
            {"trigger": "finish", "source": "RUNNING", "dest": "DONE"},
            {"trigger": "expire", "source": "RUNNING", "dest": "LOST"},
            {"trigger": "cancel", "source": ["NEW", "RUNNING"], "dest": "LOST"},
        ],
    }


# -- every problem at once ----------------------------------------------------------------------

Defect = Callable[[dict[str, Any]], object]


def _state(raw: dict[str, Any], name: str) -> dict[str, Any]:
    return next(s for s in raw["states"] if s["name"] == name)


# each defect: how to break the base definition, and a fragment of the problem it must produce
DEFECTS: dict[str, tuple[Defect, str]] = {
    "unknown dest": (
        lambda r: r["transitions"].append({"trigger": "go", "source": "NEW", "dest": "NOWHERE"}),
        "unknown destination state 'NOWHERE'",
    ),
    "unknown source": (
        lambda r: r["transitions"].append({"trigger": "go", "source": "LIMBO", "dest": "DONE"}),
        "unknown source state 'LIMBO'",
    ),
    "unknown guard": (
        lambda r: r["transitions"].append(
            {"trigger": "finish", "source": "NEW", "dest": "DONE", "guards": "is_lucky"}
        ),
        "unknown guard 'is_lucky'",
    ),
    "unreachable": (
        lambda r: r["states"].append({"name": "ISLAND", "terminal": True}),
        "state 'ISLAND' is unreachable",
    ),
    "leaves terminal": (
        lambda r: r["transitions"].append({"trigger": "revive", "source": "DONE", "dest": "NEW"}),
        "leaves terminal state 'DONE'",
    ),
    "trap": (
        lambda r: (
            r["states"].append({"name": "STUCK"}),
            r["transitions"].append({"trigger": "wedge", "source": "NEW", "dest": "STUCK"}),
        ),
        "state 'STUCK' is a trap",
    ),
    "duplicate state": (
        lambda r: r["states"].append({"name": "DONE", "terminal": True}),
        "duplicate state name 'DONE'",
    ),
    "duplicate transition": (
        lambda r: r["transitions"].append({"trigger": "start", "source": "NEW", "dest": "RUNNING"}),
        "duplicate transition 'start'",
    ),
    "shadowed transition": (
        lambda r: r["transitions"].append({"trigger": "start", "source": "NEW", "dest": "DONE"}),
        "can never fire",
    ),
    "negative time limit": (
        lambda r: _state(r, "NEW").update(time_limit=-5, on_time_limit="cancel"),
        "time_limit must be a positive number of seconds, got -5",
    ),
    "text time limit": (
        lambda r: _state(r, "RUNNING").update(refresh="soon"),
        "refresh must be a positive number of seconds, got 'soon'",
    ),
    "infinite time limit": (
        lambda r: _state(r, "RUNNING").update(time_limit=float("inf")),
        "time_limit must be finite",
    ),
    "time-limit event without limit": (
        lambda r: _state(r, "NEW").update(on_time_limit="cancel"),
        "on_time_limit without a time_limit",
    ),
    "time limit on terminal": (
        lambda r: _state(r, "LOST").update(time_limit=5),
        "is terminal and cannot have a time limit",
    ),
    "time limit nothing fires": (
        lambda r: _state(r, "RUNNING").update(on_time_limit="explode"),
        "has a time limit, but no transition 'explode' leaves it",
    ),
    "reserved trigger": (
        lambda r: r["transitions"].append({"trigger": "state", "source": "NEW", "dest": "DONE"}),
        "trigger name 'state' is reserved",
    ),
    "unknown state key": (
        lambda r: _state(r, "NEW").update(colour="blue"),
        "unknown key 'colour'",
    ),
    "unknown top-level key": (lambda r: r.update(version=2), "unknown top-level key 'version'"),
    "bad flag": (lambda r: _state(r, "DONE").update(terminal="yes"), "terminal must be true"),
}

# defects whose problem another defect makes impossible to see (or to compute at all)
NO_INITIAL = "no initial state"
SEVERAL_INITIAL = "several initial states"


@given(
    chosen=st.sets(st.sampled_from(sorted(DEFECTS)), min_size=1),
    initial=st.sampled_from(["one", "none", "several"]),
)
def test_every_problem_is_reported_at_once(chosen: set[str], initial: str) -> None:
    """Whatever combination of defects a definition has, one DefinitionError lists them all."""
    raw = _base()
    for name in sorted(chosen):
        DEFECTS[name][0](raw)
    expected = [DEFECTS[name][1] for name in sorted(chosen)]
    if initial == "none":
        _state(raw, "NEW")["initial"] = False
        expected = [NO_INITIAL] + [e for e in expected if "unreachable" not in e]
    elif initial == "several":
        _state(raw, "RUNNING")["initial"] = True
        expected = [SEVERAL_INITIAL] + [e for e in expected if "unreachable" not in e]
    if "bad flag" in chosen:  # DONE is no longer terminal: it cannot be left "terminally"
        expected = [e for e in expected if "leaves terminal state 'DONE'" not in e]
    if "infinite time limit" in chosen:  # no time limit left whose event could be missing
        expected = [e for e in expected if "no transition 'explode'" not in e]
    problems = _problems(raw)
    missing = [e for e in expected if not any(e in p for p in problems)]
    assert not missing, f"not reported: {missing}\nreported: {problems}"
    assert check_definition(raw) == list(problems)


def test_a_broken_file_lists_all_its_problems(tmp_path: Path) -> None:
    """The worked example: one file, six kinds of mistake, one error that names every one."""
    path = tmp_path / "broken.yaml"
    path.write_text(
        """
name: broken
states:
  - {name: A}
  - {name: B, time_limit: 0}
  - {name: C, terminal: true}
  - {name: C}
  - {name: ORPHAN}
transitions:
  - {trigger: go, source: A, dest: B, guards: [is_ready]}
  - {trigger: back, source: C, dest: A}
  - {trigger: jump, source: A, dest: Z}
""",
        encoding="utf-8",
    )
    with pytest.raises(DefinitionError) as error:
        load_definition(path)
    text = "\n".join(error.value.problems)
    for fragment in (
        "no initial state",
        "time_limit must be a positive number of seconds, got 0",
        "duplicate state name 'C'",
        "unknown guard 'is_ready'",
        "leaves terminal state 'C'",
        "unknown destination state 'Z'",
    ):
        assert fragment in text
    assert str(len(error.value.problems)) in str(error.value)
    assert check_definition(path) == list(error.value.problems)


def test_not_a_mapping_is_a_definition_error() -> None:
    raw: Any
    for raw in (None, [], "name: x", 3):
        assert _problems(raw)


# -- random mutations never crash the parser ----------------------------------------------------

_value = st.recursive(
    st.one_of(
        st.none(),
        st.booleans(),
        st.integers(-(2**53), 2**53),  # see test_huge_integer_time_limit_is_a_definition_error
        st.floats(),
        st.sampled_from(["NEW", "*", "=", "", "time_limit_exceeded", "DONE\n", "state"]),
        st.text(max_size=5),
    ),
    lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=5), inner, max_size=3)
    ),
    max_leaves=5,
)


def _containers(raw: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Paths to every dict and list inside `raw` (the root included)."""
    found = [path] if isinstance(raw, (dict, list)) else []
    if isinstance(raw, dict):
        for key, value in raw.items():
            found += _containers(value, (*path, key))
    elif isinstance(raw, list):
        for index, value in enumerate(raw):
            found += _containers(value, (*path, index))
    return found


def _at(raw: Any, path: tuple[Any, ...]) -> Any:
    for step in path:
        raw = raw[step]
    return raw


@st.composite
def mutated(draw: st.DrawFn) -> Any:
    """A built-in definition with 1-4 random edits: set, delete, duplicate, shuffle, rename."""
    raw = copy.deepcopy(BUILTINS[draw(st.sampled_from(BUILTIN_NAMES))])
    for _ in range(draw(st.integers(1, 4))):
        where = _at(raw, draw(st.sampled_from(_containers(raw))))
        keys: list[Any] = list(where) if isinstance(where, dict) else list(range(len(where)))
        action = draw(st.sampled_from(["set", "delete", "duplicate", "shuffle", "add"]))
        if not keys or action == "add":
            if isinstance(where, dict):
                where[draw(st.sampled_from(["name", "source", "dest", "guards", "x"]))] = draw(
                    _value
                )
            else:
                where.append(draw(_value))
            continue
        key = draw(st.sampled_from(keys))
        if action == "set":
            where[key] = draw(_value)
        elif action == "delete":
            del where[key]
        elif action == "duplicate" and isinstance(where, list):
            where.append(copy.deepcopy(where[key]))
        elif action == "shuffle" and isinstance(where, list):
            where[:] = draw(st.permutations(where))
    return raw


@given(raw=mutated())
def test_mutated_definitions_parse_or_raise_definition_error(raw: Any) -> None:
    """Random edits of a valid definition either parse (and then compile and round-trip) or
    raise DefinitionError with at least one problem: never another exception."""
    try:
        definition = Definition.from_dict(raw)
    except DefinitionError as error:
        assert error.problems
        assert check_definition(raw) == list(error.problems)
        return
    lifecycle = Lifecycle(definition)
    assert set(lifecycle.allowed) == set(definition.state_names)
    again = Definition.from_dict(definition.to_dict())
    assert (again.to_dict(), again.version) == (definition.to_dict(), definition.version)
    assert check_definition(raw) == []


def test_huge_integer_time_limit_is_a_definition_error() -> None:
    raw = _base()
    _state(raw, "RUNNING")["time_limit"] = 10**400
    assert any("time_limit" in p for p in _problems(raw))


def test_a_definition_that_parses_can_create_entities(tmp_path: Path) -> None:
    raw = _base()
    _state(raw, "NEW").update(time_limit=1e300, on_time_limit="cancel")
    try:
        lifecycle = Lifecycle(Definition.from_dict(raw))
    except DefinitionError:
        return  # refusing it is a fine answer too
    engine = Engine(f"sqlite:///{tmp_path}/fsm.db", lifecycles=[lifecycle])
    try:
        assert engine.create("job").state == "NEW"
    finally:
        engine.close()


# -- versions -----------------------------------------------------------------------------------


def _reverse_keys(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _reverse_keys(value[k]) for k in reversed(list(value))}
    if isinstance(value, list):
        return [_reverse_keys(v) for v in value]
    return value


@given(name=st.sampled_from(BUILTIN_NAMES), description=st.text(max_size=20))
def test_version_ignores_key_order_and_description(name: str, description: str) -> None:
    """The version hashes the meaning: key order in mappings and the description don't count."""
    raw = _reverse_keys(copy.deepcopy(BUILTINS[name]))
    raw["description"] = description
    assert Definition.from_dict(raw).version == DEFINITIONS[name].version


@pytest.mark.parametrize("name", BUILTIN_NAMES)
def test_version_ignores_the_order_of_sources(name: str) -> None:
    """`source: [A, B]` and `source: [B, A]` are the same transition: same version."""
    raw = copy.deepcopy(BUILTINS[name])
    for t in raw["transitions"]:
        t["source"] = t["source"][::-1]
    assert Definition.from_dict(raw).version == DEFINITIONS[name].version


@given(name=st.sampled_from(BUILTIN_NAMES), data=st.data())
def test_version_changes_when_a_transition_changes(name: str, data: st.DataObject) -> None:
    """Send one transition somewhere else: the definition means something else, so a new
    version (or, if the change broke it, a DefinitionError)."""
    raw = copy.deepcopy(BUILTINS[name])
    index = data.draw(st.integers(0, len(raw["transitions"]) - 1), label="transition")
    transition = raw["transitions"][index]
    states = [s["name"] for s in raw["states"]]
    new_dest = data.draw(st.sampled_from([d for d in [*states, "="] if d != transition["dest"]]))
    transition["dest"] = new_dest
    try:
        changed = Definition.from_dict(raw)
    except DefinitionError:
        return
    assert changed.version != DEFINITIONS[name].version


# -- files --------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", BUILTIN_NAMES)
@pytest.mark.parametrize("suffix", [".yaml", ".yml", ".json"])
def test_load_definition_from_yaml_and_json(tmp_path: Path, name: str, suffix: str) -> None:
    body = {**BUILTINS[name], "description": "from a file"}
    path = tmp_path / f"{name}{suffix}"
    text = json.dumps(body, indent=2) if suffix == ".json" else yaml.safe_dump(body)
    path.write_text(text, encoding="utf-8")
    loaded = load_definition(path)
    assert loaded.description == "from a file"
    assert (loaded.states, loaded.transitions) == (
        DEFINITIONS[name].states,
        DEFINITIONS[name].transitions,
    )
    assert loaded.version == DEFINITIONS[name].version
    assert check_definition(str(path)) == []


def test_load_definition_reports_unreadable_and_invalid_files(tmp_path: Path) -> None:
    with pytest.raises(DefinitionError, match="cannot read"):
        load_definition(tmp_path / "missing.yaml")
    bad_yaml = tmp_path / "bad.yaml"
    bad_yaml.write_text("name: [unclosed\n", encoding="utf-8")
    with pytest.raises(DefinitionError, match=r"not valid (YAML|JSON)"):
        load_definition(bad_yaml)
    bad_json = tmp_path / "bad.json"
    bad_json.write_text("{'name': 'single quotes'}", encoding="utf-8")
    with pytest.raises(DefinitionError, match=r"not valid (YAML|JSON)"):
        load_definition(bad_json)
    assert check_definition(bad_json) and check_definition(tmp_path / "missing.yaml")


def test_check_definition_revalidates_a_hand_built_definition() -> None:
    """A Definition made with the dataclass constructor skips validation; the linter doesn't."""
    good = builtin_definition("operation")
    assert check_definition(good) == []
    broken = Definition(good.name, good.states[1:], good.transitions)  # PENDING (initial) gone
    problems = check_definition(broken)
    assert any("no initial state" in p for p in problems)
    assert any("unknown source state 'PENDING'" in p for p in problems)


def test_check_definition_checks_callback_names() -> None:
    raw = _base()
    raw["transitions"][1]["after"] = ["notify", "archive"]
    assert check_definition(raw) == []
    assert check_definition(raw, known_callbacks=["notify"]) == [
        "transitions[1] (finish): unknown callback 'archive'"
    ]


# -- custom guards and callbacks ----------------------------------------------------------------


def _gated() -> dict[str, Any]:
    raw = _base()
    raw["transitions"].insert(
        0,
        {"trigger": "start", "source": "NEW", "dest": "DONE", "guards": "already_done"},
    )
    raw["transitions"][1]["unless"] = "frozen"
    return raw


def test_custom_guard_names_must_be_declared_and_implemented() -> None:
    raw = _gated()
    problems = _problems(raw)
    assert any("unknown guard 'already_done'" in p for p in problems)
    assert any("unknown guard 'frozen'" in p for p in problems)
    definition = Definition.from_dict(raw, known_guards=["already_done", "frozen"])
    with pytest.raises(DefinitionError) as error:
        Lifecycle(definition, guards={"already_done": lambda ctx: False})
    assert error.value.problems == ("guard 'frozen' has no implementation",)


@given(done=st.booleans(), frozen=st.booleans())
def test_custom_guards_choose_the_transition(done: bool, frozen: bool) -> None:
    """Candidates are tried in order: the first whose guards hold (and whose `unless` guards
    don't) wins; if none does, the entity stays where it is. Engine table and `transitions`
    agree."""
    definition = Definition.from_dict(_gated(), known_guards=["already_done", "frozen"])
    lifecycle = Lifecycle(
        definition,
        guards={
            "already_done": lambda ctx: bool(ctx.payload.get("done")),
            "frozen": lambda ctx: bool(ctx.data.get("frozen")),
        },
    )
    ctx = _context("start", {"done": done}, {"frozen": frozen})
    chosen = lifecycle.choose("NEW", "start", lambda: ctx)
    expected = "DONE" if done else (None if frozen else "RUNNING")
    assert (chosen.dest if chosen else None) == expected
    assert lifecycle.reference_next_state("NEW", "start", ctx) == (expected or "NEW")


def _context(event: str, payload: Mapping[str, Any], data: Mapping[str, Any]) -> EventContext:
    now = datetime(2026, 1, 1, tzinfo=UTC)
    return EventContext("e", "job", "NEW", data, now, None, event, payload, now)


class Boom(RuntimeError):
    pass


def _exploding_lifecycle(calls: list[tuple[str, str]]) -> Lifecycle:
    raw = _base()
    raw["transitions"] = [
        {"trigger": "start", "source": "NEW", "dest": "RUNNING", "guards": "explodes"},
        {"trigger": "finish", "source": "RUNNING", "dest": "DONE", "after": ["record", "boom"]},
        {"trigger": "fine", "source": "NEW", "dest": "RUNNING", "after": "record"},
        *raw["transitions"][2:],
    ]

    def explodes(ctx: EventContext) -> bool:
        if ctx.payload.get("explode"):
            raise Boom("guard")
        return True

    def record(ctx: EventContext, dest: str) -> None:
        calls.append((ctx.event, dest))

    def boom(ctx: EventContext, dest: str) -> None:
        raise Boom("callback")

    definition = Definition.from_dict(raw, known_guards=["explodes"])
    return Lifecycle(
        definition, guards={"explodes": explodes}, callbacks={"record": record, "boom": boom}
    )


def _snapshot(engine: Engine, entity_id: str) -> tuple[Any, ...]:
    row = engine.get(entity_id)
    return (row.state, row.version, row.seq, row.updated_at, len(engine.history(entity_id)))


@pytest.mark.parametrize("hook", ["guard", "callback"])
def test_a_raising_guard_or_callback_writes_nothing(engine: Engine, hook: str) -> None:
    """A guard or callback that raises becomes CallbackError naming it, with the original
    exception as cause; the entity (state, version, history) is exactly as it was."""
    calls: list[tuple[str, str]] = []
    engine.register(_exploding_lifecycle(calls))
    entity = engine.create("job")
    if hook == "callback":
        engine.fire(entity.id, "fine")
    before = _snapshot(engine, entity.id)
    event, payload = ("start", {"explode": True}) if hook == "guard" else ("finish", None)
    with pytest.raises(CallbackError) as error:
        engine.fire(entity.id, event, payload)
    assert error.value.name == ("explodes" if hook == "guard" else "boom")
    assert isinstance(error.value.cause, Boom)
    assert error.value.entity_id == entity.id and error.value.event == event
    assert _snapshot(engine, entity.id) == before
    assert engine.verify() == []


def test_hook_failures_are_isolated_in_a_batch(engine: Engine) -> None:
    """In a batch, the event whose hook raises is reported and skipped; the others commit."""
    calls: list[tuple[str, str]] = []
    engine.register(_exploding_lifecycle(calls))
    a, b = engine.create("job"), engine.create("job")
    result = engine.apply(
        [
            Event(a.id, "start", {"explode": True}),
            Event(b.id, "fine"),
            Event(a.id, "fine"),
            Event(b.id, "finish"),
        ]
    )
    errors = [type(o.error).__name__ if o.error else None for o in result.outcomes]
    assert errors == ["CallbackError", None, None, "CallbackError"]
    assert (engine.get(a.id).state, engine.get(b.id).state) == ("RUNNING", "RUNNING")
    assert [t.event for t in engine.history(a.id)] == ["fine"]
    assert [t.event for t in engine.history(b.id)] == ["fine"]
    assert calls == [("fine", "RUNNING"), ("fine", "RUNNING"), ("finish", "DONE")]
    assert engine.verify() == []

"""The engine's reads: entities, histories, counts and the replay check, with every argument
validated like the writes' (a bad one is `InvalidInput`, never a driver error)."""

from __future__ import annotations

from datetime import datetime

from fsm import validation
from fsm.lifecycle import Lifecycle
from fsm.verify import Violation, verify_store
from storage import EntityNotFound, EntityRow, StateCount, Store, TransitionRow


class EngineReads:
    """Mixed into `Engine`: everything that reads and never writes."""

    store: Store
    lifecycles: dict[str, Lifecycle]

    def get(self, entity_id: str) -> EntityRow:
        row = self.store.get_entity(validation.text(entity_id, "entity_id"))
        if row is None:
            raise EntityNotFound(entity_id)
        return row

    def list_entities(
        self,
        *,
        lifecycle: str | None = None,
        state: str | None = None,
        parent_id: str | None = None,
        limit: int | None = None,
        after_id: str | None = None,
    ) -> list[EntityRow]:
        for name, value in (
            ("lifecycle", lifecycle),
            ("state", state),
            ("parent_id", parent_id),
            ("after_id", after_id),
        ):
            validation.optional_text(value, name)
        if limit is not None:
            validation.count(limit, "limit")
        return self.store.list_entities(
            lifecycle=lifecycle, state=state, parent_id=parent_id, limit=limit, after_id=after_id
        )

    def history(self, entity_id: str) -> list[TransitionRow]:
        """The entity's transitions in order (raises `EntityNotFound` for an unknown id)."""
        self.get(entity_id)
        return self.store.history(entity_id)

    def counts(self) -> list[StateCount]:
        return self.store.count_by_state()

    def state_at(self, entity_id: str, when: datetime) -> str | None:
        """The entity's state at `when` (None before it was created)."""
        validation.aware_time(when, "when")
        entity = self.get(entity_id)
        if when < entity.created_at:
            return None
        history = self.store.history(entity_id)
        state = history[0].from_state if history else entity.state
        effective = entity.created_at
        for t in history:
            effective = max(effective, t.observed_at)
            if effective > when:
                break
            state = t.to_state
        return state

    def verify(self) -> list[Violation]:
        """Replay every entity's history through the definition version it names."""
        return verify_store(self.store, self.lifecycles)

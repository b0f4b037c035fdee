"""`fsm serve`'s HTTP API on SQLite and PostgreSQL: counts, keyset pages, filters, one entity,
verify, metrics, the SSE stream, and writes that need --allow-writes and a token."""

from __future__ import annotations

import io
import json
import re
from contextlib import redirect_stdout
from datetime import datetime

import httpx
import pytest
from alembic import command as alembic_command
from fastapi.testclient import TestClient
from sqlalchemy import text

from fsm import Engine
from fsm.cli import main
from fsm.web.reader import SchemaNotNewest
from storage.migrate import alembic_config
from storage.pages import SORTS
from tests.web_support import SECRET, TOKEN, app_for, build, serving

AUTH = {"Authorization": f"Bearer {TOKEN.secret.decode()}"}


def client(url: str, **options: bool) -> TestClient:
    return TestClient(app_for(url, **options))


def walk(c: TestClient, **params: object) -> list[dict[str, object]]:
    seen: list[dict[str, object]] = []
    after = None
    for _ in range(1000):
        query = {**params, **({"after": after} if after else {})}
        page = c.get("/api/entities", params=query)
        assert page.status_code == 200, page.text
        body = page.json()
        seen.extend(body["entities"])
        after = body["next_cursor"]
        if after is None:
            return seen
    raise AssertionError("pagination did not end")


def test_overview_counts_what_the_database_holds(db_url: str) -> None:
    built = build(db_url)
    with client(db_url) as c:
        body = c.get("/api/overview", params={"window": "all"}).json()
    shown = {(lc["name"], s): n for lc in body["lifecycles"] for s, n in lc["counts"].items()}
    assert shown == built.counts
    service = next(lc for lc in body["lifecycles"] if lc["name"] == "service")
    moves = {(m["event"], m["from_state"], m["to_state"]): m["times"] for m in service["moves"]}
    assert moves[("job_pending", "SUBMITTED", "PENDING")] == 9  # 12 services, every 4th not
    assert moves[("job_running", "PENDING", "STARTING")] == 6
    assert moves[("ping_ok", "STARTING", "HEALTHY")] == 3
    assert service["total"] == 12


@pytest.mark.parametrize("sort", SORTS)
@pytest.mark.parametrize("desc", [False, True])
def test_keyset_pages_show_every_entity_once_in_order(
    sqlite_url: str, sort: str, desc: bool
) -> None:
    built = build(sqlite_url, services=23, hosts=4)
    with client(sqlite_url) as c:
        rows = walk(c, sort=sort, desc=desc, limit=5)
    ids = [r["id"] for r in rows]
    assert sorted(ids) == sorted(built.ids) and len(ids) == len(set(ids))
    keys = [(r[sort], r["id"]) for r in rows]
    assert keys == sorted(keys, reverse=desc)


def test_pages_and_filters_on_postgres_too(pg_url: str) -> None:
    build(pg_url, services=17)
    with client(pg_url) as c:
        rows = walk(c, lifecycle="service", sort="updated_at", desc=True, limit=4)
        assert len(rows) == 17
        healthy = walk(c, state="HEALTHY")
        assert {r["id"] for r in healthy} == {f"svc-{i:03d}" for i in range(17) if i % 4 == 3}


def test_filters_and_search(sqlite_url: str) -> None:
    build(sqlite_url)
    with client(sqlite_url) as c:
        assert len(walk(c, lifecycle="host")) == 5
        assert {r["state"] for r in walk(c, lifecycle="service", state="PENDING")} == {"PENDING"}
        names = {r["data"]["name"] for r in walk(c, q="SVC 1")}  # case-insensitive, in data
        assert names == {"svc 1", "svc 10", "svc 11"}
        assert [r["id"] for r in walk(c, q="host-3")] == ["host-3"]
        assert walk(c, q="%") == []  # a wildcard is a character like any other
        assert walk(c, q=SECRET) == []  # data is stored redacted: a secret finds nothing
        page = c.get("/api/entities", params={"lifecycle": "service", "limit": 5}).json()
        assert page["matching"] == 12 and not page["more_than"] and len(page["entities"]) == 5


def test_bad_cursor_window_and_ids_are_clear_4xx(sqlite_url: str) -> None:
    build(sqlite_url)
    with client(sqlite_url) as c:
        first = c.get("/api/entities", params={"limit": 2}).json()
        other_order = c.get("/api/entities", params={"after": first["next_cursor"], "desc": True})
        assert other_order.status_code == 400 and "sort order" in other_order.json()["detail"]
        assert c.get("/api/entities", params={"after": "garbage"}).status_code == 400
        assert c.get("/api/overview", params={"window": "fortnight"}).status_code == 400
        assert c.get("/api/entities/nope").status_code == 404
        assert c.get("/api/entities/a%00b").status_code in (400, 404)
        assert c.get("/api/entities", params={"state": "a\x00"}).status_code == 400
        assert c.get("/api/lifecycles/service/versions/0000").status_code == 404


def test_history_matches_fsm_history_json(db_url: str) -> None:
    build(db_url)
    out = io.StringIO()
    with redirect_stdout(out):
        assert main(["history", "svc-003", "--db", db_url, "--json"]) == 0
    cli = json.loads(out.getvalue())
    with client(db_url) as c:
        api = c.get("/api/entities/svc-003/history").json()

    def times(row: dict[str, object]) -> dict[str, object]:
        return {
            k: datetime.fromisoformat(v.replace("Z", "+00:00")) if k.endswith("_at") and v else v
            for k, v in row.items()
            if k != "profile"
        }

    assert [times(t) for t in api["transitions"]] == [times(t) for t in cli["transitions"]]
    assert times(api["entity"]) == times(cli["entity"])
    assert [t["event"] for t in api["transitions"]] == ["job_pending", "job_running", "ping_ok"]


def test_entity_detail_verify_and_definitions(sqlite_url: str) -> None:
    build(sqlite_url)
    engine = Engine(sqlite_url)
    child = engine.create("operation", {"op": "resize"}, id="op-1", parent_id="host-1")
    engine.close()
    with client(sqlite_url) as c:
        host = c.get("/api/entities/host-1").json()
        assert [k["id"] for k in host["children"]] == [child.id]
        assert c.get("/api/entities/op-1").json()["parent"]["id"] == "host-1"
        assert c.get("/api/entities/svc-003/verify").json() == {
            "entity_id": "svc-003",
            "ok": True,
            "violations": [],
        }
        lifecycles = c.get("/api/lifecycles").json()
        service = next(lc for lc in lifecycles if lc["name"] == "service")
        assert service["version"] in service["versions"]
        body = c.get(f"/api/lifecycles/service/versions/{service['version']}").json()["body"]
        assert body["name"] == "service"
    tampered = Engine(sqlite_url)
    with tampered.store.transaction() as uow:
        uow.connection.execute(text("UPDATE entity SET state = 'STOPPED' WHERE id = 'svc-003'"))
    tampered.close()
    with client(sqlite_url) as c:
        verdict = c.get("/api/entities/svc-003/verify").json()
    assert not verdict["ok"] and {v["kind"] for v in verdict["violations"]} >= {"head"}


def test_secrets_never_appear_in_any_response(db_url: str) -> None:
    built = build(db_url)
    with client(db_url) as c:
        pages = ["/", "/entities", "/docs", "/metrics", "/openapi.json", "/api/lifecycles"]
        pages += ["/api/overview?window=all", "/api/entities?limit=500", "/api/entities?q=pass"]
        for entity_id in built.ids:
            pages += [f"/entities/{entity_id}", f"/api/entities/{entity_id}"]
            pages += [f"/api/entities/{entity_id}/history"]
        for path in pages:
            answer = c.get(path)
            assert answer.status_code == 200, path
            assert SECRET not in answer.text, path
            assert "hunter2" not in answer.text, path


def test_metrics_count_the_database(sqlite_url: str) -> None:
    built = build(sqlite_url)
    with client(sqlite_url) as c:
        body = c.get("/metrics").text
    pending = built.counts[("service", "PENDING")]
    assert f'fsm_entities{{lifecycle="service",state="PENDING"}} {pending}.0' in body
    assert 'fsm_transitions_last_hour{event="job_pending"' in body


def test_a_schema_that_is_not_the_newest_is_refused(sqlite_url: str) -> None:
    build(sqlite_url)
    engine = Engine(sqlite_url)
    config = alembic_config()
    with engine.store.engine.begin() as conn:
        config.attributes["connection"] = conn
        alembic_command.downgrade(config, "0002")
    engine.close()
    with pytest.raises(SchemaNotNewest, match="revision 0002"):
        app_for(sqlite_url)


def test_the_stream_sends_new_transitions_matching_its_filters(db_url: str) -> None:
    sqlite_url = db_url  # and PostgreSQL
    build(sqlite_url)
    app = app_for(sqlite_url)
    with serving(app) as base:
        params = {"lifecycle": "service", "seconds": 20}
        with httpx.stream("GET", f"{base}/api/stream", params=params, timeout=30) as answer:
            assert answer.headers["content-type"].startswith("text/event-stream")
            lines = answer.iter_lines()
            assert next(line for line in lines if line.startswith("event:")) == "event: ready"
            engine = Engine(sqlite_url)
            engine.fire("host-0", "provision", {})  # another lifecycle: filtered out
            engine.fire("svc-000", "job_pending", {"token": SECRET})
            engine.close()
            next(line for line in lines if line == "event: transition")
            data = next(line for line in lines if line.startswith("data:"))
    item = json.loads(data[len("data:") :])
    assert item["lifecycle"] == "service"
    assert item["transition"]["entity_id"] == "svc-000"
    assert SECRET not in data


# -- writes ----------------------------------------------------------------------------------


def _total(url: str) -> int:
    engine = Engine.open_existing(url)
    try:
        return sum(c.total for c in engine.counts())
    finally:
        engine.close()


def test_writes_without_allow_writes_or_a_good_token_change_nothing(db_url: str) -> None:
    build(db_url)
    before = _total(db_url)
    body = {"lifecycle": "service", "id": "new-1"}
    with client(db_url) as c:
        answer = c.post("/api/entities", json=body, headers=AUTH)
        assert answer.status_code == 403
        assert c.post("/api/entities/svc-001/commands", json={"command": "stop"}).status_code == 403
    with client(db_url, writes=True) as c:
        assert c.post("/api/entities", json=body).status_code == 401
        wrong = {"Authorization": "Bearer " + "x" * len(TOKEN.secret)}
        assert c.post("/api/entities", json=body, headers=wrong).status_code == 401
        near = {"Authorization": "Bearer " + TOKEN.secret.decode()[:-1]}
        assert (
            c.post(
                "/api/entities/svc-001/commands", json={"command": "stop"}, headers=near
            ).status_code
            == 401
        )
        assert c.delete("/api/entities/svc-001/schedule/1", headers=wrong).status_code == 401
    assert _total(db_url) == before
    with client(db_url) as c:
        assert c.get("/api/entities/svc-001/history").json()["entity"]["state"] == "PENDING"


def test_writes_go_through_the_engine_and_record_the_token_name(db_url: str) -> None:
    build(db_url)
    with client(db_url, writes=True) as c:
        made = c.post(
            "/api/entities",
            json={"lifecycle": "service", "id": "api-1", "data": {"password": SECRET}},
            headers=AUTH,
        )
        assert made.status_code == 201 and SECRET not in made.text
        assert c.post("/api/entities", json={"lifecycle": "nope"}, headers=AUTH).status_code == 400
        twice = c.post("/api/entities", json={"lifecycle": "service", "id": "api-1"}, headers=AUTH)
        assert twice.status_code == 409
        moved = c.post(
            "/api/entities/api-1/commands", json={"command": "job_pending"}, headers=AUTH
        )
        assert moved.status_code == 200, moved.text
        assert [t["source"] for t in moved.json()["transitions"]] == ["api:ci"]
        refused = c.post("/api/entities/api-1/commands", json={"command": "ping_ok"}, headers=AUTH)
        assert refused.status_code == 409
        due = c.post(
            "/api/entities/api-1/schedule", json={"command": "stop", "delay": 60}, headers=AUTH
        )
        assert due.status_code == 200, due.text
        number = due.json()["id"]
        pending = c.get("/api/entities/api-1").json()["pending_commands"]
        assert [p["id"] for p in pending] == [number]
        gone = c.delete(f"/api/entities/api-1/schedule/{number}", headers=AUTH)
        assert gone.status_code == 200
        assert c.delete(f"/api/entities/api-1/schedule/{number}", headers=AUTH).status_code == 409
        assert c.get("/api/entities/api-1").json()["pending_commands"] == []
        history = c.get("/api/entities/api-1/history").json()["transitions"]
    assert [(t["event"], t["source"]) for t in history] == [("job_pending", "api:ci")]


def test_a_lifecycle_only_the_database_knows_is_listed_and_drawn(sqlite_url: str) -> None:
    from fsm.definition import Definition
    from fsm.lifecycle import Lifecycle

    definition = Definition.from_dict(
        {
            "name": "deploy",
            "states": [{"name": "READY", "initial": True}, {"name": "DONE", "terminal": True}],
            "transitions": [
                {"trigger": "ship", "source": ["READY"], "dest": "DONE", "guards": ["approved"]}
            ],
        },
        known_guards=["approved"],
    )
    engine = Engine(sqlite_url, lifecycles=[Lifecycle(definition, guards={"approved": bool})])
    engine.create("deploy", {}, id="d-1")
    engine.fire("d-1", "ship", {})
    engine.close()
    with client(sqlite_url) as c:
        names = [lc["name"] for lc in c.get("/api/lifecycles").json()]
        assert "deploy" in names
        overview = c.get("/api/overview", params={"window": "all"}).json()
        deploy = next(lc for lc in overview["lifecycles"] if lc["name"] == "deploy")
        assert deploy["counts"] == {"DONE": 1}
        assert deploy["moves"] == [
            {"event": "ship", "from_state": "READY", "to_state": "DONE", "times": 1}
        ]
        page = c.get("/?window=all").text
        assert 'data-lifecycle="deploy"' in page
        assert re.search(r'id="state(-|&#45;)DONE"', page)  # graphviz writes "-" as &#45;


def test_attention_counts_and_leases(db_url: str) -> None:
    from datetime import UTC, timedelta

    from storage.tables import entity_table as t

    build(db_url)
    now = datetime.now(UTC)
    engine = Engine(db_url)
    with engine.store.transaction() as uow:
        run = uow.connection.execute
        run(t.update().where(t.c.id.in_(["svc-001", "svc-002"])).values(observation_failures=3))
        run(t.update().where(t.c.id == "svc-003").values(deadline_at=now - timedelta(hours=1)))
        run(t.update().where(t.c.id == "svc-005").values(deadline_at=now + timedelta(hours=1)))
        run(t.update().where(t.c.lifecycle == "service").values(next_refresh_at=now))
        run(
            t.update()
            .where(t.c.id.in_(["host-0", "host-1"]))
            .values(next_refresh_at=now - timedelta(hours=1))
        )
        live = now + timedelta(minutes=5)
        run(
            t.update()
            .where(t.c.id.in_(["svc-006", "svc-007"]))
            .values(lease_owner="w1", lease_expires_at=live)
        )
        run(
            t.update()
            .where(t.c.id == "svc-009")
            .values(lease_owner="w2", lease_expires_at=now - timedelta(minutes=1))
        )
    engine.close()
    with client(db_url) as c:
        body = c.get("/api/overview").json()
    by_name = {lc["name"]: lc for lc in body["lifecycles"]}
    assert by_name["service"]["failing_observations"] == 2
    assert by_name["service"]["overdue_deadlines"] == 1
    assert by_name["service"]["lagging_refreshes"] == 0
    assert by_name["host"]["lagging_refreshes"] == 2
    assert body["leases"] == {"w1": 2}


def test_release_obligations_show_until_confirmed(db_url: str) -> None:
    from datetime import UTC

    from storage import releases

    build(db_url)
    engine = Engine(db_url)
    engine.fire("svc-001", "stop", {})
    with engine.store.transaction() as uow:
        assert releases.request(uow, [("svc-001", "STOPPED")], datetime.now(UTC)) == 1
    engine.close()
    with client(db_url) as c:
        assert c.get("/api/overview").json()["releases_pending"] == 1
        release = c.get("/api/entities/svc-001").json()["release"]
        assert release["state"] == "STOPPED" and release["released_at"] is None
        assert "fsm_releases_pending 1.0" in c.get("/metrics").text
        assert "not confirmed yet" in c.get("/entities/svc-001").text
        assert c.get("/api/entities/svc-002").json()["release"] is None


def test_without_backends_commands_are_refused_but_can_be_scheduled(sqlite_url: str) -> None:
    build(sqlite_url)
    with TestClient(app_for(sqlite_url, writes=True, commands=False)) as c:
        stop = c.post("/api/entities/svc-003/commands", json={"command": "stop"}, headers=AUTH)
        assert stop.status_code == 400 and "--config" in stop.json()["detail"]
        assert c.get("/api/entities/svc-003").json()["entity"]["state"] == "HEALTHY"
        later = c.post("/api/entities/svc-003/schedule", json={"command": "stop"}, headers=AUTH)
        assert later.status_code == 200
        assert len(c.get("/api/entities/svc-003").json()["pending_commands"]) == 1


def test_the_profile_filter(db_url: str) -> None:
    engine = Engine(db_url)
    for i in range(6):
        engine.create("service", {}, id=f"p-{i}", profile="della" if i % 2 else None)
    engine.close()
    with client(db_url, writes=True) as c:
        assert [r["id"] for r in walk(c, profile="della", limit=2)] == ["p-1", "p-3", "p-5"]
        assert all(r["profile"] == "della" for r in walk(c, profile="della"))
        made = c.post(
            "/api/entities",
            json={"lifecycle": "service", "id": "p-api", "profile": "della"},
            headers=AUTH,
        )
        assert made.status_code == 201 and made.json()["profile"] == "della"
        assert len(walk(c, profile="della")) == 4
        assert "name=profile" in c.get("/entities").text

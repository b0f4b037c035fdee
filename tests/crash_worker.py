"""Run by test_crash.py in a subprocess: flaps every service HEALTHY <-> UNHEALTHY in large
batches, forever, until it is SIGKILLed. Prints one line per committed batch."""

from __future__ import annotations

import sys

from fsm import Engine, Event

FLIP = {"HEALTHY": "ping_failed", "UNHEALTHY": "ping_ok"}


def main(url: str, batch: int) -> None:
    engine = Engine(url, migrate=False)
    while True:
        entities = engine.list_entities(lifecycle="service")
        for start in range(0, len(entities), batch):
            chunk = entities[start : start + batch]
            events = [Event(e.id, FLIP[e.state], {"token": "secret"}, "backend") for e in chunk]
            result = engine.apply(events)
            print(len(result.transitions), flush=True)


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]))

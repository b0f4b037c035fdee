"""`fsm serve`: a live web view and an HTTP API over any fsm database.

Importing this package costs nothing: FastAPI is loaded by `fsm.web.app` only, so the CLI's
`fsm diagram --db` (which uses `fsm.web.overlay`) works without the `web` extra.
"""

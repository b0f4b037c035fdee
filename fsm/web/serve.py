"""`fsm serve`: the web view and HTTP API over a database, served by uvicorn.

Read-only unless `--allow-writes`; then the write endpoints need a bearer token from
$FSM_API_TOKENS or `--token-file` (never from the command line, where `ps` shows it).
"""

from __future__ import annotations

import errno
import socket
from pathlib import Path
from typing import Annotated

import typer

from fsm.cli_support import DbOption, UsageProblem, checked_url, fail, reporting
from fsm.errors import FsmError

_HOST_HELP = "address to listen on (127.0.0.1: this machine only)"


def serve(
    db: DbOption = None,
    host: Annotated[str, typer.Option("--host", help=_HOST_HELP)] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", min=1, max=65535)] = 8321,
    allow_writes: Annotated[
        bool, typer.Option("--allow-writes", help="enable create/command/schedule/cancel")
    ] = False,
    token_file: Annotated[
        Path | None,
        typer.Option("--token-file", help="NAME:TOKEN lines (else $FSM_API_TOKENS); mode 600"),
    ] = None,
    config: Annotated[
        Path | None,
        typer.Option("--config", help="run config: the backends API commands go through"),
    ] = None,
) -> None:
    """Serve the live web view and the HTTP API (OpenAPI at /docs) over a database."""
    try:
        import uvicorn

        from fsm.web.app import ServeSettings, create_app
    except ImportError as exc:
        missing = exc.name or str(exc)
        fail(
            f"fsm serve needs the web extra ({missing} is missing): "
            "pip install 'fsm-lifecycles[web]'"
        )
    from fsm.config import load_config, make_backend
    from fsm.web.tokens import load_tokens

    with reporting():
        url = checked_url(db)
        tokens = load_tokens(token_file) if allow_writes else []
        if allow_writes and not tokens:
            raise UsageProblem(
                "--allow-writes needs at least one token: set FSM_API_TOKENS=NAME:TOKEN "
                "or give --token-file"
            )
        if not allow_writes and (token_file or config):
            raise UsageProblem("--token-file and --config only matter with --allow-writes")
        _check_address(host, port)
        backends = [make_backend(b) for b in load_config(config).backends] if config else None
        app = create_app(
            ServeSettings(url, allow_writes=allow_writes, tokens=tokens, backends=backends)
        )
        mode = "read-write" if allow_writes else "read-only"
        typer.echo(f"fsm serve: http://{host}:{port}/ ({mode}; API docs at /docs)", err=True)
        uvicorn.run(app, host=host, port=port, log_level="warning", access_log=False)


def _check_address(host: str, port: int) -> None:
    """Refuse an address that cannot be listened on before the database is opened."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError) as exc:
        raise UsageProblem(f"--host {host[:100]!r} is not an address here: {exc}") from None
    family, kind, proto, _name, address = infos[0]
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(address)
        except OSError as exc:
            reason = "is in use" if exc.errno == errno.EADDRINUSE else f"cannot be used: {exc}"
            raise FsmError(f"{host}:{port} {reason}") from None

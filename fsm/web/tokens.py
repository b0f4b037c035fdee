"""Bearer tokens for the write endpoints: read from the environment or a file, never argv.

`FSM_API_TOKENS` (or a file given by `--token-file`, one per line) holds `NAME:TOKEN` entries;
the name is what a write records as its source (`api:NAME`). A presented token is compared with
every known token in constant time (`hmac.compare_digest`), so neither a match nor its position
shows in the time taken.
"""

from __future__ import annotations

import hmac
import os
import re
import stat
from dataclasses import dataclass
from pathlib import Path

from fsm.errors import FsmError

ENV_VAR = "FSM_API_TOKENS"
MIN_LENGTH = 16
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


class TokenError(FsmError):
    """Tokens that cannot be used: malformed, too short, or in a file others can read."""


@dataclass(frozen=True, slots=True, repr=False)
class Token:
    name: str
    secret: bytes

    def __repr__(self) -> str:  # never the secret, not even in a traceback
        return f"Token({self.name!r})"


def parse_tokens(text: str, where: str) -> list[Token]:
    tokens: list[Token] = []
    for number, raw in enumerate(text.replace(",", "\n").splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        name, sep, secret = line.partition(":")
        if not sep or not _NAME.match(name.strip()):
            raise TokenError(
                f"{where}, entry {number}: expected NAME:TOKEN (NAME: letters, digits)"
            )
        if len(secret.strip()) < MIN_LENGTH:
            raise TokenError(f"{where}, entry {number}: a token needs at least {MIN_LENGTH} chars")
        tokens.append(Token(name.strip(), secret.strip().encode()))
    if len({t.name for t in tokens}) != len(tokens):
        raise TokenError(f"{where}: two tokens share a name")
    return tokens


def load_tokens(file: Path | None, environ: dict[str, str] | None = None) -> list[Token]:
    """Tokens from `file` (which must not be readable by others) else from $FSM_API_TOKENS."""
    env = os.environ if environ is None else environ
    if file is not None:
        try:
            fd = os.open(file, os.O_RDONLY | os.O_NOFOLLOW)
        except OSError as exc:
            raise TokenError(f"cannot read token file {file}: {exc.strerror}") from None
        with os.fdopen(fd, encoding="utf-8") as handle:
            if stat.S_IMODE(os.fstat(handle.fileno()).st_mode) & 0o077:
                raise TokenError(f"token file {file} is readable by others: chmod 600 it")
            return parse_tokens(handle.read(), str(file))
    return parse_tokens(env.get(ENV_VAR, ""), f"${ENV_VAR}")


def match(tokens: list[Token], presented: str) -> Token | None:
    """The token equal to `presented`, comparing with every one in constant time."""
    given = presented.encode("utf-8", "surrogateescape")
    found: Token | None = None
    for token in tokens:
        if hmac.compare_digest(token.secret, given) and found is None:
            found = token
    return found

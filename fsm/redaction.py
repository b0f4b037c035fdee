"""The one redaction policy for everything fsm persists or logs.

Payloads, entity data, command arguments and outcomes are masked before they are written; log
lines and error messages are masked before they are shown. A value is a secret when

- its key looks like one (`password`, `db_pass`, `apiKey`, `client-secret`, `session_id`,
  `connection_string`, `jwt`, `pin`, ...; keys are split into words, camelCase included);
- it is the value of a `{"name": "API_TOKEN", "value": ...}` pair, or follows a secret flag in
  an argv list (`["--password", value]`);
- it looks like one whatever its key: the password of a URL (`scheme://user:pw@host`), a secret
  query parameter or `key=value` (`?token=...`, `DB_PASSWORD=...`), an `Authorization` value
  (`Bearer ...`), a private key block, a JWT or a well-known token format (GitHub, Slack, AWS,
  Google, Hugging Face, OpenAI).

Extend it at start-up with `add_secret_keys`, `add_secret_pattern` and `allow_keys` (for keys
that look secret but are not, e.g. `continuation_token`). Masking is one-way: a value a backend
needs later must never be persisted (pass it by reference, see `fsm.secret_refs`).
"""

from __future__ import annotations

import re
import threading
from collections.abc import Mapping
from typing import Any

from fsm.secret_words import (
    CAMEL,
    EXCUSED_BY,
    FIXED_PATTERNS,
    FLAG,
    FLAG_VALUE,
    HINT,
    INFIXES,
    KEY,
    NAME_KEYS,
    NOT_SECRET_WORDS,
    PHRASES,
    SPLIT,
    VALUE,
    VALUE_KEYS,
    WORDS,
)
from storage import database

__all__ = [
    "REDACTED",
    "REF_KEY",
    "RedactionPolicy",
    "add_secret_keys",
    "add_secret_pattern",
    "allow_keys",
    "is_secret_key",
    "policy",
    "redact",
    "redact_text",
]

REDACTED = "***"
REF_KEY = "$secret"
"""`{"$secret": "NAME"}` is a reference to a secret (see `fsm.secret_refs`), not a secret."""


def _words(key: str) -> list[str]:
    return [w.lower() for w in SPLIT.split(CAMEL.sub("_", key)) if w]


_REF_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,127}")


def _is_ref(value: Mapping[Any, Any]) -> bool:
    name = value.get(REF_KEY) if len(value) == 1 else None
    return isinstance(name, str) and _REF_NAME.fullmatch(name) is not None


def _maskable(value: Any) -> bool:
    """None, booleans, empty strings, masks and secret references say nothing secret."""
    if value is None or isinstance(value, bool) or value == "" or value == REDACTED:
        return False
    return not (isinstance(value, Mapping) and _is_ref(value))


class RedactionPolicy:
    """Which keys and values are secret, and how to mask them. Thread-safe to extend."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._words = set(WORDS)
        self._phrases = list(PHRASES)
        self._allowed: set[str] = set()
        self._custom: list[re.Pattern[str]] = []
        self._keys: dict[str, bool] = {}
        self._texts: dict[str, str] = {}
        self._compile()

    # -- extending -------------------------------------------------------------------------

    def add_secret_keys(self, *names: str) -> None:
        """Treat keys named like these as secret (one word: anywhere in a key; several words:
        the words in sequence, e.g. `license_key` also matches `LicenseKey`)."""
        with self._lock:
            for name in names:
                words = _words(name)
                if len(words) == 1:
                    self._words.add(words[0])
                elif words:
                    self._phrases.append("".join(words))
            self._compile()

    def allow_keys(self, *names: str) -> None:
        """Keys that look secret but are not (compared without case, `_` or `-`)."""
        with self._lock:
            self._allowed.update("".join(_words(n)) for n in names)
            self._compile()

    def add_secret_pattern(self, pattern: str) -> None:
        """A regular expression for secret values: the group named `secret` is masked, or the
        whole match when there is none. Applied to every string that is persisted or logged."""
        compiled = re.compile(pattern)
        with self._lock:
            self._custom.append(compiled)
            self._compile()

    def _compile(self) -> None:
        self._fixed = re.compile("|".join(FIXED_PATTERNS), re.DOTALL)
        hints = [HINT, *(f"(?:{c.pattern})" for c in self._custom)]
        self._hint = re.compile("|".join(hints))
        self._keys = {}
        self._texts = {}

    # -- keys ------------------------------------------------------------------------------

    def is_secret_key(self, key: str) -> bool:
        """True for `password`, `api_key`, `accessToken`, `client-secret`, `DB_PASS`, `sig`..."""
        known = self._keys.get(key)
        if known is None:
            known = self._judge(key)
            if len(self._keys) > 65536:
                self._keys = {}
            self._keys[key] = known
        return known

    def _judge(self, key: str) -> bool:
        words = _words(key)
        squashed = "".join(words)
        if squashed in self._allowed:
            return False
        if any(p in squashed for p in self._phrases):
            return True
        present = set(words)
        for word in words:
            if word in self._words:
                excused = EXCUSED_BY.get(word)
                if excused is None or not (present & excused):
                    return True
            elif word not in NOT_SECRET_WORDS and any(i in word for i in INFIXES):
                return True
        return False

    # -- values ----------------------------------------------------------------------------

    def redact(self, value: Any) -> Any:
        """A copy of a JSON-like value with every secret masked (keys, pairs, argv, text)."""
        kind = type(value)
        if kind is dict:
            return self._mapping(value)
        if kind is str:
            return self.redact_text(value)
        if kind is list:
            return self._sequence(value)
        if isinstance(value, str):
            return self.redact_text(value)
        if isinstance(value, Mapping):
            return self._mapping(value)
        if isinstance(value, (list, tuple)):
            return self._sequence(value)
        return value

    def _mapping(self, value: Mapping[Any, Any]) -> dict[str, Any]:
        if REF_KEY in value and _is_ref(value):
            return {REF_KEY: value[REF_KEY]}
        out: dict[str, Any] = {}
        keys = self._keys
        paired: str | None = None  # a `value` key: masked below if its `name` is secret
        for k, v in value.items():
            key = k if type(k) is str else str(k)
            secret = keys.get(key)
            if secret is None:
                secret = self.is_secret_key(key)
            kind = type(v)
            if secret and _maskable(v):
                out[key] = REDACTED
            elif kind is str:
                out[key] = self.redact_text(v)
            elif kind is int or kind is float or kind is bool or v is None:
                out[key] = v
            else:
                out[key] = self.redact(v)
            if key in VALUE_KEYS:
                paired = key
        if paired is not None and _maskable(out[paired]):
            for name_key in NAME_KEYS:
                name = value.get(name_key)
                if isinstance(name, str):
                    if self.is_secret_key(name):
                        out[paired] = REDACTED
                    break
        return out

    def _sequence(self, value: list[Any] | tuple[Any, ...]) -> list[Any]:
        out: list[Any] = []
        mask_next = False
        for item in value:
            if isinstance(item, str):
                if mask_next and not item.startswith("-") and _maskable(item):
                    out.append(REDACTED)
                    mask_next = False
                    continue
                flag = FLAG.fullmatch(item)
                mask_next = flag is not None and self.is_secret_key(flag.group(1))
                out.append(self.redact_text(item))
            else:
                mask_next = False
                out.append(self.redact(item))
        return out

    def redact_text(self, text: str) -> str:
        """`text` with every secret-looking value masked (for log lines, messages, URLs)."""
        cached = self._texts.get(text)
        if cached is not None:
            return cached
        masked = text if len(text) < 4 or not self._hint.search(text) else self._mask(text)
        if len(text) <= 512:
            if len(self._texts) > 8192:
                self._texts = {}
            self._texts[text] = masked
        return masked

    def _mask(self, text: str) -> str:
        masked = self._fixed.sub(_mask_groups, text)
        if "=" in masked or ":" in masked:
            masked = self._mask_pairs(masked)
        if "--" in masked:
            masked = FLAG_VALUE.sub(self._mask_flag_value, masked)
        for pattern in self._custom:
            masked = pattern.sub(_mask_custom, masked)
        return masked

    def _mask_flag_value(self, match: re.Match[str]) -> str:
        if match.group("value") == REDACTED or not self.is_secret_key(match.group("flag")):
            return match.group(0)
        return match.group(0)[: match.start("value") - match.start(0)] + REDACTED

    def _mask_pairs(self, text: str) -> str:
        parts: list[str] = []
        done = 0
        for match in KEY.finditer(text):
            if match.start() < done or not self.is_secret_key(match.group("key").lstrip("-")):
                continue
            value = VALUE.match(text, match.end())
            if value is None:
                continue
            found = value.group(0)
            quote = found[0] if found[0] in "\"'" else ""
            if found.strip("\"'") in ("", REDACTED) or found[0] == "=":  # `==`: base64 padding
                continue
            closing = quote if len(found) > 1 and found.endswith(quote) else ""
            parts += [text[done : match.end()], quote, REDACTED, closing]
            done = value.end()
        if not parts:
            return text
        parts.append(text[done:])
        return "".join(parts)


def _mask_groups(match: re.Match[str]) -> str:
    """Replace the one `s<n>` group that matched with the mask."""
    whole = match.group(0)
    for name, part in match.groupdict().items():
        if part is not None and name.startswith("s"):
            start, end = match.start(name) - match.start(0), match.end(name) - match.start(0)
            return whole[:start] + REDACTED + whole[end:]
    return whole  # pragma: no cover - every alternative has its group


def _mask_custom(match: re.Match[str]) -> str:
    if "secret" in match.re.groupindex and match.group("secret") is not None:
        whole = match.group(0)
        start = match.start("secret") - match.start(0)
        end = match.end("secret") - match.start(0)
        return whole[:start] + REDACTED + whole[end:]
    return REDACTED


policy = RedactionPolicy()
"""The policy fsm uses everywhere; extend it through the functions below."""


def redact(value: Any) -> Any:
    """A copy of `value` with every secret masked (see the module docstring)."""
    return policy.redact(value)


def redact_text(text: str) -> str:
    """`text` (a log line, an error message, a URL) with every secret-looking value masked."""
    return policy.redact_text(text)


def is_secret_key(key: str) -> bool:
    return policy.is_secret_key(key)


def add_secret_keys(*names: str) -> None:
    """Also treat these key names as secret, e.g. `add_secret_keys("ssn", "license_key")`."""
    policy.add_secret_keys(*names)


def allow_keys(*names: str) -> None:
    """Keys that look secret but must be kept (e.g. `allow_keys("pin_count")`)."""
    policy.allow_keys(*names)


def add_secret_pattern(pattern: str) -> None:
    """Also mask values matching `pattern` (its group `secret`, else the whole match)."""
    policy.add_secret_pattern(pattern)


database.use_redactor(redact_text)  # storage's messages (URLs, driver errors) follow this policy

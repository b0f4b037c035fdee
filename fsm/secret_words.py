"""The vocabulary of `fsm.redaction`: which key words, value forms and token formats are
secrets. Data only; the policy that applies it (and lets users extend it) is fsm.redaction."""

from __future__ import annotations

import re

WORDS = frozenset(
    {
        "password",
        "passwd",
        "pwd",
        "pass",
        "pw",
        "passphrase",
        "passcode",
        "secret",
        "secrets",
        "token",
        "tokens",
        "key",
        "keys",
        "apikey",
        "credential",
        "credentials",
        "creds",
        "auth",
        "authorization",
        "cookie",
        "cookies",
        "signature",
        "sig",
        "sas",
        "privatekey",
        "private",
        "jwt",
        "bearer",
        "dsn",
        "otp",
        "totp",
        "pin",
        "csrf",
        "xsrf",
    }
)
# inside one word (`GITHUBTOKEN`, `dbpassword`) and across words (`connection_string`)
INFIXES = ("password", "passwd", "secret", "token", "credential", "apikey", "privatekey")
PHRASES = (
    "connectionstring",
    "connstr",
    "sessionid",
    "sessionkey",
    "sessiontoken",
    "accesskey",
    "secretkey",
    "signingkey",
    "authkey",
)
NOT_SECRET_WORDS = frozenset({"tokenizer", "tokenizers", "tokenize", "tokenized", "tokenization"})
TOKEN_COUNTS = frozenset(
    {
        "max",
        "min",
        "num",
        "count",
        "total",
        "prompt",
        "completion",
        "new",
        "input",
        "output",
        "per",
        "continuation",
        "page",
        "next",
        "limit",
        "usage",
        "budget",
        "type",
        "length",
    }
)
# a word that is secret on its own, but not next to one of these (`max_tokens`, `public_key`)
EXCUSED_BY = {
    "token": TOKEN_COUNTS,
    "tokens": TOKEN_COUNTS,
    "key": frozenset({"public", "primary", "sort", "partition", "foreign", "id", "name", "vault"}),
    "keys": frozenset({"public", "primary", "sort", "partition", "foreign", "id", "name"}),
    "pin": frozenset({"memory", "cpu", "cpus", "core", "cores", "thread", "threads", "numa"}),
    "private": frozenset({"ip", "address", "addresses", "network", "subnet", "dns", "endpoint"}),
    "auth": frozenset({"type", "method", "mode", "enabled", "required", "provider", "scheme"}),
}
NAME_KEYS = ("name", "key", "Name", "Key", "NAME", "KEY")
VALUE_KEYS = frozenset({"value", "Value", "VALUE"})
CAMEL = re.compile(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])")
SPLIT = re.compile(r"[^A-Za-z0-9]+")
FLAG = re.compile(r"-{1,2}([A-Za-z][\w.-]*)")

# Values that are secrets whatever their key. Each alternative masks its group `s<n>`.
FIXED_PATTERNS = (
    r"-----BEGIN [A-Z0-9 ]*PRIVATE KEY-----(?P<s0>.*?)(?:-----END [A-Z0-9 ]*PRIVATE KEY-----|\Z)",
    r"[A-Za-z][A-Za-z0-9+.-]{0,30}://[^\s:/?#@]*:(?P<s1>\S+)@"
    r"|(?<![\w:/.@-])[A-Za-z0-9._%+-]{1,64}:(?P<s5>[^\s@/:]+)@(?=[A-Za-z0-9\[])",
    r"(?i:\b(?:bearer|token|apikey|digest|negotiate|basic)[ \t]+)(?P<s2>[A-Za-z0-9._~+/=-]{16,})",
    r"(?P<s3>\beyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]*)",
    r"(?P<s4>\b(?:gh[pousr]_[A-Za-z0-9]{20,}|github_pat_[A-Za-z0-9_]{20,}"
    r"|xox[abprs]-[A-Za-z0-9-]{10,}|AKIA[0-9A-Z]{16}|AIza[0-9A-Za-z_-]{35}"
    r"|hf_[A-Za-z0-9]{30,}|sk-[A-Za-z0-9_-]{20,}))",
)
# `key=value`, `key: value`, `"key": "value"`, `--key=value`, `?key=value&`: the value is masked
# when the key is secret. A key starts a word, so long runs (base64) are not rescanned at every
# letter; only a secret key's value is consumed, so `a=b?token=c` still finds `token`.
KEY = re.compile(
    r"(?<![A-Za-z0-9_.+])(?P<q>[\"']?)(?P<key>-{0,2}[A-Za-z_][A-Za-z0-9_.-]{0,63})(?P=q)"
    r"(?:[ \t]*=[ \t]*|[ \t]*:[ \t]+|:(?=[\"']))"
)
VALUE = re.compile(r"\"(?:[^\"\\\n]|\\.)*\"?|'(?:[^'\\\n]|\\.)*'?|[^\s,;&'\"<>(){}\[\]]+")
# `--password value` in text (a command line, a logged argv list `['--password', 'value']`):
# the value is masked when the flag is secret, as in an argv list
FLAG_VALUE = re.compile(
    r"(?<![\w-])(?P<q>[\"']?)--(?P<flag>[A-Za-z][\w.-]{0,63})(?P=q)(?:[ \t]+|,[ \t]*)"
    r"(?P<vq>[\"']?)(?P<value>[^\s\"',\[\](){}-][^\s\"',\[\](){}]*)"
)
HINT = (
    r"[=:]|--|-----BEGIN|(?i:bearer|token|apikey|digest|negotiate|basic)|eyJ"
    r"|gh[pousr]_|github_pat_|xox[abprs]-|AKIA|AIza|hf_|sk-"
)

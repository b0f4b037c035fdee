"""The Azure backend's settings, read from the `fsm run` config (or a service config).

Secrets never live here: the settings name *where* a credential comes from (the environment,
the Azure CLI, a managed identity), so nothing a run config holds can leak into a database.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

from fsm.redaction import is_secret_key

CREDENTIAL_KINDS = ("default", "environment", "cli", "managed_identity", "static_token")


@dataclass(frozen=True)
class AzureSettings:
    subscription_id: str
    base_url: str = "https://management.azure.com"
    #: how to authenticate: azure-identity's DefaultAzureCredential (default), one of its parts,
    #: or a bearer token read from the environment variable named by `token_env`
    credential: str = "default"
    token_env: str = "AZURE_ACCESS_TOKEN"  # noqa: S105 - the name of a variable, not a token
    #: a CA bundle to verify the endpoint's certificate with (a private or test endpoint)
    ca_bundle: str | None = None
    #: azure-core's retry policy: attempts after the first, exponential backoff factor and cap
    retry_total: int = 3
    retry_backoff_factor: float = 0.8
    retry_backoff_max: float = 60.0
    #: seconds to connect and to read one response
    timeout: float = 30.0
    #: POSTs answered 429 are not retried by azure-core; we retry them this often ourselves
    command_retries: int = 2
    #: never sleep longer than this for one Retry-After inside a command
    max_retry_after: float = 10.0
    #: default region for new VMs (a VM spec's own `location` wins)
    location: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.subscription_id, str) or not self.subscription_id:
            raise ValueError("subscription_id is required")
        if not self.base_url.startswith("https://"):
            raise ValueError("base_url must be https: azure-core sends bearer tokens only over TLS")
        if self.credential not in CREDENTIAL_KINDS:
            raise ValueError(
                f"credential must be one of {CREDENTIAL_KINDS}, not {self.credential!r}"
            )
        if self.retry_total < 0 or self.command_retries < 0:
            raise ValueError("retry counts must not be negative")
        if min(self.retry_backoff_factor, self.retry_backoff_max, self.max_retry_after) < 0:
            raise ValueError("backoff settings must not be negative")
        if self.timeout <= 0:
            raise ValueError("timeout must be positive")

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> AzureSettings:
        """Settings from a config mapping; unknown keys and secret-looking keys are refused."""
        known = {f.name for f in fields(cls)}
        extra = set(config) - known - {"kind", "lifecycles"}
        secrets = sorted(k for k in extra if is_secret_key(k) and k != "token_env")
        if secrets:
            raise ValueError(
                f"secrets do not belong in the config ({secrets}); azure-identity reads them from "
                "the environment (AZURE_CLIENT_ID / AZURE_TENANT_ID / AZURE_CLIENT_SECRET)"
            )
        if extra:
            raise ValueError(f"unknown azure backend settings: {sorted(extra)}")
        return cls(**{k: v for k, v in config.items() if k in known})

"""Credentials for the compute client. Built from settings, held in memory only."""

from __future__ import annotations

import os
import time
from typing import Any

from azure.core.credentials import AccessToken, TokenCredential

from backends.azure.settings import AzureSettings


class StaticTokenCredential:
    """A bearer token obtained elsewhere (`az account get-access-token`, a test endpoint).

    Implements azure-core's `TokenCredential` protocol; it never refreshes, so it suits short
    runs and tests. Its repr hides the token so it cannot end up in a log line.
    """

    def __init__(self, token: str, *, lifetime: float = 3600.0) -> None:
        if not token:
            raise ValueError("the static token is empty")
        self._token = token
        self._expires_on = int(time.time() + lifetime)

    def get_token(
        self,
        *scopes: str,
        claims: str | None = None,
        tenant_id: str | None = None,
        enable_cae: bool = False,
        **kwargs: Any,
    ) -> AccessToken:
        return AccessToken(self._token, self._expires_on)

    def close(self) -> None:
        """Nothing to release."""

    def __repr__(self) -> str:
        return "StaticTokenCredential(token=***)"


def make_credential(settings: AzureSettings) -> TokenCredential:
    """The credential the settings name; secrets come from the environment, never the config."""
    if settings.credential == "static_token":
        token = os.environ.get(settings.token_env, "")
        if not token:
            raise ValueError(f"credential static_token needs the token in ${settings.token_env}")
        return StaticTokenCredential(token)
    from azure import identity  # imported lazily: it pulls in msal

    if settings.credential == "environment":
        return identity.EnvironmentCredential()
    if settings.credential == "cli":
        return identity.AzureCliCredential()
    if settings.credential == "managed_identity":
        return identity.ManagedIdentityCredential()
    return identity.DefaultAzureCredential()

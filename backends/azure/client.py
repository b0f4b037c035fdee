"""The compute management client, configured from settings (endpoint, TLS, retries)."""

from __future__ import annotations

import logging
from typing import Any

from azure.core.credentials import TokenCredential
from azure.mgmt.compute import ComputeManagementClient
from azure.mgmt.resource import ResourceManagementClient

from backends.azure.settings import AzureSettings


def make_client(settings: AzureSettings, credential: TokenCredential) -> ComputeManagementClient:
    """A client whose retry policy retries 429 (honouring Retry-After) and 5xx with backoff."""
    return ComputeManagementClient(credential, settings.subscription_id, **_options(settings))


def make_resource_client(
    settings: AzureSettings, credential: TokenCredential
) -> ResourceManagementClient:
    """The same options for ARM deployments (azure-mgmt-resource)."""
    return ResourceManagementClient(credential, settings.subscription_id, **_options(settings))


def _options(settings: AzureSettings) -> dict[str, Any]:
    http_log = logging.getLogger("azure.core.pipeline.policies.http_logging_policy")
    if http_log.level == logging.NOTSET:  # every request at INFO would drown the loop's own log
        http_log.setLevel(logging.WARNING)
    options: dict[str, Any] = {
        "base_url": settings.base_url,
        "retry_total": settings.retry_total,
        "retry_backoff_factor": settings.retry_backoff_factor,
        "retry_backoff_max": settings.retry_backoff_max,
        "connection_timeout": settings.timeout,
        "read_timeout": settings.timeout,
        # pollers never sleep in this process: the refresh loop decides when to poll again
        "polling_interval": 0,
    }
    if settings.ca_bundle:
        options["connection_verify"] = settings.ca_bundle
    return options

"""Azure VMs through azure-mgmt-compute, with durable long-running operations.

Needs the `azure` extra (`pip install fsm-lifecycles[azure]`). Loaded by `fsm run` as the
backend kind `azure` (entry point group `fsm.backends`).
"""

from backends.azure.backend import AzureBackend
from backends.azure.credentials import StaticTokenCredential
from backends.azure.settings import AzureSettings

__all__ = ["AzureBackend", "AzureSettings", "StaticTokenCredential"]

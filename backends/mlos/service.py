"""`EngineHostService`: mlos_bench's host, OS and remote-execution protocols through the engine.

It implements `SupportsHostProvisioning`, `SupportsHostOps`, `SupportsOSOps`,
`SupportsRemoteExec` and the older `SupportsVMOps` with their exact names and signatures;
subclasses say which backend carries the commands out (Azure, the simulator, this machine).
It is a subclass of mlos_bench's `Service`, so an mlos_bench user loads it by class name from
their own JSON config (`"class": "backends.mlos.AzureVMService"`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from mlos_bench.services.base_service import Service
from mlos_bench.services.types.host_ops_type import SupportsHostOps
from mlos_bench.services.types.host_provisioner_type import SupportsHostProvisioning
from mlos_bench.services.types.os_ops_type import SupportsOSOps
from mlos_bench.services.types.remote_exec_type import SupportsRemoteExec
from mlos_bench.services.types.vm_provisioner_type import SupportsVMOps

from backends.mlos.hostops import HostOperations
from backends.mlos.remote import RemoteExecution


class EngineHostService(
    HostOperations,
    RemoteExecution,
    SupportsHostProvisioning,
    SupportsHostOps,
    SupportsOSOps,
    SupportsRemoteExec,
    SupportsVMOps,
):
    """Host provisioning, host and OS operations and remote execution through the engine."""

    def __init__(
        self,
        config: dict[str, Any] | None = None,
        global_config: dict[str, Any] | None = None,
        parent: Service | None = None,
        methods: dict[str, Callable[..., Any]] | list[Callable[..., Any]] | None = None,
    ) -> None:
        super().__init__(
            config,
            global_config,
            parent,
            self.merge_methods(
                methods,
                [
                    self.provision_host,
                    self.wait_host_deployment,
                    self.deprovision_host,
                    self.deallocate_host,
                    self.start_host,
                    self.stop_host,
                    self.restart_host,
                    self.wait_host_operation,
                    self.shutdown,
                    self.reboot,
                    self.wait_os_operation,
                    self.remote_exec,
                    self.get_remote_exec_results,
                    self.wait_remote_exec_operation,
                    self.vm_provision,
                    self.wait_vm_deployment,
                    self.vm_start,
                    self.vm_stop,
                    self.vm_restart,
                    self.vm_deprovision,
                    self.wait_vm_operation,
                ],
            ),
        )

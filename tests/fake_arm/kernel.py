"""The fake VM's kernel state: its own /proc/sys, /sys/kernel/mm and /proc/cmdline.

The VM must never change this machine's kernel settings, so each boot gets its own copy of
them, mounted over the real ones inside the VM (`image/init.py`): this machine's current
values (read once, read-only), plus the CFS scheduler tunables that the kernel of Azure's
Ubuntu 18.04 image still has and mlos_bench's `linux-scheduler` tunables write
(`/proc/sys/kernel/sched_*`; newer kernels moved them to debugfs), at that kernel's defaults
for 2 vCPUs. As in procfs and sysfs, existing files can be written and nothing can be created
or removed (the directories are immutable), so `echo 1 > /proc/sys/kernel/no_such_key` fails
on the VM too. `sysctl -w` is the real procps sysctl, writing these files.
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from functools import cache
from pathlib import Path

#: the CFS tunables of the 5.4 kernel of Azure's Ubuntu 18.04 image, 2 vCPUs
SCHEDULER_SYSCTLS = {
    "kernel/sched_migration_cost_ns": "500000",
    "kernel/sched_latency_ns": "12000000",
    "kernel/sched_min_granularity_ns": "1500000",
    "kernel/sched_wakeup_granularity_ns": "2000000",
    "kernel/sched_child_runs_first": "0",
    "kernel/sched_tunable_scaling": "1",
    "kernel/sched_nr_migrate": "32",
}
#: the kernel command line of Azure's Ubuntu images (what /etc/default/grub gives)
DEFAULT_CMDLINE = "console=tty1 console=ttyS0 earlyprintk=ttyS0"


def _copy_tree(source: Path, target: Path) -> None:
    """Every readable file of a procfs/sysfs tree as a plain file (unreadable ones empty)."""
    for folder, dirs, files in os.walk(source):
        relative = Path(folder).relative_to(source)
        (target / relative).mkdir(parents=True, exist_ok=True)
        dirs[:] = [d for d in dirs if not os.path.islink(os.path.join(folder, d))]
        for name in files:
            try:
                with open(os.path.join(folder, name), "rb") as handle:
                    content = handle.read(65536)
            except OSError:
                content = b""
            (target / relative / name).write_bytes(content)


@cache
def image() -> Path:
    """The VM kernel's files, read once per process from this machine (never written)."""
    root = Path(tempfile.mkdtemp(prefix="fake-vm-kernel-"))
    atexit.register(shutil.rmtree, root, True)
    _copy_tree(Path("/proc/sys"), root / "proc-sys")
    for key, value in SCHEDULER_SYSCTLS.items():
        (root / "proc-sys" / key).write_text(value + "\n")
    mm = Path("/sys/kernel/mm")
    if mm.is_dir():
        _copy_tree(mm, root / "sys-kernel-mm")
    else:
        (root / "sys-kernel-mm").mkdir()
    return root

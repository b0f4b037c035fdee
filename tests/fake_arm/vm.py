"""A fake VM's operating system: Linux namespaces on this machine that cannot touch it.

Each VM has a disk (a scratch tree that outlives reboots, removed when the VM is deleted) and,
while it runs, its own mount, PID, UTS, IPC and network namespaces (`image/init.py` builds its
private root and is its init). A Run Command's script runs as root in them
(`nsenter`), as the Azure Linux agent runs it: written to the agent's download directory,
run by bash there, its parameters as environment variables. Daemons a script starts (`docker
run -d`) keep running until the VM stops, restarts or is deleted; stopping it shuts its OS
down, so they die, as on Azure.

What runs there is this machine's real userland (bash, coreutils, sudo, mount, sysctl, apt-get,
fio, redis), seen through overlays; stand-ins only where no real part can run here (see
`image/`): `docker` (Debian's redis binaries for the redis images), `mount.cifs` (a bind of the
fake Azure Files share), `update-grub` and `reboot`/`shutdown`/`poweroff`/`halt`.
"""

from __future__ import annotations

import contextlib
import os
import queue
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path

from backends.scripts import run_process
from tests.fake_arm import kernel

IMAGE = Path(__file__).parent / "image"
#: what the Linux agent's environment gives a Run Command script
AGENT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
_TOOLS = ("unshare", "nsenter", "setpriv", "mount", "sysctl", "python3", "sudo")
_ROOT_DIRS = ("usr", "etc", "var/lib/dpkg", "var/lib/apt", "proc", "sys", "dev", "tmp", "run")
_ROOT_DIRS += ("root", "home", "mnt", "opt", "srv", "media", "boot/grub", "var/log/fake-vm")
_ROOT_DIRS += ("var/tmp", "var/cache/apt/archives/partial", "var/lib/waagent/run-command")
_MERGED_USR = {"bin": "usr/bin", "sbin": "usr/sbin", "lib": "usr/lib", "lib64": "usr/lib64"}
KERNEL = "/boot/vmlinuz-5.4.0-1109-azure"  # the kernel of Azure's Ubuntu 18.04 image
_HIDDEN_ETC = ("ssh", "munge", "slurm")  # this machine's keys are not the VM's
_DEFAULT_GRUB = """GRUB_DEFAULT=0
GRUB_TIMEOUT=0
GRUB_DISTRIBUTOR=Ubuntu
GRUB_CMDLINE_LINUX_DEFAULT="quiet splash"
GRUB_CMDLINE_LINUX=""
"""
#: what Ubuntu's cloud images add (/etc/default/grub.d/50-cloudimg-settings.cfg)
_CLOUDIMG_GRUB = f'GRUB_CMDLINE_LINUX_DEFAULT="{kernel.DEFAULT_CMDLINE}"\n'


def missing_tools() -> list[str]:
    """What this machine lacks to run fake VMs (empty: it can)."""
    missing = [tool for tool in _TOOLS if shutil.which(tool) is None]
    if os.geteuid() != 0:
        missing.append("root (namespaces and mounts)")
    return missing


class Launcher:
    """Starts the VMs' namespace holders from one long-lived thread, so their parent-death
    signal (setpriv --pdeathsig) fires only when the test process goes away."""

    def __init__(self) -> None:
        self._jobs: queue.Queue[tuple[list[str], queue.Queue[object]] | None] = queue.Queue()
        self._thread = threading.Thread(target=self._serve, name="fake-vm-launcher", daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while (job := self._jobs.get()) is not None:
            argv, reply = job
            try:
                reply.put(
                    subprocess.Popen(
                        argv,
                        stdin=subprocess.DEVNULL,
                        stdout=subprocess.DEVNULL,
                        stderr=subprocess.PIPE,
                    )
                )
            except OSError as exc:
                reply.put(exc)
        # the thread ends only when the world is stopped: every VM is off by then

    def launch(self, argv: list[str]) -> subprocess.Popen[bytes]:
        reply: queue.Queue[object] = queue.Queue()
        self._jobs.put((argv, reply))
        result = reply.get(timeout=30)
        if isinstance(result, OSError):
            raise result
        assert isinstance(result, subprocess.Popen)
        return result

    def stop(self) -> None:
        self._jobs.put(None)


class FakeVm:
    """One VM's disk and, while it runs, its namespaces."""

    def __init__(self, home: Path, name: str, files_root: Path, launcher: Launcher) -> None:
        self.home = home
        self.name = name
        self.files_root = files_root
        self.disk = home / "disk"
        self.root = self.disk / "root"
        self.control = home / "control"
        self._launcher = launcher
        self._holder: subprocess.Popen[bytes] | None = None
        self._init_pid: int | None = None
        self.boots = 0
        self.lock = threading.RLock()
        self._install()

    # -- the disk ------------------------------------------------------------------------------

    def _install(self) -> None:
        if self.root.exists():
            return
        for dir_ in _ROOT_DIRS:
            (self.root / dir_).mkdir(parents=True, exist_ok=True)
        for link, target in _MERGED_USR.items():
            (self.root / link).symlink_to(target)
        (self.root / "root").chmod(0o700)
        (self.root / "tmp").chmod(0o1777)
        for dir_ in ("usr", "etc", "var/lib/dpkg", "var/lib/apt"):
            tag = dir_.replace("/", "-")
            (self.disk / "upper" / tag).mkdir(parents=True)
            (self.disk / "work" / tag).mkdir(parents=True)
        usr, etc = self.disk / "upper" / "usr", self.disk / "upper" / "etc"
        (usr / "local").mkdir()
        os.setxattr(usr / "local", "trusted.overlay.opaque", b"y")  # an image's empty /usr/local
        for name in _HIDDEN_ETC:
            (etc / name).mkdir()
            os.setxattr(etc / name, "trusted.overlay.opaque", b"y")
        self._copy("docker.py", usr / "local/bin/docker")
        self._copy("mount.cifs", usr / "sbin/mount.cifs")
        self._copy("update-grub", usr / "sbin/update-grub")
        for name in ("reboot", "shutdown", "poweroff", "halt"):
            self._copy("power", usr / "sbin" / name)
        (etc / "hostname").write_text(self.name + "\n")
        (etc / "hosts").write_text(
            f"127.0.0.1 localhost\n127.0.1.1 {self.name}\n::1 localhost ip6-localhost\n"
        )
        # no route leaves the VM (its own network namespace): its apt gives up at once
        (etc / "apt/apt.conf.d").mkdir(parents=True)
        (etc / "apt/apt.conf.d/99fake-vm-offline").write_text('Acquire::Retries "0";\n')
        (etc / "default").mkdir()
        (etc / "default" / "grub").write_text(_DEFAULT_GRUB)
        (etc / "default/grub.d").mkdir()
        (etc / "default/grub.d/50-cloudimg-settings.cfg").write_text(_CLOUDIMG_GRUB)
        self.control.mkdir(parents=True, exist_ok=True)

    def _copy(self, source: str, target: Path) -> None:
        target.parent.mkdir(parents=True, exist_ok=True)
        text = (IMAGE / source).read_text()
        if source.endswith(".py") and not text.startswith("#!"):
            text = "#!/usr/bin/python3 -I\n" + text
        target.write_text(text)
        target.chmod(0o755)

    def cmdline(self) -> str:
        """The kernel command line the VM boots with: update-grub's, else the image's."""
        grub = self.root / "boot/grub/grub.cfg"
        if grub.exists():
            for line in grub.read_text().splitlines():
                words = line.split()
                if words[:1] == ["linux"] and len(words) > 1:
                    return " ".join(["BOOT_IMAGE=" + words[1], *words[2:]])
        return f"BOOT_IMAGE={KERNEL} root=LABEL=cloudimg-rootfs ro {kernel.DEFAULT_CMDLINE}"

    # -- power ---------------------------------------------------------------------------------

    @property
    def up(self) -> bool:
        return self._holder is not None and self._holder.poll() is None

    def boot(self) -> None:
        """Start the VM's OS if it is not running."""
        with self.lock:
            if self.up:
                return
            self._reset()
            (self.control / "cmdline").write_text(self.cmdline() + "\n")
            (self.control / "ready").unlink(missing_ok=True)
            (self.control / "power-request").unlink(missing_ok=True)
            argv = [
                "setpriv", "--pdeathsig", "KILL",
                "unshare", "--mount", "--pid", "--uts", "--ipc", "--net", "--fork",
                "--kill-child", "--propagation", "private",
                "/usr/bin/python3", "-I", str(IMAGE / "init.py"),
                str(self.disk), str(kernel.image()), str(self.control), str(self.files_root),
                self.name,
            ]  # fmt: skip
            holder = self._launcher.launch(argv)
            deadline = time.monotonic() + 20
            while not (self.control / "ready").exists():
                if holder.poll() is not None or time.monotonic() > deadline:
                    err = holder.stderr.read().decode(errors="replace") if holder.stderr else ""
                    with contextlib.suppress(ProcessLookupError):
                        holder.kill()
                    holder.wait()
                    raise RuntimeError(f"fake VM {self.name} did not boot: {err.strip()}")
                time.sleep(0.01)
            children = Path(f"/proc/{holder.pid}/task/{holder.pid}/children").read_text().split()
            self._holder, self._init_pid = holder, int(children[0])
            self.boots += 1

    def power_off(self, *, graceful: bool = True) -> None:
        """Shut the OS down (graceful: init's SIGTERM to every process first); idempotent."""
        with self.lock:
            holder, init = self._holder, self._init_pid
            if holder is None:
                return
            if holder.poll() is None and graceful and init is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(init, signal.SIGTERM)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    holder.wait(timeout=5)
            if holder.poll() is None:
                holder.kill()
            holder.wait()
            if holder.stderr:
                holder.stderr.close()
            self._reset()

    def _reset(self) -> None:
        self._holder, self._init_pid = None, None

    def destroy(self) -> None:
        """Power off and remove the disk (the VM was deleted)."""
        self.power_off(graceful=False)
        shutil.rmtree(self.home, ignore_errors=True)

    def sysctl(self, key: str) -> str | None:
        """A kernel setting of the running VM (`kernel.sched_latency_ns`), None if it is off or
        has no such setting; read through its init's root, never from this machine's /proc."""
        init = self._init_pid
        if init is None or not self.up:
            return None
        try:
            return Path(f"/proc/{init}/root/proc/sys/{key.replace('.', '/')}").read_text().strip()
        except OSError:
            return None

    def read(self, path: str) -> str | None:
        """A file as the running VM sees it (its tmpfs /tmp included), None if absent or off."""
        init = self._init_pid
        if init is None or not self.up:
            return None
        try:
            return Path(f"/proc/{init}/root/{path.lstrip('/')}").read_text()
        except OSError:
            return None

    def take_power_request(self) -> str | None:
        """What the VM's own reboot/shutdown asked for since the last look, if anything."""
        path = self.control / "power-request"
        try:
            request = path.read_text().strip()
        except FileNotFoundError:
            return None
        path.unlink(missing_ok=True)
        return request or None

    # -- running scripts -----------------------------------------------------------------------

    def run(
        self,
        script: str,
        env: dict[str, str],
        *,
        timeout: float,
        name: str = "script",
        on_start: Callable[[], None] | None = None,
    ) -> tuple[str, str, int]:
        """Run `script` as root on the VM, booting it first; (stdout, stderr, exit code)."""
        with self.lock:
            self.boot()
            init = self._init_pid
            download = self.root / "var/lib/waagent/run-command/download"
            download.mkdir(parents=True, exist_ok=True)
            seq = len(list(download.iterdir())) + 1
            folder = f"/var/lib/waagent/run-command/download/{seq}-{name}"
            (self.root / folder.lstrip("/")).mkdir()
        assert init is not None
        (self.root / folder.lstrip("/") / "script.sh").write_text(script + "\n")
        environment = {"PATH": AGENT_PATH, "HOME": "/root", "LANG": "C.UTF-8", "USER": "root"}
        environment |= env
        argv = [
            "nsenter", "--target", str(init), "--mount", "--uts", "--ipc", "--net", "--pid",
            "--root", "--wd", "--", "/usr/bin/env", "-C", folder, "/bin/bash", "script.sh",
        ]  # fmt: skip
        if on_start is not None:
            on_start()
        out, err, status = run_process(argv, environment, timeout=timeout)
        code = 124 if status is None else status
        if code < 0:  # nsenter re-raises the signal that killed the script: bash's 128+N
            code = 128 - code
        return out, err, code

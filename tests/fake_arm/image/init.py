"""The fake VM's boot and init, run by `unshare --mount --pid --uts --ipc --net --fork` as the
first process of the VM's new namespaces. It never touches this machine. It builds the VM's
private root, pivots into it and stays as the VM's PID 1:

- /usr, /etc, /var/lib/dpkg, /var/lib/apt: overlays of this machine's (writes go to the VM's
  disk); the rest of the root is the VM's disk itself (a scratch tree)
- /proc: a new procfs of the VM's own PID namespace; /proc/sys and /sys/kernel/mm are tmpfs
  copies of the VM kernel's files (`kernel.image()`), whose directories are immutable, as in
  procfs/sysfs (files can be written, none created); /proc/cmdline is this boot's command line
- /sys: this machine's sysfs, read-only; /dev: a tmpfs with null, zero, full, random, urandom
  and a private devpts; /tmp and /run: tmpfs, gone at the next boot
- its own hostname, and its own network namespace with only its loopback up

As init it reaps orphans, and on SIGTERM shuts down as an OS does (SIGTERM to every process, a
grace period, then SIGKILL). It says it is up in /run/fake-vm/ready.
"""

import contextlib
import ctypes
import fcntl
import os
import platform
import shutil
import signal
import socket
import struct
import subprocess
import sys
import time

GRACE = 3.0
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_REMOUNT, MS_BIND = 1, 2, 4, 32, 4096
MS_REC, MS_PRIVATE = 16384, 1 << 18
MNT_DETACH = 2
PIVOT_ROOT = {"x86_64": 155, "aarch64": 41}[platform.machine()]
SIOCGIFFLAGS, SIOCSIFFLAGS, IFF_UP = 0x8913, 0x8914, 0x1
FS_IOC_GETFLAGS, FS_IOC_SETFLAGS, FS_IMMUTABLE_FL = 0x80086601, 0x40086602, 0x10
OVERLAID = ("usr", "etc", "var/lib/dpkg", "var/lib/apt")
DEVICES = ("null", "zero", "full", "random", "urandom")

libc = ctypes.CDLL(None, use_errno=True)


def check(result: int, what: str) -> None:
    if result != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"{what}: {os.strerror(errno)}")


def mount(source: str | None, target: str, fstype: str | None, flags: int, data: str = "") -> None:
    check(
        libc.mount(
            source.encode() if source else None,
            target.encode(),
            fstype.encode() if fstype else None,
            ctypes.c_ulong(flags),
            data.encode() if data else None,
        ),
        f"mount {target}",
    )


def immutable_dirs(top: str) -> None:
    """Make every directory under `top` immutable: nothing can be created or removed there."""
    for folder, _, _ in os.walk(top):
        fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
        try:
            flags = struct.unpack("i", fcntl.ioctl(fd, FS_IOC_GETFLAGS, b"\0" * 4))[0]
            fcntl.ioctl(fd, FS_IOC_SETFLAGS, struct.pack("i", flags | FS_IMMUTABLE_FL))
        except OSError:
            return  # a kernel whose tmpfs has no flags: the files stay creatable
        finally:
            os.close(fd)


def kernel_files(source: str, target: str, hostname: str | None = None) -> None:
    """A private tmpfs at `target` with the VM kernel's files copied from `source`."""
    mount("vm-kernel", target, "tmpfs", MS_NOSUID | MS_NODEV, "mode=555,size=8m")
    shutil.copytree(source, target, dirs_exist_ok=True)
    if hostname is not None:
        with open(os.path.join(target, "kernel", "hostname"), "w") as handle:
            handle.write(hostname + "\n")
    immutable_dirs(target)


def loopback_up() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        request = struct.pack("16sH", b"lo", 0)
        flags = struct.unpack("16sH", fcntl.ioctl(sock, SIOCGIFFLAGS, request))[1]
        fcntl.ioctl(sock, SIOCSIFFLAGS, struct.pack("16sH", b"lo", flags | IFF_UP))


def boot(disk: str, image: str, control: str, files: str, name: str) -> None:
    root = os.path.join(disk, "root")
    mount(None, "/", None, MS_REC | MS_PRIVATE)
    mount(root, root, None, MS_BIND)
    for folder in OVERLAID:
        tag = folder.replace("/", "-")
        options = f"lowerdir=/{folder},upperdir={disk}/upper/{tag},workdir={disk}/work/{tag}"
        mount(f"vm-{tag}", f"{root}/{folder}", "overlay", 0, options)
    mount("proc", f"{root}/proc", "proc", MS_NOSUID | MS_NODEV)
    kernel_files(f"{image}/proc-sys", f"{root}/proc/sys", hostname=name)
    mount(f"{control}/cmdline", f"{root}/proc/cmdline", None, MS_BIND)
    mount("/sys", f"{root}/sys", None, MS_BIND)
    mount(None, f"{root}/sys", None, MS_REMOUNT | MS_BIND | MS_RDONLY)
    kernel_files(f"{image}/sys-kernel-mm", f"{root}/sys/kernel/mm")
    dev = f"{root}/dev"
    mount("vm-dev", dev, "tmpfs", MS_NOSUID, "mode=755,size=16m")
    for node in DEVICES:
        open(f"{dev}/{node}", "w").close()
        mount(f"/dev/{node}", f"{dev}/{node}", None, MS_BIND)
    os.mkdir(f"{dev}/pts")
    os.mkdir(f"{dev}/shm")
    mount("vm-devpts", f"{dev}/pts", "devpts", MS_NOSUID, "newinstance,ptmxmode=0666,mode=620")
    mount("vm-shm", f"{dev}/shm", "tmpfs", MS_NOSUID | MS_NODEV, "mode=1777,size=64m")
    for link, target in (
        ("ptmx", "pts/ptmx"),
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
    ):
        os.symlink(target, f"{dev}/{link}")
    mount("vm-tmp", f"{root}/tmp", "tmpfs", MS_NOSUID | MS_NODEV, "mode=1777,size=512m")
    mount("vm-run", f"{root}/run", "tmpfs", MS_NOSUID | MS_NODEV, "mode=755,size=32m")
    for folder in ("fake-vm", "fake-azure-files", "lock"):
        os.mkdir(f"{root}/run/{folder}")
    mount(control, f"{root}/run/fake-vm", None, MS_BIND)
    mount(files, f"{root}/run/fake-azure-files", None, MS_BIND)
    check(libc.sethostname(name.encode(), len(name.encode())), "sethostname")
    loopback_up()
    os.chdir(root)
    os.makedirs(".host", exist_ok=True)
    check(libc.syscall(PIVOT_ROOT, b".", b".host"), "pivot_root")
    os.chdir("/")
    check(libc.umount2(b"/.host", MNT_DETACH), "umount /.host")
    os.rmdir("/.host")
    os.environ.clear()
    os.environ.update({"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8"})
    with open("/var/log/fake-vm/boot.log", "a") as log:
        log.write(f"booted {time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())}\n")
        log.flush()
        # what systemd-sysctl does at boot: the VM's /etc/sysctl.conf and /etc/sysctl.d
        subprocess.run(["sysctl", "--system"], stdout=log, stderr=log, check=False)


def reap() -> None:
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def shutdown() -> None:
    try:
        os.kill(-1, signal.SIGTERM)
    except ProcessLookupError:
        os._exit(0)
    deadline = time.monotonic() + GRACE
    while time.monotonic() < deadline:
        reap()
        try:
            os.kill(-1, 0)
        except ProcessLookupError:
            break
        time.sleep(0.05)
    with contextlib.suppress(ProcessLookupError):
        os.kill(-1, signal.SIGKILL)
    os._exit(0)


def main() -> None:
    boot(*sys.argv[1:6])
    # handlers of its own: the kernel drops signals with the default action sent to a PID
    # namespace's init from inside it (reboot's `kill -TERM 1` must reach it)
    for signum in (signal.SIGCHLD, signal.SIGTERM):
        signal.signal(signum, lambda *_: None)
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGCHLD, signal.SIGTERM})
    with open("/run/fake-vm/ready", "w") as ready:
        ready.write("up\n")
    while True:
        info = signal.sigtimedwait({signal.SIGCHLD, signal.SIGTERM}, 5.0)
        if info is not None and info.si_signo == signal.SIGTERM:
            shutdown()
        reap()


if __name__ == "__main__":
    main()

#!/usr/bin/env bash
# Installs and starts what the tests talk to for real. Idempotent; safe to run by hand as root.
set -euo pipefail

need_apt=()
command -v dot >/dev/null 2>&1 || need_apt+=(graphviz)
command -v slurmctld >/dev/null 2>&1 || need_apt+=(slurm-wlm)
command -v munged >/dev/null 2>&1 || need_apt+=(munge)
# Slurm accounting (sacct for purged jobs): slurmdbd on the machine's MariaDB, see slurm-up.sh
command -v slurmdbd >/dev/null 2>&1 || [ -x /usr/sbin/slurmdbd ] || need_apt+=(slurmdbd)
command -v mysql >/dev/null 2>&1 || need_apt+=(mariadb-client)
command -v sshd >/dev/null 2>&1 || [ -x /usr/sbin/sshd ] || need_apt+=(openssh-server)
command -v ssh >/dev/null 2>&1 || need_apt+=(openssh-client)
# what the fake ARM's VMs run for mlos_bench's shipped scripts (tests/fake_arm/vm.py)
command -v fio >/dev/null 2>&1 || need_apt+=(fio)
command -v sudo >/dev/null 2>&1 || need_apt+=(sudo)
command -v sysctl >/dev/null 2>&1 || need_apt+=(procps)
command -v redis-benchmark >/dev/null 2>&1 || need_apt+=(redis-tools)
# chattr: the local backend's read-only lock file test; chromium: the web view's browser tests
command -v chattr >/dev/null 2>&1 || need_apt+=(e2fsprogs)
command -v chromium >/dev/null 2>&1 || need_apt+=(chromium)
command -v unshare >/dev/null 2>&1 && command -v nsenter >/dev/null 2>&1 || need_apt+=(util-linux)
need_redis_server=false
command -v redis-server >/dev/null 2>&1 || { need_redis_server=true; need_apt+=(redis-server); }
if [ ${#need_apt[@]} -gt 0 ]; then
    echo "components: installing ${need_apt[*]} from Debian" >&2
    apt-get update -qq
    policy=/usr/sbin/policy-rc.d
    if $need_redis_server && [ ! -e "$policy" ]; then
        # only the binary is wanted (the VMs run it on their own loopback): installing the
        # package must not start a server next to the machine's own Redis on 6379
        printf '#!/bin/sh\nexit 101\n' > "$policy" && chmod +x "$policy"
        trap 'rm -f "$policy"' EXIT
    fi
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

# PostgreSQL: the machine runs one on 127.0.0.1:5432; start it if it stopped.
pg_ready() { pg_isready -h 127.0.0.1 -p 5432 -q 2>/dev/null; }
if ! pg_ready && command -v pg_ctlcluster >/dev/null 2>&1; then
    version=$(ls /etc/postgresql 2>/dev/null | head -n1)
    [ -n "$version" ] && pg_ctlcluster --skip-systemctl-redirect "$version" main start || true
    for _ in $(seq 1 30); do pg_ready && break; sleep 1; done
fi
if pg_ready; then
    echo "components: PostgreSQL is up on 127.0.0.1:5432" >&2
elif [ "${CI:-}" = "true" ]; then
    echo "components: PostgreSQL is not reachable on 127.0.0.1:5432 and CI needs it" >&2
    exit 1
else
    echo "components: PostgreSQL is not reachable; its tests will be skipped" >&2
fi

# A real single-node Slurm cluster, and a real sshd on 127.0.0.1 for the SSH transport.
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
for script in slurm-up.sh sshd-up.sh; do
    if ! bash "$here/scripts/$script"; then
        if [ "${CI:-}" = "true" ]; then
            echo "components: scripts/$script failed and CI needs it" >&2
            exit 1
        fi
        echo "components: scripts/$script failed; those tests will be skipped" >&2
    fi
done

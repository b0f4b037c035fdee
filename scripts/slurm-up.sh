#!/usr/bin/env bash
# Brings up a real single-node Slurm cluster on this machine, for the tests and for trying the
# Slurm backend by hand. Idempotent: run it again and it only starts what is not running.
# Needs root and Debian's slurm-wlm and munge (apt-get install slurm-wlm munge).
#
#   bash scripts/slurm-up.sh          # write /etc/slurm/slurm.conf (if ours or absent), start
#   bash scripts/slurm-up.sh --force  # rewrite slurm.conf even if someone else wrote it
#
# Choices, and why:
# - SlurmUser=root, ProctrackType=proctrack/linuxproc, TaskPlugin=task/none: no cgroups needed,
#   so it works inside containers.
# - CPUs = `nproc`, SelectType=select/cons_tres with CR_CPU, and the partition OverSubscribe=FORCE:8,
#   so the tests' few tiny jobs run side by side on a 2-CPU machine instead of queueing.
# - Accounting through slurmdbd on the machine's MariaDB (127.0.0.1:3306, root, no password;
#   database slurm_acct_db): sacct knows the final state of a job long after the controller
#   purged it (MinJobAge), which is how the backend tells a purged job's end. Needs Debian's
#   slurmdbd; FSM_SLURM_ACCOUNTING=none keeps the old set-up without it (scontrol only).
# - A second Unix user, fsm-stranger, for the tests: its jobs take our recycled job ids.
# - MinJobAge keeps Slurm's default of 300 s: finished jobs stay visible to squeue for five
#   minutes, as on real clusters, which is what the backend relies on without accounting.
# - KillWait=5 (default 30): a job past its time limit is killed 5 s after SIGTERM, so the
#   TIMEOUT test ends sooner. Slurm's shortest time limit is one minute, and slurmctld checks
#   limits every 30 s, so a --time=1 job reaches TIMEOUT 60-90 s after it starts.
set -euo pipefail

conf_dir=/etc/slurm
conf="$conf_dir/slurm.conf"
dbd_conf="$conf_dir/slurmdbd.conf"
accounting="${FSM_SLURM_ACCOUNTING:-slurmdbd}"
marker="# written by fsm scripts/slurm-up.sh"
log_dir=/var/log/slurm
state_dir=/var/lib/slurm
say() { echo "slurm-up: $*"; }
die() { echo "slurm-up: error: $*" >&2; exit 1; }

[ "$(id -u)" = 0 ] || die "run as root (it writes $conf and starts daemons)"
if [ "$accounting" = slurmdbd ] && ! { command -v slurmdbd >/dev/null 2>&1 || [ -x /usr/sbin/slurmdbd ]; }; then
    die "slurmdbd is missing; install it with: apt-get install -y slurmdbd (or FSM_SLURM_ACCOUNTING=none)"
fi
for tool in slurmctld slurmd sinfo scontrol munged mungekey; do
    command -v "$tool" >/dev/null 2>&1 || [ -x "/usr/sbin/$tool" ] ||
        die "$tool is missing; install it with: apt-get install -y slurm-wlm munge"
done
export PATH="$PATH:/usr/sbin:/sbin"

host=$(hostname -s)
cpus=$(nproc)
mkdir -p "$conf_dir" "$log_dir" "$state_dir/slurmctld" "$state_dir/slurmd"

if [ -f "$conf" ] && ! grep -qF "$marker" "$conf" && [ "${1:-}" != "--force" ]; then
    say "keeping $conf: it was not written by this script (use --force to replace it)"
else
    new=$(mktemp)
    cat >"$new" <<EOF
$marker
ClusterName=fsm
SlurmctldHost=$host
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CryptoType=crypto/munge
MpiDefault=none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
SchedulerType=sched/backfill
$(if [ "$accounting" = slurmdbd ]; then
    printf 'AccountingStorageType=accounting_storage/slurmdbd\nAccountingStorageHost=localhost'
else
    printf 'AccountingStorageType=accounting_storage/none'
fi)
ReturnToService=2
KillWait=5
StateSaveLocation=$state_dir/slurmctld
SlurmdSpoolDir=$state_dir/slurmd
SlurmctldPidFile=/run/slurmctld.pid
SlurmdPidFile=/run/slurmd.pid
SlurmctldLogFile=$log_dir/slurmctld.log
SlurmdLogFile=$log_dir/slurmd.log
NodeName=$host CPUs=$cpus State=UNKNOWN
PartitionName=debug Nodes=$host Default=YES MaxTime=INFINITE State=UP OverSubscribe=FORCE:8
EOF
    if cmp -s "$new" "$conf"; then
        rm -f "$new"
        say "$conf is up to date (node $host, $cpus CPUs)"
    else
        install -m 0644 "$new" "$conf"
        rm -f "$new"
        say "wrote $conf (node $host, $cpus CPUs, partition debug)"
        changed=1
    fi
fi

# the stranger: a second user whose jobs may take the ids ours had (tests/test_slurm_cluster_ids)
id fsm-stranger >/dev/null 2>&1 || useradd --system --no-create-home --shell /usr/sbin/nologin fsm-stranger

# munge: a key (made once), and the daemon running as user munge
if [ ! -s /etc/munge/munge.key ]; then
    mungekey -c -k /etc/munge/munge.key
    say "created /etc/munge/munge.key"
fi
chown munge:munge /etc/munge/munge.key
chmod 0400 /etc/munge/munge.key
mkdir -p /run/munge /var/log/munge /var/lib/munge
chown munge:munge /run/munge /var/log/munge /var/lib/munge
chmod 0755 /run/munge
if munge -n </dev/null 2>/dev/null | unmunge >/dev/null 2>&1; then
    say "munged is running"
else
    runuser -u munge -- munged --force
    for _ in $(seq 1 20); do
        munge -n </dev/null 2>/dev/null | unmunge >/dev/null 2>&1 && break
        sleep 0.25
    done
    munge -n </dev/null | unmunge >/dev/null || die "munged did not start"
    say "started munged as user munge"
fi

alive() { [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

if [ "$accounting" = slurmdbd ]; then
    mysql_ok() { mysql -h 127.0.0.1 -P 3306 -u root -e 'SELECT 1' >/dev/null 2>&1; }
    mysql_ok || die "MariaDB does not answer on 127.0.0.1:3306 (user root, no password); slurmdbd needs it"
    mysql -h 127.0.0.1 -P 3306 -u root -e 'CREATE DATABASE IF NOT EXISTS slurm_acct_db'
    new=$(mktemp)
    printf '%s\n' "$marker" AuthType=auth/munge DbdHost=localhost SlurmUser=root \
        PidFile=/run/slurmdbd.pid "LogFile=$log_dir/slurmdbd.log" \
        StorageType=accounting_storage/mysql StorageHost=127.0.0.1 StoragePort=3306 \
        StorageUser=root StorageLoc=slurm_acct_db >"$new"
    if ! cmp -s "$new" "$dbd_conf"; then
        install -m 0600 "$new" "$dbd_conf"
        say "wrote $dbd_conf (MariaDB 127.0.0.1:3306, database slurm_acct_db)"
        if alive /run/slurmdbd.pid; then kill "$(cat /run/slurmdbd.pid)"; sleep 1; fi
    fi
    rm -f "$new"
    if alive /run/slurmdbd.pid; then
        say "slurmdbd is running (pid $(cat /run/slurmdbd.pid))"
    else
        slurmdbd || die "slurmdbd did not start; see $log_dir/slurmdbd.log"
        say "started slurmdbd"
    fi
    for _ in $(seq 1 40); do sacctmgr -n list cluster >/dev/null 2>&1 && break; sleep 0.25; done
    sacctmgr -n list cluster format=cluster 2>/dev/null | grep -qw fsm ||
        sacctmgr -i add cluster fsm >/dev/null || die "sacctmgr could not add cluster fsm"
fi

if alive /run/slurmctld.pid && [ -n "${changed:-}" ]; then
    # the accounting storage type cannot change on a running controller: restart it
    kill "$(cat /run/slurmctld.pid)"
    for _ in $(seq 1 40); do alive /run/slurmctld.pid || break; sleep 0.25; done
    say "stopped slurmctld to re-read $conf"
fi
if alive /run/slurmctld.pid; then
    say "slurmctld is running (pid $(cat /run/slurmctld.pid))"
else
    slurmctld || die "slurmctld did not start; see $log_dir/slurmctld.log"
    say "started slurmctld"
fi
if alive /run/slurmd.pid; then
    say "slurmd is running (pid $(cat /run/slurmd.pid))"
else
    slurmd || die "slurmd did not start; see $log_dir/slurmd.log"
    say "started slurmd"
fi

deadline=$((SECONDS + 30))
while :; do
    state=$(sinfo -h -n "$host" -o '%T' 2>/dev/null | head -n1 || true)
    case "$state" in
        idle* | mixed* | allocated*) break ;;
        drain* | down*)
            scontrol update NodeName="$host" State=RESUME >/dev/null 2>&1 || true ;;
    esac
    if [ "$SECONDS" -ge "$deadline" ]; then
        die "node $host is not idle after 30 s (state: ${state:-none}); see $log_dir/slurmctld.log and $log_dir/slurmd.log"
    fi
    sleep 0.5
done
if [ "$accounting" = slurmdbd ]; then
    sacct -n -X -S now-1minutes -o JobID >/dev/null 2>&1 || die "sacct does not answer (slurmdbd)"
    say "accounting: slurmdbd on MariaDB; sacct answers"
fi
say "node $host is $state; sinfo:"
sinfo

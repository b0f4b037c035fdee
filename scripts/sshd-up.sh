#!/usr/bin/env bash
# Starts a real OpenSSH server on 127.0.0.1 for the SSH-transport tests: its own host key, a
# generated client key authorised for root, and nothing else of the machine's sshd touched.
# Idempotent: a server it started before and still running is reused.
#
#   bash scripts/sshd-up.sh [DIR]     # DIR defaults to /tmp/fsm-sshd
#
# It writes into DIR: sshd_config, host and client keys, authorized_keys, known_hosts (the
# host key pinned for [127.0.0.1]:PORT, so clients keep StrictHostKeyChecking=yes), ssh_config
# (Host fsm-test) and env (FSM_SSH_HOST, FSM_SSH_PORT, FSM_SSH_USER, FSM_SSH_KEY,
# FSM_SSH_KNOWN_HOSTS), which the tests read. Needs root and Debian's openssh-server.
set -euo pipefail

dir="${1:-/tmp/fsm-sshd}"
say() { echo "sshd-up: $*"; }
die() { echo "sshd-up: error: $*" >&2; exit 1; }

[ "$(id -u)" = 0 ] || die "run as root (the test server logs in as root)"
sshd=/usr/sbin/sshd
[ -x "$sshd" ] || die "$sshd is missing; install it with: apt-get install -y openssh-server"
command -v ssh >/dev/null 2>&1 || die "ssh is missing; install openssh-client"
command -v ssh-keygen >/dev/null 2>&1 || die "ssh-keygen is missing; install openssh-client"

mkdir -p "$dir" /run/sshd
chmod 0700 "$dir"
dir="$(cd "$dir" && pwd)"
for key in host_ed25519 client_ed25519; do
    if [ ! -f "$dir/$key" ]; then
        ssh-keygen -q -t ed25519 -N '' -C "fsm-test-$key" -f "$dir/$key"
        say "generated $dir/$key"
    fi
done
cp "$dir/client_ed25519.pub" "$dir/authorized_keys"
chmod 0600 "$dir/authorized_keys"

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
running() { [ -f "$dir/sshd.pid" ] && kill -0 "$(cat "$dir/sshd.pid")" 2>/dev/null; }

if running && [ -f "$dir/port" ] && port_open "$(cat "$dir/port")"; then
    port=$(cat "$dir/port")
    say "sshd already running (pid $(cat "$dir/sshd.pid"), port $port)"
else
    port=2222
    while port_open "$port"; do
        port=$((port + 1))
        [ "$port" -lt 2300 ] || die "no free port in 2222-2299"
    done
    cat >"$dir/sshd_config" <<EOF
# written by fsm scripts/sshd-up.sh: a test-only server, keys only, on 127.0.0.1
Port $port
ListenAddress 127.0.0.1
HostKey $dir/host_ed25519
PidFile $dir/sshd.pid
AuthorizedKeysFile $dir/authorized_keys
PermitRootLogin prohibit-password
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
StrictModes no
AllowTcpForwarding yes
MaxSessions 64
MaxStartups 100:30:200
LogLevel VERBOSE
EOF
    "$sshd" -t -f "$dir/sshd_config" || die "sshd rejects $dir/sshd_config"
    "$sshd" -f "$dir/sshd_config" -E "$dir/sshd.log"
    for _ in $(seq 1 50); do port_open "$port" && break; sleep 0.1; done
    port_open "$port" || die "sshd did not listen on 127.0.0.1:$port; see $dir/sshd.log"
    echo "$port" >"$dir/port"
    say "started sshd (pid $(cat "$dir/sshd.pid")) on 127.0.0.1:$port"
fi

echo "[127.0.0.1]:$port $(cut -d' ' -f1,2 "$dir/host_ed25519.pub")" >"$dir/known_hosts"
cat >"$dir/ssh_config" <<EOF
Host fsm-test
    HostName 127.0.0.1
    Port $port
    User root
    IdentityFile $dir/client_ed25519
    IdentitiesOnly yes
    UserKnownHostsFile $dir/known_hosts
    StrictHostKeyChecking yes
    BatchMode yes
EOF
cat >"$dir/env" <<EOF
FSM_SSH_HOST=127.0.0.1
FSM_SSH_PORT=$port
FSM_SSH_USER=root
FSM_SSH_KEY=$dir/client_ed25519
FSM_SSH_KNOWN_HOSTS=$dir/known_hosts
EOF

out=$(timeout 20 ssh -F "$dir/ssh_config" fsm-test echo fsm-sshd-ok 2>&1) ||
    die "cannot log in through the test server: $out (see $dir/sshd.log)"
[ "$out" = "fsm-sshd-ok" ] || die "unexpected answer from the test server: $out"
say "logged in as root with the generated key and a pinned host key; settings in $dir/env"

"""mlos_bench's local/ssh exec environments over our LocalHostService and SimHostService.

The wheel ships no such environment configs; upstream's own test configs are the reference
(mlos_bench/tests/config/environments/remote/test_ssh_env.jsonc, its local env tests): their
scripts are written here verbatim, in mlos_bench's own CompositeEnv, RemoteEnv and
LocalFileShareEnv, with our host services where upstream's SSH host service would be. The
scripts are shell code — pipes, redirects, `$VAR`, `${VAR:-x}`, backticks, `$(...)` — and run
as shell scripts, each value an environment variable, never text in the script.

Upstream's SshFileShareService copies files to and from the SSH user's home; for hosts whose
home is on this machine (LocalHostService's `cwd`, a simulated host's home) `HomeFileShare`
does the same with plain copies.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from mlos_bench.environments.composite_env import CompositeEnv
from mlos_bench.environments.remote.remote_env import RemoteEnv
from mlos_bench.environments.status import Status
from mlos_bench.services.base_service import Service
from mlos_bench.services.config_persistence import ConfigPersistenceService
from mlos_bench.services.local.local_exec import LocalExecService
from mlos_bench.tunables.tunable_groups import TunableGroups

from backends.mlos import EngineHostService, LocalHostService, SimHostService
from tests.mlos_support import FAST, HomeFileShare

GLOBALS = {
    "ssh_hostname": "ssh-test-server",
    "ssh_port": 2254,
    "ssh_username": "root",
    "ssh_priv_key_path": "/tmp/id_rsa-never-exported",
}
SSH_TUNABLES = {
    "test_ssh_tunable_group": {
        "cost": 1,
        "params": {"test_param": {"type": "int", "default": 0, "range": [0, 10]}},
    }
}
KERNEL_TUNABLES = {
    "kernel": {
        "cost": 1,
        "params": {
            "kernel_sched_latency_ns": {"type": "int", "default": 2000000, "range": [0, 10**9]}
        },
    }
}
SSH_REQUIRED = ["ssh_hostname", "ssh_port", "ssh_username", "ssh_priv_key_path"]
# upstream's test_ssh_env.jsonc, children verbatim (its services are given below instead)
SSH_ENV_CHILDREN: list[dict[str, Any]] = [
    {
        "class": "mlos_bench.environments.remote.remote_env.RemoteEnv",
        "name": "remote_ssh_env",
        "config": {
            "tunable_params": ["test_ssh_tunable_group"],
            "required_args": SSH_REQUIRED,
            "shell_env_params": ["ssh_username"],
            "setup": [
                "echo 'Preparing output.csv' >&2",
                "echo 'metric,value' | tee output.csv",
            ],
            "run": [
                "echo 'Generating test metrics output ...' >&2",
                'echo "hostname,`hostname`" | tee -a output.csv',
                'echo "username,${ssh_username}" | tee -a output.csv',
                'echo "ssh_priv_key_path,${ssh_priv_key_path:-}" | tee -a output.csv',
                'echo "test_param,${test_param:-unset}" | tee -a output.csv',
                "echo score,0.9 | tee -a output.csv",
                "echo 'Done' >&2",
                "echo 'Sleeping ...' >&2",
                "echo 'Done' >&2",
            ],
            "teardown": ["rm output.csv", "echo 'teardown,complete' | tee teardown.txt"],
        },
    },
    {
        "class": "mlos_bench.environments.remote.remote_env.RemoteEnv",
        "name": "test shell_env export behavior",
        "config": {
            "const_args": {"FOO": "bar"},
            "required_args": SSH_REQUIRED,
            "run": [
                'echo "Checking that no tunables or other variables are automatically exported'
                " where they shouldn't be\" >&2",
                'echo "FOO,${FOO:-unset}" | tee -a output.csv',
                'echo "ssh_username,${ssh_username:-unset}" | tee -a output.csv',
            ],
        },
    },
    {
        "class": "mlos_bench.environments.local.local_fileshare_env.LocalFileShareEnv",
        "name": "local_ssh_env",
        "config": {
            "const_args": {"FOO": "baz"},
            "required_args": SSH_REQUIRED,
            "download": [{"from": "output.csv", "to": "$PWD/output-downloaded.csv"}],
            "read_results_file": "output-downloaded.csv",
            "teardown": ["test ! -e output-downloaded.csv"],
        },
    },
]


@pytest.fixture(params=["local", "sim"])
def host(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[Service, Path]]:
    """Our host service for the 'SSH server', its home, and the services upstream's config
    includes (mlos_bench's LocalExecService, a file share of that home)."""
    loader = ConfigPersistenceService()
    local = LocalExecService(parent=loader)
    db = {"db": f"sqlite:///{tmp_path}/fsm.db", **FAST}
    service: EngineHostService
    if request.param == "local":
        home = tmp_path / "home"
        home.mkdir()
        share = HomeFileShare({"home": str(home)}, parent=local)
        service = LocalHostService({**db, "cwd": str(home)}, GLOBALS, parent=share)
    else:
        sim = SimHostService(
            {**db, "timeScale": 0.02, "temp_dir": str(tmp_path), "outputLines": False},
            GLOBALS,
            parent=local,
        )
        _, result = sim.provision_host(dict(GLOBALS))  # the SSH server exists
        assert sim.wait_host_deployment(result, is_setup=True)[0] is Status.SUCCEEDED
        found = sim.host_home(GLOBALS)
        assert found is not None
        home = found
        home.mkdir(mode=0o700, exist_ok=True)
        share = HomeFileShare({"home": str(home)}, parent=sim)
        service = SimHostService(sim.config, GLOBALS, parent=share)
        sim.close()
    yield service, home
    service.close()


def test_upstream_ssh_env_over_our_host_services(host: tuple[Service, Path]) -> None:
    service, home = host
    tunables = TunableGroups(SSH_TUNABLES)
    env = CompositeEnv(
        name="composite_remote_ssh_env",
        config={"children": SSH_ENV_CHILDREN},
        global_config=dict(GLOBALS),
        tunables=tunables,
        service=service,
    )
    with env as ctx:
        assert ctx.setup(tunables)
        status, _, results = ctx.run()
        assert status is Status.SUCCEEDED, results
        assert results is not None
        assert results.pop("ssh_priv_key_path") != results.get("ssh_priv_key_path", 0)  # NaN
        assert results == {
            "hostname": socket.gethostname(),  # the scripts ran on this machine
            "username": "root",
            "test_param": "unset",  # a tunable, but not a shell_env_param: not exported
            "score": 0.9,
            "FOO": "unset",  # a const_arg, not exported
            "ssh_username": "unset",  # exported by the other environment only
        }
        ctx.teardown()
    assert (home / "teardown.txt").read_text() == "teardown,complete\n"
    assert not (home / "output.csv").exists()


def _remote(service: Service, config: dict[str, Any], tunables: TunableGroups) -> RemoteEnv:
    """A remote env on the 'SSH server' (named by `ssh_hostname`, as upstream's are)."""
    config = {"required_args": ["ssh_hostname"], **config}
    return RemoteEnv(
        name="t", config=config, global_config=dict(GLOBALS), tunables=tunables, service=service
    )


def test_upstream_local_env_variables_and_stdout(host: tuple[Service, Path]) -> None:
    """local_env_vars_test and local_env_stdout_test's scripts as a remote env: exported
    values, unexported and unknown ones empty, and results read from stdout."""
    service, _ = host
    tunables = TunableGroups(KERNEL_TUNABLES)
    config = {
        "const_args": {"const_arg": 111, "other_arg": 222},
        "tunable_params": ["kernel"],
        "shell_env_params": ["const_arg", "kernel_sched_latency_ns"],
        "run": [
            "echo const_arg,other_arg,unknown_arg,kernel_sched_latency_ns > output.csv",
            "echo $const_arg,$other_arg,$unknown_arg,$kernel_sched_latency_ns >> output.csv",
            "paste -d, <(head -1 output.csv | tr , '\\n') <(tail -1 output.csv | tr , '\\n')",
            "echo 'Benchmark results:'",
            "echo 'latency,111'",
            "echo 'throughput,222'",
            "echo 'score,0.999'",
            "echo 'a,0,b,1'",
        ],
        "results_stdout_pattern": r"(\w+),([0-9.]+)",
    }
    env = _remote(service, config, tunables)
    with env as ctx:
        assert ctx.setup(tunables)
        status, _, results = ctx.run()
        ctx.teardown()
    assert status is Status.SUCCEEDED
    assert results == {
        "const_arg": 111,
        "kernel_sched_latency_ns": 2000000,
        "latency": 111.0,
        "throughput": 222.0,
        "score": 0.999,
        "a": 0,
        "b": 1,
    }  # other_arg and unknown_arg are empty: never exported


def test_shell_syntax_and_values_that_are_never_code(host: tuple[Service, Path]) -> None:
    """Redirects, pipes, `${VAR:-x}`, backticks, `$(...)`, here-documents and a hostile value,
    which stays a value: the script's text is never built from it."""
    service, home = host
    hostile = "$(touch pwned); `touch pwned2`; echo injected"
    config = {
        "const_args": {"WHO": hostile, "NUM": 3},
        "shell_env_params": ["WHO", "NUM"],
        "run": [
            'printf "%s\\n" "$WHO" > who.txt',
            "wc -l < who.txt | tr -d ' ' > lines.txt",
            "echo lines,`cat lines.txt`",
            "echo default,${MISSING:-fallback}",
            "echo squares,$(( $(seq $NUM | while read i; do echo $((i*i)); done | paste -sd+) ))",
            "cat > doc.txt <<EOF\nhere is $NUM\nhere too\nEOF",
            "echo heredoc,$(grep -c here doc.txt)$(grep -c 'is 3' doc.txt)",
            'echo same,$([ "$(cat who.txt)" = "$WHO" ] && echo 1 || echo 0)',
        ],
        "results_stdout_pattern": r"^(\w+),(\w+)$",
    }
    env = _remote(service, config, TunableGroups())
    with env as ctx:
        assert ctx.setup(TunableGroups())
        status, _, results = ctx.run()
        ctx.teardown()
    assert status is Status.SUCCEEDED
    assert results == {"lines": 1, "default": "fallback", "squares": 14, "heredoc": 21, "same": 1}
    assert not (home / "pwned").exists() and not (home / "pwned2").exists()
    assert (home / "who.txt").read_text() == hostile + "\n"

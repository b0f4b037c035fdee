"""Batch scripts: every value validated; nothing a caller passes adds a line, an #SBATCH
option or unquoted shell code; valid values reach the job unchanged."""

from __future__ import annotations

import os
import shlex
import subprocess
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from backends.slurm.script import ScriptError, render_script

HTTP = ["python3", "-m", "http.server", "{port}", "--bind", "127.0.0.1"]
JOB_FIELDS = ("job_name", "time", "partition", "nodes", "mem", "gres", "account", "constraint")


def _sbatch_lines(script: str) -> list[str]:
    return [line for line in script.splitlines() if line.startswith("#SBATCH")]


def _exec_tokens(script: str) -> list[str]:
    """The exec line as bash would split it, with unquoted operators as their own tokens."""
    line = next(line for line in script.splitlines() if line.startswith("exec "))
    lexer = shlex.shlex(line, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    return list(lexer)


def test_a_full_script() -> None:
    script = render_script(
        {
            "job_name": "web-1",
            "time": "1-02:03:04",
            "partition": "gpu",
            "nodes": 1,
            "ntasks_per_node": 2,
            "mem": "16G",
            "gres": "gpu:a100:2",
            "account": "lab_x",
            "constraint": "a100&ib",
        },
        {"command": HTTP, "env": {"MODEL": "x y", "N": 3}, "workdir": "~/svc"},
        tag="fsm-abc",
    )
    assert _sbatch_lines(script) == [
        "#SBATCH --job-name=web-1.fsm-abc",  # the tag ends the name: the proof it is ours
        "#SBATCH --time=1-02:03:04",
        "#SBATCH --partition=gpu",
        "#SBATCH --nodes=1",
        "#SBATCH --ntasks-per-node=2",
        "#SBATCH --mem=16G",
        "#SBATCH --gres=gpu:a100:2",
        "#SBATCH --account=lab_x",
        "#SBATCH --constraint=a100&ib",
        "#SBATCH --comment=fsm-abc",
    ]
    assert "export MODEL='x y'" in script
    assert 'cd -- "$HOME"/svc' in script
    assert _exec_tokens(script) == ["exec", *(a.replace("{port}", "$FSM_PORT") for a in HTTP)]
    subprocess.run(["bash", "-n"], input=script, text=True, check=True)


def test_a_container() -> None:
    script = render_script(
        {"time": "10"},
        {
            "image": "docker://ghcr.io/org/img:1.0",
            "runtime": "singularity",
            "bind": ["/data:/data:ro"],
            "gpu": True,
            "command": ["serve", "--port", "{port}"],
        },
    )
    assert _exec_tokens(script) == [
        "exec",
        "singularity",
        "exec",
        "--nv",
        "--bind",
        "/data:/data:ro",
        "docker://ghcr.io/org/img:1.0",
        "serve",
        "--port",
        "$FSM_PORT",
    ]


@pytest.mark.parametrize(
    ("job", "box", "problem"),
    [
        ({"job_name": "a\n#SBATCH --wrap=rm"}, {}, "job_name"),
        ({"time": "10 --wrap=x"}, {}, "time"),
        ({"partition": "a b"}, {}, "partition"),
        ({"account": "x'y"}, {}, "account"),
        ({"gres": "gpu:1\n"}, {}, "gres"),
        ({"mem": "1G;reboot"}, {}, "mem"),
        ({"nodes": "1#2"}, {}, "nodes"),
        ({"ntasks_per_node": "2"}, {}, "ntasks_per_node"),
        ({"hold": "yes"}, {}, "hold"),
        ({"bogus": 1}, {}, "unknown options"),
        ({}, {"command": "python3 -m http.server"}, "argv list"),
        ({}, {"command": ["echo", "a\nb"]}, "line breaks"),
        ({}, {"command": ["echo"], "env": {"A;B": "x"}}, "env name"),
        ({}, {"command": ["echo"], "env": {"PORT": "1"}}, "set by the script"),
        ({}, {"command": ["echo"], "env": {"A": "x\rrm -rf /"}}, "line breaks"),
        ({}, {"command": ["echo"], "workdir": "/tmp\n"}, "line breaks"),
        ({}, {"command": ["echo"], "image": "img; rm -rf /"}, "image"),
        ({}, {"command": ["echo"], "runtime": "docker"}, "runtime"),
    ],
)
def test_invalid_values_are_refused(
    job: dict[str, object], box: dict[str, object], problem: str
) -> None:
    options = {"command": ["echo"], **box}
    with pytest.raises(ScriptError) as caught:
        render_script(job, options)
    assert any(problem in p for p in caught.value.problems), caught.value.problems


def test_every_problem_is_listed() -> None:
    with pytest.raises(ScriptError) as caught:
        render_script({"time": "x y", "mem": "lots"}, {"command": [], "env": {"1": "a"}})
    assert len(caught.value.problems) == 4


# -- properties ------------------------------------------------------------------------------

_EXPECTED_SBATCH = 1  # --job-name is always there


@settings(max_examples=300)
@given(field=st.sampled_from(JOB_FIELDS), value=st.text(max_size=40))
def test_no_job_value_adds_a_line_or_an_option(field: str, value: str) -> None:
    try:
        script = render_script({field: value}, {"command": ["true"]})
    except ScriptError:
        return
    baseline = render_script({}, {"command": ["true"]})
    extra = 0 if field == "job_name" else 1
    assert len(script.splitlines()) == len(baseline.splitlines()) + extra
    lines = _sbatch_lines(script)
    assert len(lines) == _EXPECTED_SBATCH + extra
    for line in lines:
        option = line.removeprefix("#SBATCH ")
        assert option.startswith("--") and len(shlex.split(option)) == 1
        assert not any(c in option for c in " \t'\"#\\\n\r")


@settings(max_examples=300)
@given(
    argv=st.lists(st.text(max_size=30), min_size=1, max_size=5),
    env=st.dictionaries(st.text(max_size=10), st.text(max_size=20), max_size=3),
    workdir=st.text(max_size=30),
)
def test_no_command_value_escapes_its_quotes(
    argv: list[str], env: dict[str, str], workdir: str
) -> None:
    try:
        script = render_script({}, {"command": argv, "env": env, "workdir": workdir or "/"})
    except ScriptError:
        return
    baseline = render_script({}, {"command": ["true"]})
    assert len(script.splitlines()) == len(baseline.splitlines()) + len(env) + 1
    assert _sbatch_lines(script) == _sbatch_lines(baseline)
    assert _exec_tokens(script) == ["exec", *(a.replace("{port}", "$FSM_PORT") for a in argv)]
    for line in script.splitlines():
        if line.startswith("export ") and "=" in line and not line.startswith("export FSM"):
            name, _, value = line.removeprefix("export ").partition("=")
            assert shlex.split(value.replace('"$FSM_PORT"', "P")) == [
                env[name].replace("{port}", "P")
            ]


_PRINTABLE = st.text(
    st.characters(blacklist_categories=("Cc", "Cs"), blacklist_characters="\x00"), max_size=20
)


@settings(max_examples=25, deadline=None)
@given(args=st.lists(_PRINTABLE, max_size=4), value=_PRINTABLE)
def test_valid_values_reach_the_job_unchanged(
    tmp_path_factory: pytest.TempPathFactory, args: list[str], value: str
) -> None:
    """Run the script with bash (not Slurm): the command gets exactly its argv and env."""
    home = tmp_path_factory.mktemp("home")
    code = "import json, os, sys; print(json.dumps([sys.argv[1:], os.environ['V']]))"
    script = render_script(
        {}, {"command": ["python3", "-c", code, *args], "env": {"V": value}, "workdir": str(home)}
    )
    env = {"PATH": os.environ["PATH"], "HOME": str(home), "SLURM_JOB_ID": "42"}
    done = subprocess.run(
        ["bash", "-s"], input=script, env=env, capture_output=True, text=True, timeout=20
    )
    assert done.returncode == 0, done.stderr
    port = int((Path(home) / ".fsm/jobs/42.0.untagged.port").read_text())  # run 0
    assert done.stdout.splitlines()[0] == f"FSM_PORT={port}"
    import json

    got_args, got_value = json.loads(done.stdout.splitlines()[1])
    assert got_args == [a.replace("{port}", str(port)) for a in args]
    assert got_value == value.replace("{port}", str(port))

"""Every cnnlab command the README shows composes as written: its groups, keys and values exist (a renamed key or
option fails here, not in a newcomer's terminal). Placeholders (<run id>, `...`) are left out; a sweep (-m) is
checked on its first job; each command composes with `--cfg job`, which stops before any work."""

from __future__ import annotations

import re

import pytest

from tests.conftest import REPO, call_in_process

COMMANDS = (
    "cnnlab-train",
    "cnnlab-prepare",
    "cnnlab-evaluate",
    "cnnlab-summary",
    "cnnlab-predict",
    "cnnlab-explain",
    "cnnlab-compare",
)


def readme_commands() -> list[str]:
    """The cnnlab command lines of the README's bash blocks, continuation lines joined, comments dropped."""
    text = (REPO / "README.md").read_text(encoding="utf-8")
    lines = []
    for block in re.findall(r"```bash\n(.*?)```", text, re.S):
        for line in block.replace("\\\n", " ").splitlines():
            for part in line.split("#")[0].split("&&"):
                if part.strip().startswith(COMMANDS):
                    lines.append(" ".join(part.split()))
    return lines


def first_job(arguments: list[str]) -> list[str]:
    """A sweep's first job: -m dropped, each swept key at its first value (Hydra's sweep syntax a,b,c)."""
    job = []
    for argument in arguments:
        if argument == "-m":
            continue
        key, sep, value = argument.partition("=")
        if sep and "," in value and not value.startswith(("[", "{", "'", '"')) and not key.startswith("hydra"):
            value = value.split(",")[0]
        job.append(f"{key}{sep}{value}")
    return job


CHECKED = [
    line
    for line in readme_commands()
    if "<" not in line and "--help" not in line and "resume=true" not in line and " / " not in line
]


def test_the_readme_shows_commands_of_every_kind():
    assert len(CHECKED) >= 30, CHECKED
    assert {line.split()[0] for line in CHECKED} == set(COMMANDS)


@pytest.mark.parametrize("line", CHECKED)
def test_a_readme_command_composes(line, project):
    command, *arguments = line.replace("...", "").split()
    arguments = [a for a in first_job(arguments) if a != "--cfg" and a != "job"]
    done = call_in_process(command, [*arguments, "--cfg", "job"], project)
    assert done.returncode == 0, f"{line}\n{done.stderr[-2000:]}"
    assert done.stdout.strip(), line  # the composed config


def test_a_command_with_a_stale_key_would_fail_here(project):
    done = call_in_process("cnnlab-train", ["model.widht_mult=0.5", "--cfg", "job"], project)
    assert done.returncode == 2 and "widht_mult" in done.stderr

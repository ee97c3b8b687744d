"""A resume replays the run's own overrides; one that contradicts them is refused in one line (exit 2)."""

from __future__ import annotations

from cnnlab.resume import resume_arguments

# task.mode=maximum fails in validate_config, after Hydra has saved the job's .hydra/: a run directory in a second
STARTED = ("experiment=none", "trainer.max_epochs=40", "model=simple_cnn", "task.mode=maximum")


def _run_dir(call_cli, project, name: str):
    out = project / "runs" / name
    assert call_cli("cnnlab-train", *STARTED, f"hydra.run.dir={out}", check=False).returncode == 2
    assert (out / ".hydra" / "overrides.yaml").is_file()
    return out


def test_a_resume_replays_the_runs_overrides(call_cli, project):
    out = _run_dir(call_cli, project, "replayed")
    given = ["resume=true", f"hydra.run.dir={out}", "trainer.enable_progress_bar=false", "trainer.max_epochs=40"]
    assert resume_arguments(given) == ["experiment=none", "model=simple_cnn", "task.mode=maximum", *given]
    assert resume_arguments(["trainer.max_epochs=3"]) == ["trainer.max_epochs=3"]  # not a resume: as given


def test_an_override_that_contradicts_the_run_is_refused(call_cli, project):
    out = _run_dir(call_cli, project, "contradicted")
    for override, message in [
        ("trainer.max_epochs=20", "trainer.max_epochs=20 contradicts the run in {out} (trainer.max_epochs=40)"),
        ("model=lenet5", "model=lenet5 contradicts the run in {out} (model=simple_cnn)"),
        ("optimizer.lr=0.5", "optimizer.lr=0.5 contradicts the run in {out} (optimizer.lr=0.003)"),
    ]:
        done = call_cli("cnnlab-train", "resume=true", f"hydra.run.dir={out}", override, check=False)
        assert done.returncode == 2, done.stderr[-2000:]
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1 and message.format(out=out) in lines[0], done.stderr

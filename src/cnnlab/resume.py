"""What a resumed run composes: its own overrides (the run directory's .hydra/), never the defaults.

`cnnlab-train resume=true hydra.run.dir=<dir>` continues the run as it was configured: the overrides it
started with are replayed, and an override given at resume that contradicts them is refused, unless its
key is one of MAY_CHANGE (how the run is shown or where it computes, not what it computes). Hydra
rewrites .hydra/ when the resumed job starts, with the replayed overrides, so a second resume sees them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from cnnlab.config import ConfigError

# Keys a resume may change. Not trainer.max_epochs: the one-cycle schedule's total steps (and the
# epoch seeds' sequence) come from the run's epochs, so more epochs is a new run (model.weights=<dir>).
MAY_CHANGE = (
    "trainer.enable_progress_bar",
    "trainer.enable_model_summary",
    "trainer.log_every_n_steps",
    "trainer.accelerator",
    "trainer.devices",
    "data.num_workers",
    "logger.system_metrics",
    "logger.system_metrics_interval",
    "logger.log_model",
    "logger.log_checkpoint",
    "register",
    "resume",
    "ckpt_path",
)
_ABSENT = object()


def resume_arguments(arguments: list[str]) -> list[str]:
    """The command line a resume runs: the run's saved overrides, then the given ones (ConfigError on a clash).

    Any other command line (no resume=true / ckpt_path=last, no hydra.run.dir, no saved overrides, -m)
    comes back unchanged."""
    from hydra.core.override_parser.overrides_parser import OverridesParser  # Hydra's own grammar

    if any(a.startswith("-") for a in arguments):  # -m, --cfg, --help ...: not a resume
        return arguments
    parser = OverridesParser.create()
    parsed = parser.parse_overrides(arguments)
    given = {o.key_or_group.lstrip("+~"): o for o in parsed}
    resuming = given.get("resume") and given["resume"].value() is True
    resuming = resuming or (given.get("ckpt_path") and given["ckpt_path"].value() == "last")
    run_dir = given.get("hydra.run.dir")
    if not resuming or run_dir is None:
        return arguments
    saved = Path(str(run_dir.value())).expanduser() / ".hydra"
    if not (saved / "overrides.yaml").is_file():
        return arguments  # not a cnnlab-train output directory: training says what is missing
    run_arguments = [str(o) for o in OmegaConf.load(saved / "overrides.yaml")]
    run_parsed = parser.parse_overrides(run_arguments)
    run_overrides = {o.key_or_group.lstrip("+~"): o for o in run_parsed}
    run_config = OmegaConf.load(saved / "config.yaml")
    choices = OmegaConf.load(saved / "hydra.yaml").hydra.runtime.choices
    for key, override in given.items():
        if key.startswith(("hydra.", "hydra/")) or key in MAY_CHANGE:
            continue
        if key in run_overrides:
            run_value = run_overrides[key].value()
        elif key in choices:
            run_value = choices[key]
        else:
            run_value = _selected(run_config, key)
        value = None if override.is_delete() else override.value()
        if not _same(value, run_value):
            shown = "(absent)" if run_value is _ABSENT else run_value
            raise ConfigError(
                f"resume=true: {key}={value} contradicts the run in {run_dir.value()} ({key}={shown}); a resumed "
                f"run keeps its configuration (only {', '.join(MAY_CHANGE[:-2])} may change). Drop the override, "
                f"or start a new run from this one: model.weights={run_dir.value()}"
            )
    kept = [a for a, o in zip(run_arguments, run_parsed) if o.key_or_group.lstrip("+~") not in given]
    return kept + arguments


def _selected(config, key: str) -> Any:
    try:
        value = OmegaConf.select(config, key, default=_ABSENT, throw_on_resolution_failure=False)
    except Exception:  # an interpolation only Hydra resolves (${hydra:...}): compare the raw text
        return OmegaConf.select(config, key, default=_ABSENT)
    return OmegaConf.to_container(value) if OmegaConf.is_config(value) else value


def _same(given: Any, run_value: Any) -> bool:
    if run_value is _ABSENT:
        return False
    if isinstance(given, (int, float)) and isinstance(run_value, (int, float)) and not isinstance(given, bool):
        return float(given) == float(run_value)
    return given == run_value or str(given) == str(run_value)

"""Re-run a tracked run from its id: the same commit, the same prepared data, the same overrides, into a
new run tagged `cnnlab.rerun_of`; then the two runs' metrics side by side.

On the machine that made the original the metrics are identical (training is seeded per epoch and
deterministic on CPU); another CPU or a GPU gives other digits, and the comparison names the first
metric that differs. A sweep's parent re-runs as a whole: the same overrides and sweeper settings
(an Optuna study's seed included), landing as a new parent with its children.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import Override, OverrideType
from hydra.errors import HydraException
from omegaconf import DictConfig, ListConfig

from cnnlab.config import ConfigError, check_targets, register_configs
from cnnlab.data.prepare import ensure_prepared
from cnnlab.paths import config_dir, project_root
from cnnlab.sweep import PARENT_RUN_FILE
from cnnlab.tracking.run import RERUN_OF_ENV, git_state, read_run_record
from cnnlab.tracking.store import client, redact, resolve_tracking_uri

# metrics that measure the machine or the clock, not the model: never compared
UNCOMPARED_PREFIXES = ("system/", "train_seconds", "sweep.")
# overrides that say where a run wrote, not what it computed: the re-run writes elsewhere
WHERE_OVERRIDES = ("hydra.run.dir", "hydra.sweep.dir", "hydra.job.chdir", "logger.tracking_uri", "paths.", "hydra.mode")
# the only Hydra settings a sweep's run may hand back: its sweeper's (an Optuna seed, a trial count)
SWEEPER_SETTINGS = "hydra.sweeper."


@dataclass
class Comparison:
    original: str
    rerun: str
    rows: list[tuple[str, Optional[float], Optional[float]]] = field(default_factory=list)

    @property
    def first_difference(self) -> Optional[str]:
        return next((key for key, a, b in self.rows if not _same(a, b)), None)

    def table(self) -> str:
        width = max([len(key) for key, _, _ in self.rows] + [6])
        lines = [
            f"{'metric':<{width}}  {'original':>12}  {'re-run':>12}  difference",
            f"{'':-<{width}}  {'':->12}  {'':->12}  {'':->10}",
        ]
        for key, a, b in self.rows:
            mark = "" if _same(a, b) else "missing" if a is None or b is None else f"{b - a:+.3g}"
            lines.append(f"{key:<{width}}  {_fmt(a):>12}  {_fmt(b):>12}  {mark}")
        return "\n".join(lines)


def _same(a: Optional[float], b: Optional[float]) -> bool:
    return a is not None and b is not None and (a == b or (math.isnan(a) and math.isnan(b)))


def _fmt(value: Optional[float]) -> str:
    return "-" if value is None else f"{value:.6g}"


def resolve_run_id(reference: str, uri: str) -> str:
    """A run id from a run id, a runs:/<id>[/path] URI, or a models:/<name>/<version> or models:/<name>@<alias> URI."""
    mlflow_client = client(uri)
    reference = reference.strip()
    if reference.startswith("runs:/"):
        return reference[len("runs:/") :].split("/", 1)[0]
    if reference.startswith("models:/"):
        name, _, rest = reference[len("models:/") :].partition("/")
        try:
            if "@" in name:
                name, alias = name.split("@", 1)
                version = mlflow_client.get_model_version_by_alias(name, alias)
            else:
                version = mlflow_client.get_model_version(name, rest.strip("/"))
        except Exception as err:
            raise ConfigError(
                f"{reference} does not resolve in the MLflow store {redact(uri)}: {str(err).splitlines()[0][:200]}"
            ) from None
        if not version.run_id:
            raise ConfigError(
                f"{reference} (version {version.version}) was registered without a run: nothing to re-run"
            )
        return version.run_id
    return reference


def fetch_original(run_id: str, uri: str):
    """The MLflow run `run_id`; ConfigError naming the id and the store when there is none."""
    try:
        return client(uri).get_run(run_id)
    except Exception as err:
        raise ConfigError(
            f"run {run_id!r} is not in the MLflow store {redact(uri)} ({str(err).splitlines()[0][:200]})"
        ) from None


def check_source(run, force: bool, root: Path) -> list[str]:
    """Refuse (ConfigError) a run whose commit is not this checkout's, or a dirty checkout, unless `force`;
    returns the warnings that `force` let through."""
    recorded = run.data.tags.get("mlflow.source.git.commit", "unknown")
    here = git_state(root)
    problems = []
    if recorded == "unknown":
        problems.append("the run recorded no git commit (it ran outside a git checkout)")
    elif here["mlflow.source.git.commit"] == "unknown":
        problems.append(f"{root} is not a git checkout, so commit {recorded[:12]} cannot be checked")
    else:
        known = (
            subprocess.run(
                ["git", "cat-file", "-e", f"{recorded}^{{commit}}"], cwd=root, capture_output=True
            ).returncode
            == 0
        )
        if not known:
            problems.append(f"the run's commit {recorded[:12]} is not in this repository ({root})")
        elif here["mlflow.source.git.commit"] != recorded:
            problems.append(
                f"this checkout is at {here['mlflow.source.git.commit'][:12]}, the run at {recorded[:12]}: "
                f"`git checkout {recorded[:12]}` first"
            )
    if here.get("git.dirty") == "true":
        changed = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"], cwd=root, capture_output=True, text=True
        ).stdout
        problems.append(
            f"the checkout has uncommitted changes ({', '.join(line[3:] for line in changed.splitlines()[:5])})"
        )
    if problems and not force:
        raise ConfigError(
            "refusing to re-run: " + "; ".join(problems) + " (--force re-runs anyway, and the result may differ)"
        )
    return problems


def _overrides(tag: str) -> list[str]:
    return [item for item in tag.split() if item and not item.lstrip("+~").startswith(WHERE_OVERRIDES)]


def _has_key(cfg: DictConfig, key: str) -> bool:
    node = cfg
    for part in key.split("."):
        if isinstance(node, DictConfig) and part in node:
            node = node._get_node(part)
        elif isinstance(node, ListConfig) and part.isdigit() and int(part) < len(node):
            node = node._get_node(int(part))
        else:
            return False
    return True


def checked_overrides(overrides: list[str], hydra_overrides: list[str] = (), run_id: str = "") -> list[str]:
    """The overrides read back from a run's tags, each checked (ConfigError naming it): a run is data, and may
    only set keys of cnnlab's own config tree (conf/), or pick one of its files for a group; never `hydra.*`
    (a sweep's sweeper settings excepted), a `_target_`/`_args_`/`_partial_`, a new key (`+`, `++`) or an
    interpolation (`${...}` could read the environment into the run's params)."""
    where = f"run {run_id}'s overrides" if run_id else "the run's overrides"
    try:
        parsed = OverridesParser.create().parse_overrides([*overrides, *hydra_overrides])
    except HydraException as err:
        raise ConfigError(f"{where} do not parse as Hydra overrides: {str(err).splitlines()[0]}") from None

    def refuse(override: Override, why: str) -> ConfigError:
        return ConfigError(f"refusing to re-run: {where} include {override.input_line!r}: {why}")

    conf = config_dir()
    groups = []
    for override in parsed:
        key, value = override.key_or_group, override.input_line.partition("=")[2]
        if override.type in (OverrideType.ADD, OverrideType.FORCE_ADD):
            raise refuse(override, "a run may not add keys (+, ++) to cnnlab's config")
        if any(part.startswith("_") for part in key.replace("/", ".").split(".")):
            raise refuse(override, "a run may not name classes or their arguments (_target_, _args_, _partial_)")
        if "_target_" in value or "_args_" in value or "_partial_" in value:
            raise refuse(override, "a run may not name classes or their arguments (_target_, _args_, _partial_)")
        if "${" in value:
            raise refuse(override, "a run's value may not be an interpolation")
        if key.startswith("hydra") and not (
            key.startswith(SWEEPER_SETTINGS) and override.input_line in hydra_overrides
        ):
            raise refuse(override, "Hydra's own settings (hydra.*) are not taken from a run")
        if (conf / key).is_dir() and not override.is_delete():
            choices = list(override.sweep_string_iterator()) if override.is_sweep_override() else [value]
            missing = [c for c in choices if c != "null" and not (conf / key / f"{c}.yaml").is_file()]
            if missing:
                options = ", ".join(sorted(p.stem for p in (conf / key).glob("*.yaml")))
                raise refuse(override, f"{key} has no option {missing[0]} in {conf} (options: {options})")
            if not override.is_sweep_override():
                groups.append(override.input_line)
    register_configs()
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(conf), version_base="1.3"):
        tree = compose("config", overrides=groups, return_hydra_config=True)
    for override in parsed:
        if not (conf / override.key_or_group).is_dir() and not _has_key(tree, override.key_or_group):
            raise refuse(override, f"{override.key_or_group} is not a key of cnnlab's config tree ({conf})")
    return [*overrides, *hydra_overrides]


def check_data(run, overrides: list[str], force: bool) -> Optional[str]:
    """Prepare the run's data if it is missing (from its recorded source) and refuse when its content
    hash differs from the run's `cnnlab.data_hash`; returns the prepared directory."""
    recorded = run.data.tags.get("cnnlab.data_hash")
    register_configs()
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        cfg = compose("config", overrides=overrides)
    check_targets(cfg, f"run {run.info.run_id}'s config with its overrides")  # before data prep builds a reader
    meta = ensure_prepared(cfg.data)  # prepares from the recorded source when missing; its errors name what is gone
    if recorded and meta["content_hash"] != recorded and not force:
        raise ConfigError(
            f"refusing to re-run: the prepared data at {cfg.data.prepared_dir} has content hash "
            f"{meta['content_hash'][:12]}, "
            f"the run trained on {recorded[:12]} (its raw source changed?); --force re-runs anyway"
        )
    return str(cfg.data.prepared_dir)


def compare_runs(original, rerun_id: str, uri: str) -> Comparison:
    new = client(uri).get_run(rerun_id)
    keys = sorted(
        k for k in set(original.data.metrics) | set(new.data.metrics) if not k.startswith(UNCOMPARED_PREFIXES)
    )
    return Comparison(
        original.info.run_id, rerun_id, [(k, original.data.metrics.get(k), new.data.metrics.get(k)) for k in keys]
    )


def _say_applied(run_id: str, overrides: list[str]) -> None:
    """What the re-run will apply, shown before anything runs: it came from the store, not from this user."""
    shown = " ".join(redact(o) for o in overrides) or "(none: conf/'s defaults)"
    print(f"re-running {run_id} with its overrides: {shown}", flush=True)


def _command(name: str) -> str:
    return str(Path(sys.executable).with_name(name))


def _run(command: list[str], env: dict, what: str) -> None:
    done = subprocess.run(command, cwd=project_root(), env=env)
    if done.returncode != 0:
        raise ConfigError(f"the re-run's {what} exited {done.returncode}; its output is above")


def rerun(reference: str, tracking_uri: Optional[str] = None, force: bool = False) -> Comparison:
    """Re-run the run `reference` names (see the module docstring); returns the metric comparison."""
    uri = resolve_tracking_uri(tracking_uri)
    run_id = resolve_run_id(reference, uri)
    original = fetch_original(run_id, uri)
    tags = original.data.tags
    if "cnnlab.overrides" not in tags:
        raise ConfigError(
            f"run {run_id} was not made by cnnlab-train (it has no cnnlab.overrides tag and no config to re-run)"
        )
    sweep = tags.get("cnnlab.role") == "sweep"  # a sweep's parent also hands back its sweeper's settings
    hydra_tag = _overrides(tags.get("cnnlab.hydra_overrides", "")) if sweep else []
    overrides = checked_overrides(_overrides(tags["cnnlab.overrides"]), hydra_tag, run_id)
    for warning in check_source(original, force, project_root()):
        print(f"warning: {warning}", file=sys.stderr)
    _say_applied(run_id, overrides)
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri, RERUN_OF_ENV: run_id}
    stamp = time.strftime("%Y-%m-%d_%H-%M-%S")
    if sweep:
        return _rerun_sweep(original, overrides, env, stamp, uri)
    artifacts = {a.path for a in client(uri).list_artifacts(run_id)}
    if "config.yaml" not in artifacts:
        raise ConfigError(
            f"run {run_id} has no config.yaml artifact: it did not finish training, or another tool made it"
        )
    check_data(original, overrides, force)
    output_dir = project_root() / "outputs" / f"rerun-{run_id[:8]}-{stamp}"
    # a re-run never registers a model version or moves the champion alias
    _run([_command("cnnlab-train"), *overrides, "register=false", f"hydra.run.dir={output_dir}"], env, "training")
    new_id = read_run_record(output_dir)["run_id"]
    if any(key.startswith("test/") for key in original.data.metrics):  # the original was evaluated: so is the re-run
        _run(
            [
                _command("cnnlab-evaluate"),
                *overrides,
                f"evaluate.train_dir={output_dir}",
                f"evaluate.output_dir={output_dir / 'evaluate'}",
                "promote_alias=null",
            ],
            env,
            "evaluation",
        )
    return compare_runs(original, new_id, uri)


def _rerun_sweep(original, overrides: list[str], env: dict, stamp: str, uri: str) -> Comparison:
    sweep_dir = project_root() / "multirun" / f"rerun-{original.info.run_id[:8]}-{stamp}"
    _run([_command("cnnlab-train"), "-m", *overrides, f"hydra.sweep.dir={sweep_dir}"], env, "sweep")

    new_parent = json.loads((sweep_dir / PARENT_RUN_FILE).read_text())["run_id"]
    return compare_runs(original, new_parent, uri)

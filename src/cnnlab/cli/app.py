"""What entry points share: fast --help, and user errors as one clear line and a non-zero exit."""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import os
import sys
from typing import Callable

from cnnlab.config import ConfigError
from cnnlab.paths import config_dir

log = logging.getLogger("cnnlab")

COMMON_HELP = """\
Overrides are Hydra's: group=option picks a config file, key=value sets a value, -m sweeps
(comma-separated values, or hparams_search=optuna). Append --cfg job to print the composed config,
--info defaults to see what was picked, --hydra-help for Hydra's own flags.

MLflow store: $MLFLOW_TRACKING_URI, else sqlite:///<project root>/mlflow.db (`make ui` browses it;
DVC's queued and --temp experiments use the original repository's, from $DVC_ROOT). A team server:
`make server` (README: "Working as a team"). With no experiment=..., the default recipe
(conf/config.yaml) is what dvc repro trains; experiment=none leaves the plain defaults of conf/.
"""


# Hydra plugins register their options in code (ConfigStore), not in conf/: the installed ones, by package
PLUGIN_OPTIONS = {
    "hydra_plugins.hydra_joblib_launcher": ("hydra/launcher", "joblib"),
    "hydra_plugins.hydra_submitit_launcher": ("hydra/launcher", "submitit_local"),
    "hydra_plugins.hydra_optuna_sweeper": ("hydra/sweeper", "optuna"),
}


def config_groups() -> dict[str, list[str]]:
    """Config groups of conf/ and their options, read from the directory tree, plus installed Hydra plugins."""
    root = config_dir()
    groups = {}
    for directory in sorted(p for p in root.rglob("*") if p.is_dir()):
        options = sorted(p.stem for p in directory.glob("*.yaml"))
        if options:
            groups[directory.relative_to(root).as_posix()] = options
    for package, (group, option) in PLUGIN_OPTIONS.items():
        if importlib.util.find_spec(package) is not None:
            groups[group] = sorted({*groups.get(group, []), option})
    return groups


def run_app(
    hydra_main: Callable[[], object], usage: str, arguments: Callable[[list[str]], list[str]] | None = None
) -> None:
    """Answer -h/--help from the file tree (Hydra's own help composes every group: seconds), else run.

    `arguments` rewrites the command line before Hydra reads it (a resume's saved overrides)."""
    if any(arg in ("-h", "--help") for arg in sys.argv[1:]):
        groups = "\n".join(f"  {name}: {', '.join(options)}" for name, options in config_groups().items())
        print(f"{usage.rstrip()}\n\nConfig groups (pick one with group=option):\n{groups}\n\n{COMMON_HELP}")
        return
    sys.argv[1:] = [_expand_home(arg) for arg in sys.argv[1:]]
    if arguments is not None:
        try:
            sys.argv[1:] = arguments(sys.argv[1:])
        except Exception as err:  # it parses the overrides: Hydra's syntax errors come first from here
            message = str(err) if isinstance(err, ConfigError) else _hydra_config_error(err)
            if message is None:
                raise
            print(f"error: {message}", file=sys.stderr)
            sys.exit(2)
    # Hydra reports its own errors (an unknown group option, bad override syntax) in many lines and exits 1;
    # HYDRA_FULL_ERROR makes it raise them instead, to be said like cnnlab's: one line, exit 2
    saved = os.environ.get("HYDRA_FULL_ERROR")
    os.environ["HYDRA_FULL_ERROR"] = "1"
    try:
        hydra_main()
    except Exception as err:
        message = _hydra_config_error(err)
        if message is None:
            if saved is not None:  # the user asked for Hydra's full traceback
                raise
            _report_as_hydra_does(err)
        print(f"error: {message}", file=sys.stderr)
        sys.exit(2)
    finally:
        if saved is None:
            os.environ.pop("HYDRA_FULL_ERROR", None)
        else:
            os.environ["HYDRA_FULL_ERROR"] = saved


def _report_as_hydra_does(err: Exception) -> None:
    """Any other error as Hydra reports it without HYDRA_FULL_ERROR (a launcher's one line, a job's traceback
    without Hydra's frames), exit 1: Hydra's own reporter, which HYDRA_FULL_ERROR above had bypassed."""
    from hydra._internal.utils import run_and_report

    os.environ.pop("HYDRA_FULL_ERROR", None)

    def again():
        raise err

    run_and_report(again)
    sys.exit(1)  # run_and_report exits itself; this only if it returned


def _hydra_config_error(err: Exception) -> str | None:
    """One line for an error of Hydra's composing the config (None for any other error)."""
    from hydra.errors import ConfigCompositionException, MissingConfigException, OverrideParseException

    if not isinstance(err, (ConfigCompositionException, MissingConfigException, OverrideParseException)):
        return None
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    if "Available options" in str(err):  # MissingConfigException: the group's options, one per line
        start = next(i for i, line in enumerate(lines) if line.startswith("Available options"))
        options = [line for line in lines[start + 1 :] if not line.startswith(("Config search path", "provider="))]
        return f"{lines[0]}; {lines[start].rstrip(':')}: {', '.join(options)}"
    return " ".join(lines) or type(err).__name__


def _expand_home(argument: str) -> str:
    """`key=~/path` as the shell expands an assignment: Hydra's grammar refuses a value starting with `~`
    (its delete prefix), and the shell leaves `~` alone after `key=` in an argument."""
    key, sep, value = argument.partition("=")
    if sep and (value == "~" or value.startswith("~/")) and not key.startswith("-"):
        return f"{key}={os.path.expanduser(value)}"
    return argument


@contextlib.contextmanager
def exit_on_user_error():
    """ConfigError, a bad sample or a missing file: print the message (no traceback) and exit 2.

    A job stopped by SIGTERM (a scheduler, `docker stop`, `kill`) or Ctrl-C exits 143 or 130, never 0:
    Lightning turns SIGTERM into a SystemExit without a code.
    """
    try:
        yield
    except Exception as err:
        if not isinstance(err, _user_errors()):
            raise
        from cnnlab.redaction import redact

        message = redact(str(err))  # messages may name a tracking URI
        _log_to_files(message)
        print(f"error: {message}", file=sys.stderr)
        sys.exit(2)
    except (SystemExit, KeyboardInterrupt) as err:
        from cnnlab.stopping import stop_signal  # Lightning: only on the way out of a stopped job

        signal_name = stop_signal(err)
        if signal_name is None:
            raise
        code = {"SIGINT": 130, "SIGTERM": 143}[signal_name]
        message = (
            f"stopped by {signal_name}; an MLflow run it had opened is marked KILLED. Continue a training "
            f"with cnnlab-train resume=true hydra.run.dir=<its output directory>"
        )
        _log_to_files(message)
        print(f"error: {message}", file=sys.stderr)
        sys.exit(code)


def _user_errors() -> tuple[type[Exception], ...]:
    """The errors that are the user's to fix: one line, exit 2. Imported here, not at the top: every cnnlab-*
    command imports this module before answering --help."""
    from cnnlab.data.prepared import PreparedDataChanged
    from cnnlab.data.sources.base import BadSampleError

    # checkpointing imports Lightning (seconds): a config error must not wait for it. Not loaded, it raised nothing
    checkpointing = sys.modules.get("cnnlab.checkpointing")
    space = (checkpointing.CheckpointSpaceError,) if checkpointing else ()
    shards = sys.modules.get("cnnlab.data.shards")  # likewise LitData's import: only data.storage=shards loads it
    store = (shards.ShardStoreError,) if shards else ()
    return (ConfigError, BadSampleError, PreparedDataChanged, FileNotFoundError, *space, *store)


def _log_to_files(message: str) -> None:
    """The error into the job's log file (<output dir>/<command>.log), not to the console: the terminal
    shows it once, as the `error:` line on stderr."""
    record = log.makeRecord(log.name, logging.ERROR, __file__, 0, "%s", (message,), None)
    for handler in logging.getLogger().handlers:
        if isinstance(handler, logging.FileHandler):
            handler.handle(record)

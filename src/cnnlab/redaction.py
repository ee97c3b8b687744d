"""Credentials out of everything cnnlab writes or prints: `redact`, and the Hydra callback that applies it to
Hydra's own files and messages.

cnnlab connects with a URI as given; every URI, command line or message it writes (run.json, config.yaml,
params, tags, logs, errors) goes through `redact` first. Hydra saves the command line under
`<output dir>/.hydra/` (and `multirun.yaml`) before the job starts, and names the overrides when a job fails:
`RedactSecrets` (in conf/config.yaml's hydra.callbacks) redacts those. Light on purpose: Hydra builds it
when every cnnlab-* command composed from conf/config.yaml starts.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

REDACTED = "***"
# user:password@ (or token@) after a URI scheme: http(s) servers with basic auth, database URIs
_USERINFO = re.compile(r"(?P<scheme>\b[a-zA-Z][a-zA-Z0-9+.-]*://)(?:(?P<user>[^/@:\s'\"]+):)?[^/@\s'\"]+@")
# query parameters that carry a secret: ?password=, presigned S3 URLs (X-Amz-Credential, X-Amz-Signature,
# X-Amz-Security-Token), Azure SAS tokens (sig=), access tokens and API keys
_SECRET_PARAMETER = re.compile(
    r"(?P<name>[?&;](?:[\w.-]*(?:password|passwd|secret|token|credential|signature|api[_-]?key|access[_-]?key)"
    r"[\w.-]*|pwd|sig|key|auth)=)[^&\s'\"#]+",
    re.IGNORECASE,
)


def _userinfo(match: re.Match) -> str:
    user = f"{match['user']}:" if match["user"] else ""
    return f"{match['scheme']}{user}{REDACTED}@"


def redact(text: str) -> str:
    """`text` with the credentials of every URI in it replaced by ***: user:password@ -> user:***@, token@ ->
    ***@, and secret query parameters (?password=, X-Amz-Credential=, sig=, ...) -> ***."""
    return _SECRET_PARAMETER.sub(rf"\g<name>{REDACTED}", _USERINFO.sub(_userinfo, text))


def redact_files(paths: Any) -> None:
    """Rewrite each file in `paths` that holds a credential, redacted."""
    for path in paths:
        path = Path(path)
        if not path.is_file():
            continue
        text = path.read_text()
        if redact(text) != text:
            path.write_text(redact(text))


def redact_saved_config(output_dir: Path) -> None:
    """Hydra saves the command line and config under <output dir>/.hydra before a job starts: redact them."""
    redact_files(sorted((Path(output_dir) / ".hydra").glob("*.yaml")))


class RedactSecrets(Callback):
    """Hydra's saved files and its "Error executing job with overrides" line, redacted (see the module docstring)."""

    def on_job_start(self, config: DictConfig, **kwargs: Any) -> None:
        runtime = config.hydra.runtime
        redact_saved_config(Path(runtime.output_dir))
        if config.hydra.mode is not None and str(config.hydra.mode).endswith("MULTIRUN"):
            redact_files([Path(config.hydra.sweep.dir) / "multirun.yaml"])

    def on_job_end(self, config: DictConfig, job_return: Any, **kwargs: Any) -> None:
        # Hydra prints job_return.overrides, then raises the job's error, after this returns
        job_return.overrides = [redact(str(override)) for override in job_return.overrides or []]
        error = job_return._return_value
        if isinstance(error, BaseException) and redact(str(error)) != str(error):
            error.args = (redact(str(error)),)

"""`make ui`: the MLflow UI over the project's store, with links that open on its training runs.

MLflow 3.17's UI picks GenAI pages or model-training pages from its "workflow type" (the switch at
its top left, remembered per browser; GenAI until changed), not from the experiment's
`mlflow.experimentKind` tag, which cnnlab sets all the same. A link carrying
`workflowType=machine_learning` opens straight on an experiment's runs, so one is printed per experiment.

    python -m cnnlab.tracking.ui [--host 127.0.0.1] [--port 5000] [--backend-store-uri URI]
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from pathlib import Path
from typing import Optional

from cnnlab.paths import default_tracking_uri
from cnnlab.tracking.store import client

TRAINING_VIEW = "workflowType=machine_learning"


def runs_link(base_url: str, experiment_id: str) -> str:
    """The UI page of an experiment's training runs."""
    return f"{base_url.rstrip('/')}/#/experiments/{experiment_id}/runs?{TRAINING_VIEW}"


def training_links(uri: str, base_url: str) -> list[tuple[str, str]]:
    """(experiment name, runs link) of every experiment in the store that holds runs."""
    mlflow_client = client(uri)
    links = []
    for experiment in mlflow_client.search_experiments():
        if mlflow_client.search_runs([experiment.experiment_id], max_results=1):
            links.append((experiment.name, runs_link(base_url, experiment.experiment_id)))
    return links


def main(argv: Optional[list[str]] = None) -> None:
    parser = argparse.ArgumentParser(prog="make ui", description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=5000)
    parser.add_argument("--backend-store-uri", default=None, help="default: the project's SQLite store")
    args = parser.parse_args(argv)
    uri = args.backend_store_uri or default_tracking_uri()
    base = f"http://{args.host}:{args.port}"
    print(f"MLflow UI on {base} over {uri}; training runs:", flush=True)
    for name, link in training_links(uri, base) or [("(no runs yet)", runs_link(base, "0"))]:
        print(f"  {name}: {link}", flush=True)
    mlflow = shutil.which("mlflow") or str(Path(sys.executable).with_name("mlflow"))
    os.execv(mlflow, [mlflow, "ui", "--backend-store-uri", uri, "--host", args.host, "--port", str(args.port)])


if __name__ == "__main__":
    main()

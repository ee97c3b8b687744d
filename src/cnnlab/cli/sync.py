"""cnnlab-sync: send a training's metrics, outputs and final status that its MLflow store could not take."""

from __future__ import annotations

import argparse

USAGE = """\
When the tracking server stops answering, training goes on and keeps its metrics; if the server is
still away when the run ends (after logger.unreachable_wait seconds), what it could not take is saved
in <output dir>/mlflow_pending.json and run.json says "sync": "pending". Once the server answers:

  cnnlab-sync outputs/2026-12-01/10-00-00

The store is --tracking-uri, else $MLFLOW_TRACKING_URI, else the one in the run's config.yaml
(credentials in a URI are redacted there: give them through the environment).
"""


def main() -> None:
    parser = argparse.ArgumentParser(
        prog="cnnlab-sync", description=__doc__, epilog=USAGE, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("output_dir", help="the cnnlab-train output directory holding run.json and mlflow_pending.json")
    parser.add_argument("--tracking-uri", default=None, help="the MLflow store the training logged to")
    args = parser.parse_args()
    # imported after parsing: --help answers without loading MLflow and Lightning
    from cnnlab.cli.app import exit_on_user_error
    from cnnlab.training_run import sync_training_run

    with exit_on_user_error():
        run_id = sync_training_run(args.output_dir, args.tracking_uri)
    print(f"synced MLflow run {run_id} from {args.output_dir}")


if __name__ == "__main__":
    main()

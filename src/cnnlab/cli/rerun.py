"""cnnlab-rerun: train a tracked run again from its id and compare the metrics side by side."""

from __future__ import annotations

import argparse
import sys

EPILOG = """\
RUN is a run id, a runs:/<id> URI, or a registered version (models:/<name>/<version>, models:/<name>@<alias>).
The re-run needs this checkout at the run's commit with no uncommitted changes (--force skips that
check), prepares the run's data from its recorded source if it is missing and refuses data whose
content hash differs, trains into a new run tagged cnnlab.rerun_of=<RUN>, evaluates it if the
original was evaluated, and prints both runs' metrics. A sweep's parent run re-runs the whole sweep.

Exit status: 0 when every metric is identical, 1 when one differs (named), 2 for a refusal.

examples:
  cnnlab-rerun 3f2a9c0d5e6b4a1f8c7d6e5f4a3b2c1d
  cnnlab-rerun models:/cnnlab-classification-lenet5@champion
"""


def main() -> None:
    parser = argparse.ArgumentParser(
        prog="cnnlab-rerun", description=__doc__, epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("run", help="run id, runs:/ URI or models:/ URI")
    parser.add_argument(
        "--tracking-uri", default=None, help="the MLflow store (default: $MLFLOW_TRACKING_URI, else the project's)"
    )
    parser.add_argument(
        "--force", action="store_true", help="re-run from another commit or a dirty checkout, or on changed data"
    )
    args = parser.parse_args()
    # imported after parsing: --help answers without loading MLflow
    from cnnlab.cli.app import exit_on_user_error
    from cnnlab.reproduce import rerun

    with exit_on_user_error():
        comparison = rerun(args.run, args.tracking_uri, args.force)
    print(comparison.table())
    first = comparison.first_difference
    if first is None:
        print(
            f"reproduced: run {comparison.rerun} has the same {len(comparison.rows)} metrics as {comparison.original}"
        )
        return
    print(f"not reproduced: {first} differs first (runs {comparison.original} and {comparison.rerun})")
    sys.exit(1)


if __name__ == "__main__":
    main()

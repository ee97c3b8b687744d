"""The cnnlab-* commands: thin Hydra shells that parse, then call the work in its domain.

Each shell imports only Hydra and its config schema at start-up, so `--help` answers at once; the
work (training.py, evaluation.py, prediction.py, data/prepare.py, models/summary.py,
tracking/comparison.py) is imported when the command runs. `app.py` holds what they share.
"""

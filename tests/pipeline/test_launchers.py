"""Launcher and search configs compose into what Hydra's plugins expect."""

from __future__ import annotations

from hydra import compose, initialize_config_dir

from cnnlab.config import register_configs
from tests.conftest import REPO


def _compose(*overrides: str):
    register_configs()
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        return compose("config", overrides=list(overrides), return_hydra_config=True)


def test_slurm_launcher_has_what_a_cluster_user_sets():
    cfg = _compose("hydra/launcher=slurm", "trainer=ddp", "trainer.devices=4")
    launcher = cfg.hydra.launcher
    # submitit's SLURM launcher, with SLURM's refusals as one line (src/hydra_plugins/cnnlab_slurm)
    assert launcher._target_ == "hydra_plugins.cnnlab_slurm.slurm_launcher.SlurmLauncher"
    assert (launcher.partition, launcher.nodes, launcher.gpus_per_node, launcher.tasks_per_node) == ("gpu", 1, 4, 4)
    assert launcher.timeout_min == 240 and launcher.cpus_per_task == 8 and launcher.mem_gb == 64
    assert launcher.tasks_per_node == cfg.trainer.devices  # one SLURM task per DDP rank
    assert cfg.trainer.strategy == "ddp"


def test_optuna_search_space_and_direction():
    cfg = _compose("hparams_search=optuna")
    sweeper = cfg.hydra.sweeper
    assert sweeper._target_ == "hydra_plugins.hydra_optuna_sweeper.optuna_sweeper.OptunaSweeper"
    assert sweeper.direction == "maximize" and cfg.task.mode == "max"
    assert sweeper.params["optimizer.lr"] == "tag(log, interval(0.0003, 0.03))"
    assert set(sweeper.params) == {"optimizer.lr", "data.batch_size", "optimizer", "model", "augment"}


def test_joblib_launcher_composes():
    cfg = _compose("hydra/launcher=joblib", "hydra.launcher.n_jobs=2")
    assert cfg.hydra.launcher.n_jobs == 2


def test_optuna_sweeper_composes_with_the_slurm_launcher():
    cfg = _compose(
        "hparams_search=optuna", "hydra/launcher=slurm", "hydra.launcher.partition=test", "hydra.sweeper.n_jobs=4"
    )
    assert cfg.hydra.sweeper._target_.endswith("OptunaSweeper") and cfg.hydra.sweeper.n_jobs == 4
    assert (
        cfg.hydra.launcher._target_.endswith("cnnlab_slurm.slurm_launcher.SlurmLauncher")
        and cfg.hydra.launcher.partition == "test"
    )


def test_slurm_launcher_is_a_hydra_launcher_plugin():
    from hydra.core.plugins import Plugins
    from hydra.plugins.launcher import Launcher

    from hydra_plugins.cnnlab_slurm.slurm_launcher import SlurmLauncher

    assert SlurmLauncher in Plugins.instance().discover(Launcher)

"""The MLflow UI in a real headless browser (the system's Chromium, driven by Playwright): `make ui`
over a store holding a sweep opens on its training runs, nests the jobs under the sweep, and fills
the Dataset and Models columns. The screenshot is kept in test-artifacts/ (or $CNNLAB_TEST_ARTIFACTS)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import QUICK, REPO, call_in_process, copy_project
from tests.team.services import answers, free_port, stop_process, wait_for

pytestmark = pytest.mark.slow

CHROMIUM = Path("/usr/bin/chromium")
# a sandbox-less, offline browser: CI runs as root in a container, and nothing may reach the network
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


@pytest.fixture(scope="module")
def ui(tmp_path_factory):
    """A project whose store holds a 2-job sweep (models logged), and `make ui` (its launcher) over it."""
    if not CHROMIUM.is_file():
        pytest.skip("Chromium is not installed (Debian: apt-get install -y chromium; .ci/run installs it)")
    root = copy_project(tmp_path_factory.mktemp("ui"))
    quick = [o for o in QUICK if not o.startswith("logger.log_model")]
    done = call_in_process(
        "cnnlab-train",
        [
            "-m",
            *quick,
            "logger.log_model=true",
            "optimizer.lr=0.001,0.002",
            f"hydra.sweep.dir={root / 'multirun' / 'sweep'}",
        ],
        root,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "CNNLAB_"))}
    log = open(root / "ui.log", "w+")
    server = subprocess.Popen(
        [sys.executable, "-m", "cnnlab.tracking.ui", "--port", str(port)],
        cwd=root,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        wait_for("make ui", lambda: answers(f"http://127.0.0.1:{port}/health"), server, timeout=180)
        printed = (root / "ui.log").read_text()
        yield {"root": root, "printed": printed, "url": f"http://127.0.0.1:{port}"}
    finally:
        stop_process(server)
        log.close()


def test_ui_opens_on_the_sweeps_training_runs_with_datasets_and_models(ui):
    from playwright.sync_api import sync_playwright

    link = re.search(r"cnnlab-classification: (\S+)", ui["printed"])
    assert link, ui["printed"]  # `make ui` names the experiment's training-runs page
    artifacts = Path(os.environ.get("CNNLAB_TEST_ARTIFACTS", REPO / "test-artifacts"))
    artifacts.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1920, "height": 1000})
            page.goto(link.group(1), wait_until="domcontentloaded")
            parent_name = page.get_by_text(re.compile(r"^sweep-sweep$"))
            parent_name.wait_for(timeout=90_000)
            assert re.search(r"#/experiments/\d+/runs", page.url)  # the runs table, not the GenAI overview
            assert page.get_by_text("Token Usage").count() == 0
            children = ["lenet5-digits-0", "lenet5-digits-1"]
            assert all(page.get_by_text(name, exact=True).count() == 0 for name in children)  # folded under the sweep

            parent_row = page.locator(".ag-pinned-left-cols-container [role=row]").filter(has_text="sweep-sweep")
            parent_row.locator("[data-component-id*='runnamecellrenderer']").first.click()  # unfold the sweep
            for name in children:
                page.get_by_text(name, exact=True).wait_for(timeout=30_000)
            table = rows_by_index(page)
            order = [name for _, name, _ in table]
            assert order[0] == "sweep-sweep" and sorted(order[1:]) == children  # the jobs right under their sweep
            for _, name, cells in table[1:]:
                assert "digits-32" in cells["Dataset"], (name, cells)  # the prepared data, as a dataset input
                # the logged model, in the run's experiment, named after what it is
                assert cells["Models"].strip() == "lenet5-classification-digits", (name, cells)
            page.screenshot(path=str(artifacts / "mlflow-ui-sweep-runs.png"), full_page=True)
        finally:
            browser.close()
    assert (artifacts / "mlflow-ui-sweep-runs.png").stat().st_size > 10_000


def rows_by_index(page) -> list[tuple[int, str, dict[str, str]]]:
    """(row index, run name, {column header: cell text}) for each run row of the AG Grid runs table, top to bottom."""
    headers = {}
    for header in page.locator("[role=columnheader][col-id]").all():
        headers[header.get_attribute("col-id")] = header.inner_text().strip()
    rows: dict[int, tuple[str, dict[str, str]]] = {}
    for cell in page.locator("[role=row][row-index] [role=gridcell][col-id]").all():
        index = int(cell.locator("xpath=ancestor::*[@role='row'][1]").get_attribute("row-index"))
        column = headers.get(cell.get_attribute("col-id"), cell.get_attribute("col-id"))
        name, cells = rows.setdefault(index, ("", {}))
        cells[column] = cell.inner_text()
        if column == "Run Name":
            rows[index] = (cell.inner_text().replace("#", "").split("\n")[-1].strip(), cells)
    return [(index, *rows[index]) for index in sorted(rows)]

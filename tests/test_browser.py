"""JupyterLab in a real (headless) browser, used the way a reader uses it.

Starts `jupyter lab` on the repository, opens `nbs/00_core.ipynb` in Debian's Chromium through
Selenium, runs it from the Run menu and checks that every code cell ran without an error and that a
figure was drawn; then runs the first section of the first study notebook (03*/05*) cell by cell
with Shift+Enter. A second test plants an error in a scratch notebook to show that the error
detection fires. Screenshots of every step are written under the test's tmp_path (paths printed).

Needs `apt-get install -y chromium chromium-driver`; without them the tests are skipped. Nothing is
downloaded at run time: the driver path is given to Selenium (so Selenium Manager never runs) and
the server is started with its news, update check and extension manager offline. Autosave is off,
so the notebooks in nbs/ are never written.
"""
import json
import os
import re
import secrets
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from contextlib import contextmanager
from pathlib import Path

import pytest

pytestmark = [pytest.mark.browser, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[1]
JUPYTER = Path(sys.executable).parent / "jupyter"
CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
NO_CHROMIUM = "no Chromium: apt-get install -y chromium chromium-driver"
KERNEL_NAME, KERNEL_DISPLAY = "python3", "Python 3 (imgsci)"   # what `make install` registers in .venv
SERVER_START_S, KERNEL_START_S, RUN_S = 120, 120, 150

# JupyterLab settings for the test user (a fresh settings dir, so no user config interferes):
# never write the notebooks back, and no news/update toasts.
LAB_SETTINGS = {
    "@jupyterlab/docmanager-extension/plugin.jupyterlab-settings": {"autosave": False},
    "@jupyterlab/apputils-extension/notification.jupyterlab-settings": {
        "fetchNews": "false", "checkForUpdates": False},
}


# ---------------------------------------------------------------------------------------------
# The server
# ---------------------------------------------------------------------------------------------

def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _api(lab, path, method="GET"):
    req = urllib.request.Request(f"{lab['url']}{path}", method=method,
                                 headers={"Authorization": f"token {lab['token']}"})
    with urllib.request.urlopen(req, timeout=10) as r:
        body = r.read()
    return json.loads(body) if body else None


@contextmanager
def jupyter_lab(root_dir: Path, home: Path):
    "Run `jupyter lab` on `root_dir` (state and settings under `home`); stopped on every exit path."
    token, port = secrets.token_hex(24), _free_port()
    dirs = {k: home / k for k in ("config", "data", "runtime", "ipython", "settings", "workspaces")}
    for d in dirs.values():
        d.mkdir(parents=True, exist_ok=True)
    for name, value in LAB_SETTINGS.items():
        (dirs["settings"] / name).parent.mkdir(parents=True, exist_ok=True)
        (dirs["settings"] / name).write_text(json.dumps(value))
    env = dict(os.environ, JUPYTER_CONFIG_DIR=str(dirs["config"]), JUPYTER_DATA_DIR=str(dirs["data"]),
               JUPYTER_RUNTIME_DIR=str(dirs["runtime"]), IPYTHONDIR=str(dirs["ipython"]),
               TF_CPP_MIN_LOG_LEVEL="3", PYTHONUNBUFFERED="1")
    env.pop("MPLBACKEND", None)        # a reader's kernel draws inline
    env.pop("JUPYTER_PATH", None)
    cmd = [str(JUPYTER), "lab", "--no-browser", "--ip=127.0.0.1", f"--port={port}", "--port-retries=0",
           f"--ServerApp.root_dir={root_dir}", "--ServerApp.allow_root=True",
           f"--IdentityProvider.token={token}",
           "--LabApp.news_url=None",
           "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
           "--LabApp.extension_manager=readonly",
           f"--LabApp.user_settings_dir={dirs['settings']}",
           f"--LabApp.workspaces_dir={dirs['workspaces']}",
           f"--FileCheckpoints.checkpoint_dir={home / 'checkpoints'}",   # absolute: no .ipynb_checkpoints in nbs/
           "--LabApp.expose_app_in_browser=True"]      # lets the checks read the notebook model
    log_path = home / "jupyter.log"
    lab = dict(url=f"http://127.0.0.1:{port}", token=token, log=log_path)
    with open(log_path, "w") as log:
        proc = subprocess.Popen(cmd, cwd=root_dir, env=env, stdout=log, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + SERVER_START_S
        while True:
            if proc.poll() is not None:
                pytest.fail(f"jupyter lab exited with {proc.returncode}:\n{log_path.read_text()[-3000:]}")
            try:
                _api(lab, "/api/status")
                break
            except (urllib.error.URLError, ConnectionError, OSError):
                if time.monotonic() > deadline:
                    pytest.fail(f"jupyter lab did not answer in {SERVER_START_S} s:\n"
                                f"{log_path.read_text()[-3000:]}")
                time.sleep(0.5)
        print(f"\njupyter lab on {lab['url']} (root {root_dir}), log {log_path}")
        yield lab
    finally:
        try:                                   # shut the kernels down first (they outlive a killed server)
            for k in _api(lab, "/api/kernels"):
                _api(lab, f"/api/kernels/{k['id']}", method="DELETE")
        except Exception:
            pass
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=30)


# ---------------------------------------------------------------------------------------------
# The browser
# ---------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def browser():
    "Headless Debian Chromium driven by the system chromedriver (Selenium Manager never runs)."
    if not (CHROMIUM.exists() and CHROMEDRIVER.exists()):
        pytest.skip(NO_CHROMIUM)
    webdriver = pytest.importorskip("selenium.webdriver")
    from selenium.webdriver.chrome.service import Service
    opts = webdriver.ChromeOptions()
    opts.binary_location = str(CHROMIUM)
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1400,1000",
                "--disable-gpu", "--no-first-run", "--disable-extensions", "--disable-background-networking",
                "--disable-component-update", "--disable-sync", "--metrics-recording-only"):
        opts.add_argument(arg)
    driver = webdriver.Chrome(service=Service(executable_path=str(CHROMEDRIVER)), options=opts)
    driver.set_page_load_timeout(120)
    try:
        yield driver
    finally:
        driver.quit()


def _shot(driver, path: Path, name: str):
    p = path / f"{name}.png"
    driver.save_screenshot(str(p))
    print(f"screenshot: {p}")
    return p


def _wait(driver, timeout, condition, message):
    from selenium.webdriver.support.ui import WebDriverWait
    return WebDriverWait(driver, timeout, poll_frequency=0.5).until(lambda d: condition(d), message)


# The cells of the notebook in the active tab: kind, prompt text and outputs as JupyterLab holds them.
# DOM for what the reader sees (prompt, rendered images, rendered stderr text), model for the
# output types (an `error` output is drawn with the same mime type as stderr).
_CELLS_JS = """
const panel = document.querySelector('.jp-NotebookPanel:not(.lm-mod-hidden)');
if (!panel) return null;
const app = window.jupyterapp;
const widget = app && app.shell.currentWidget;
const model = widget && widget.content && widget.content.model;
const nodes = Array.from(panel.querySelectorAll('.jp-Notebook .jp-Cell'));
return nodes.map((c, i) => {
  const prompt = c.querySelector('.jp-InputPrompt');
  const m = model ? model.cells.get(i) : null;
  const outs = (m && m.outputs) ? m.outputs.toJSON() : [];
  return {
    code: c.classList.contains('jp-CodeCell'),
    prompt: prompt ? prompt.textContent.trim() : '',
    count: m && m.type === 'code' ? m.executionCount : null,
    errors: outs.filter(o => o.output_type === 'error').map(o => o.ename + ': ' + o.evalue),
    stderr: Array.from(c.querySelectorAll('.jp-OutputArea-output[data-mime-type="application/vnd.jupyter.stderr"]'))
                 .map(o => o.textContent),
    images: c.querySelectorAll('.jp-RenderedImage img').length,
  };
});
"""

_TRACEBACK = re.compile(r"Traceback \(most recent call last\)|^\s*Cell In\[\d+\], line \d+|^\w+(Error|Exception): ",
                        re.M)


def cells(driver):
    return driver.execute_script(_CELLS_JS) or []


def error_cells(driver, indices=None):
    "(index, message) of every cell with an error output: an `error` in the model or a traceback on screen."
    found = []
    for i, c in enumerate(cells(driver)):
        if indices is not None and i not in indices:
            continue
        tracebacks = [t for t in c["stderr"] if _TRACEBACK.search(t)]
        if c["errors"] or tracebacks:
            found.append((i, "; ".join(c["errors"]) or tracebacks[0][-500:]))
    return found


def kernel_status(driver):
    el = driver.find_elements("css selector",
                              ".jp-NotebookPanel:not(.lm-mod-hidden) .jp-Notebook-ExecutionIndicator")
    return el[0].get_attribute("data-status") if el else None


def open_notebook(driver, lab, rel_path: str, n_cells: int, shots: Path, name: str):
    "Open a notebook, pick the project kernel if JupyterLab asks, wait until the kernel is idle."
    from selenium.webdriver.common.by import By
    driver.get(f"{lab['url']}/lab/tree/{rel_path}?token={lab['token']}")
    _wait(driver, KERNEL_START_S, lambda d: len(cells(d)) == n_cells,
          f"{rel_path}: the notebook did not show its {n_cells} cells")

    def ready(d):
        # A kernel dialog ("Select Kernel") appears when the notebook's kernel is unknown: pick ours.
        for dialog in d.find_elements(By.CSS_SELECTOR, ".jp-Dialog"):
            selects = dialog.find_elements(By.CSS_SELECTOR, "select")
            if selects:
                from selenium.webdriver.support.ui import Select
                Select(selects[0]).select_by_visible_text(KERNEL_DISPLAY)
                dialog.find_element(By.CSS_SELECTOR, ".jp-Dialog-footer .jp-mod-accept").click()
                return False
        return kernel_status(d) == "idle"
    try:
        _wait(driver, KERNEL_START_S, ready, f"{rel_path}: the kernel did not become idle")
    finally:
        _shot(driver, shots, name)
    names = [e.text for e in driver.find_elements(
        By.CSS_SELECTOR, ".jp-NotebookPanel:not(.lm-mod-hidden) .jp-KernelName")]
    assert KERNEL_DISPLAY in names, f"{rel_path}: kernel shown as {names}, expected {KERNEL_DISPLAY!r}"
    # …and it is the kernel of this project's environment.
    sessions = [s for s in _api(lab, "/api/sessions") if s["path"] == rel_path]
    assert sessions and sessions[0]["kernel"]["name"] == KERNEL_NAME, sessions
    spec = _api(lab, "/api/kernelspecs")["kernelspecs"][KERNEL_NAME]["spec"]
    assert Path(spec["argv"][0]).parent == Path(sys.executable).parent, spec["argv"]


def click_menu(driver, menu: str, item: str):
    "Main menu → item, by their visible labels."
    from selenium.webdriver.common.by import By
    driver.find_element(By.XPATH, f"//li[contains(@class,'lm-MenuBar-item')][normalize-space(.)='{menu}']").click()
    entry = _wait(driver, 10, lambda d: [e for e in d.find_elements(
        By.XPATH, f"//ul[contains(@class,'lm-Menu-content')]/li[contains(@class,'lm-Menu-item')]"
                  f"[.//div[contains(@class,'lm-Menu-itemLabel')][normalize-space(.)='{item}']]")
        if e.is_displayed()], f"no menu item {menu} → {item}")
    entry[0].click()


def select_cell(driver, index: int):
    "Click a cell's prompt area: it becomes the active cell, in command mode."
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    node = driver.find_elements(By.CSS_SELECTOR, ".jp-NotebookPanel:not(.lm-mod-hidden) .jp-Notebook .jp-Cell")[index]
    driver.execute_script("arguments[0].scrollIntoView({block: 'center'});", node)
    node.find_element(By.CSS_SELECTOR, ".jp-InputPrompt").click()
    ActionChains(driver).send_keys(Keys.ESCAPE).perform()
    _wait(driver, 10, lambda d: "jp-mod-active" in node.get_attribute("class"), f"cell {index} not selected")


def wait_run(driver, indices, what: str):
    "Wait until the code cells `indices` all ran (or one failed) and the kernel is idle again."
    def done(d):
        cs = cells(d)
        if len(cs) <= max(indices):
            return False
        run = [cs[i] for i in indices if cs[i]["code"]]
        if any(c["prompt"].startswith("[*]") for c in run) or kernel_status(d) != "idle":
            return False
        counts = [c["count"] for c in run]
        return error_cells(d, indices) or (all(counts) and counts == sorted(set(counts)))
    _wait(driver, RUN_S, done, f"{what}: did not finish in {RUN_S} s")


def assert_ran_cleanly(driver, indices, what: str):
    errs = error_cells(driver, indices)
    assert not errs, f"{what}: error output in cell(s) " + "; ".join(f"#{i}: {m}" for i, m in errs)
    cs = cells(driver)
    missing = [i for i in indices if cs[i]["code"] and not cs[i]["count"]]
    assert not missing, f"{what}: code cells {missing} have no execution count"


def _notebook(path: Path):
    nb = json.loads(path.read_text())
    return nb["cells"]


def _skipped(cell):
    "Cells a reader leaves out: tagged skip-execution (nbdev's `nbdev_export()` cell)."
    return "skip-execution" in cell.get("metadata", {}).get("tags", [])


def run_notebook_via_menu(driver, nb_cells, what):
    """Run menu → "Run All Cells"; when the notebook ends with skip-execution cells (nbdev's export
    cell, which would rewrite imgsci/), select the first of them and use "Run All Above Selected Cell"."""
    skipped = [i for i, c in enumerate(nb_cells) if _skipped(c)]
    if skipped and skipped == list(range(skipped[0], len(nb_cells))):
        select_cell(driver, skipped[0])
        click_menu(driver, "Run", "Run All Above Selected Cell")
        indices = list(range(skipped[0]))
    else:
        assert not skipped, f"{what}: skip-execution cells in the middle: {skipped}"
        click_menu(driver, "Run", "Run All Cells")
        indices = list(range(len(nb_cells)))
    wait_run(driver, indices, what)
    return indices


def first_section(nb_cells):
    "Cells before the second markdown cell that starts with '## '."
    heads = [i for i, c in enumerate(nb_cells)
             if c["cell_type"] == "markdown" and "".join(c["source"]).startswith("## ")]
    return list(range(heads[1] if len(heads) > 1 else len(nb_cells)))


def run_cells_with_shift_enter(driver, indices):
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.keys import Keys
    select_cell(driver, indices[0])
    for _ in indices:
        ActionChains(driver).key_down(Keys.SHIFT).send_keys(Keys.ENTER).key_up(Keys.SHIFT).perform()


# ---------------------------------------------------------------------------------------------
# Tests
# ---------------------------------------------------------------------------------------------

def test_notebooks_run_in_jupyterlab(browser, tmp_path):
    t0 = time.monotonic()
    with jupyter_lab(REPO, tmp_path / "lab") as lab:
        # 1. the core notebook, Run All
        core = "nbs/00_core.ipynb"
        nb_cells = _notebook(REPO / core)
        open_notebook(browser, lab, core, len(nb_cells), tmp_path, "01_core_loaded")
        try:
            ran = run_notebook_via_menu(browser, nb_cells, core)
        finally:
            _shot(browser, tmp_path, "02_core_run")
        assert_ran_cleanly(browser, ran, core)
        images = sum(c["images"] for c in cells(browser))   # asserted at the end, after the study
        print(f"{core}: {len(ran)} cells ran, {images} figure(s), {time.monotonic() - t0:.0f} s")

        # 2. the first section of the first study notebook, Shift+Enter cell by cell
        study = next(p for p in sorted((REPO / "nbs").glob("*.ipynb")) if p.name[:2] in ("03", "05"))
        rel = study.relative_to(REPO).as_posix()
        nb_cells = _notebook(study)
        section = first_section(nb_cells)
        open_notebook(browser, lab, rel, len(nb_cells), tmp_path, "03_study_loaded")
        try:
            run_cells_with_shift_enter(browser, section)
            wait_run(browser, section, rel)
        finally:
            _shot(browser, tmp_path, "04_study_first_section_run")
        assert_ran_cleanly(browser, section, rel)
        print(f"{rel}: first section ({len(section)} cells) ran, {time.monotonic() - t0:.0f} s in all")
    assert images > 0, f"{core}: ran cleanly but no figure is rendered (no img in .jp-RenderedImage)"


def _code(src, **kw):
    return dict(cell_type="code", execution_count=None, metadata=kw.pop("metadata", {}), outputs=[],
                source=src)


def test_browser_check_sees_a_planted_error(browser, tmp_path):
    "The same checks on a scratch notebook whose third cell raises: the error is found, the warning is not."
    root = tmp_path / "root"
    root.mkdir()
    nb = dict(nbformat=4, nbformat_minor=5, cells=[
        dict(cell_type="markdown", metadata={}, source="# planted\n"),
        _code("print('fine')"),
        _code("import warnings; warnings.warn('only a warning')"),
        _code("raise ValueError('planted failure')"),
        _code("print('never reached')"),
        _code("import nbdev  # never run by the test", metadata=dict(tags=["skip-execution"])),
    ], metadata=dict(kernelspec=dict(name=KERNEL_NAME, display_name="python3", language="python")))
    (root / "planted.ipynb").write_text(json.dumps(nb))
    with jupyter_lab(root, tmp_path / "lab") as lab:
        open_notebook(browser, lab, "planted.ipynb", len(nb["cells"]), tmp_path, "01_planted_loaded")
        try:
            run_notebook_via_menu(browser, nb["cells"], "planted.ipynb")
        finally:
            _shot(browser, tmp_path, "02_planted_run")
        errs = error_cells(browser)
        assert [i for i, _ in errs] == [3], errs
        assert "planted failure" in errs[0][1]
        cs = cells(browser)
        assert cs[2]["stderr"] and not cs[2]["errors"], cs[2]      # the warning: stderr, not an error
        assert not any(_TRACEBACK.search(t) for t in cs[2]["stderr"]), cs[2]
        assert any(_TRACEBACK.search(t) for t in cs[3]["stderr"]), cs[3]   # seen on screen too
        assert cs[1]["count"] and not cs[4]["count"] and not cs[5]["count"]
        with pytest.raises(AssertionError, match="planted failure"):
            assert_ran_cleanly(browser, list(range(5)), "planted.ipynb")

"""The report end to end on a tiny model, opened in a real headless Chromium."""

import contextlib
import json
import re
import shutil
import sys

import numpy as np
import pytest

from finegrain.report import build_report


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    from finegrain.testing import tiny_bert

    out = tmp_path_factory.mktemp("report")
    path = build_report(out, model=tiny_bert(layers=2), n_sentences=80, properties=["pos", "number"],
                        top_neurons=3, epochs=3, extras=False, strict=True, device="cpu")
    return path


def test_report_is_self_contained(report):
    text = report.read_text()
    assert text.startswith("<!doctype html>")
    for section in ('id="summary"', 'id="probing"', 'id="neurons"', 'id="browser"', 'id="prop-pos"'):
        assert section in text
    assert "http://" not in text and "https://" not in text  # no CDN, works offline
    assert text.count("data:image/png;base64,") >= 4
    data = json.loads(text.split('<script type="application/json" id="nb-data">')[1].split("</script>")[0])
    assert set(data["layers"]) == {"layer.0", "layer.1", "layer.2"}
    assert len(data["neurons"]) == 3 * 32
    results = json.loads((report.parent / "results.json").read_text())
    # the ptb properties asked for, and the gold corpus's own (its "number" beside ptb's silver one)
    assert set(results["probing"]) == {"pos", "number", "number@synthetic", "tense", "negation"}
    assert results["errors"] == {}


def test_report_rejects_unknown_property(tmp_path):
    from finegrain.testing import tiny_bert

    with pytest.raises(ValueError, match="not label columns"):
        build_report(tmp_path, model=tiny_bert(), n_sentences=20, properties=["colour"], extras=False)


def _driver():
    selenium = pytest.importorskip("selenium")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    chromium, driver = shutil.which("chromium"), shutil.which("chromedriver")
    if not (chromium and driver):
        pytest.skip("Debian chromium + chromium-driver are not installed (make test installs them as root)")
    opts = webdriver.ChromeOptions()
    opts.binary_location = chromium
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--window-size=1280,2400"):
        opts.add_argument(flag)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    del selenium
    return webdriver.Chrome(service=Service(driver), options=opts)


def test_report_in_headless_chromium(report, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    drv = _driver()
    try:
        drv.get(report.as_uri())
        title = drv.find_element(By.ID, "nb-title").text
        assert title.startswith("Neuron layer.")
        # switch layer and unit: the browser must show the new neuron
        Select(drv.find_element(By.ID, "nb-layer")).select_by_value("layer.0")
        unit = drv.find_element(By.ID, "nb-unit")
        unit.clear()
        unit.send_keys("7")
        drv.execute_script("document.getElementById('nb-unit').dispatchEvent(new Event('change'))")
        assert drv.find_element(By.ID, "nb-title").text == "Neuron layer.0:7"
        drv.find_element(By.ID, "nb-next").click()
        assert drv.find_element(By.ID, "nb-title").text == "Neuron layer.0:8"
        assert len(drv.find_elements(By.CSS_SELECTOR, "#nb-top li")) > 0
        assert len(drv.find_elements(By.CSS_SELECTOR, "#nb-hist rect")) > 0
        # a neuron link in the probing section opens that neuron in the browser
        link = drv.find_element(By.CSS_SELECTOR, "#probing a[data-neuron]")
        target = link.get_attribute("data-neuron")
        drv.execute_script("arguments[0].click()", link)
        assert drv.find_element(By.ID, "nb-title").text == f"Neuron {target}"
        errors = [e for e in drv.get_log("browser") if e["level"] == "SEVERE"]
        assert not errors, errors
        shot = tmp_path / "report.png"
        drv.execute_script("window.scrollTo(0, 0)")
        drv.save_screenshot(str(shot))
    finally:
        drv.quit()
    import matplotlib.image as mpimg

    img = mpimg.imread(shot)[..., :3]
    assert img.shape[0] >= 1000 and img.shape[1] >= 1000
    # the dark header band is on top and the page below has real content (text, plots), not a blank page
    assert img[:40].mean() < 0.35
    body = img[100:]
    # coloured pixels: links, verdict boxes, tag chips (the first screen is the model and corpus overview)
    assert (body.std(axis=2) > 0.05).mean() > 0.004
    assert (body.mean(axis=2) < 0.5).mean() > 0.005  # dark pixels: text
    assert len(np.unique((body * 255).astype(np.uint8).reshape(-1, 3), axis=0)) > 200


# -- issue 19, item 4: the report in two processes -------------------------------------------------------
PARALLEL_SECTIONS = ["similarity", "attention", "patching"]


@pytest.fixture(scope="module")
def tiny_model_dir(tmp_path_factory):
    """A tiny BERT on disk: the second process loads the model by its path, as it loads "minilm"."""
    from finegrain.testing import tiny_bert

    path = tmp_path_factory.mktemp("tiny-bert")
    adapter = tiny_bert(layers=2)
    adapter.model.save_pretrained(path)
    adapter.tokenizer.save_pretrained(path)
    return path


def _small_report(out, model_dir, parallel):
    build_report(out, model=str(model_dir), n_sentences=40, gold_sentences=40, properties=["pos", "number"],
                 epochs=3, sections=PARALLEL_SECTIONS, device="cpu", progress=False, parallel=parallel)
    results = json.loads((out / "results.json").read_text())
    page = (out / "index.html").read_text()
    # the run's own timings and total differ from run to run; everything else must not
    page = re.sub(r'<section id="timings">.*?</section>', "", re.sub(r"Generated by finegrain .*? s\.", "", page),
                  flags=re.S)
    return results, page


@contextlib.contextmanager
def _one_thread():
    """torch and BLAS on one thread, as the second process runs its steps: the same sums, the same bits."""
    import torch
    from threadpoolctl import threadpool_limits

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    limits = threadpool_limits(1, user_api="blas")
    try:
        yield
    finally:
        torch.set_num_threads(n)
        limits.restore_original_limits()


@pytest.fixture(scope="module")
def one_process(tmp_path_factory, tiny_model_dir):
    from finegrain.data import read_corpus

    # annotated once into the cache first: a corpus annotated afresh lists its label columns in another
    # order than one read back from the cache, which changes how ties between formulas are broken
    read_corpus("builtin:ptb", seed=0, n_sentences=40)
    with _one_thread():
        return _small_report(tmp_path_factory.mktemp("one-process"), tiny_model_dir, parallel=False)


def test_two_processes_give_the_report_of_one(tmp_path, tiny_model_dir, one_process):
    """The second process runs the head's sections and takes steps from the shared queue; every number
    and every byte of the page (but the run's timings) is that of the report made in one process."""
    seq, seq_page = one_process
    with _one_thread():  # (this process's own steps after the second has ended run on its threads again)
        par, par_page = _small_report(tmp_path, tiny_model_dir, parallel=True)
    assert par["parallel"] is True and seq["parallel"] is False
    for k in ("probing", "model", "corpora", "sections", "errors"):
        assert par[k] == seq[k], k
    assert par_page == seq_page
    second = [k for k, v in par["timings"].items() if v.get("process") == "second"]
    assert "load model (second process)" in second and "activation patching" in second
    assert set(par["timings"]) - {"load model (second process)"} == set(seq["timings"])
    assert par["peak_rss_mb_second_process"] > 0
    text = (tmp_path / "index.html").read_text()
    assert "second process" in text.split('<section id="timings">')[1]


def test_steps_the_second_process_does_not_deliver_are_computed_here(tmp_path, tiny_model_dir, one_process,
                                                                     monkeypatch):
    """A second process that ends at once (here: a program that exits) leaves every step to this one."""
    import finegrain.report.build as B

    true = shutil.which("true")
    if true is None:
        pytest.skip("no `true` program")
    monkeypatch.setattr(B.sys, "executable", true)
    with _one_thread():
        par, par_page = _small_report(tmp_path, tiny_model_dir, parallel=True)
    seq, seq_page = one_process
    assert not any(v.get("process") for v in par["timings"].values())
    for k in ("probing", "model", "corpora", "sections", "errors"):
        assert par[k] == seq[k], k
    assert par_page == seq_page


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="VmHWM is Linux's")
def test_peak_rss_is_the_process_own_not_its_parents():
    """The report's peak memory per process: a child started by a big parent reports its own peak
    (VmHWM), not the parent's, which ``ru_maxrss`` carries across fork and exec."""
    import subprocess

    big = np.ones(1536 * 2**20 // 8)  # 1.5 GiB, touched
    code = "from finegrain.report.build import _rss_mb; print(_rss_mb())"
    child = float(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout)
    assert big.sum() > 0
    assert 10 < child < 1200, f"the child reported {child:.0f} MB"

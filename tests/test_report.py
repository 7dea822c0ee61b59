"""The report end to end on a tiny model, opened in a real headless Chromium."""

import json
import shutil

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

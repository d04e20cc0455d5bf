"""The HTML report: self-contained, and in a real headless Chromium it loads, sorts and plays."""

from __future__ import annotations

import json
import math
import re
import shutil
import time
from pathlib import Path

import numpy as np
import pytest

from wavediff.audio.io import save_audio
from wavediff.audio.synth import toy_utterance
from wavediff.cli.main import main

SR = 22050
N_UTTS = 4
ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"


def noisy(x: np.ndarray, snr_db: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    scale = math.sqrt(np.mean(x.astype(np.float64) ** 2) / 10 ** (snr_db / 10))
    return np.clip(x + rng.normal(0, scale, x.shape), -1, 1).astype(np.float32)


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> dict:
    """A comparison report of two folders (mild and strong noise) over four utterances."""
    root = tmp_path_factory.mktemp("report")
    for i in range(N_UTTS):
        x = toy_utterance(SR, 1.6, seed=10 + i)
        save_audio(root / "ref" / f"UTT{i:02d}.wav", x, SR)
        # the worst utterance of each folder differs, so sorting visibly reorders the rows
        save_audio(root / "ckpt_200k" / f"UTT{i:02d}_gen.wav", noisy(x, 12 + 6 * i, seed=i), SR)
        save_audio(root / "ckpt_50k" / f"UTT{i:02d}_gen.wav", noisy(x, 24 - 6 * i, seed=50 + i), SR)
    page = root / "out" / "report.html"
    code = main(["evaluate", "--ref-dir", str(root / "ref"), "--compare", str(root / "ckpt_200k"),
                 str(root / "ckpt_50k"), "--report", str(page), "--json", str(root / "s.json"),
                 "--metrics", "pesq,stoi,estoi,world,spectral", "--nj", "2", "-q"])
    assert code == 0
    return {"root": root, "page": page, "scores": json.loads((root / "s.json").read_text())}


def test_page_is_self_contained(report):
    page: Path = report["page"]
    text = page.read_text()
    assert "http://" not in text and "https://" not in text  # nothing from the network
    assets = page.parent / "report_files"
    srcs = re.findall(r'src="([^"]+)"', text)
    assert len(srcs) == 2 * N_UTTS * 3  # audio + image for the reference and two folders
    assert all((page.parent / s).is_file() for s in srcs)
    assert len(list((assets / "img").glob("*.png"))) == N_UTTS * 3
    assert text.count("<tbody class=\"utt\"") == N_UTTS
    assert not list(page.parent.glob(".*"))  # no temporary files or folders left


def test_embedded_page_is_one_file(report, tmp_path):
    root = report["root"]
    page = tmp_path / "one.html"
    code = main(["evaluate", "--ref-dir", str(root / "ref"), "--gen-dir", str(root / "ckpt_50k"),
                 "--report", str(page), "--embed", "--metrics", "snr", "--nj", "1", "-q"])
    assert code == 0
    text = page.read_text()
    assert text.count('src="data:audio/flac;base64,') == 2 * N_UTTS
    assert text.count('src="data:image/png;base64,') == 2 * N_UTTS
    assert sorted(p.name for p in tmp_path.iterdir()) == ["one.html"]


def _chrome(tmp_path: Path):
    chromium, driver = shutil.which("chromium"), shutil.which("chromedriver")
    if not chromium or not driver:
        pytest.skip("chromium and chromedriver are not installed (CI installs Debian's "
                    "chromium and chromium-driver)")
    webdriver = pytest.importorskip("selenium.webdriver")
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = chromium
    for arg in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                "--disable-component-update", "--disable-sync", "--no-first-run",
                "--disable-dev-shm-usage", "--autoplay-policy=no-user-gesture-required",
                f"--user-data-dir={tmp_path / 'chrome-profile'}", "--window-size=1500,1250"):
        opts.add_argument(arg)
    return webdriver.Chrome(service=Service(driver), options=opts)


def _row_ids(browser) -> list[str]:
    return browser.execute_script(
        "return Array.from(document.querySelectorAll('#utt-table tbody')).map(b => b.dataset.id)")


def test_report_in_a_real_browser(report, tmp_path):
    browser = _chrome(tmp_path)
    try:
        browser.get(report["page"].as_uri())
        browser.execute_script("return document.fonts.ready")
        n_audio = browser.execute_script("return document.querySelectorAll('audio').length")
        assert n_audio == N_UTTS * 3
        images = browser.execute_script(
            "return Array.from(document.images).map(i => [i.complete, i.naturalWidth])")
        assert len(images) == N_UTTS * 3
        assert all(done and width > 100 for done, width in images), images
        summary_rows = browser.execute_script(
            "return document.querySelectorAll('#summary-table tbody tr').length")
        assert summary_rows == 2

        ARTIFACTS.mkdir(exist_ok=True)
        browser.save_screenshot(str(ARTIFACTS / "report.png"))

        # sorting by SNR of the first folder: worst (lowest) first, then reversed
        snr = report["scores"]["systems"][0]["utterances"]
        worst_first = sorted(snr, key=lambda u: snr[u]["snr"])
        assert _row_ids(browser) == sorted(snr)
        header = browser.find_element("css selector", '#utt-table th[data-metric="snr"]')
        header.click()
        assert _row_ids(browser) == worst_first
        assert header.get_attribute("aria-sort") == "ascending"
        header.click()
        assert _row_ids(browser) == worst_first[::-1]
        # lower-is-better columns put the largest value first
        mcd = {u: v["mcd"] for u, v in snr.items()}
        browser.find_element("css selector", '#utt-table th[data-metric="mcd"]').click()
        assert _row_ids(browser) == sorted(mcd, key=lambda u: -mcd[u])
        # the folder selector re-sorts by the other folder's values
        other = report["scores"]["systems"][1]["utterances"]
        browser.execute_script("const s = document.getElementById('sort-system');"
                               "s.value = '1'; s.dispatchEvent(new Event('change'));")
        assert _row_ids(browser) == sorted(other, key=lambda u: -other[u]["mcd"])

        # the players play
        browser.execute_script("window._played = null; const a = document.querySelector('audio');"
                               "a.play().then(() => { window._played = true; })"
                               ".catch(e => { window._played = String(e); });")
        deadline = time.time() + 20
        while browser.execute_script("return window._played") is None and time.time() < deadline:
            time.sleep(0.2)
        assert browser.execute_script("return window._played") is True
        time.sleep(0.5)
        assert browser.execute_script("return document.querySelector('audio').currentTime") > 0
    finally:
        browser.quit()

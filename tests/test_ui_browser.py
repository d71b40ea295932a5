"""`bgmgen ui` in a real browser: the command runs as a subprocess on a free port and Debian's headless Chromium
(driven by Selenium through Debian's chromedriver, no browser download) uploads a clip the test makes, waits for
the scored video, checks the page's <video> plays and lasts as long as the input, changes the mood, gets a second
take (the first comes up beside it), downloads its MIDI (it must parse), takes another take (next seed), and sends
a file that is not a video (the CLI's one-line message shows in the page and the server keeps serving). Neither
the server (socket audit hook) nor the browser (its network log) connects anywhere but 127.0.0.1.

Screenshots of each step go to pytest's tmp_path (printed at the end; keep them with --basetemp). With
BGMGEN_UI_SCREENSHOT=PATH the screenshot after the second take is also copied to PATH (docs/ui.png is made so).
Skipped, with the reason, without gradio, selenium, /usr/bin/chromium or /usr/bin/chromedriver
(scripts/bootstrap installs all four). About a minute on a 2-core CPU.
"""

from __future__ import annotations

import glob
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
CLIP_S = 5.0
START_TIMEOUT_S = 180
TAKE_TIMEOUT_S = 300


def _missing() -> str | None:
    import importlib.util

    if shutil.which("ffmpeg") is None:
        return "ffmpeg is not installed"
    for module, what in (("gradio", "gradio (the ui extra: pip install -e '.[ui]')"),
                         ("selenium", "selenium (pip install selenium)")):
        if importlib.util.find_spec(module) is None:
            return f"{what} is not installed; scripts/bootstrap installs it"
    for path, package in ((CHROMIUM, "chromium"), (CHROMEDRIVER, "chromium-driver")):
        if not path.exists():
            return f"{path} is missing (apt-get install chromium chromium-driver; scripts/bootstrap does)"
    return None


pytestmark = pytest.mark.skipif(_missing() is not None, reason=_missing() or "")

# Runs `bgmgen ui ARGS` as the console script does (bgmgen.cli.main), with an audit hook that records every
# connection or name lookup to a host that is not this machine into the file named by BGMGEN_TEST_NET_LOG.
SERVER = """
import os, sys
LOG = os.environ["BGMGEN_TEST_NET_LOG"]
LOCAL = ("127.", "::1", "localhost", "0.0.0.0")

def audit(event, args):
    if event == "socket.connect":
        address = args[1]
        host = address[0] if isinstance(address, tuple) else None
    elif event == "socket.getaddrinfo":
        host = args[0]
    else:
        return
    if isinstance(host, bytes):
        host = host.decode(errors="replace")
    if host and not str(host).startswith(LOCAL):
        with open(LOG, "a") as f:
            f.write(f"{event} {host}\\n")

sys.addaudithook(audit)
from bgmgen.cli import main
sys.exit(main(["ui", *sys.argv[1:]]))
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def duration_of(path: Path) -> float:
    out = subprocess.run(["ffprobe", "-v", "error", "-show_entries", "format=duration", "-of", "csv=p=0", str(path)],
                         capture_output=True, text=True, check=True).stdout
    return float(out)


@pytest.fixture
def server(tmp_path):
    """`bgmgen ui` on a free port with its own working folder and analysis cache; yields (url, net log)."""
    port = free_port()
    net_log = tmp_path / "server-connections.txt"
    net_log.write_text("")
    env = {**os.environ, "BGMGEN_TEST_NET_LOG": str(net_log), "XDG_CACHE_HOME": str(tmp_path / "cache")}
    for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):  # the command sets what it needs itself
        env.pop(name, None)
    with open(tmp_path / "server.out", "w+") as out, open(tmp_path / "server.err", "w+") as err:
        proc = subprocess.Popen([sys.executable, "-c", SERVER, "--port", str(port), "--workdir",
                                 str(tmp_path / "work")], stdout=out, stderr=err, env=env, cwd=tmp_path)
        try:
            deadline = time.monotonic() + START_TIMEOUT_S
            url = None
            while time.monotonic() < deadline and url is None:
                if proc.poll() is not None:
                    err.seek(0)
                    pytest.fail(f"bgmgen ui exited with {proc.returncode}: {err.read()[-2000:]}")
                out.seek(0)
                for line in out.read().splitlines():
                    if line.startswith("bgmgen ui: http://"):
                        url = line.split()[2].rstrip("/")
                time.sleep(0.5)
            assert url == f"http://127.0.0.1:{port}", f"no address printed in {START_TIMEOUT_S} s"
            yield url, net_log
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                code = proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                code = proc.wait()
    assert code == 143, f"bgmgen ui did not stop cleanly on SIGTERM (exit {code})"


@pytest.fixture
def browser(tmp_path):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    downloads = tmp_path / "downloads"
    downloads.mkdir()
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1400,2100",
                "--mute-audio", "--no-first-run", "--disable-background-networking", "--disable-component-update",
                "--disable-sync", "--disable-default-apps"):
        options.add_argument(arg)
    options.add_experimental_option("prefs", {"download.default_directory": str(downloads),
                                              "download.prompt_for_download": False})
    options.set_capability("goog:loggingPrefs", {"performance": "ALL"})
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    driver.downloads = downloads
    try:
        yield driver
    finally:
        driver.quit()


def test_score_retake_download_in_a_browser(server, browser, tmp_path):
    from media import make_video
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    url, net_log = server
    clip = make_video(tmp_path / "clip.mp4", duration=CLIP_S, cuts=[2.0, 3.5], moving=[False, True, False])
    shots = tmp_path / "screenshots"
    shots.mkdir()
    requested: set[str] = set()

    def screenshot(name: str) -> Path:
        path = shots / f"{len(list(shots.iterdir())) + 1:02d}-{name}.png"
        browser.save_screenshot(str(path))
        return path

    def record_requests() -> None:
        for entry in browser.get_log("performance"):
            message = json.loads(entry["message"])["message"]
            if message["method"] == "Network.requestWillBeSent":
                requested.add(message["params"]["request"]["url"])

    def text_of(element_id: str) -> str:
        return browser.find_element(By.ID, element_id).text

    def video_state(element_id: str) -> dict | None:
        return browser.execute_script(
            "const v = document.querySelector(arguments[0] + ' video');"
            "return v && v.src ? {src: v.src, duration: v.duration, ready: v.readyState,"
            " error: v.error && v.error.code, playable: v.canPlayType('video/mp4')} : null;", f"#{element_id}")

    wait = WebDriverWait(browser, TAKE_TIMEOUT_S, poll_frequency=0.2)

    # 1. The page, then the clip dropped into it.
    browser.get(url + "/")
    wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#upload input[type=file]"))
    assert browser.title == "bgmgen"
    screenshot("empty-page")
    browser.find_element(By.CSS_SELECTOR, "#upload input[type=file]").send_keys(str(clip))
    wait.until(lambda d: "ready" in text_of("status"))
    screenshot("uploaded")

    # 2. Score: the progress names the stages, then the scored video plays in the page.
    browser.find_element(By.ID, "score").click()
    progress_seen: set[str] = set()
    progress_shot = None

    def first_take_done(d) -> bool:
        nonlocal progress_shot
        texts = d.execute_script(
            "return [...document.querySelectorAll('.progress-level-inner')].map(e => e.textContent)")
        for text in texts or []:
            if "%" in text:
                progress_seen.add(text.split(" - ")[0].strip())
                if progress_shot is None:
                    progress_shot = screenshot("progress")
        return "take 1 scored" in text_of("status")

    wait.until(first_take_done)
    assert len(progress_seen) >= 2, f"the progress showed {progress_seen}"
    wait.until(lambda d: (video_state("take-video") or {}).get("ready", 0) >= 1)
    state = video_state("take-video")
    assert state["error"] is None and state["playable"] in ("maybe", "probably"), state
    assert abs(state["duration"] - duration_of(clip)) < 0.1, state
    assert state["src"].startswith(f"{url}/gradio_api/file=")
    facts = text_of("facts")
    assert "Take 1" in facts and f"{CLIP_S:.1f} s" in facts and "2 cuts" in facts and "BPM" in facts, facts
    assert browser.execute_script("const i = document.querySelector('#report img'); return i && i.naturalWidth") > 0
    screenshot("first-take")

    # 3. Another mood: a second take, listed beside the first.
    browser.find_element(By.CSS_SELECTOR, "#mood input").click()
    wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "li[data-testid=dropdown-option][aria-label=calm]"))
    browser.find_element(By.CSS_SELECTOR, "li[data-testid=dropdown-option][aria-label=calm]").click()
    t0 = time.monotonic()
    browser.find_element(By.ID, "score").click()
    wait.until(lambda d: "take 2 scored" in text_of("status"))
    retake_s = time.monotonic() - t0
    assert "mood calm (chosen)" in text_of("facts") and "analysis from the cache" in text_of("facts")
    wait.until(lambda d: (video_state("take-video") or {}).get("ready", 0) >= 1)
    assert abs(video_state("take-video")["duration"] - duration_of(clip)) < 0.1
    rows = browser.execute_script(
        "return [...document.querySelectorAll('#takes [role=row]')].filter(r => r.getAttribute('aria-rowindex') > 1)"
        ".map(r => r.innerText.replace(/\\s+/g, ' ').trim())")
    assert len(rows) == 2 and rows[0].startswith("1 ") and rows[1].startswith("2 calm"), rows
    # The first take comes up beside it for comparison.
    wait.until(lambda d: (video_state("compare-video") or {}).get("ready", 0) >= 1)
    assert "Take 1" in text_of("compare-facts") and "mood calm" not in text_of("compare-facts")
    assert browser.find_elements(By.CSS_SELECTOR, "#compare-downloads a[download$='.mid']")
    final = screenshot("second-take")
    if os.environ.get("BGMGEN_UI_SCREENSHOT"):
        shutil.copyfile(final, os.environ["BGMGEN_UI_SCREENSHOT"])

    # 4. Download the second take's MIDI.
    link = browser.find_element(By.CSS_SELECTOR, "#downloads a[download$='.mid']")
    link.click()
    wait.until(lambda d: glob.glob(str(browser.downloads / "*.mid")))
    import pretty_midi

    midi = pretty_midi.PrettyMIDI(glob.glob(str(browser.downloads / "*.mid"))[0])
    notes = [n for inst in midi.instruments for n in inst.notes]
    assert notes and max(n.end for n in notes) <= CLIP_S + 0.05

    # 5. Another take: the next seed, same mood.
    browser.find_element(By.ID, "another").click()
    wait.until(lambda d: "take 3 scored" in text_of("status"))
    assert browser.find_element(By.CSS_SELECTOR, "#seed input").get_attribute("value") == "1"
    assert "seed 1" in text_of("facts") and "mood calm" in text_of("facts")

    # 6. A file that is not a video: the CLI's one line in the page; the server keeps serving.
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"not a video\n" * 50)
    record_requests()
    browser.get(url + "/")
    wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#upload input[type=file]"))
    browser.find_element(By.CSS_SELECTOR, "#upload input[type=file]").send_keys(str(bad))
    wait.until(lambda d: "bad.mp4" in text_of("status"))
    browser.find_element(By.ID, "score").click()
    expected = "bad.mp4: not a video file ffprobe can read"
    wait.until(lambda d: any(expected in t for t in d.execute_script(
        "return [...document.querySelectorAll('[data-testid=toast-text]')].map(e => e.innerText)")))
    screenshot("bad-input")
    with urllib.request.urlopen(url + "/", timeout=30) as response:
        assert response.status == 200

    # Nothing but this machine, from the browser or the server.
    record_requests()
    elsewhere = sorted(u for u in requested if not u.startswith((url + "/", "data:", "blob:")))
    assert not elsewhere, elsewhere
    assert net_log.read_text() == "", net_log.read_text()
    print(f"\nscreenshots: {shots}; second take {retake_s:.1f} s in the browser")

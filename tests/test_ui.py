"""`bgmgen ui` without a browser: the functions behind the page (bgmgen/ui/studio.py: add a video, score a take,
list takes, re-score with another mood) on a clip the tests make, the one-line messages (the CLI's words), the
working-folder rules (sanitised names, upload limit, ids), `bgmgen ui` without Gradio, and - with Gradio
installed, in this process - the server's file policy (403 outside the working folder), the upload limit and a
page that loads nothing from elsewhere.

The browser test is tests/test_ui_browser.py. About 30 s on a 2-core CPU (two takes and one re-take).
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import urllib.error
import urllib.parse
import urllib.request
from html.parser import HTMLParser
from pathlib import Path

import pytest

from bgmgen.app.options import ScoreOptions
from bgmgen.core.errors import InputError
from bgmgen.ui.options import UiOptions
from bgmgen.ui.page import WorkdirFilesOnly
from bgmgen.ui.studio import (
    STAGE_PROGRESS,
    TAKE_COLUMNS,
    Studio,
    TakeSettings,
    facts_markdown,
    safe_file_name,
    takes_rows,
)

REPO = Path(__file__).resolve().parent.parent
CLIP_S = 4.0
CLIP_CUTS = (1.5, 3.0)

pytestmark = pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="ffmpeg is not installed")
needs_gradio = pytest.mark.skipif(
    importlib.util.find_spec("gradio") is None,
    reason="gradio is not installed (the ui extra: pip install -e '.[ui]', or scripts/bootstrap)")


def make_clip(path: Path, **kw) -> Path:
    from media import make_video  # tests/media.py (conftest binds `tests` to this folder)

    return make_video(path, **{"duration": CLIP_S, "cuts": list(CLIP_CUTS), "moving": [False, True, False], **kw})


def duration_of(path: Path) -> float:
    out = subprocess.run(["ffprobe", "-v", "error", "-show_entries", "format=duration", "-of", "csv=p=0", str(path)],
                         capture_output=True, text=True, check=True).stdout
    return float(out)


def bgmgen_cmd() -> list[str]:
    exe = REPO / ".venv" / "bin" / "bgmgen"
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "bgmgen"]


# -- names, settings, the file policy: no video needed ------------------------------------------------------

@pytest.mark.parametrize("given, expected", [
    ("holiday.mp4", "holiday.mp4"),
    ("../../etc/passwd", "passwd"),
    ("C:\\Users\\me\\Film 1.MOV", "Film_1.mov"),
    (".hidden.mp4", "hidden.mp4"),
    ("été 2024 (final).mkv", "été_2024_final.mkv"),
    ("a.tar.gz", "a_tar.gz"),
    ("clip.mp4;rm -rf ~", "clip_mp4_rm_-rf"),   # no extension of letters and digits: all of it is the name
    ("mp4", "mp4"),
    ("", "video"),
    ("...", "video"),
    ("x" * 300 + ".webm", "x" * 64 + ".webm"),
])
def test_safe_file_name(given, expected):
    assert safe_file_name(given) == expected
    assert "/" not in expected and "\\" not in expected and not expected.startswith(".")


@pytest.mark.parametrize("settings, words", [
    (TakeSettings(mood="sleepy"), "mood 'sleepy': choose one of calm"),
    (TakeSettings(tempo=300), "the tempo in BPM must be between 60 and 150, got 300"),
    (TakeSettings(seed=-1), "the seed must be a whole number"),
    (TakeSettings(mix="loud"), "mix 'loud': choose one of replace, keep, duck"),
    (TakeSettings(guidance=99), "the guidance scale must be between 0 and 20, got 99"),
])
def test_take_settings_out_of_range(settings, words):
    with pytest.raises(InputError, match=re.escape(words)):
        settings.checked()
    assert TakeSettings(mood="calm", tempo=90, seed=3, mix="duck", guidance=2.0).checked()


def test_workdir_files_only(tmp_path):
    work = tmp_path / "work"
    (work / "videos").mkdir(parents=True)
    inside = work / "videos" / "a.mp4"
    inside.write_bytes(b"x")
    (tmp_path / "secret.txt").write_text("no")
    (work / "link").symlink_to(tmp_path / "secret.txt")
    policy = WorkdirFilesOnly(app=None, workdir=str(work))
    assert policy.allowed(f"/gradio_api/file={inside}")
    assert policy.allowed("/gradio_api/upload") and policy.allowed("/") and policy.allowed("/assets/index.js")
    for refused in ("/gradio_api/file=/etc/passwd", f"/gradio_api/file={work}/../secret.txt",
                    f"/gradio_api/file={work}/link", "/gradio_api/file=https://example.com/x.png",
                    "/gradio_api/file=secret.txt", "/gradio_api/file/etc/passwd", f"/gradio_api/file={work}x/a",
                    "/gradio_api/proxy=https://example.com/"):
        assert not policy.allowed(refused), refused


# -- the Studio on a real clip: add, score, list, re-score --------------------------------------------------

@pytest.fixture(scope="module")
def studio_run(tmp_path_factory):
    """One first take (default settings) of a 4 s clip with a tone, in a fresh working folder and analysis cache."""
    root = tmp_path_factory.mktemp("ui")
    (root / "upload").mkdir()
    clip = make_clip(root / "upload" / "My Clip!.mp4", audio="tone")
    studio = Studio(root / "work", ScoreOptions(cache_dir=str(root / "cache")))
    video = studio.add_video(clip)
    progress: list[tuple[float, str]] = []
    take = studio.score_take(video.id, TakeSettings(), lambda fraction, words: progress.append((fraction, words)))
    return {"root": root, "clip": clip, "studio": studio, "video": video, "take": take, "progress": progress}


def test_add_video_copies_into_the_working_folder(studio_run, tmp_path):
    studio, video, clip = studio_run["studio"], studio_run["video"], studio_run["clip"]
    assert video.name == "My_Clip.mp4" and re.fullmatch(r"[0-9a-f]{16}", video.id)
    assert video.path == studio.workdir / "videos" / video.id / "My_Clip.mp4"
    assert video.path.read_bytes() == clip.read_bytes()
    # The same content under another name is the same video (its takes stay listed).
    again = tmp_path / "renamed.mp4"
    shutil.copyfile(clip, again)
    assert studio.add_video(again, name="whatever.mp4") == video
    assert studio.video(video.id) == video
    for bad_id in ("../../etc", "", None, "0123456789abcdeg"):
        with pytest.raises(InputError, match="no video chosen"):
            studio.video(bad_id)


def test_upload_limit(studio_run, tmp_path):
    small = Studio(tmp_path / "work", max_upload_bytes=1000)
    with pytest.raises(InputError, match=r"My_Clip\.mp4: \d+ MB is over the upload limit of 0 MB; .*--max-upload-mb"):
        small.add_video(studio_run["clip"])
    assert not any((tmp_path / "work" / "videos").iterdir())


def test_first_take(studio_run):
    take, video = studio_run["take"], studio_run["video"]
    assert take.number == 1 and take.folder == video.folder / "take-001"
    assert sorted(p.name for p in take.folder.iterdir()) == sorted(
        ["My_Clip.mid", "My_Clip.wav", "My_Clip.mp4", "report.png", "run.json"])
    assert [p.name for p in take.downloads] == ["My_Clip.mp4", "My_Clip.mid", "My_Clip.wav"]
    assert abs(duration_of(take.files["video"]) - CLIP_S) < 0.1
    f = take.facts
    assert abs(f.duration_s - CLIP_S) < 0.05 and f.cuts == len(CLIP_CUTS)
    assert f.mood_source != "user" and not f.analysis_cached and 60 <= f.bpm <= 150
    assert f.mix == "duck" and "audible" in f.mix_reason  # the clip has a tone: the default ducks the music
    assert take.settings == TakeSettings()
    run = json.loads(take.files["run"].read_text())
    assert run["command"] == ["bgmgen", "ui"] and run["options"]["mood"] is None


def test_progress_follows_the_stages(studio_run):
    progress = studio_run["progress"]
    fractions = [f for f, _ in progress]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0 and progress[-1][1] == "done"
    words = {w for _, w in progress}
    for stage in ("probe", "analysis: decode", "analysis: shots", "generate", "render", "mux"):
        assert STAGE_PROGRESS[stage][1] in words, stage


def test_retake_with_another_mood_is_fast_and_listed(studio_run):
    studio, video, first = studio_run["studio"], studio_run["video"], studio_run["take"]
    second = studio.score_take(video.id, TakeSettings(mood="calm", seed=1, tempo=100, mix="replace", guidance=2.0))
    assert second.number == 2
    f = second.facts
    assert f.mood == "calm" and f.mood_source == "user" and f.mix == "replace" and f.guidance == 2.0
    assert abs(f.bpm - 100) < 8, f.bpm  # the forced tempo, fitted to the cuts
    assert f.analysis_cached, "a re-take reads the analysis from the cache"
    assert f.seconds < first.facts.seconds, (f.seconds, first.facts.seconds)
    assert second.settings == TakeSettings(mood="calm", tempo=100, seed=1, mix="replace", guidance=2.0)
    # Both takes stay listed, each with its own files.
    takes = studio.list_takes(video.id)
    assert [t.number for t in takes] == [1, 2]
    assert studio.take(video.id, 1).files["midi"] != studio.take(video.id, 2).files["midi"]
    rows = takes_rows(takes)
    assert len(rows[0]) == len(TAKE_COLUMNS) and rows[1][:2] == [2, "calm"]
    text = facts_markdown(second)
    assert "**Take 2**" in text and "mood calm (chosen)" in text and "analysis from the cache" in text
    import pretty_midi

    midi = pretty_midi.PrettyMIDI(str(second.files["midi"]))
    notes = [n for inst in midi.instruments for n in inst.notes]
    assert notes and max(n.end for n in notes) <= CLIP_S + 0.05
    with pytest.raises(InputError, match="take 7: not found"):
        studio.take(video.id, 7)


def test_bad_video_gets_the_cli_message(studio_run, tmp_path):
    """A file that is not a video: the page's message is the CLI's line, naming the upload, and no take is left."""
    studio = studio_run["studio"]
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"this is not a video\n" * 20)
    video = studio.add_video(bad)
    with pytest.raises(InputError) as caught:
        studio.score_take(video.id, TakeSettings())
    message = studio.error_message(caught.value, video)
    assert str(studio.workdir) not in message and message.startswith("bad.mp4: ")
    cli = subprocess.run([*bgmgen_cmd(), "score", str(bad), "--out", str(tmp_path / "out")], capture_output=True,
                         text=True, timeout=300, check=False, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert cli.returncode == 2
    lines = [ln for ln in cli.stderr.splitlines() if ln.startswith("bgmgen: error:")]
    assert lines == [f"bgmgen: error: {message.replace('bad.mp4', str(bad), 1)}"], cli.stderr
    assert studio.list_takes(video.id) == []
    assert not [p for p in video.folder.iterdir() if p.is_dir()], "a failed take leaves no folder"


def test_error_message_of_a_bug_names_the_video(studio_run):
    studio, video = studio_run["studio"], studio_run["video"]
    message = studio.error_message(ZeroDivisionError("division by zero"), video)
    assert message == ("My_Clip.mp4: internal error: ZeroDivisionError: division by zero "
                       "(run again with --debug for the traceback)")


# -- the command ---------------------------------------------------------------------------------------------

def test_ui_without_gradio_prints_the_install_line(tmp_path):
    # sys.modules["gradio"] = None: importlib finds no gradio, as in an install without the extra.
    code = ("import sys; sys.modules['gradio'] = None; from bgmgen.cli import main; "
            f"sys.exit(main(['ui', '--workdir', {str(tmp_path / 'work')!r}]))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.splitlines() == [
        ("bgmgen: error: bgmgen ui needs Gradio, an optional extra: pip install 'bgmgen[ui]' "
         "(or scripts/bootstrap install)")]
    assert proc.stdout == ""


def test_ui_options_are_checked():
    proc = subprocess.run([*bgmgen_cmd(), "ui", "--port", "70000"], capture_output=True, text=True, timeout=120,
                          check=False)
    assert proc.returncode == 2
    assert proc.stderr.strip() == ("bgmgen: error: Invalid value for '--port': the port must be between 1 and "
                                   "65535, got 70000 (see `bgmgen ui --help`)")


# -- the server, in this process (Gradio installed) ---------------------------------------------------------

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get(url: str, data: bytes | None = None, headers: dict | None = None) -> tuple[int, bytes]:
    request = urllib.request.Request(url, data=data, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as err:
        return err.code, err.read()


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """`bgmgen ui`'s page started in this process on a free port, 1 MB upload limit; (url, studio)."""
    pytest.importorskip("gradio", reason="gradio is not installed (the ui extra)")
    from bgmgen.ui import page

    root = tmp_path_factory.mktemp("served")
    saved = dict(os.environ)
    workdir = page.prepare_workdir(str(root / "work"))
    page.offline_environment(workdir)
    studio = Studio(workdir, ScoreOptions(cache_dir=str(root / "cache")))
    blocks, url = page.launch(studio, UiOptions(port=free_port(), max_upload_mb=1))
    try:
        yield url.rstrip("/"), studio
    finally:
        blocks.close()
        os.environ.clear()
        os.environ.update(saved)


@needs_gradio
def test_requests_outside_the_working_folder_are_refused(served):
    url, studio = served
    beside = studio.workdir.parent / "beside.txt"
    beside.write_text("not for the page")
    mine = studio.workdir / "videos" / "note.txt"
    mine.write_text("the app wrote this")
    assert get(f"{url}/gradio_api/file={mine}") == (200, b"the app wrote this")
    quoted = urllib.parse.quote
    for path in ("/etc/passwd", f"{studio.workdir}/../beside.txt", str(beside)):
        for route in (f"/gradio_api/file={path}", f"/gradio_api/file={quoted(path)}",
                      f"/gradio_api/file/{path.lstrip('/')}"):
            status, body = get(url + route)
            assert status in (403, 404), (route, status)
            assert b"root:" not in body and b"not for the page" not in body
    assert get(f"{url}/gradio_api/file=%2e%2e/%2e%2e/%2e%2e/etc/passwd")[0] in (403, 404)
    # The server fetches no URL for the page.
    assert get(f"{url}/gradio_api/file=https://example.com/a.png")[0] == 403
    assert get(f"{url}/gradio_api/proxy=https://example.com/")[0] == 403


@needs_gradio
def test_upload_limit_is_enforced_by_the_server(served):
    url, studio = served
    boundary = "bgmgen-test-boundary"

    def upload(size: int) -> int:
        body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"files\"; filename=\"big.mp4\"\r\n"
                f"Content-Type: video/mp4\r\n\r\n").encode() + b"\0" * size + f"\r\n--{boundary}--\r\n".encode()
        return get(f"{url}/gradio_api/upload", data=body,
                   headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})[0]

    assert upload(2 * 2**20) == 413
    assert upload(1000) == 200
    # Uploads land in the working folder (Gradio's part of it).
    assert list((studio.workdir / "gradio").rglob("big.mp4"))


class _LoadedUrls(HTMLParser):
    """The URLs a page makes the browser load: src/href of script, link, img, iframe, media and embed tags."""

    LOADING_TAGS = frozenset({"script", "link", "img", "iframe", "source", "video", "audio", "embed", "object",
                              "track"})

    def __init__(self):
        super().__init__()
        self.urls: list[str] = []
        self.styles: list[str] = []
        self._in_style = False

    def handle_starttag(self, tag, attrs):
        self._in_style = tag == "style"
        if tag in self.LOADING_TAGS:
            self.urls += [v for k, v in attrs if k in ("src", "href", "data") and v]

    def handle_data(self, data):
        if self._in_style:
            self.styles.append(data)


def css_urls(css: str) -> list[str]:
    found = re.findall(r"url\(\s*['\"]?([^'\")]+)", css) + re.findall(r"@import\s+['\"]([^'\"]+)", css)
    return [u for u in found if not u.startswith("data:")]


@needs_gradio
def test_page_loads_nothing_from_elsewhere(served):
    url, _ = served
    status, html = get(url + "/")
    assert status == 200
    parser = _LoadedUrls()
    parser.feed(html.decode())
    loaded = [urllib.parse.urljoin(url + "/", u) for u in parser.urls]
    assert loaded and all(u.startswith(url + "/") for u in loaded), loaded
    stylesheets = [u for u in loaded if ".css" in u] + [url + "/theme.css"]
    for sheet in stylesheets:
        status, css = get(sheet)
        assert status == 200, sheet
        assert all(urllib.parse.urljoin(sheet, u).startswith(url + "/") for u in css_urls(css.decode())), sheet
    for style in parser.styles:
        assert all(urllib.parse.urljoin(url + "/", u).startswith(url + "/") for u in css_urls(style))
    assert os.environ["GRADIO_ANALYTICS_ENABLED"] == "False"
    config = json.loads(get(url + "/config")[1])
    assert config["analytics_enabled"] is False


@needs_gradio
def test_a_port_in_use_is_one_line(served):
    from bgmgen.ui import page

    url, studio = served
    port = int(url.rsplit(":", 1)[1])
    with pytest.raises(InputError, match=rf"^--port {port} on 127\.0\.0\.1: cannot listen \(in use\); choose another"):
        page.launch(studio, UiOptions(port=port))

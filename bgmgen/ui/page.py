"""The Gradio page of `bgmgen ui` over a Studio, the server's file policy, and `serve` (what the command runs).

Offline by construction: Gradio's analytics are off (GRADIO_ANALYTICS_ENABLED and analytics_enabled=False), the
theme uses the system's fonts, no share link unless --share, the Hugging Face hub is not asked for CLIP or BLIP
weights (HF_HUB_OFFLINE unless set otherwise: only weights already on this machine are used), and the server does
not fetch URLs for the browser (`/gradio_api/file=https://...` is refused by WorkdirFilesOnly).

Files: Gradio's uploads and the copies of outputs it serves live in WORKDIR/gradio (GRADIO_TEMP_DIR), the
videos and takes in WORKDIR/videos (studio.py); `allowed_paths` is WORKDIR alone, and WorkdirFilesOnly refuses
(403) every file request for a path outside it before Gradio sees it.
"""

from __future__ import annotations

import importlib.util
import os
import time
from pathlib import Path
from typing import Any

from bgmgen.app.options import ScoreOptions
from bgmgen.app.outputs import writable_location
from bgmgen.core.errors import BgmgenError, InputError, one_line
from bgmgen.ui.options import UiOptions
from bgmgen.ui.studio import TAKE_COLUMNS, Studio, TakeSettings, facts_markdown, takes_rows

INSTALL_LINE = "pip install 'bgmgen[ui]'"
GRADIO_FOLDER = "gradio"
FILE_ROUTES = ("/gradio_api/file=", "/gradio_api/file/")
PROXY_ROUTE = "/gradio_api/proxy="
AUTO = "auto"  # the choice that leaves a control to `bgmgen score`'s default
SCORE_GROUP = "score"  # every event that scores shares one queue slot: one take at a time
PAGE_CSS = "#facts p { margin: 0.15em 0; }"
CACHE_CLEANUP = (3600, 86400)  # Gradio's served copies: checked hourly, deleted after a day (takes stay)


class GradioMissing(BgmgenError):
    """`bgmgen ui` without the optional extra: exit 2 with the install line."""

    exit_code = 2


def gradio_available() -> bool:
    return importlib.util.find_spec("gradio") is not None


def prepare_workdir(workdir: str | None) -> Path:
    """The working folder (created), or InputError when it cannot be written."""
    from bgmgen.ui.studio import default_workdir

    folder = Path(workdir).expanduser() if workdir else default_workdir()
    reason = writable_location(folder)
    if reason:
        raise InputError(f"--workdir {folder}: cannot write there: {reason}; choose another folder")
    folder = folder.resolve()
    (folder / GRADIO_FOLDER).mkdir(parents=True, exist_ok=True)
    return folder


def offline_environment(workdir: Path) -> None:
    """Environment for an offline Gradio whose files stay in `workdir`; before gradio is imported (some of its
    modules read these when they are imported)."""
    os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"
    os.environ["HF_HUB_DISABLE_TELEMETRY"] = "1"
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ["GRADIO_TEMP_DIR"] = str(workdir / GRADIO_FOLDER)
    os.environ["GRADIO_EXAMPLES_CACHE"] = str(workdir / GRADIO_FOLDER / "examples")
    os.environ["GRADIO_SSR_MODE"] = "False"
    os.environ["GRADIO_MCP_SERVER"] = "False"


class WorkdirFilesOnly:
    """ASGI middleware: a file request is served only for a path inside the working folder; URLs and paths
    elsewhere (`/gradio_api/file=/etc/passwd`, `..` included) get 403 before Gradio sees them."""

    def __init__(self, app, workdir: str):
        self.app = app
        self.root = os.path.realpath(workdir)

    def allowed(self, request_path: str) -> bool:
        if request_path.startswith(PROXY_ROUTE):
            return False
        for route in FILE_ROUTES:
            if request_path.startswith(route):
                target = request_path[len(route):]
                if "://" in target or not os.path.isabs(target):
                    return False
                real = os.path.realpath(target)
                return os.path.commonpath([real, self.root]) == self.root
        return True

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http" and not self.allowed(scope.get("path", "")):
            body = b"File not allowed: bgmgen ui serves only files in its working folder."
            await send({"type": "http.response.start", "status": 403,
                        "headers": [(b"content-type", b"text/plain; charset=utf-8"),
                                    (b"content-length", str(len(body)).encode())]})
            await send({"type": "http.response.body", "body": body})
            return
        await self.app(scope, receive, send)


def theme():
    """Gradio's default theme on the system's fonts (no font files fetched, from anywhere)."""
    import gradio as gr

    return gr.themes.Default(primary_hue="indigo", font=["system-ui", "ui-sans-serif", "sans-serif"],
                             font_mono=["ui-monospace", "monospace"])


def _settings(mood: str | None, tempo: str | float | None, seed: float | None, mix: str | None,
              guidance: float | None) -> TakeSettings:
    """The page's control values -> TakeSettings (AUTO and empty fields: the default); TakeSettings.checked
    then checks the ranges."""
    try:
        whole_seed = int(seed)
        if whole_seed != float(seed):
            raise ValueError
    except (TypeError, ValueError, OverflowError):
        raise InputError(f"expected a whole number (the seed), got {seed!r}") from None
    tempo_text = str(tempo if tempo is not None else "").strip()
    try:
        bpm = float(tempo_text) if tempo_text else None
    except ValueError:
        raise InputError(f"expected a number (the tempo in BPM), got {tempo_text!r}") from None
    return TakeSettings(mood=None if mood in (None, "", AUTO) else mood, tempo=bpm,
                        seed=whole_seed, mix=None if mix in (None, "", AUTO) else mix,
                        guidance=None if guidance is None else float(guidance))


def build_page(studio: Studio):
    """The gr.Blocks page over `studio` (not launched)."""
    import gradio as gr

    from bgmgen.audio.mux import MODES
    from bgmgen.core.constants import MAX_BPM, MIN_BPM
    from bgmgen.music.generate import DEFAULT_GUIDANCE
    from bgmgen.ui.studio import MAX_GUIDANCE
    from bgmgen.video.moods import MOODS

    def fail(err: BaseException, video=None):
        if studio.options.debug:
            import traceback

            traceback.print_exception(err)
        return gr.Error(studio.error_message(err, video), print_exception=False)

    def take_choices(takes) -> list[tuple[str, int]]:
        return [(t.label, t.number) for t in reversed(takes)]

    def show(video_id: str | None, number: int | None) -> tuple[Any, Any, str, list[str] | None]:
        if not video_id or number is None:
            return None, None, "", None
        try:
            take = studio.take(video_id, int(number))
        except BgmgenError as err:
            raise fail(err) from None
        return (str(take.files["video"]), str(take.files["report"]), facts_markdown(take),
                [str(p) for p in take.downloads])

    def chosen(upload: str | None):
        """The uploaded video into the working folder, with the takes it already has (from earlier visits)."""
        if not upload:
            return None, [], gr.update(choices=[], value=None), gr.update(choices=[], value=None), ""
        try:
            video = studio.add_video(upload)
            takes = studio.list_takes(video.id)
        except BgmgenError as err:
            raise fail(err) from None
        note = (f"{video.name}: {len(takes)} earlier take(s) listed below." if takes else
                f"{video.name}: ready; press Score.")
        return (video.id, takes_rows(takes), gr.update(choices=take_choices(takes), value=None),
                gr.update(choices=take_choices(takes), value=None), note)

    # Gradio recognises the progress tracker by this default value.
    def score(upload, mood, tempo, seed, mix, guidance, compare_number, progress=gr.Progress()):  # noqa: B008
        video = None
        try:
            if not upload:
                raise InputError("no video chosen; drop or choose a video first")
            settings = _settings(mood, tempo, seed, mix, guidance)
            video = studio.add_video(upload)
            progress(0.0, desc="starting")
            take = studio.score_take(video.id, settings, lambda fraction, words: progress(fraction, desc=words))
            takes = studio.list_takes(video.id)
        except Exception as err:  # noqa: BLE001 - every failure becomes the page's one-line message
            raise fail(err, video) from None
        choices = take_choices(takes)
        if compare_number is None and len(takes) > 1:  # a second take: compare it with the one before
            compare_number = takes[-2].number
        status = f"{video.name}: take {take.number} scored in {take.facts.seconds:.1f} s" + (
            " (analysis from the cache)." if take.facts.analysis_cached else ".")
        return (video.id, str(take.files["video"]), str(take.files["report"]), facts_markdown(take),
                [str(p) for p in take.downloads], takes_rows(takes), gr.update(choices=choices, value=take.number),
                gr.update(choices=choices, value=compare_number), status)

    def another_take(upload, mood, tempo, seed, mix, guidance, compare_number,
                     progress=gr.Progress()):  # noqa: B008
        next_seed = int(seed or 0) + 1
        return (*score(upload, mood, tempo, next_seed, mix, guidance, compare_number, progress), next_seed)

    with gr.Blocks(title="bgmgen", analytics_enabled=False, delete_cache=CACHE_CLEANUP) as page:
        video_id = gr.State(None)
        gr.Markdown("## bgmgen: piano music for your video\nDrop a video, score it, change the mood or take "
                    "another take; every take stays listed below. Everything runs on this computer.")
        with gr.Row():
            with gr.Column(scale=2):
                upload = gr.Video(label="Your video", sources=["upload"], elem_id="upload")
                with gr.Row():
                    mood = gr.Dropdown([("from the picture", AUTO), *[(m, m) for m in MOODS]], value=AUTO,
                                       label="Mood", elem_id="mood")
                    mix = gr.Radio([AUTO, *MODES], value=AUTO, label="Original sound",
                                   info="auto: replace if silent, else duck", elem_id="mix")
                with gr.Row():
                    tempo = gr.Textbox("", label="Tempo (BPM)", elem_id="tempo",
                                       placeholder=f"from the video ({MIN_BPM:g}-{MAX_BPM:g})")
                    seed = gr.Number(0, label="Seed", precision=0, minimum=0, elem_id="seed")
                guidance = gr.Slider(0.0, min(MAX_GUIDANCE, 5.0), value=DEFAULT_GUIDANCE, step=0.1,
                                     label="Guidance (how closely the music follows the video's rhythm plan)",
                                     elem_id="guidance")
                with gr.Row():
                    score_button = gr.Button("Score", variant="primary", elem_id="score")
                    another_button = gr.Button("Another take (next seed)", elem_id="another")
                status = gr.Markdown("", elem_id="status")
                downloads = gr.File(label="Download this take (mp4, MIDI, WAV)", file_count="multiple",
                                    interactive=False, elem_id="downloads")
            with gr.Column(scale=3):
                take_video = gr.Video(label="Scored video", interactive=False, elem_id="take-video")
                facts = gr.Markdown("", elem_id="facts")
                report = gr.Image(label="Report", type="filepath", interactive=False, elem_id="report")
        gr.Markdown("### Takes")
        takes_table = gr.Dataframe(headers=list(TAKE_COLUMNS), value=[], interactive=False, elem_id="takes")
        with gr.Row():
            show_take = gr.Dropdown([], label="Show take", elem_id="show-take")
            compare_take = gr.Dropdown([], label="Compare with", elem_id="compare-take")
        with gr.Row():
            with gr.Column():
                compare_video = gr.Video(label="Compared take", interactive=False, elem_id="compare-video")
                compare_facts = gr.Markdown("", elem_id="compare-facts")
                compare_downloads = gr.File(label="Download the compared take", file_count="multiple",
                                            interactive=False, elem_id="compare-downloads")
            compare_report = gr.Image(label="Its report", type="filepath", interactive=False)

        controls = [upload, mood, tempo, seed, mix, guidance, compare_take]
        scored = [video_id, take_video, report, facts, downloads, takes_table, show_take, compare_take, status]
        # The page is the only client: no API page, no endpoints for other programs.
        private = {"api_visibility": "private"}
        upload.upload(chosen, [upload], [video_id, takes_table, show_take, compare_take, status], **private)
        upload.clear(chosen, [upload], [video_id, takes_table, show_take, compare_take, status], **private)
        # The stage progress shows on the scored video's place only (not on every output).
        scoring = {"concurrency_id": SCORE_GROUP, "concurrency_limit": 1, "show_progress_on": [take_video], **private}
        score_button.click(score, controls, scored, **scoring)
        another_button.click(another_take, controls, [*scored, seed], **scoring)
        show_take.input(show, [video_id, show_take], [take_video, report, facts, downloads], **private)
        compare_take.change(show, [video_id, compare_take],
                            [compare_video, compare_report, compare_facts, compare_downloads], **private)
    return page


def launch(studio: Studio, options: UiOptions):
    """Build and start the page without blocking; (page, local URL). Raises InputError when the port is taken."""
    from starlette.middleware import Middleware

    page = build_page(studio)
    try:
        _, local_url, _ = page.launch(
            server_name=options.host, server_port=options.port, share=options.share, prevent_thread_lock=True,
            quiet=True, inbrowser=False, show_error=True, allowed_paths=[str(studio.workdir)],
            max_file_size=options.max_upload_mb * 2**20, footer_links=[], run_history=False,
            enable_monitoring=False, ssr_mode=False, mcp_server=False, pwa=False, theme=theme(), css=PAGE_CSS,
            app_kwargs={"middleware": [Middleware(WorkdirFilesOnly, workdir=str(studio.workdir))]})
    except OSError as err:
        page.close()
        where = f"--port {options.port}" if options.port else "ports 7860-7959"
        # Gradio's own words advise an environment variable; ours name the flag.
        reason = "in use" if "Cannot find empty port" in str(err) else one_line(err)
        raise InputError(f"{where} on {options.host}: cannot listen ({reason}); choose another --port") from None
    return page, local_url


def serve(options: UiOptions) -> int:
    """`bgmgen ui`: start the page, print its address, serve until Ctrl-C or SIGTERM."""
    if not gradio_available():
        raise GradioMissing(f"bgmgen ui needs Gradio, an optional extra: {INSTALL_LINE} "
                            "(or scripts/bootstrap install)")
    workdir = prepare_workdir(options.workdir)
    offline_environment(workdir)
    studio = Studio(workdir, ScoreOptions(debug=options.debug),
                    max_upload_bytes=options.max_upload_mb * 2**20)
    page, local_url = launch(studio, options)
    try:
        print(f"bgmgen ui: {local_url.rstrip('/')}/ (working folder {workdir}; Ctrl-C stops it)", flush=True)
        if options.share and page.share_url:
            print(f"bgmgen ui: public link {page.share_url} (anyone with it can use this page)", flush=True)
        while True:
            time.sleep(3600)
    finally:
        page.close()

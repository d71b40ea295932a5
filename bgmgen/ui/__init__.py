"""ui: `bgmgen ui`, a local web page (Gradio) for scoring one video at a time - options (UiOptions),
studio (the plain-Python functions behind the page: the working folder, uploaded videos, takes scored with
app.score.score_one, their facts; no Gradio, unit-testable) and page (the Gradio page over a Studio, the
server's file policy and `serve`).

May import: core and app. The choices the page offers are read from the modules that own them when the page
is built (video.moods.MOODS, audio.mux.MODES, music.generate.DEFAULT_GUIDANCE), as cli.py does through
cli_values.LATE. Gradio (the optional extra `bgmgen[ui]`) and torch are imported inside functions only, so
`bgmgen --help` stays instant. Nothing imports ui/ but the CLI.
"""

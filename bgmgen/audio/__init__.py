"""audio: MIDI -> sound -> video - render (FluidSynth with a SoundFont, loudness to a target) and
mux (ffmpeg: replace, keep-and-mix or duck under the original sound).

May import: bgmgen.core, and bgmgen.video.probe for VideoInfo.
"""

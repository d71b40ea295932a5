"""Time grid, roll geometry and audio constants, derived once.

Every other module imports from here; nothing repeats these numbers.
"""


def exact_div(a: int, b: int) -> int:
    assert a % b == 0, f"{a} is not a multiple of {b}"
    return a // b


# Music time grid: 4/4, sixteenth notes.
BEATS_PER_BAR = 4
STEPS_PER_BEAT = 4  # sixteenth-note resolution
STEPS_PER_BAR = BEATS_PER_BAR * STEPS_PER_BEAT  # 16
BARS_PER_WINDOW = 8  # one diffusion sample = 8 bars (Diff-BGM)
WINDOW_STEPS = BARS_PER_WINDOW * STEPS_PER_BAR  # 128 time steps
BEATS_PER_WINDOW = exact_div(WINDOW_STEPS, STEPS_PER_BEAT)  # 32 condition tokens per window

# Piano roll: channels (onset, sustain) x time x pitch, as in Diff-BGM.
N_PITCHES = 128
ROLL_CHANNELS = 2
ONSET, SUSTAIN = 0, 1

# Continuation: windows overlap by this many bars; the overlap is inpainted.
OVERLAP_BARS = 2
OVERLAP_STEPS = OVERLAP_BARS * STEPS_PER_BAR
HOP_STEPS = WINDOW_STEPS - OVERLAP_STEPS

# Tempo range the planner may choose (BPM, quarter-note beats).
MIN_BPM = 60.0
MAX_BPM = 150.0

# Audio.
SAMPLE_RATE = 44100
TARGET_LUFS = -16.0
TRUE_PEAK_DBTP = -1.0

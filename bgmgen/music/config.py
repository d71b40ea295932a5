"""The denoiser's configuration: one definition of every architecture default (no torch here, so
the CLI and the training options can read it without importing the model).

A weight file's metadata holds its config. Files written before a field existed are read with that
field's value at the time (`from_file_meta`): v1 has no controls layout (layout 1), v1 and v2 have no
architecture ("roll").
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields

LATEST_LAYOUT = 2  # the newest controls layout (music/controls.py LAYOUTS): new models use it
ARCHITECTURES = ("melody-accompaniment", "roll")
SELECTORS = ("soft", "hard", "none")
UNMASKING_ORDERS = ("confidence", "random")  # v3 sampler (masked_diffusion.MaskedScheduler)
# Values of fields that older weight files do not record.
BEFORE_FIELD_EXISTED = {"controls_layout": 1, "architecture": "roll", "time_kernel": 0, "local_kernel": 0,
                        "bar_kernel": 0}


@dataclass(frozen=True)
class DenoiserConfig:
    d_model: int = 256
    n_layers: int = 5
    n_heads: int = 4
    ff_mult: int = 4
    segment_mask: bool = True  # SAC-Att; False = every step sees all 32 beat tokens
    mask_context_beats: int = 1  # a step also sees tokens this many beats outside its segment
    selector: str = "soft"  # "soft" | "hard" | "none"
    selector_threshold: float = 0.2  # hard selector: dynamic tokens when t <= threshold (t in [0, 1])
    controls_layout: int = LATEST_LAYOUT  # controls.LAYOUTS key: 1 = v1's 62 values, 2 adds the groove
    architecture: str = "melody-accompaniment"  # v3; "roll" = v1/v2 (Gaussian diffusion over the merged roll)
    pitch_channels: int = 8  # v3: features per key in the pitch-axis stem and head
    pitch_kernel: int = 13  # v3: width (semitones) of the pitch-axis convolutions
    time_kernel: int = 3  # v3: steps the accompaniment skip convolution sees (0: no skip; see model.py)
    dropout: float = 0.0  # residual dropout in the transformer blocks, while training only (no weights)
    local_kernel: int = 0  # v3: steps the local refinement heads see (0: none; see model.py)
    local_channels: int = 16  # v3: hidden channels of the accompaniment's local head (the melody's: 4x)
    bar_kernel: int = 0  # v3: bars the accompaniment's bar head sees, odd (5: two either side; 0: none)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_file_meta(cls, config: dict) -> "DenoiserConfig":
        """The config a weight file's metadata describes (older files: see BEFORE_FIELD_EXISTED)."""
        known = {f.name for f in fields(cls)}
        values = {**BEFORE_FIELD_EXISTED, **{k: v for k, v in config.items() if k in known}}
        return cls(**values)

"""`bgmgen eval --videos`: how well the music of `bgmgen score` outputs fits their videos.

Each output folder holds run.json (the plan: beat times, sections, requested density, motion per
beat; the analysis: cuts) and the generated MIDI; :func:`video_metrics` compares the two and
:func:`run_video_eval` prints one row per video and writes the JSON.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from bgmgen.core.errors import InputError
from bgmgen.core.jsonio import dump_json, plain
from bgmgen.eval.metrics import grooving_pattern_similarity, nan_mean, spearman_rho
from bgmgen.eval.notes import read_midi_notes
from bgmgen.eval.tables import console as _console
from bgmgen.eval.tables import fmt

VIDEO_KEYS = ("length_ratio", "cut_phrase_share", "cut_accent_share", "cut_hit_share",
              "motion_density_r", "motion_density_rho", "density_rho", "gps")


def _midi_onsets_s(path) -> tuple[np.ndarray, np.ndarray, float]:
    """(onset seconds, velocities, end time in seconds) of a MIDI file's non-drum notes."""
    import pretty_midi

    pm = pretty_midi.PrettyMIDI(str(path))
    notes = [n for i in pm.instruments if not i.is_drum for n in i.notes]
    on = np.array([n.start for n in notes])
    vel = np.array([n.velocity for n in notes], dtype=float)
    return on, vel, float(pm.get_end_time())


def video_metrics(run: dict, midi_path) -> dict:
    """Video-side metrics of one `bgmgen score` output (run.json dict + its MIDI).

    - ``music_s`` / ``video_s`` / ``length_ratio``: MIDI end time vs video duration.
    - ``cut_phrase_share``: share of cuts with a plan section boundary within one beat.
    - ``cut_accent_share``: share of cuts with an accent of the generated music within one beat;
      an accent = a 16th-note time slot whose summed onset velocity is in the top quarter of the
      song's slots and above their median (so evenly played music has no accents).
    - ``cut_hit_share``: either of the two.
    - ``motion_density_r`` / ``motion_density_rho``: Pearson / Spearman correlation between the
      plan's motion per beat and the generated onsets per beat (MIDI onsets binned by the plan's
      beat times, seconds).
    - ``density_rho``: Spearman rho between requested (plan) and generated density per beat.
    - ``gps``: grooving pattern similarity of the generated MIDI (bgmgen.eval.metrics.grooving_pattern_similarity;
      the score starts on a downbeat at time 0): how repetitive the rhythm is from bar to bar.
    """
    plan = run.get("plan") or {}
    video = run.get("video") or {}
    analysis = run.get("analysis") or {}
    on, vel, end = _midi_onsets_s(midi_path)
    bt = np.asarray(plan.get("beat_times_s") or [], dtype=float)
    cuts = np.asarray(analysis.get("cuts_s") or [], dtype=float)
    out = {"music_s": end, "video_s": video.get("duration_s"), "n_cuts": len(cuts)}
    vs = out["video_s"]
    out["length_ratio"] = end / vs if vs else math.nan
    beat_s = float(np.median(np.diff(bt))) if len(bt) > 1 else (60.0 / plan["bpm"]
                                                                 if plan.get("bpm") else 0.5)

    bounds = []
    for sec in plan.get("sections") or []:
        for key in ("start_beat", "end_beat"):
            b = sec.get(key)
            if b is not None and len(bt):
                b = int(b)
                t = bt[b] if b < len(bt) else bt[-1] + (b - len(bt) + 1) * beat_s
                bounds.append(t)
    bounds = np.unique(np.asarray(bounds, dtype=float))
    accents = np.zeros(0)
    if len(on):
        slot = np.round(on / (beat_s / 4)).astype(int)
        slots, inv = np.unique(slot, return_inverse=True)
        strength = np.bincount(inv, weights=vel)
        strong = (strength >= np.quantile(strength, 0.75)) & (strength > np.median(strength))
        accents = slots[strong] * (beat_s / 4)

    def near(ts, refs):
        if len(refs) == 0:
            return np.zeros(len(ts), dtype=bool)
        return np.min(np.abs(ts[:, None] - refs[None, :]), axis=1) <= beat_s + 1e-9

    if len(cuts):
        ph, ac = near(cuts, bounds), near(cuts, accents)
        out["cut_phrase_share"] = float(ph.mean())
        out["cut_accent_share"] = float(ac.mean())
        out["cut_hit_share"] = float((ph | ac).mean())
    else:
        out["cut_phrase_share"] = out["cut_accent_share"] = out["cut_hit_share"] = math.nan

    motion = np.asarray(plan.get("motion_per_beat") or [], dtype=float)
    requested = np.asarray(plan.get("density") or [], dtype=float)
    if len(bt) >= 3:
        edges = np.append(bt, bt[-1] + beat_s)
        dens = np.histogram(on, bins=edges)[0].astype(float)
        n = min(len(dens), len(motion))
        if n >= 3 and np.std(motion[:n]) > 0 and np.std(dens[:n]) > 0:
            out["motion_density_r"] = float(np.corrcoef(motion[:n], dens[:n])[0, 1])
        else:
            out["motion_density_r"] = math.nan
        out["motion_density_rho"] = spearman_rho(motion[:n], dens[:n]) if n else math.nan
        out["density_rho"] = spearman_rho(requested, dens) if len(requested) else math.nan
    else:
        out["motion_density_r"] = out["motion_density_rho"] = out["density_rho"] = math.nan
    out["gps"] = grooving_pattern_similarity(read_midi_notes(midi_path))
    return out


def run_video_eval(scored_dir, json_path=None, console=None) -> dict:
    """Evaluate every `bgmgen score` output folder under ``scored_dir`` (or ``scored_dir`` itself):
    a folder with run.json and a .mid (``outputs.midi`` of run.json, else the only ``*.mid``)."""
    from rich.table import Table

    console = console or _console()
    root = Path(scored_dir)
    if not root.is_dir():
        raise InputError(f"{root}: not a folder; --videos must hold `bgmgen score` outputs")
    runs = sorted(p.parent for p in root.rglob("run.json"))
    if not runs:
        raise InputError(f"{root}: no run.json found; point --videos at `bgmgen score` outputs")
    per = {}
    for d in runs:
        run = json.loads((d / "run.json").read_text())
        mid = None
        for k, v in (run.get("outputs") or {}).items():
            if str(v).endswith(".mid"):
                cand = Path(v) if Path(v).is_absolute() else d / Path(v).name
                mid = cand if cand.exists() else d / Path(v).name
        if mid is None or not Path(mid).exists():
            mids = sorted(d.glob("*.mid"))
            mid = mids[0] if mids else None
        if mid is None:
            console.print(f"[yellow]{d}: run.json but no .mid, skipped[/yellow]")
            continue
        per[str(d.relative_to(root)) if d != root else d.name] = video_metrics(run, mid)
    summary = {}
    for k in VIDEO_KEYS:
        summary[k] = nan_mean([p.get(k, math.nan) for p in per.values()])
    summary["n_videos"] = len(per)
    t = Table(title=f"bgmgen eval --videos: {len(per)} scored videos")
    t.add_column("video")
    for k in ("music_s", "video_s") + VIDEO_KEYS:
        t.add_column(k, justify="right")
    for name, p in per.items():
        t.add_row(name, *[fmt(p.get(k), 2) for k in ("music_s", "video_s") + VIDEO_KEYS])
    t.add_row("mean", "", "", *[fmt(summary[k], 2) for k in VIDEO_KEYS])
    console.print(t)
    result = {"videos": per, "summary": summary}
    if json_path:
        dump_json(result, json_path)
    return plain(result)

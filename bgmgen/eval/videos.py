"""`bgmgen eval --videos`: how well the music of `bgmgen score` outputs fits their videos.

Each output folder holds run.json (the plan: beat times, sections, requested density, motion per
beat, tempo decision; the analysis: cuts, visual onsets) and the generated MIDI; :func:`video_metrics`
compares the two and :func:`run_video_eval` prints one row per video and writes the JSON. With
`--energy-ranking FILE` (a person's calm-to-energetic order of the clips, e.g.
docs/eval/testvideos-energy.json) it also gives the rank correlation of that order with the music's
onsets per second and with its tempo.
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
              "motion_density_r", "motion_density_rho", "density_rho", "gps", "bpm", "onsets_per_s", "notes_per_s",
              "ending_s", "ending_share", "bar_motion_onsets_rho", "visual_onset_share")
TABLE_KEYS = ("bpm", "mood", "onsets_per_s", "notes_per_s", "ending_s", "ending_share", "cut_hit_share", "bar_motion_onsets_rho",
              "density_rho", "visual_onset_share", "lock_bpm")
# MIDI times are on a tick grid and run.json's beat times are rounded to 0.1 ms: a note on a beat can
# land a hair before it; binned this much later, it counts in its own beat
BIN_TOLERANCE_S = 0.002
ONSET_MERGE_S = 0.01  # notes starting this close together are one onset (one attack)
BAR_MOTION_CHANGE = 0.05  # per-bar motion level (0..1) spread (std) above which a clip "has motion changes"


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
      These three leave out the final chord's beats (``final_beats``: midi.py writes that chord).
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
    # the final chord's beats are midi.py's, not the model's: left out of the density comparisons
    final_beats = int(plan.get("final_beats") or 0)
    n_music = max(0, len(bt) - 1 - final_beats) if final_beats else len(bt)
    motion, requested = motion[:n_music], requested[:n_music]
    if len(bt) >= 3 and n_music >= 1:
        edges = np.append(bt, bt[-1] + beat_s)
        dens = np.histogram(on + BIN_TOLERANCE_S, bins=edges)[0].astype(float)[:n_music]
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
    out.update(_energy_metrics(plan, analysis, on, bt, beat_s, vs))
    return out


def _energy_metrics(plan: dict, analysis: dict, on: np.ndarray, bt: np.ndarray, beat_s: float, video_s) -> dict:
    """Tempo, mood, onsets per second, the held ending, per-bar motion vs onsets, visual onsets on the music.

    - ``onsets_per_s``: onsets (distinct attack times: a chord is one onset, notes within 10 ms are one)
      per second of video, how busy the rhythm is; ``notes_per_s``: notes per second of video;
      ``music_onsets_per_s``: onsets before the final chord, per second of that part.
    - ``ending_s`` / ``ending_share``: the held final chord (from its beat to the end of the video).
    - ``bar_motion_onsets_rho``: Spearman rho between the plan's motion per bar (mean over its beats) and
      the MIDI's note onsets per bar, the final chord's beats left out (bars of 4 beats from beat 0);
      ``bar_motion_std``: how much the motion changes from bar to bar (a clip "has motion changes"
      when it is at least BAR_MOTION_CHANGE, with 3 bars or more).
    - ``visual_onset_share``: share of the visual onsets with a note onset within a sixteenth
      (a quarter beat); ``visual_onset_beat_share``: within a sixteenth of a beat.
    - ``lock_bpm`` / ``lock_period_s``: the tempo lock to a periodic motion, when there was one."""
    out: dict = {"bpm": plan.get("bpm"), "mood": plan.get("mood"), "mood_source": plan.get("mood_source")}
    vs = float(video_s or (bt[-1] if len(bt) else 0.0))
    attacks = np.unique(np.round(np.asarray(on, float) / ONSET_MERGE_S)) * ONSET_MERGE_S
    out["onsets_per_s"] = len(attacks) / vs if vs > 0 else math.nan
    out["notes_per_s"] = len(on) / vs if vs > 0 else math.nan
    final_beats = int(plan.get("final_beats") or 0)
    n_beats = len(bt) - 1
    if n_beats >= 1 and final_beats:
        t_end = float(bt[max(0, n_beats - final_beats)])
        out["ending_s"] = vs - t_end
        out["ending_share"] = out["ending_s"] / vs if vs > 0 else math.nan
        out["music_onsets_per_s"] = float(np.sum(attacks < t_end - 1e-3) / t_end) if t_end > 0 else math.nan
    else:
        out["ending_s"] = out["ending_share"] = out["music_onsets_per_s"] = math.nan
    motion = np.asarray(plan.get("motion_per_beat") or [], float)
    music_beats = max(0, min(len(motion), n_beats - final_beats))
    n_bars = music_beats // 4
    out["bar_motion_onsets_rho"] = out["bar_motion_std"] = math.nan
    if n_bars >= 3:
        bar_motion = motion[: n_bars * 4].reshape(n_bars, 4).mean(1)
        edges = bt[: n_bars * 4 + 1: 4]
        bar_onsets = np.histogram(on + BIN_TOLERANCE_S, bins=edges)[0].astype(float)
        out["bar_motion_std"] = float(bar_motion.std())
        out["bar_motion_onsets_rho"] = spearman_rho(bar_motion, bar_onsets)
    out["n_bars"] = n_bars
    vis = np.asarray([o[0] for o in analysis.get("onsets") or []], float)
    sixteenth = beat_s / 4
    if len(vis) and len(on):
        out["visual_onset_share"] = float(np.mean(np.min(np.abs(vis[:, None] - on[None, :]), axis=1) <= sixteenth + 1e-6))
    else:
        out["visual_onset_share"] = math.nan
    beats = bt[:-1] if len(bt) > 1 else bt
    out["visual_onset_beat_share"] = float(np.mean(np.min(np.abs(vis[:, None] - beats[None, :]), axis=1)
                                                   <= sixteenth + 1e-6)) if len(vis) and len(beats) else math.nan
    lock = (plan.get("tempo") or {}).get("lock") if (plan.get("tempo") or {}).get("locked") else None
    out["lock_bpm"] = lock.get("bpm") if lock else None
    out["lock_period_s"] = lock.get("period_s") if lock else None
    out["energy"] = (plan.get("energy") or {}).get("energy")
    return out


def read_energy_ranking(path) -> dict[str, int]:
    """{clip stem: rank} from a ranking JSON: {"clips": [{"file": NAME, "rank": R, "reason": ...}, ...]}
    with rank 1 the calmest (ties allowed)."""
    try:
        data = json.loads(Path(path).read_text())
        return {Path(c["file"]).stem: float(c["rank"]) for c in data["clips"]}
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise InputError(f"{path}: not an energy ranking ({type(err).__name__}: {err}); expected "
                         '{"clips": [{"file": ..., "rank": ...}, ...]}') from None


def ranking_correlations(per: dict[str, dict], ranking: dict[str, int]) -> dict:
    """Spearman rho of the person's energy ranking with onsets per second and with tempo, over the
    scored clips that the ranking names."""
    names = [n for n in per if Path(n).name in ranking]
    rank = [ranking[Path(n).name] for n in names]
    return {"n_ranked": len(names), "clips": names,
            "rho_energy_onsets_per_s": spearman_rho(rank, [per[n]["onsets_per_s"] for n in names]),
            "rho_energy_notes_per_s": spearman_rho(rank, [per[n]["notes_per_s"] for n in names]),
            "rho_energy_music_onsets_per_s": spearman_rho(rank, [per[n]["music_onsets_per_s"] for n in names]),
            "rho_energy_bpm": spearman_rho(rank, [per[n]["bpm"] for n in names]),
            "missing": sorted(set(ranking) - {Path(n).name for n in names})}


def run_video_eval(scored_dir, json_path=None, console=None, energy_ranking=None) -> dict:
    """Evaluate every `bgmgen score` output folder under ``scored_dir`` (or ``scored_dir`` itself):
    a folder with run.json and a .mid (``outputs.midi`` of run.json, else the only ``*.mid``).
    ``energy_ranking``: a ranking JSON (read_energy_ranking) -> "ranking" in the result."""
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
        summary[k] = nan_mean([p.get(k, math.nan) if p.get(k) is not None else math.nan for p in per.values()])
    changing = [p["bar_motion_onsets_rho"] for p in per.values()
                if (p.get("bar_motion_std") or 0) >= BAR_MOTION_CHANGE and p.get("n_bars", 0) >= 3]
    summary["bar_motion_onsets_rho_changing"] = nan_mean(changing) if changing else math.nan
    summary["n_changing"] = len(changing)
    summary["n_videos"] = len(per)
    t = Table(title=f"bgmgen eval --videos: {len(per)} scored videos")
    t.add_column("video")
    for k in ("music_s", "video_s") + TABLE_KEYS:
        t.add_column(k, justify="right")

    def cell(v):
        return v if isinstance(v, str) else fmt(v, 2)

    for name, p in per.items():
        t.add_row(name, *[cell(p.get(k)) for k in ("music_s", "video_s") + TABLE_KEYS])
    t.add_row("mean", "", "", *[cell(summary.get(k)) if k in summary else "" for k in TABLE_KEYS])
    console.print(t)
    console.print(f"per-bar motion vs onsets rho on the {len(changing)} clips with motion changes: "
                  f"{fmt(summary['bar_motion_onsets_rho_changing'], 2)}; cut hit share "
                  f"{fmt(summary['cut_hit_share'], 2)}; density rho {fmt(summary['density_rho'], 2)}")
    result = {"videos": per, "summary": summary}
    if energy_ranking:
        ranking = ranking_correlations(per, read_energy_ranking(energy_ranking))
        result["ranking"] = ranking
        console.print(f"energy ranking ({ranking['n_ranked']} clips): rho with onsets/s "
                      f"{fmt(ranking['rho_energy_onsets_per_s'], 2)}, with tempo {fmt(ranking['rho_energy_bpm'], 2)}, "
                      f"with notes/s {fmt(ranking['rho_energy_notes_per_s'], 2)}"
                      + (f"; not scored: {', '.join(ranking['missing'])}" if ranking["missing"] else ""))
    if json_path:
        dump_json(result, json_path)
    return plain(result)

"""`bgmgen eval`: Diff-BGM's music metrics and ours, generated songs beside the ground truth.

CLI HOOK (for bgmgen/cli.py): call

    from bgmgen.eval.evaluate import main_eval
    return main_eval(argv)      # argv = the arguments after "eval", e.g.
                                # ["GEN_DIR", "--data", "../shared/datasets/pop909",
                                #  "--structure", "../shared/datasets/pop909-structure",
                                #  "--songs", "test", "--json", "eval.json", "--videos", "DIR"]

or, from an existing argparse subcommand, ``run_eval(generated_dir, data_dir, songs=args.songs,
json_path=args.json, structure_dir=args.structure)`` and, for ``--videos DIR``,
``run_video_eval(DIR, json_path=...)``. Both print rich tables and return the JSON-able dict.
Errors the user can fix raise ``bgmgen.core.errors.InputError``.

Inputs: ``GENERATED_DIR/<id>.mid`` (one whole-song MIDI per POP909 song, made by
``bgmgen sample`` from that song's own controls at its own tempo) and ``DATA_DIR/<id>/``.
Alignment: beat 0 of the generated MIDI (tick 0; beats = ticks / ticks-per-quarter, so the MIDI's
tempo map does not matter) is the reference song's first downbeat as defined in
:mod:`bgmgen.eval.metrics` (melody/chord match with pop909-structure when ``structure_dir`` is given,
else the first downbeat flag of beat_midi.txt); ``offset_beats`` shifts the generated notes if a
generator writes a pick-up before it. Generated beat b is compared with reference beat b (chords,
requested density).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import time
from pathlib import Path

import numpy as np

from bgmgen.core.errors import InputError
from bgmgen.core.files import atomic_path, user_cache_dir
from bgmgen.data.splits import TEST_SONGS, resolve_songs  # noqa: F401  (TEST_SONGS re-exported)
from bgmgen.eval import metrics as M

# metric name -> (table header, function(notes, ref) -> float)
METRICS: dict[str, str] = {
    "pche": "PCHE",
    "gps": "GPS",
    "si": "SI",
    "chord_tone_ratio": "chord tones",
    "density_rho": "density ρ",
    "empty_bar_rate": "empty bars",
    "polyphony": "polyphony",
    "pitch_range": "range",
    "scale_consistency": "in scale",
}

# Diff-BGM rows as given in issue 4 (the repo README table). Not re-run here. The P@20 column of
# ../shared/reference/diffbgm-paper-and-code.md (README @c5a0e8a) reads 44.10 / 43.20 / 38.47
# instead; the notebook's own saved run gives 46.92.
REPORTED = [
    ("Diff-BGM original", {"pche": 2.840, "gps": 0.601, "si": 0.521, "p_at_20": 46.79}),
    ("Diff-BGM only visual", {"pche": 2.835, "gps": 0.514, "si": 0.396, "p_at_20": 46.26}),
    ("Diff-BGM w/o SAC-Att", {"pche": 2.721, "gps": 0.789, "si": 0.523, "p_at_20": 43.57}),
]

SI_BAND = f"{M.SI_LOW_BEATS}-{M.SI_HIGH_BEATS} beats"


def song_metrics(notes: M.Notes, ref: M.ReferenceSong, timings: dict | None = None) -> dict:
    """Every metric of one song (generated or reference) against reference ``ref``'s controls."""
    requested = M.onset_density(ref.notes, ref.n_beats)
    if len(notes):  # a generated excerpt (e.g. `sample --max-bars`) is compared over the bars it covers
        covered = int(math.ceil(notes.end / 4 - 1e-9)) * 4
        requested = requested[: max(4, min(len(requested), covered))]
    fns = {
        "pche": lambda: M.pitch_class_histogram_entropy(notes),
        "gps": lambda: M.grooving_pattern_similarity(notes),
        "si": lambda: M.structureness_indicator(notes),
        "chord_tone_ratio": lambda: M.chord_tone_ratio(notes, ref.chord_chroma, ref.has_chord),
        "density_rho": lambda: M.density_rho(notes, requested),
        "empty_bar_rate": lambda: M.empty_bar_rate(notes),
        "polyphony": lambda: M.polyphony(notes),
        "pitch_range": lambda: M.pitch_range(notes),
        "scale_consistency": lambda: M.scale_consistency(notes),
    }
    out = {}
    for name, fn in fns.items():
        t = time.perf_counter()
        out[name] = float(fn())
        if timings is not None:
            timings[name] = timings.get(name, 0.0) + time.perf_counter() - t
    return out


def _summary(rows: list[dict]) -> dict:
    out = {}
    for k in METRICS:
        vals = np.array([r[k] for r in rows], dtype=float)
        out[k] = float(np.nanmean(vals)) if np.isfinite(vals).any() else math.nan
    out["n_songs"] = len(rows)
    return out


def _plain(x):
    """numpy scalars -> Python numbers, recursively; NaN stays NaN."""
    if isinstance(x, dict):
        return {k: _plain(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_plain(v) for v in x]
    if isinstance(x, np.floating):
        return float(x)
    if isinstance(x, np.integer):
        return int(x)
    return x


def _clean(x):
    """JSON-safe: NaN / inf -> None, numpy scalars -> float."""
    if isinstance(x, dict):
        return {k: _clean(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_clean(v) for v in x]
    if isinstance(x, (float, np.floating)):
        return float(x) if math.isfinite(x) else None
    if isinstance(x, np.integer):
        return int(x)
    return x


def _write_json(path, data) -> None:
    from bgmgen.core.files import atomic_path

    with atomic_path(path) as tmp:
        Path(tmp).write_text(json.dumps(_clean(data), indent=2) + "\n")


def _console():
    from rich.console import Console

    c = Console()
    return c if c.is_terminal else Console(width=150)


def _fmt(v, digits=3) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "—"
    return f"{v:.{digits}f}"


def _reference_cache_key(song_dir: Path, structure_dir, align: str) -> str:
    """Ground-truth metrics depend on the song's files, the settings and the metric code itself:
    the key hashes all three (any edit of metrics.py or this module invalidates every entry)."""
    h = hashlib.sha256()
    for code in (Path(M.__file__), Path(__file__)):
        h.update(code.read_bytes())
    h.update(f"{align}|{structure_dir}".encode())
    folders = [song_dir] + ([Path(structure_dir) / song_dir.name] if structure_dir else [])
    for folder in folders:
        for f in sorted(folder.rglob("*")) if folder.is_dir() else []:
            if f.is_file():
                st = f.stat()
                h.update(f"{f}|{st.st_size}|{st.st_mtime_ns}".encode())
    return h.hexdigest()[:32]


def _reference_cache_dir() -> Path:
    return user_cache_dir("eval-reference")


def evaluate_reference(data_dir, songs, structure_dir=None, align: str = "auto", use_cache: bool = True):
    """Ground truth only: (per-song metrics, summary, timings, references).

    Per-song ground-truth metrics are cached (user cache folder, keyed by files, settings and metric
    code): SI alone costs ~1 s per song, and every evaluation of a model repeats the same songs.
    """
    data_dir = Path(data_dir)
    refs, rows, timings = {}, {}, {}
    cache = _reference_cache_dir()
    for sid in songs:
        sdir = data_dir / sid
        if not (sdir / f"{sid}.mid").exists() or not (sdir / "beat_midi.txt").exists():
            raise InputError(f"{sdir}: no {sid}.mid / beat_midi.txt; --data must be the POP909 "
                             "folder holding NNN/NNN.mid")
        t = time.perf_counter()
        refs[sid] = M.read_pop909_song(sdir, structure_dir, align=align)
        timings["read"] = timings.get("read", 0.0) + time.perf_counter() - t
        entry = cache / f"{_reference_cache_key(sdir, structure_dir, align)}.json" if use_cache else None
        if entry is not None and entry.is_file():
            try:
                rows[sid] = json.loads(entry.read_text())
                continue
            except (OSError, ValueError):
                pass
        rows[sid] = song_metrics(refs[sid].notes, refs[sid], timings)
        if entry is not None:
            try:
                entry.parent.mkdir(parents=True, exist_ok=True)
                with atomic_path(entry) as tmp:
                    tmp.write_text(json.dumps(_plain(rows[sid])))  # NaN kept (JSON NaN literal)
            except OSError:
                pass  # a read-only cache only costs time
    return rows, _summary(list(rows.values())), timings, refs


def run_eval(generated_dir, data_dir, songs="test", json_path=None, structure_dir=None,
             align: str = "auto", offset_beats: float = 0.0, console=None,
             reference_only: bool = False) -> dict:
    """Evaluate ``generated_dir/<id>.mid`` against POP909 and print the comparison table.

    Parameters
    ----------
    generated_dir : folder with one ``<id>.mid`` per song (ignored with ``reference_only``).
    data_dir : POP909 folder (``NNN/NNN.mid``, ``beat_midi.txt``, ``chord_midi.txt``).
    songs : "test" | "valid" | "train" | "001,002,...".
    json_path : if given, write per-song values, ``summary`` (generated), ``ground_truth`` summary,
        ``overlap`` (per-metric overlapping area generated vs ground truth) and settings.
    structure_dir : pop909-structure folder (better downbeats, chords and phrases); optional.
    align : "auto" | "structure" | "beat_midi" (see bgmgen.eval.metrics).
    offset_beats : added to the generated notes' beat times before comparing.
    """
    console = console or _console()
    try:
        song_list = resolve_songs(songs) if isinstance(songs, str) else list(songs)
    except ValueError as e:
        raise InputError(f"--songs: {e}; use test, valid, train or a list like 001,002") from e
    if not Path(data_dir).is_dir():
        raise InputError(f"{data_dir}: not a folder; --data must point to POP909 (NNN/NNN.mid)")
    if structure_dir is not None and not Path(structure_dir).is_dir():
        raise InputError(f"{structure_dir}: not a folder; --structure must point to "
                         "pop909-structure or be left out")

    gen_rows, missing, timings_gen = {}, [], {}
    gen_notes = {}
    if not reference_only:
        gdir = Path(generated_dir)
        if not gdir.is_dir():
            raise InputError(f"{gdir}: not a folder; give the folder of generated <id>.mid files")
        for sid in song_list:
            p = gdir / f"{sid}.mid"
            if p.exists():
                gen_notes[sid] = p
            else:
                missing.append(sid)
        if not gen_notes:
            raise InputError(f"{gdir}: none of the {len(song_list)} songs has a <id>.mid "
                             f"(e.g. {song_list[0]}.mid); run `bgmgen sample` first")
        song_list = [s for s in song_list if s in gen_notes]

    gt_rows, gt_summary, timings_gt, refs = evaluate_reference(data_dir, song_list,
                                                               structure_dir, align)
    for sid in song_list if not reference_only else []:
        try:
            notes = M.read_midi_notes(gen_notes[sid], offset_beats=offset_beats)
        except Exception as e:  # a corrupt MIDI: one line, which file
            raise InputError(f"{gen_notes[sid]}: cannot be read as MIDI ({e})") from e
        gen_rows[sid] = song_metrics(notes, refs[sid], timings_gen)

    result = {
        "settings": {
            "songs": song_list, "missing": missing, "align": align,
            "structure_dir": str(structure_dir) if structure_dir else None,
            "offset_beats": offset_beats,
            "pche_window_beats": M.PCHE_WINDOW_BEATS,
            "si_band_beats": [M.SI_LOW_BEATS, M.SI_HIGH_BEATS],
            "si_chroma": "symbolic, one frame per beat",
            "density": "onsets per beat; requested = the reference song's own",
        },
        "ground_truth": gt_summary,
        "ground_truth_songs": gt_rows,
        "reported": {name: vals for name, vals in REPORTED},
        "timings_s": {"ground_truth": timings_gt, "generated": timings_gen},
    }
    if not reference_only:
        result["summary"] = _summary(list(gen_rows.values()))
        result["songs"] = gen_rows
        overlap = {k: M.overlapping_area([r[k] for r in gen_rows.values()],
                                         [r[k] for r in gt_rows.values()]) for k in METRICS}
        finite = [v for v in overlap.values() if math.isfinite(v)]
        result["overlap"] = overlap
        result["summary"]["overlap_mean"] = float(np.mean(finite)) if finite else math.nan

    _print_table(console, result, reference_only)
    if json_path:
        _write_json(json_path, result)
    return _clean(result)


def _print_table(console, result, reference_only) -> None:
    from rich.table import Table

    n = result["ground_truth"]["n_songs"]
    t = Table(title=f"bgmgen eval: {n} songs (SI band {SI_BAND}, symbolic chroma)")
    t.add_column("row")
    for k, head in METRICS.items():
        t.add_column(head, justify="right")
    t.add_column("P@20", justify="right")
    if not reference_only:
        s = result["summary"]
        t.add_row("generated", *[_fmt(s[k]) for k in METRICS], "—")
    g = result["ground_truth"]
    t.add_row("ground truth", *[_fmt(g[k]) for k in METRICS], "—")
    if not reference_only:
        o = result["overlap"]
        t.add_row("overlap gen/GT (OA)", *[_fmt(o[k]) for k in METRICS], "—")
    for name, vals in REPORTED:
        t.add_row(f"{name} *",
                  *[_fmt(vals.get(k)) for k in METRICS], _fmt(vals["p_at_20"], 2))
    console.print(t)
    console.print("* reported by Diff-BGM (README table), not re-run. GPS/PCHE as in Diff-BGM's "
                  "test.ipynb; SI: MusDr fitness on symbolic per-beat chroma, band "
                  f"{SI_BAND}; ground-truth density ρ is 1 by construction.")
    if result["settings"]["missing"]:
        console.print(f"[yellow]missing generated songs:[/yellow] "
                      f"{', '.join(result['settings']['missing'])}")


# --------------------------------------------------------------------------------------------
# Scored videos (`bgmgen score` outputs)
# --------------------------------------------------------------------------------------------
def _midi_onsets_s(path) -> tuple[np.ndarray, np.ndarray, float]:
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
    - ``gps``: grooving pattern similarity of the generated MIDI (metrics.grooving_pattern_similarity;
      the score starts on a downbeat at time 0): how repetitive the rhythm is from bar to bar.
    """
    plan = run.get("plan") or {}
    video = run.get("video") or {}
    analysis = run.get("analysis") or {}
    on, vel, end = _midi_onsets_s(midi_path)
    bt = np.asarray(plan.get("beat_times_s") or [], dtype=float)
    cuts = np.asarray(analysis.get("cuts_s") or [], dtype=float)
    out = {"music_s": end, "video_s": video.get("duration_s"), "n_cuts": int(len(cuts))}
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
        out["motion_density_rho"] = M.spearman_rho(motion[:n], dens[:n]) if n else math.nan
        out["density_rho"] = M.spearman_rho(requested, dens) if len(requested) else math.nan
    else:
        out["motion_density_r"] = out["motion_density_rho"] = out["density_rho"] = math.nan
    out["gps"] = M.grooving_pattern_similarity(M.read_midi_notes(midi_path))
    return out


VIDEO_KEYS = ("length_ratio", "cut_phrase_share", "cut_accent_share", "cut_hit_share",
              "motion_density_r", "motion_density_rho", "density_rho", "gps")


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
        vals = np.array([p.get(k, math.nan) for p in per.values()], dtype=float)
        summary[k] = float(np.nanmean(vals)) if np.isfinite(vals).any() else math.nan
    summary["n_videos"] = len(per)
    t = Table(title=f"bgmgen eval --videos: {len(per)} scored videos")
    t.add_column("video")
    for k in ("music_s", "video_s") + VIDEO_KEYS:
        t.add_column(k, justify="right")
    for name, p in per.items():
        t.add_row(name, *[_fmt(p.get(k), 2) for k in ("music_s", "video_s") + VIDEO_KEYS])
    t.add_row("mean", "", "", *[_fmt(summary[k], 2) for k in VIDEO_KEYS])
    console.print(t)
    result = {"videos": per, "summary": summary}
    if json_path:
        _write_json(json_path, result)
    return _clean(result)


# --------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------
def build_parser(parser: argparse.ArgumentParser | None = None) -> argparse.ArgumentParser:
    p = parser or argparse.ArgumentParser(prog="bgmgen eval", description=__doc__.split("\n")[0])
    p.add_argument("generated_dir", nargs="?", help="folder of generated <id>.mid files")
    p.add_argument("--data", help="POP909 folder (NNN/NNN.mid, beat_midi.txt, chord_midi.txt)")
    p.add_argument("--structure", default=None,
                   help="pop909-structure folder (downbeats, chords, phrases); recommended")
    p.add_argument("--songs", default="test", help="test | valid | train | 001,002,... ")
    p.add_argument("--json", dest="json_path", default=None, help="write results to this file")
    p.add_argument("--videos", default=None, help="folder of `bgmgen score` outputs")
    p.add_argument("--align", default="auto", choices=["auto", "structure", "beat_midi"])
    p.add_argument("--offset-beats", type=float, default=0.0,
                   help="shift generated notes by this many beats before comparing")
    p.add_argument("--reference-only", action="store_true",
                   help="only the ground-truth row (no generated folder needed)")
    return p


def main_eval(argv=None) -> int:
    """Entry point for `bgmgen eval ...` (argv without the leading "eval"). Returns 0."""
    args = build_parser().parse_args(argv)
    if args.videos is None and args.data is None:
        raise InputError("bgmgen eval: give --data POP909_DIR (and GENERATED_DIR) or --videos DIR")
    if args.data is not None:
        if args.generated_dir is None and not args.reference_only:
            raise InputError("bgmgen eval: give GENERATED_DIR (or --reference-only)")
        json_main = args.json_path
        run_eval(args.generated_dir, args.data, songs=args.songs, json_path=json_main,
                 structure_dir=args.structure, align=args.align,
                 offset_beats=args.offset_beats, reference_only=args.reference_only)
    if args.videos is not None:
        vj = None
        if args.json_path:
            jp = Path(args.json_path)
            vj = jp if args.data is None else jp.with_name(jp.stem + "_videos" + jp.suffix)
        run_video_eval(args.videos, json_path=vj)
    return 0


if __name__ == "__main__":  # python -m bgmgen.eval.evaluate ...
    import sys

    sys.exit(main_eval(sys.argv[1:]))

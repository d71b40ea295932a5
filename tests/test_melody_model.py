"""The v3 music model: melody tokens and accompaniment states in a common key, masked diffusion."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from bgmgen.core.constants import WINDOW_STEPS
from bgmgen.music import controls as C
from bgmgen.music import masked_diffusion as MD
from bgmgen.music import tokens as T
from bgmgen.music.config import DenoiserConfig

SHARED = Path(__file__).resolve().parents[2] / "shared" / "datasets"
POP909, STRUCTURE = SHARED / "pop909", SHARED / "pop909-structure"


def _controls(n: int, tonic: int = 0) -> C.BeatControls:
    groove = np.tile([[1, 0, 1, 0]], (n, 1)).astype(np.float32)
    return C.BeatControls(
        density=np.full(n, 4.0), positions=np.full(n, 2.0), accent=np.full(n, 2.0),
        chord_root=np.full(n, tonic, np.int64),
        chord_chroma=np.roll(np.tile([1, 0, 0, 0, 1, 0, 0, 1, 0, 0, 0, 0], (n, 1)), tonic, -1),
        chord_bass=np.full(n, tonic, np.int64), key_tonic=np.full(n, tonic, np.int64), key_mode=np.zeros(n),
        register=np.full(n, 62.0), phrase_id=np.repeat(np.arange(n // 16 + 1), 16)[:n],
        phrase_pos=np.zeros(n), melodic=np.ones(n), groove=groove)


# ---------------------------------------------------------------- representation
def test_key_shift_moves_every_tonic_to_c_by_the_smaller_step():
    for tonic in range(12):
        s = T.key_shift(tonic)
        assert (tonic + s) % 12 == 0 and -5 <= s <= 6


def test_melody_tokens_rest_hold_and_pitch():
    pitch = np.array([-1, 60, 60, 60, 62, -1, 64, 64], np.int16)
    onset = np.array([0, 1, 0, 0, 1, 0, 1, 0], np.uint8)
    tok = T.melody_tokens(pitch, onset, shift=2)
    first = T.MEL_FIRST_PITCH - T.MELODY_LOW
    assert tok.tolist() == [T.MEL_REST, first + 62, T.MEL_HOLD, T.MEL_HOLD, first + 64, T.MEL_REST, first + 66,
                            T.MEL_HOLD]
    # a window that starts inside a note: the held step becomes the note's start
    assert T.melody_tokens(pitch[2:], onset[2:])[0] == first + 60


def test_tokens_round_trip_to_notes_and_back():
    mel = np.full(16, T.MEL_REST)
    mel[0], mel[1:4] = T.MEL_FIRST_PITCH + 72 - T.MELODY_LOW, T.MEL_HOLD
    mel[6] = T.MEL_HOLD  # a hold with nothing to hold is silence
    acc = np.zeros((16, T.ACC_KEYS), np.int64)
    acc[0, 48 - T.ACC_LOW], acc[1:8, 48 - T.ACC_LOW] = T.ACC_ONSET, T.ACC_SUSTAIN
    acc[10, 40 - T.ACC_LOW] = T.ACC_SUSTAIN  # continues nothing: silence
    notes = T.tokens_to_notes(mel, acc, shift=-3)  # moved back: +3 semitones
    assert notes == [(0, 4, 75), (0, 8, 51)]
    roll = T.notes_to_roll(notes, 16)
    onset = np.zeros((16, 128))
    sustain = np.zeros((16, 128))
    onset[0, [75, 51]] = 1
    sustain[1:4, 75] = sustain[1:8, 51] = 1
    assert np.array_equal(roll[0], onset) and np.array_equal(roll[1], sustain)
    back = T.accompaniment_states(roll[0], roll[1], shift=-3)
    assert back[0, 48 - T.ACC_LOW] == T.ACC_ONSET and back[7, 48 - T.ACC_LOW] == T.ACC_SUSTAIN


@pytest.mark.skipif(not (POP909 / "001").is_dir(), reason="../shared/datasets/pop909 is not here")
def test_pop909_melody_and_accompaniment_rebuild_the_merged_roll():
    from bgmgen.data.pop909 import load_song

    song = load_song(POP909, STRUCTURE, "001")
    shift = T.key_shift(song.key_tonic)
    mel = T.melody_tokens(song.melody_pitch, song.melody_onset, shift)
    acc = T.accompaniment_states(song.acc_onset, song.acc_sustain, shift)
    roll = T.notes_to_roll(T.tokens_to_notes(mel, acc, shift), len(mel))
    assert ((roll[0] > 0) == (song.onset > 0)).mean() > 0.999
    assert ((roll[1] > 0) == (song.sustain > 0)).mean() > 0.999
    assert (mel >= T.MEL_FIRST_PITCH).sum() == song.melody_onset.sum()  # one token per melody note


# ---------------------------------------------------------------- scheduler and sampler
def test_scheduler_commits_the_cosine_share_and_never_changes_committed_positions():
    sched = MD.MaskedScheduler(steps=4, order="confidence")
    g = torch.Generator().manual_seed(0)
    tokens = torch.full((1, 100), 9)
    masked = torch.ones(1, 100, dtype=torch.bool)
    tokens[0, :10], masked[0, :10] = 3, False  # given
    for i in range(4):
        logits = torch.randn(1, 100, 5, generator=g)
        tokens, masked = sched.step(i, tokens, masked, logits, g)
        assert masked.sum() == min(90, int(100 * MD.masked_share((i + 1) / 4)))
        assert (tokens[0, :10] == 3).all()
    assert not masked.any() and (tokens < 5).all()


def _tiny_v3(**kw):
    from bgmgen.music.model import MelodyAccompanimentDenoiser

    torch.manual_seed(0)
    m = MelodyAccompanimentDenoiser(DenoiserConfig(d_model=32, n_layers=1, n_heads=2, **kw)).eval()
    with torch.no_grad():  # zero-initialised heads would hide every dependency
        for p in m.parameters():
            p.add_(torch.randn_like(p) * 0.2)
    return m


def _random_window(layout):
    """(melody, accompaniment, condition, segments) of one window: random tokens and states (MASK
    included), the controls of _controls(32), one segment."""
    mel = torch.randint(0, T.N_MELODY_TOKENS + 1, (1, WINDOW_STEPS))
    acc = torch.randint(0, T.N_ACC_STATES + 1, (1, WINDOW_STEPS, T.ACC_KEYS))
    cond = torch.from_numpy(C.encode(_controls(32), layout=layout))[None]
    return mel, acc, cond, torch.zeros(1, 32, dtype=torch.long)


def test_training_loss_is_finite_and_only_counts_masked_positions():
    m = _tiny_v3()
    mel = torch.randint(0, T.N_MELODY_TOKENS, (2, WINDOW_STEPS))
    acc = torch.randint(0, T.N_ACC_STATES, (2, WINDOW_STEPS, T.ACC_KEYS))
    cond = torch.from_numpy(np.stack([C.encode(_controls(32), layout=m.layout)] * 2))
    seg = torch.zeros(2, 32, dtype=torch.long)
    loss = MD.training_loss(m, mel, acc, cond, seg, torch.Generator().manual_seed(1))
    assert torch.isfinite(loss) and loss.item() > 0
    loss.backward()
    assert m.mel_out.weight.grad.abs().sum() > 0 and m.acc_conv_out.weight.grad.abs().sum() > 0


@pytest.fixture(scope="module")
def tiny_v3_model(tmp_path_factory):
    from bgmgen.music.generate import load_music_model
    from bgmgen.music.weights import save_model

    path = tmp_path_factory.mktemp("model") / "tiny-v3.safetensors"
    m = _tiny_v3()
    save_model(m, path, {"config": m.config.to_dict(), "step": 0})
    return load_music_model(str(path))


def test_v3_generation_is_deterministic_sized_and_keeps_the_groove(tiny_v3_model):
    from bgmgen.music.generate import generate_from_controls

    c = _controls(40, tonic=7)  # 10 bars: two windows, the second inpainted over the overlap
    a = generate_from_controls(tiny_v3_model, c, seed=3, steps=4)
    b = generate_from_controls(tiny_v3_model, c, seed=3, steps=4)
    assert a.shape == (2, 160, 128) and np.array_equal(a, b)
    on_steps = np.nonzero(a[0].any(-1))[0]
    assert len(on_steps) > 0 and set(on_steps % 4) <= {0, 2}  # the groove's sixteenths only
    other = generate_from_controls(tiny_v3_model, c, seed=4, steps=4)
    assert not np.array_equal(a, other)


def test_v3_inpainting_keeps_the_given_steps(tiny_v3_model):
    m = tiny_v3_model.denoiser
    cond = torch.from_numpy(C.encode(_controls(32), layout=m.layout))[None]
    seg = torch.zeros(1, 32, dtype=torch.long)
    known_mel = torch.randint(0, T.N_MELODY_TOKENS, (1, WINDOW_STEPS))
    known_acc = torch.randint(0, T.N_ACC_STATES, (1, WINDOW_STEPS, T.ACC_KEYS))
    mel, acc = MD.sample(m, cond, seg, MD.MaskedScheduler(steps=3), guidance=1.5, uncond=cond,
                         generator=torch.Generator().manual_seed(0), known_melody=known_mel, known_acc=known_acc,
                         known_steps=32)
    assert torch.equal(mel[:, :32], known_mel[:, :32]) and torch.equal(acc[:, :32], known_acc[:, :32])
    assert (mel < T.N_MELODY_TOKENS).all() and (acc < T.N_ACC_STATES).all()  # nothing left masked


def test_warm_start_adds_the_skip_path_without_changing_the_outputs(tmp_path):
    """v3 runs started before the accompaniment skip path continue with it: it starts at zero."""
    from bgmgen.music.model import MelodyAccompanimentDenoiser
    from bgmgen.music.weights import save_model
    from bgmgen.training.train import warm_start_state

    old = _tiny_v3(time_kernel=0)
    path = tmp_path / "old.safetensors"
    save_model(old, path, {"config": old.config.to_dict(), "step": 1})
    new = MelodyAccompanimentDenoiser(DenoiserConfig(d_model=32, n_layers=1, n_heads=2, time_kernel=3)).eval()
    new.load_state_dict(warm_start_state(path, new))
    mel, acc, cond, seg = _random_window(new.layout)
    with torch.no_grad():
        old_fp16 = MelodyAccompanimentDenoiser(old.config).eval()
        old_fp16.load_state_dict({k: v.half().float() for k, v in old.state_dict().items()})
        want = old_fp16(mel, acc, torch.tensor([0.5]), cond, seg)
        got = new(mel, acc, torch.tensor([0.5]), cond, seg)
    assert all(torch.allclose(w, g, atol=1e-5) for w, g in zip(want, got))
    assert new.acc_skip is not None and old.acc_skip is None


def test_dropout_acts_while_training_only_and_any_run_can_add_it(tmp_path):
    """Residual dropout has no weights: a run without it warm-starts one with it, the file records the
    rate, and a loaded model (eval mode) computes the same as without dropout."""
    from bgmgen.music.model import MelodyAccompanimentDenoiser
    from bgmgen.music.weights import load_denoiser, save_model
    from bgmgen.training.train import warm_start_state

    plain = _tiny_v3()
    path = tmp_path / "plain.safetensors"
    save_model(plain, path, {"config": plain.config.to_dict(), "step": 1})
    dropped = MelodyAccompanimentDenoiser(DenoiserConfig(d_model=32, n_layers=1, n_heads=2, dropout=0.3))
    dropped.load_state_dict(warm_start_state(path, dropped))
    mel, acc, cond, seg = _random_window(plain.layout)
    t = torch.tensor([0.5])
    with torch.no_grad():
        reference = load_denoiser(path)[0](mel, acc, t, cond, seg)  # the file's weights, no dropout
        dropped.train()
        torch.manual_seed(1)
        noisy = dropped(mel, acc, t, cond, seg)
        dropped.eval()
        clean = dropped(mel, acc, t, cond, seg)
    assert all(torch.allclose(r, c, atol=1e-6) for r, c in zip(reference, clean))
    assert not torch.allclose(noisy[0], clean[0])
    again = tmp_path / "dropped.safetensors"
    save_model(dropped, again, {"config": dropped.config.to_dict(), "step": 2})
    loaded, _ = load_denoiser(again)
    assert loaded.config.dropout == 0.3 and not loaded.training


def test_local_heads_start_at_zero_then_read_the_neighbourhood(tmp_path):
    """v3 weights warm-start a model with the local refinement heads: it computes what v3 did, the
    file records the kernel, and once the heads' output layers are not zero a cell's logits depend on
    the states a few steps away (beyond the 3-step skip path)."""
    from bgmgen.music.model import MelodyAccompanimentDenoiser
    from bgmgen.music.weights import load_denoiser, save_model
    from bgmgen.training.train import warm_start_state

    old = _tiny_v3()
    path = tmp_path / "old.safetensors"
    save_model(old, path, {"config": old.config.to_dict(), "step": 1})
    new = MelodyAccompanimentDenoiser(DenoiserConfig(d_model=32, n_layers=1, n_heads=2, local_kernel=9)).eval()
    new.load_state_dict(warm_start_state(path, new))
    mel, acc, cond, seg = _random_window(new.layout)
    t = torch.tensor([0.5])
    with torch.no_grad():
        want = load_denoiser(path)[0](mel, acc, t, cond, seg)
        got = new(mel, acc, t, cond, seg)
        assert all(torch.allclose(w, g, atol=1e-5) for w, g in zip(want, got))
        torch.manual_seed(0)
        for head in (new.acc_local, new.mel_local):
            head[-1].weight.normal_(0, 0.1)
        before = new(mel, acc, t, cond, seg)
        acc2, mel2 = acc.clone(), mel.clone()
        acc2[0, 64, 40] = (acc[0, 64, 40] + 1) % (T.N_ACC_STATES + 1)  # 4 steps before the cells read
        mel2[0, 64] = (mel[0, 64] + 1) % (T.N_MELODY_TOKENS + 1)
        after = new(mel2, acc2, t, cond, seg)
    # the attention trunk also spreads a change; compare at the cell the skip path cannot see
    assert not torch.allclose(before[1][0, 68, 40], after[1][0, 68, 40])
    assert not torch.allclose(before[0][0, 68], after[0][0, 68])
    # the accompaniment head itself reads 9 steps (+-4) of its key's input states and no further
    with torch.no_grad():
        x = torch.zeros(1, new.config.pitch_channels + T.N_ACC_STATES + 1, WINDOW_STEPS, T.ACC_KEYS)
        x2 = x.clone()
        x2[0, -1, 64, 40] = 1.0  # the MASK state of one cell
        change = (new.acc_local(x2) - new.acc_local(x)).abs().amax(dim=(0, 1, 3))  # (128,) per step
    assert change[60:69].min() > 0 and change[:60].max() == 0 and change[69:].max() == 0
    file = tmp_path / "local.safetensors"
    save_model(new, file, {"config": new.config.to_dict(), "step": 2})
    assert load_denoiser(file)[0].config.local_kernel == 9
    assert load_denoiser(path)[0].config.local_kernel == 0 and load_denoiser(path)[0].acc_local is None


def test_train_only_freezes_everything_else():
    from bgmgen.music.model import MelodyAccompanimentDenoiser
    from bgmgen.training.train import trainable_parameters

    m = MelodyAccompanimentDenoiser(DenoiserConfig(d_model=32, n_layers=1, n_heads=2, local_kernel=5))
    chosen = trainable_parameters(m, "acc_local,mel_local")
    names = {n for n, p in m.named_parameters() if p.requires_grad}
    assert names and all(n.startswith(("acc_local.", "mel_local.")) for n in names)
    assert len(chosen) == len(names)
    assert len(trainable_parameters(m, None)) == len(list(m.parameters()))
    with pytest.raises(ValueError, match="no parameter"):
        trainable_parameters(m, "nothing_like_this")



def test_bf16_convolutions_keep_the_function_and_the_layout():
    """The int8 CPU path runs the music model's convolutions in bf16 where the CPU has bf16 arithmetic:
    every Conv1d/Conv2d is replaced (applying it again wraps nothing twice), inputs and outputs stay
    fp32, and the logits stay within bf16 rounding of fp32's."""
    from bgmgen.core.quantize import convolutions_to_bf16

    ref = _tiny_v3(local_kernel=9)
    fast = convolutions_to_bf16(convolutions_to_bf16(_tiny_v3(local_kernel=9)))
    convs = (torch.nn.Conv1d, torch.nn.Conv2d)
    n_ref = sum(isinstance(m, convs) for m in ref.modules())
    wrapped = [m for m in fast.modules() if type(m).__name__ == "Bf16Convolution"]
    assert n_ref == 8 and len(wrapped) == n_ref  # stem, head, skip, 3 + 2 in the local heads
    assert all(not isinstance(m.conv, type(m)) for m in wrapped) and fast.acc_conv_in.weight.dtype == torch.bfloat16
    mel, acc, cond, seg = _random_window(ref.layout)
    t = torch.tensor([0.5])
    with torch.no_grad():
        want, got = ref(mel, acc, t, cond, seg), fast(mel, acc, t, cond, seg)
    for w, g in zip(want, got):
        assert g.dtype == torch.float32 and g.shape == w.shape
        scale = w.abs().amax()
        assert 0 < (g - w).abs().amax() < 0.03 * scale  # bf16 keeps 8 bits of mantissa: not exact, close


def test_music_model_records_the_precision_it_runs_in(tiny_v3_model, tmp_path):
    from bgmgen.core.quantize import bf16_convolutions_supported
    from bgmgen.music.generate import load_music_model

    assert tiny_v3_model.precision == "int8"
    assert tiny_v3_model.convolutions == ("bf16" if bf16_convolutions_supported() else "fp32")
    fp32 = load_music_model(tiny_v3_model.path, precision="fp32")
    assert fp32.convolutions == "fp32"
    assert not any(type(m).__name__ == "Bf16Convolution" for m in fp32.denoiser.modules())


def test_bar_head_starts_at_zero_and_reads_the_same_key_in_neighbouring_bars(tmp_path):
    """v3g weights warm-start a model with the bar head: it computes what v3g did; the head itself
    reads the same key at the same position 1 and 2 bars away (bar kernel 5) and nothing else."""
    from bgmgen.core.constants import STEPS_PER_BAR
    from bgmgen.music.model import MelodyAccompanimentDenoiser
    from bgmgen.music.weights import load_denoiser, save_model
    from bgmgen.training.train import warm_start_state

    old = _tiny_v3(local_kernel=9)
    path = tmp_path / "v3g.safetensors"
    save_model(old, path, {"config": old.config.to_dict(), "step": 1})
    new = MelodyAccompanimentDenoiser(DenoiserConfig(d_model=32, n_layers=1, n_heads=2, local_kernel=9,
                                                     bar_kernel=5)).eval()
    new.load_state_dict(warm_start_state(path, new))
    mel, acc, cond, seg = _random_window(new.layout)
    t = torch.tensor([0.5])
    with torch.no_grad():
        want = load_denoiser(path)[0](mel, acc, t, cond, seg)  # the file's weights (fp16 on disk)
        got = new(mel, acc, t, cond, seg)
        assert all(torch.allclose(w, g, atol=1e-5) for w, g in zip(want, got))
        torch.manual_seed(0)
        new.acc_bar[-1].weight.normal_(0, 0.1)
        x = torch.zeros(1, new.config.pitch_channels + T.N_ACC_STATES + 1, WINDOW_STEPS, T.ACC_KEYS)
        x2 = x.clone()
        x2[0, -1, 64, 40] = 1.0  # the MASK state of one cell
        change = (new.acc_bar(x2) - new.acc_bar(x)).abs().amax(dim=1)[0]  # (128, 88)
    reached = {(int(s), int(k)) for s, k in torch.nonzero(change > 0)}
    assert reached == {(64 + b * STEPS_PER_BAR, 40) for b in (-2, -1, 0, 1, 2)}
    file = tmp_path / "bar.safetensors"
    save_model(new, file, {"config": new.config.to_dict(), "step": 2})
    assert load_denoiser(file)[0].config.bar_kernel == 5 and load_denoiser(path)[0].acc_bar is None


def test_condition_encoded_once_gives_the_same_logits():
    """The samplers encode a window's condition once (embeddings and SAC-Att bias do not depend on the
    noise level) and run the stem once for a guided pair; both give exactly the logits of the plain
    forward."""
    m = _tiny_v3(local_kernel=9)
    mel, acc, cond, seg = _random_window(m.layout)
    with torch.no_grad():
        encoded = m.encode_condition(cond, seg)
        for t in (0.9, 0.2):
            tb = torch.tensor([t])
            raw, from_encoded = m(mel, acc, tb, cond, seg), m(mel, acc, tb, None, None, encoded)
            assert all(torch.equal(a, b) for a, b in zip(raw, from_encoded))
        # a guided pair: one token window under two conditions equals the window given twice
        pair = m.encode_condition(torch.cat([cond, torch.zeros_like(cond)]), torch.cat([seg, seg]))
        tb = torch.tensor([0.5, 0.5])
        shared = m(mel, acc, tb, None, None, pair)
        twice = m(torch.cat([mel, mel]), torch.cat([acc, acc]), tb, None, None, pair)
        assert all(torch.equal(a, b) for a, b in zip(shared, twice)) and shared[1].shape[0] == 2
    with pytest.raises(ValueError, match="3 conditions for 2 token windows"):
        m(torch.cat([mel, mel]), torch.cat([acc, acc]), torch.full((3,), 0.5), torch.cat([cond] * 3),
          torch.cat([seg] * 3))


def test_convolution_precision_can_be_chosen(tiny_v3_model):
    from bgmgen.core.errors import MissingDependencyError
    from bgmgen.music.generate import load_music_model

    fp32 = load_music_model(tiny_v3_model.path, precision="int8", convolutions="fp32")
    bf16 = load_music_model(tiny_v3_model.path, precision="int8", convolutions="bf16")
    wrapped = [sum(type(m).__name__ == "Bf16Convolution" for m in x.denoiser.modules()) for x in (fp32, bf16)]
    assert (fp32.convolutions, bf16.convolutions) == ("fp32", "bf16") and wrapped[0] == 0 and wrapped[1] > 0
    for precision, convolutions in (("fp32", "bf16"), ("int8", "fp16")):
        with pytest.raises(MissingDependencyError, match="convolutions"):
            load_music_model(tiny_v3_model.path, precision=precision, convolutions=convolutions)

"""data: POP909 on the sixteenth-note grid and the fixed song splits.

- pop909: the ONE reader and aligner (read_aligned: a song's MIDI tracks in beats from its first
  true bar line), the training view on it (load_song -> Song: rolls, melody, chords, keys,
  phrases) and the training cache; bgmgen.eval reads its reference songs through it too;
- annotations: POP909's text files parsed (keys, chord labels, finalized_chord.txt,
  chord_midi.txt, phrase labels);
- splits: the test / validation / training song ids.

May import: bgmgen.core, bgmgen.music.controls (the controls a song's music implies).
"""

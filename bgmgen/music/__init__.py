"""music: from per-beat controls to notes - controls (the vocabulary music and video share), plan
(VideoAnalysis -> MusicPlan), the denoisers (model), their diffusion processes (diffusion: Gaussian
over rolls, v1/v2; masked_diffusion: melody tokens and accompaniment states, v3; tokens: that
representation), generate (windows chained by inpainting), midi (notes, velocities, ending, pedal)
and weights (safetensors files, the shipped default).

May import: bgmgen.core, and bgmgen.video for the analysis and mood types the plan reads.
"""

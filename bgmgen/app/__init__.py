"""app: `bgmgen score` and `bgmgen doctor` as a user runs them - options (ScoreOptions), batch
(inputs, the summary, exit codes), ray_batch (--ray: the files on Ray workers), score (one video
through every stage), outputs (output folders, the partial folder renamed into place), provenance
(run.json: fingerprint, versions, weight hashes), console (rich, one-line errors, the native-output
sink), report (report.png) and doctor.

May import: every other subpackage except training/ and eval/. Nothing imports app/ but the CLI.
"""

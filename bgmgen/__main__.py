from bgmgen.cli import console_script

raise SystemExit(console_script())

from bgmgen.cli import main

raise SystemExit(main())

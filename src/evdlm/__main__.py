from evdlm.cli import main

raise SystemExit(main())

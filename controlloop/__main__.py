from controlloop.cli import main

raise SystemExit(main())

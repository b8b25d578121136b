from devicelab.cli import main

raise SystemExit(main())

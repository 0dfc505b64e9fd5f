from hart.cli import main

raise SystemExit(main())

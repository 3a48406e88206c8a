"""python -m commplan_xl → cli.main()."""

from commplan_xl.cli import main

raise SystemExit(main())

"""`python -m devsupervisor` is the same as the `devsup` console script."""

from devsupervisor.cli.main import main

raise SystemExit(main())

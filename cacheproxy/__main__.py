"""`python -m cacheproxy` runs the same entry point as the console script."""

from cacheproxy.cli.main import main

raise SystemExit(main())

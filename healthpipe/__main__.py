"""`python -m healthpipe` runs the command line."""

from pipelines.cli import main

raise SystemExit(main())

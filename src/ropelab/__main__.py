"""``python -m ropelab`` runs the CLI."""

from ropelab.cli import main

raise SystemExit(main())

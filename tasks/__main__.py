"""``python3 -m tasks [doit arguments]``: doit with fexstack's tasks, in the current folder."""

from tasks import main

raise SystemExit(main())

"""``python -m robaudit`` is the same as the ``robaudit`` command."""

from robaudit.cli import main

main()

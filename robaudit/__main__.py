"""``python -m robaudit`` is the same as the ``robaudit`` command."""

from robaudit.entry import main

main()

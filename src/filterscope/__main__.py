"""``python -m filterscope``: the command line."""

from ._launch import main

main()

"""The command line's exit codes, one set for every subcommand (as pip's status_codes.py)."""

OK = 0
FAILED = 1  # ran, and something did not work (a failed file, a busy evictor, a runtime error)
USAGE = 2  # invalid arguments or settings, like argparse's own usage errors

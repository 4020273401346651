"""`python -m exercises.message_server --help`: YOUR lesson 06 server program.
It runs server_main() from exercises/lesson06_capstone.py."""
import sys

from .lesson06_capstone import server_main  # relative: the same file works in any copy

if __name__ == "__main__":
    sys.exit(server_main())

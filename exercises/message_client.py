"""`python -m exercises.message_client --help`: YOUR lesson 06 client program.
It runs client_main() from exercises/lesson06_capstone.py."""
import sys

from .lesson06_capstone import client_main  # relative: the same file works in any copy

if __name__ == "__main__":
    sys.exit(client_main())

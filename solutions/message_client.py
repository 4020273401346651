"""`python -m solutions.message_client --help`: lesson 06's client program."""
import sys

from .lesson06_capstone import client_main  # relative: the same file works in any copy

if __name__ == "__main__":
    sys.exit(client_main())

"""`python -m solutions.message_server --help`: lesson 06's server program."""
import sys

from .lesson06_capstone import server_main  # relative: the same file works in any copy

if __name__ == "__main__":
    sys.exit(server_main())

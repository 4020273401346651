"""`python -m solutions.http_server --help`: the hardened HTTP server of lessons 07-09.
It runs main() from solutions/lesson09_slow_http.py."""
import sys

from .lesson09_slow_http import main  # relative: the same file works in any copy

if __name__ == "__main__":
    sys.exit(main())

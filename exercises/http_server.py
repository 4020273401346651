"""`python -m exercises.http_server --help`: YOUR lesson 09 HTTP server program.
It runs main() from exercises/lesson09_slow_http.py."""
import sys

from .lesson09_slow_http import main  # relative: the same file works in any copy

if __name__ == "__main__":
    sys.exit(main())

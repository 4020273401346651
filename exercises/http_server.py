"""`python -m exercises.http_server --help`: YOUR hardened HTTP server, lessons 07-12.
It runs main() from exercises/lesson12_tls_metrics.py (which builds on the reference
lessons 09-11 unless you swap in yours); your lesson 07-09 server alone is
`python -m exercises.lesson09_slow_http`."""
import sys

from .lesson12_tls_metrics import main  # relative: the same file works in any copy

if __name__ == "__main__":
    sys.exit(main())

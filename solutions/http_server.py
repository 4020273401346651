"""`python -m solutions.http_server --help`: the course's hardened HTTP server, lessons 07-12
(static files, deadlines and a cap, rate limits, logins, HTTPS, /metrics).
It runs main() from solutions/lesson12_tls_metrics.py; the lesson 07-09 server alone is
`python -m solutions.lesson09_slow_http`."""
import sys

from .lesson12_tls_metrics import main  # relative: the same file works in any copy

if __name__ == "__main__":
    sys.exit(main())

"""The course's attack lab: small, loopback-only tools for attacking your own servers.

    python -m tools.attack --help            Slowloris, a connection flood, a forged length
    python -m tools.bench_slowloris --help   an honest client's latency, with and without attackers

They refuse any target that is not this machine, bound how many connections they open and for
how long, and stop by themselves.
"""

"""What TLS costs the lesson 12 server, measured on this machine (a benchmark, not a test).

    python -m tools.bench_tls                  # about 10 s; prints one table
    python -m tools.bench_tls --seconds 5 --clients 4

The server, `python -m solutions.http_server` (lesson 12's program), runs as a subprocess
twice: plain HTTP, then HTTPS with a throwaway trustme certificate (made in a temporary
folder, deleted afterwards). Against each, for --seconds:

  keep-alive    --clients connections, each asking GET /hello.txt as fast as it can on one
                connection: the cost of encrypting the bytes
  new each      --clients clients, each opening a NEW connection (and, over TLS, doing a
                whole handshake) for every request: the cost of the handshake

The clients run in this process (threads); TLS clients verify the certificate as a browser
would. Figures depend on the machine and what else runs on it: compare rows, not absolutes.
"""
from __future__ import annotations

import argparse
import contextlib
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import trustme

REPO = Path(__file__).resolve().parent.parent
REQUEST = b"GET /hello.txt HTTP/1.1\r\nHost: bench\r\n\r\n"


def read_reply(sock, buffer: bytearray) -> None:
    """Read one response (head + Content-Length body) from sock, keeping leftovers."""
    while (end := buffer.find(b"\r\n\r\n")) < 0:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("closed")
        buffer += chunk
    head = bytes(buffer[:end]).lower()
    length = int(head.split(b"content-length:", 1)[1].split(b"\r\n", 1)[0])
    while len(buffer) < end + 4 + length:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("closed")
        buffer += chunk
    del buffer[:end + 4 + length]


@contextlib.contextmanager
def server(*flags):
    proc = subprocess.Popen([sys.executable, "-m", "solutions.http_server", "--port", "0",
                             "--rate", "100000000", "--max-clients", "1000",
                             "--log-level", "WARNING", *flags],
                            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                            text=True)
    try:
        first = proc.stdout.readline()
        host, port = first.rsplit("/", 1)[1].rsplit(":", 1)
        yield host, int(port)
    finally:
        proc.terminate()
        proc.wait(5)


def measure(address, context, clients: int, seconds: float, keep_alive: bool) -> float:
    """Requests per second over all clients."""
    counts, stop = [0] * clients, threading.Event()

    def connect():
        sock = socket.create_connection(address, timeout=5)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return context.wrap_socket(sock, server_hostname="127.0.0.1") if context else sock

    def client(i):
        sock, buffer = None, bytearray()
        try:
            while not stop.is_set():
                if sock is None:
                    sock, buffer = connect(), bytearray()
                sock.sendall(REQUEST)
                read_reply(sock, buffer)
                counts[i] += 1
                if not keep_alive:
                    sock.close()
                    sock = None
        finally:
            if sock is not None:
                sock.close()

    threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(clients)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    time.sleep(seconds)
    stop.set()
    for thread in threads:
        thread.join(5)
    return sum(counts) / (time.perf_counter() - started)


def run_benchmark(seconds: float = 2.0, clients: int = 2) -> dict:
    """{(scheme, mode): requests per second}."""
    ca = trustme.CA()
    issued = ca.issue_cert("127.0.0.1", "localhost")
    results = {}
    with tempfile.TemporaryDirectory() as folder:
        certfile, keyfile = Path(folder, "cert.pem"), Path(folder, "key.pem")
        issued.cert_chain_pems[0].write_to_path(str(certfile))
        issued.private_key_pem.write_to_path(str(keyfile))
        client_context = ssl.create_default_context()
        ca.configure_trust(client_context)
        for scheme, flags, context in (
                ("http", (), None),
                ("https", ("--certfile", str(certfile), "--keyfile", str(keyfile)),
                 client_context)):
            with server(*flags) as address:
                for mode, keep_alive in (("keep-alive", True), ("new each", False)):
                    results[scheme, mode] = measure(address, context, clients, seconds,
                                                    keep_alive)
    return results


def table(results: dict) -> str:
    lines = [f"{'':12} {'http req/s':>11} {'https req/s':>12} {'https/http':>11}"]
    for mode in ("keep-alive", "new each"):
        plain, tls = results["http", mode], results["https", mode]
        lines.append(f"{mode:12} {plain:11.0f} {tls:12.0f} {tls / plain:10.2f}x")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.bench_tls",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=2.0, help="per measurement")
    parser.add_argument("--clients", type=int, default=2, help="concurrent clients")
    args = parser.parse_args(argv)
    print(table(run_benchmark(args.seconds, args.clients)))
    return 0


if __name__ == "__main__":
    sys.exit(main())

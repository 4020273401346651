"""Lesson 11 exercise, the users program: python -m exercises.http_users add FILE NAME

The password is read from standard input -- with getpass (no echo) at a terminal, else one
line from a pipe -- and NEVER from a flag: a command line is visible to every user of the
machine (ps, /proc/PID/cmdline) and lands in shell history.

    python -m exercises.http_users add users.txt alice          (asks for the password)
    printf '%s\\n' "$PASS" | python -m exercises.http_users add users.txt alice

The file holds `name:scrypt-hash` lines (lesson 11), mode 0600; adding an existing name
changes its password.
"""
from __future__ import annotations

import argparse
import getpass
import sys

from .lesson11_sessions import NAME, SCRYPT_N, UserStore  # relative: the same file works in any copy


def read_password(stdin=None) -> str:
    """The password: getpass at a terminal (asked twice, must match), else one line of
    `stdin` without its line ending. ValueError if empty or mistyped."""
    raise NotImplementedError("read_password(): getpass (twice) when stdin.isatty(), else "
                              "stdin.readline() without its line ending; empty -> ValueError")


def _power_of_two(text: str) -> int:
    value = int(text)
    if value < 2 or value & (value - 1):
        raise argparse.ArgumentTypeError(f"{text} is not a power of 2 above 1")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=f"python -m {__package__}.http_users",
        description="Manage the server's users file (name:scrypt-hash lines). Passwords are "
                    "read from stdin, never from the command line.")
    commands = parser.add_subparsers(dest="command", required=True)
    add = commands.add_parser("add", help="add a user, or change a user's password",
                              formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    add.add_argument("file", help="the users file (created if missing)")
    add.add_argument("name", help="the user name (1-64 of A-Z a-z 0-9 _ . @ -)")
    add.add_argument("--scrypt-n", type=_power_of_two, default=SCRYPT_N,
                     help="scrypt's cost parameter n for the new hash")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)  # bad usage: message on stderr, exit 2
    if not NAME.fullmatch(args.name):  # refused before asking for a password
        parser.error(f"a user name is 1-64 of A-Z a-z 0-9 _ . @ -, not {args.name!r}")
    try:
        try:
            users = UserStore.load(args.file, n=args.scrypt_n)
        except FileNotFoundError:
            users = UserStore(n=args.scrypt_n)
        existed = args.name in users
        users.add(args.name, read_password())
        users.save(args.file)
    except (OSError, ValueError) as exc:
        parser.error(str(exc))  # exit 2, like every usage error of the course's programs
    print(f"{'updated' if existed else 'added'} {args.name} in {args.file}")
    return 0


if __name__ == "__main__":  # python -m exercises.http_users
    sys.exit(main())

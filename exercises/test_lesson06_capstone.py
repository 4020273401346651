"""Graders for lesson 06, the capstone.  Run: pytest exercises -k lesson06

These graders run your programs for real, as a user would:

    python -m exercises.message_server --port 0 ...
    python -m exercises.message_client --host 127.0.0.1 --port PORT   (commands on stdin)

(with --against DIR, DIR's name replaces "exercises").
"""
import io
import logging
import os
import queue
import re
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from graderkit import (BUSY, LOOPBACK, WAIT, ask, check_on_time, check_is_now, connect,
                       describe, expect, expect_busy, expect_dropped, frame, peer_of, read_frame,
                       read_until_close, reset, run_in_thread, short, trickling)

REPO = Path(__file__).resolve().parent.parent
FIRST_LINE_WAIT = 5.0  # a cold Python start on a slow CI machine can take a second or two
FIRST_LINE = re.compile(r"listening on (\d{1,3}(?:\.\d{1,3}){3}):(\d+)\s*$")


@pytest.fixture
def lesson(graded):
    return graded("lesson06_capstone")


# --------------------------------------------------------------------------- running programs


def raise_if_not_implemented(stderr: str) -> None:
    """A stub's NotImplementedError ends the program with a traceback; report it as such."""
    for line in reversed(stderr.splitlines()):
        if line.startswith("NotImplementedError"):
            raise NotImplementedError(line.partition(":")[2].strip() or "see the traceback")


class ServerProcess:
    def __init__(self, proc, stderr_path, host, port):
        self.proc, self.stderr_path = proc, stderr_path
        self.host, self.port = host, port
        self.address = (host, port)

    def stderr(self) -> str:
        return self.stderr_path.read_text(encoding="utf-8", errors="replace")

    def wait_for_log(self, *parts, wait=WAIT):
        ends = time.monotonic() + wait
        while True:
            for line in self.stderr().splitlines():
                if all(part in line for part in parts):
                    return line
            if time.monotonic() > ends:
                return None
            time.sleep(0.02)


class Programs:
    """Starts your programs as subprocesses (and makes sure none outlives the test)."""

    def __init__(self, folder: Path, tmp_path: Path, story):
        self.package = folder.name
        self.tmp_path, self.story = tmp_path, story
        paths = [str(folder.parent), str(REPO), os.environ.get("PYTHONPATH", "")]
        self.env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in paths if p)}
        self.env.pop("PYTHONUNBUFFERED", None)  # a real pipe: the first line must be flushed
        self.procs = []

    def command(self, program, *flags):
        return [sys.executable, "-m", f"{self.package}.{program}", *flags]

    def describe(self, program, *flags):
        return " ".join(["python -m", f"{self.package}.{program}", *flags])

    def help(self, program):
        self.story.step(f"ran: {self.describe(program, '--help')}")
        try:
            done = subprocess.run(self.command(program, "--help"), capture_output=True, text=True,
                                  env=self.env, cwd=REPO, timeout=10)
        except subprocess.TimeoutExpired:
            self.story.fail("--help to print the usage and exit", "still running after 10 s")
        raise_if_not_implemented(done.stderr)
        return done

    def server(self, *flags) -> ServerProcess:
        flags = ("--port", "0", *flags)
        self.story.step(f"ran: {self.describe('message_server', *flags)}")
        stderr_path = self.tmp_path / f"server-{len(self.procs)}.stderr"
        with open(stderr_path, "w") as stderr:
            proc = subprocess.Popen(self.command("message_server", *flags), env=self.env,
                                    cwd=REPO, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                    stderr=stderr, text=True)
        self.procs.append(proc)
        lines = queue.Queue()

        def read_stdout():
            for line in proc.stdout:
                lines.put(line)
            lines.put(None)  # end of output: the program has exited

        threading.Thread(target=read_stdout, name="grader-stdout", daemon=True).start()
        try:
            first = lines.get(timeout=FIRST_LINE_WAIT)
        except queue.Empty:
            self.story.fail(f"a first line 'listening on HOST:PORT' within {FIRST_LINE_WAIT} s "
                            "(print it with flush=True: through a pipe, stdout is buffered)",
                            "nothing on stdout")
        if first is None:
            proc.wait(timeout=WAIT)
            stderr_text = stderr_path.read_text(encoding="utf-8", errors="replace")
            raise_if_not_implemented(stderr_text)
            self.story.fail("the server to keep running after 'listening on HOST:PORT'",
                            f"it exited with status {proc.returncode}, having printed nothing; "
                            f"stderr ends: {short(stderr_text[-300:], 300)}")
        match = FIRST_LINE.match(first)
        self.story.check(match is not None, "the first line 'listening on HOST:PORT'",
                         repr(first))
        host, port = match.group(1), int(match.group(2))
        self.story.step(f"it printed 'listening on {host}:<port>'")
        return ServerProcess(proc, stderr_path, host, port)

    def client(self, port, stdin_text, *flags, timeout=8.0):
        flags = ("--host", LOOPBACK, "--port", str(port), *flags)
        self.story.step(f"ran: {self.describe('message_client', *flags)} with stdin "
                        f"{stdin_text!r}")
        try:
            done = subprocess.run(self.command("message_client", *flags), input=stdin_text,
                                  capture_output=True, text=True, env=self.env, cwd=REPO,
                                  timeout=timeout)
        except subprocess.TimeoutExpired as exc:
            self.story.fail(f"the client to exit within {timeout} s",
                            f"still running; stdout so far: {short(exc.stdout)}")
        raise_if_not_implemented(done.stderr)
        return done

    def close(self):
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
            try:
                proc.wait(timeout=WAIT)
            except subprocess.TimeoutExpired:
                pass
            if proc.stdout:
                proc.stdout.close()


@pytest.fixture
def programs(lesson, request, tmp_path, story):
    # `lesson` first: if the module does not even import, that is the failure to report.
    folder = Path(request.config.getoption("against")).resolve()
    runner = Programs(folder, tmp_path, story)
    yield runner
    runner.close()






def trickle_until_dropped(sock, story, data, wait, interval=0.1):
    """Send data a byte every `interval` s in the background; expect the server to hang up
    within `wait` s, before all of it is sent."""
    with trickling(sock, story, data, interval) as finish:
        expect_dropped(sock, story, "the message deadline", wait=wait)
        sent = finish()
    story.check(sent < len(data), "to be dropped before the message was complete",
                f"all {sent} bytes went out first")


BIG = 60_000  # bytes: a reply this long never arrives in one recv()


class FakeServer:
    """The grader's own server for testing your client on its own. It replies to each message
    with the text reversed (so a client cannot pass by printing anything of its own), to
    "quit" with "bye", and records what it received and how the connection ended."""

    def __init__(self, mode="normal", host=LOOPBACK):
        # "normal"; "busy"; "hang-up": closes after one message, no reply; "silent": reads but
        # never replies; "mute": accepts, then neither reads nor replies; "big": each reply is
        # the reversed text repeated to BIG bytes, sent in small pieces
        self.mode = mode
        self.received = []
        self.received_at = []  # time.monotonic() of each message
        self.ending = "no connection"
        self.listener = socket.create_server((host, 0))
        # A client PROGRAM may take seconds to start on a busy machine: wait for it that long.
        self.listener.settimeout(FIRST_LINE_WAIT * 2)
        self.port = self.listener.getsockname()[1]
        self.done = run_in_thread(self.serve, name="grader-fake-server")

    def serve(self):
        with self.listener:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
        with conn:
            # Silent, it outwaits the client's own time limit: only the client may give up.
            conn.settimeout(10.0 if self.mode in ("silent", "mute") else WAIT)
            if self.mode == "mute":
                read_until_close(conn)
                self.ending = "the client closed the connection"
                return
            if self.mode == "busy":
                conn.sendall(frame(BUSY))
            while True:
                try:
                    text = read_frame(conn).decode("utf-8", errors="replace")
                except ConnectionError:
                    self.ending = "the client closed the connection"
                    return
                except OSError as exc:
                    self.ending = describe(exc)
                    return
                self.received.append(text)
                self.received_at.append(time.monotonic())
                if self.mode == "silent":
                    continue
                if self.mode in ("busy", "hang-up"):
                    self.ending = "the server hung up"
                    return
                if text.strip().lower() == "quit":
                    conn.sendall(frame("bye"))
                    self.ending = "bye"
                    return
                reply = frame(text[::-1])
                if self.mode == "forged":  # a lying server: announces 4 GiB, sends nothing
                    conn.sendall(struct.pack("!I", 0xFFFFFFFF))
                    read_until_close(conn)
                    self.ending = "the client closed the connection"
                    return
                if self.mode == "big":
                    reply = frame((text[::-1] * BIG)[:BIG])
                    for i in range(0, len(reply), 4096):  # in pieces: one recv cannot get it all
                        conn.sendall(reply[i:i + 4096])
                        time.sleep(0.001)
                    continue
                conn.sendall(reply)

    def finish(self):
        self.done.result(timeout=WAIT * 2)
        return self


# --------------------------------------------------------------------------- 06.server_cli


@pytest.mark.task("06.server_cli")
def test_server_help_lists_every_flag(programs, story):
    done = programs.help("message_server")
    story.check(done.returncode == 0, "--help to exit with status 0",
                f"status {done.returncode}; stderr: {short(done.stderr[-300:], 300)}")
    missing = [flag for flag in ("--host", "--port", "--max-msg", "--idle-timeout",
                                 "--message-deadline", "--max-clients", "--log-level")
               if flag not in done.stdout]
    story.check(not missing, "every flag described in the help", f"missing: {missing}")


@pytest.mark.task("06.server_cli")
def test_server_listens_on_loopback_by_default_and_talks(programs, story):
    server = programs.server()
    story.check(server.host == LOOPBACK, "127.0.0.1 when no --host is given (only this machine "
                "can connect)", server.host + (" -- every network interface, reachable from "
                                               "other machines" if server.host == "0.0.0.0"
                                               else ""))
    story.check(server.port != 0, "the real port the OS chose, not 0", str(server.port))
    with connect(server.address, story) as client:
        expect(client, story, "echo hello", "hello")
        expect(client, story, "upper hello", "HELLO")
        expect(client, story, "quit", "bye")


@pytest.mark.task("06.server_cli")
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_server_exits_cleanly_on_a_signal(programs, story, signum):
    server = programs.server()
    with connect(server.address, story) as client:
        expect(client, story, "echo hi", "hi")
        story.step(f"while that client stayed connected, sent {signum.name} to the server")
        server.proc.send_signal(signum)
        try:
            status = server.proc.wait(timeout=3.0)
        except subprocess.TimeoutExpired:
            story.fail(f"the server to exit within 3 s of {signum.name}", "still running")
    story.check(status == 0, f"exit status 0 after {signum.name} (a signal handler that stops "
                "the server, then return 0)",
                f"status {status}; stderr ends: {short(server.stderr()[-300:], 300)}")


# --------------------------------------------------------------------------- 06.client_cli


@pytest.mark.task("06.client_cli")
def test_client_prints_each_reply_and_stops_after_quit(programs, story):
    fake = FakeServer()
    story.step("the grader started its own server: it replies with each message reversed")
    done = programs.client(fake.port, "echo hello\nupper abc\nquit\necho never\n")
    fake.finish()
    story.check(fake.received == ["echo hello", "upper abc", "quit"],
                "the server to receive 'echo hello', 'upper abc', 'quit' and nothing after quit",
                repr(fake.received))
    story.check(done.stdout.splitlines() == ["olleh ohce", "cba reppu", "bye"],
                "stdout: each reply on its own line: 'olleh ohce', 'cba reppu', 'bye'",
                repr(done.stdout))
    story.check(done.returncode == 0, "exit status 0 after quit",
                f"status {done.returncode}; stderr: {short(done.stderr[-300:], 300)}")


@pytest.mark.task("06.client_cli")
def test_client_exits_at_the_end_of_input(programs, story):
    fake = FakeServer()
    story.step("the grader started its own server: it replies with each message reversed")
    done = programs.client(fake.port, "echo one\necho two\n")
    fake.finish()
    story.check(done.stdout.splitlines() == ["eno ohce", "owt ohce"],
                "stdout: 'eno ohce' and 'owt ohce', one per line", repr(done.stdout))
    story.check(done.returncode == 0, "exit status 0 at the end of input",
                f"status {done.returncode}; stderr: {short(done.stderr[-300:], 300)}")
    story.check(fake.ending == "the client closed the connection",
                "the client to close the connection when its input ends", fake.ending)


@pytest.mark.task("06.client_cli")
@pytest.mark.parametrize("mode", ["busy", "hang-up"])
def test_client_reports_a_busy_or_vanishing_server(programs, story, mode):
    fake = FakeServer(mode)
    story.step("the grader's server " + ("says 'server busy, try later' as soon as a client "
                                         "connects" if mode == "busy" else
                                         "hangs up after the first message, without a reply"))
    done = programs.client(fake.port, "echo hi\n")
    fake.finish()
    story.check(done.returncode != 0, "a non-zero exit status (the conversation failed)",
                f"status {done.returncode}, stdout {short(done.stdout)}")
    story.check(done.stderr.strip() != "", "an error message on stderr", "nothing on stderr")
    if mode == "busy":
        story.check("busy" in done.stderr.lower(), "stderr to say the server is busy",
                    short(done.stderr[-300:], 300))


@pytest.mark.task("06.client_cli")
def test_client_gives_up_on_a_silent_server(programs, story):
    fake = FakeServer("silent")
    story.step("the grader's server reads messages but never replies")
    started = time.monotonic()
    done = programs.client(fake.port, "echo hello?\n", "--timeout", "0.5", timeout=5.0)
    story.step(f"the client exited after {time.monotonic() - started:.2f} s")
    story.check(done.returncode != 0, "a non-zero exit status (no reply within --timeout)",
                f"status {done.returncode}, stdout {short(done.stdout)}")
    story.check(done.stderr.strip() != "", "an error message on stderr", "nothing on stderr")
    fake.finish()


@pytest.mark.task("06.client_cli")
def test_run_client_in_process(lesson, story):
    fake = FakeServer()
    out = FlushedLines()
    lines = ["\n", "echo x\n", "  \n", "Quit\n", "echo never\n"]
    story.step(f"called run_client('127.0.0.1', <port>, {lines!r}, out=<a StringIO that notes "
               "flushes>, timeout=2.0) against the grader's server (blank lines are skipped, "
               "not the end; nothing is sent after quit, in any case)")
    call = run_in_thread(lesson.run_client, LOOPBACK, fake.port, lines, out, 2.0,
                         name="grader-run-client")
    try:
        status = call.result(timeout=5.0)
    except NotImplementedError:
        raise
    except Exception as exc:
        story.fail("run_client to return 0", describe(exc))
    fake.finish()
    story.check(fake.received == ["echo x", "Quit"], "the server to receive 'echo x' and "
                "'Quit', and nothing after quit", repr(fake.received))
    story.check(out.getvalue().splitlines() == ["x ohce", "bye"],
                "'x ohce' and 'bye' written to out", repr(out.getvalue()))
    story.check(out.unflushed == 0, "each reply flushed as soon as it is written (a person "
                "reading through a pipe sees it at once)", f"{out.unflushed} lines never flushed")
    story.check(status == 0, "run_client to return 0", repr(status))


class FlushedLines(io.StringIO):
    """An `out` that counts lines written but not yet flushed."""

    def __init__(self):
        super().__init__()
        self.unflushed = 0

    def write(self, text):
        self.unflushed += text.count("\n")
        return super().write(text)

    def flush(self):
        self.unflushed = 0
        super().flush()


@pytest.mark.task("06.client_cli")
def test_run_client_refuses_a_forged_reply_length(lesson, story, capsys):
    fake = FakeServer("forged")
    story.step("the grader's server answers with a header announcing 4 GiB, and no body")
    status, out, ended, started = timed_run_client(lesson, story, fake, ["echo hi\n"], 2.0)
    err = capsys.readouterr().err
    fake.finish()
    story.check(status == 1 and out == "", "run_client to print nothing and return 1 at once "
                "(the client checks the size cap too: recv_msg raises MessageTooLarge)",
                f"status {status!r}, out {short(out)}")
    story.check(ended - started < 1.0, "to give up at once, not after its 2 s timeout",
                f"after {ended - started:.2f} s")
    story.check(err.startswith("error: ") and len(err.strip()) > len("error:"),
                "one line on stderr: 'error: ' and what went wrong", short(err, 200))


@pytest.mark.task("06.client_cli")
def test_run_client_reports_a_refused_connection(lesson, story, capsys):
    port = free_port()
    story.step("called run_client('127.0.0.1', <a port nobody listens on>, ['echo hi\\n'], "
               "out=StringIO(), timeout=2.0)")
    call = run_in_thread(lesson.run_client, LOOPBACK, port, ["echo hi\n"], io.StringIO(), 2.0,
                         name="grader-run-client")
    status = call.result_for(story, "run_client to return 1", timeout=5.0)
    err = capsys.readouterr().err
    story.check(status == 1, "run_client to return 1 (the connection was refused)",
                repr(status))
    story.check(err.startswith("error: ") and len(err.strip()) > len("error:"),
                "one line on stderr: 'error: ' and what went wrong", short(err, 200))


@pytest.mark.task("06.client_cli")
def test_client_main_passes_host_and_timeout_on(lesson, story, capsys):
    fake = FakeServer("silent")
    story.step("the grader's server reads messages but never replies; called "
               "client_main(['--host', '127.0.0.1', '--port', <port>, '--timeout', '0.6']) "
               "with stdin 'echo hello?\\n'")
    started = time.monotonic()
    call = run_in_thread(run_client_main, lesson, ["--host", LOOPBACK, "--port", str(fake.port),
                                                   "--timeout", "0.6"], "echo hello?\n",
                         name="grader-client-main")
    status = call.result_for(story, "client_main to give up after 0.6 s", timeout=5.0)
    ended = time.monotonic()
    capsys.readouterr()
    story.check(status == 1, "client_main to return 1 (no reply within --timeout)",
                repr(status))
    since = fake.received_at[0] if fake.received_at else started
    check_on_time(story, "client_main giving up (--timeout 0.6, from the message)",
                  ended - since, 0.6)
    fake.finish()
    if sys.platform.startswith("linux"):  # all of 127/8 is loopback on Linux, not on macOS
        other = FakeServer(host="127.0.0.2")
        story.step("the grader's server listens on 127.0.0.2 only; called client_main(['--host', "
                   "'127.0.0.2', '--port', <port>]) with stdin 'quit\\n'")
        status = run_client_main(lesson, ["--host", "127.0.0.2", "--port", str(other.port)],
                                 "quit\n")
        out = capsys.readouterr().out
        other.finish()
        story.check(status == 0 and other.received == ["quit"], "--host to be used: 'bye' "
                    "from 127.0.0.2", f"status {status}; stdout {short(out)}")


# --------------------------------------------------------------------------- 06.end_to_end


@pytest.mark.task("06.end_to_end")
def test_your_client_talks_to_your_server(programs, story):
    server = programs.server()
    done = programs.client(server.port, "echo hello\nupper shout\ntime\nbogus\nquit\n")
    lines = done.stdout.splitlines()
    story.check(len(lines) == 5, "five replies on stdout", repr(done.stdout))
    story.check(lines[:2] == ["hello", "SHOUT"], "'hello' then 'SHOUT'", repr(lines[:2]))
    check_is_now(story, lines[2])
    story.check(lines[3:] == ["error: unknown command", "bye"],
                "'error: unknown command' then 'bye'", repr(lines[3:]))
    story.check(done.returncode == 0, "the client to exit with status 0",
                f"status {done.returncode}; stderr: {short(done.stderr[-300:], 300)}")


@pytest.mark.task("06.end_to_end")
def test_max_clients_flag(programs, story):
    server = programs.server("--max-clients", "1")
    with connect(server.address, story) as holder:
        expect(holder, story, "echo first", "first", who="the first client")
        expect_busy(server.address, story, "a second client", check_close=False)
    line = server.wait_for_log("REJECT")
    story.check(line is not None, "a REJECT line in the server's log (stderr)",
                short(server.stderr()[-500:], 500))


@pytest.mark.task("06.end_to_end")
def test_max_msg_flag(programs, story):
    server = programs.server("--max-msg", "100", "--idle-timeout", "5", "--message-deadline", "5")
    with connect(server.address, story) as client:
        expect(client, story, "echo " + "x" * 95, "x" * 95)
        client.sendall(struct.pack("!I", 101))
        story.step("sent a header announcing 101 bytes (--max-msg 100), and no body")
        expect_dropped(client, story, "101 > --max-msg; the idle timeout is 5 s")


@pytest.mark.task("06.end_to_end")
def test_idle_timeout_flag(programs, story):
    server = programs.server("--idle-timeout", "0.3")
    with connect(server.address, story) as client:
        expect(client, story, "echo hi", "hi")
        story.step("then said nothing (--idle-timeout 0.3)")
        expect_dropped(client, story, "idle for longer than --idle-timeout")


@pytest.mark.task("06.end_to_end")
def test_message_deadline_flag(programs, story):
    server = programs.server("--idle-timeout", "0.3", "--message-deadline", "0.5")
    with connect(server.address, story) as client:
        expect(client, story, "echo hi", "hi")
        trickle_until_dropped(client, story, frame("echo " + "t" * 35), wait=2.0)


def holder(address, story, i, within=2.5):
    """Client i, connected and answered 'holder i'. Told busy, it connects again: the slot of
    a connection the server has just closed comes back a moment after the close."""
    ends = time.monotonic() + within
    while True:
        sock = connect(address, story)
        try:
            reply = ask(sock, story, f"echo holder {i}", who=f"client {i}")
        except OSError as exc:  # the busy reply's close raced our send
            reply = describe(exc)
        if reply == f"holder {i}":
            story.step(f"client {i} got {short(reply)}")
            return sock
        sock.close()
        if time.monotonic() > ends:
            story.fail(f"the reply {short(f'holder {i}')} within {within} s (client {i} of the "
                       "default 10)", short(reply))
        time.sleep(0.05)


@pytest.mark.task("06.end_to_end")
def test_the_defaults_are_the_safe_ones(programs, story):
    server = programs.server()
    story.step("(no flags but --port 0: every limit at its default)")
    with connect(server.address, story) as client:
        expect(client, story, "echo defaults", "defaults")
        client.sendall(struct.pack("!I", 64 * 1024 + 1))
        story.step("sent a header announcing 65537 bytes (default --max-msg is 65536)")
        expect_dropped(client, story, "a frame over the default cap is dropped unread")
    holders = []
    try:
        for i in range(10):
            holders.append(holder(server.address, story, i))
        expect_busy(server.address, story, "client 10 (the eleventh; default --max-clients 10)",
                    check_close=False)
    finally:
        for sock in holders:
            sock.close()


# --------------------------------------------------------------------------- every input


def exit_status(call, *args):
    """Run call(*args) expecting argparse to refuse: the SystemExit code, or what happened."""
    try:
        result = call(*args)
    except SystemExit as exc:
        return exc.code
    except NotImplementedError:
        raise
    except Exception as exc:
        return describe(exc)
    return result if isinstance(result, int) else f"no exit: it returned {short(result)}"


BAD_SERVER_FLAGS = [
    ("--port", "70000"), ("--port", "65536"), ("--port", "-1"), ("--port", "http"),
    ("--idle-timeout", "nan"), ("--idle-timeout", "inf"), ("--message-deadline", "1e300"),
    ("--max-msg", "0"), ("--max-msg", "-5"), ("--max-msg", "lots"), ("--max-msg", "1.5"),
    ("--idle-timeout", "0"), ("--idle-timeout", "-1"), ("--idle-timeout", "soon"),
    ("--message-deadline", "0"), ("--message-deadline", "-2"), ("--message-deadline", "x"),
    ("--max-clients", "0"), ("--max-clients", "-3"), ("--max-clients", "many"),
    ("--max-clients", "2.5"), ("--log-level", "LOUD"),
]


@pytest.mark.task("06.server_cli")
def test_the_server_parser_refuses_every_invalid_value(lesson, story, capsys):
    story.step("(argparse's way to refuse a value: an error message and exit status 2, before "
               "anything starts; a cap of 0 would admit nobody, a negative timeout would crash "
               "later, a port over 65535 does not exist)")
    for flag, value in BAD_SERVER_FLAGS:
        story.step(f"called build_server_parser().parse_args([{flag!r}, {value!r}])")
        status = exit_status(lesson.build_server_parser().parse_args, [flag, value])
        err = capsys.readouterr().err
        story.check(status == 2, f"{flag} {value} refused: SystemExit(2) with a message (use "
                    "an argparse type that raises ArgumentTypeError)", str(status))
        story.check(value in err, f"the error message to name the value refused ({value})",
                    short(err, 200))
    good = [("--port", "0", 0), ("--port", "65535", 65535), ("--max-clients", "1", 1), ("--max-msg", "1000000",
            1000000), ("--idle-timeout", "0.5", 0.5), ("--message-deadline", "2.5", 2.5)]
    good += [("--log-level", level, level) for level in ("DEBUG", "INFO", "WARNING", "ERROR")]
    for flag, value, parsed in good:
        story.step(f"called build_server_parser().parse_args([{flag!r}, {value!r}])")
        try:
            got = getattr(lesson.build_server_parser().parse_args([flag, value]),
                          flag[2:].replace("-", "_"), "(missing)")
        except SystemExit as exc:
            got = f"SystemExit({exc.code})"
        story.check(got == parsed, f"{flag} {value} accepted as {parsed!r}",
                    f"{got!r}; stderr {short(capsys.readouterr().err, 200)}")


@pytest.mark.task("06.server_cli")
def test_the_server_parser_defaults_are_the_safe_ones(lesson, story):
    story.step("called build_server_parser().parse_args([])")
    args = vars(lesson.build_server_parser().parse_args([]))
    safe = {"host": "127.0.0.1", "port": 0, "max_msg": 65536, "idle_timeout": 30,
            "message_deadline": 10, "max_clients": 10, "log_level": "INFO"}
    for name, value in safe.items():
        story.check(args.get(name) == value, f"{name} = {value!r} by default",
                    f"{name} = {args.get(name, '(missing)')!r}")
    story.step("called build_server_parser().format_help()")
    help_text = lesson.build_server_parser().format_help()
    story.check(re.search(r"\n\n\S.*\n", help_text.split("options:")[0]) is not None,
                "a sentence saying what the program is, between usage and options "
                "(description=...)", short(help_text[:300], 300))
    for flag, shown in [("--host", "127.0.0.1"), ("--port", "0"), ("--max-msg", "65536"),
                        ("--idle-timeout", "30"), ("--message-deadline", "10"),
                        ("--max-clients", "10"), ("--log-level", "INFO")]:
        part = help_text[help_text.find("\n  " + flag) + 1:]  # its entry, not the usage line
        part = part[:re.search(r"\n  -", part[2:] + "\n  -").start() + 2]
        story.check(re.search(rf"default\W+{re.escape(shown)}", part, re.IGNORECASE),
                    f"the help of {flag} to say 'default: {shown}' (e.g. "
                    "formatter_class=argparse.ArgumentDefaultsHelpFormatter)", short(part, 200))


@pytest.mark.task("06.server_cli")
def test_the_server_program_refuses_invalid_flags_before_listening(programs, story):
    cases = [("--max-clients", "0"), ("--port", "70000"), ("--idle-timeout", "soon")]
    procs = []
    for flag, value in cases:
        story.step(f"ran: {programs.describe('message_server', flag, value)}")
        procs.append(subprocess.Popen(programs.command("message_server", flag, value),
                                      env=programs.env, cwd=REPO, stdin=subprocess.DEVNULL,
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                      text=True))
    programs.procs.extend(procs)
    for (flag, value), proc in zip(cases, procs):
        try:
            out, err = proc.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, err = proc.communicate()
            story.fail(f"{flag} {value} refused at once", f"still running; stdout {short(out)}")
        raise_if_not_implemented(err)
        story.check("listening" not in out, f"{flag} {value} refused BEFORE 'listening on'",
                    f"stdout {short(out)}")
        story.check(proc.returncode == 2, f"{flag} {value}: exit status 2 (a usage error)",
                    f"status {proc.returncode}; stderr {short(err[-200:], 200)}")


def run_client_main(lesson, argv, stdin_text=""):
    """client_main(argv) in this process, with stdin_text as its standard input."""
    saved = sys.stdin
    sys.stdin = io.StringIO(stdin_text)
    try:
        return exit_status(lesson.client_main, argv)
    finally:
        sys.stdin = saved


@pytest.mark.task("06.client_cli")
def test_the_client_refuses_invalid_flags(lesson, story, capsys):
    for argv in [[], ["--port", "70000"], ["--port", "-1"], ["--port", "p"],
                 ["--port", "1", "--timeout", "0"], ["--port", "1", "--timeout", "-1"],
                 ["--port", "1", "--timeout", "later"]]:
        story.step(f"called client_main({argv!r})" + ("  (no --port: it is required)"
                                                       if not argv else ""))
        status = run_client_main(lesson, argv)
        err = capsys.readouterr().err
        story.check(status == 2, "SystemExit(2) and a message: refused before connecting",
                    f"{status}; stderr {short(err, 200)}")


@pytest.mark.task("06.client_cli")
def test_the_client_defaults_to_loopback_and_shows_its_timeout(lesson, story, capsys):
    fake = FakeServer()
    story.step("the grader's server listens on 127.0.0.1; called client_main(['--port', "
               "<port>]) with stdin 'echo x\\nquit\\n' (no --host: the default must be "
               "127.0.0.1)")
    status = run_client_main(lesson, ["--port", str(fake.port)], "echo x\nquit\n")
    out = capsys.readouterr().out
    fake.finish()
    story.check(fake.received == ["echo x", "quit"] and status == 0,
                "the client to reach 127.0.0.1 and exit with status 0",
                f"status {status}; the server received {fake.received!r}; stdout {short(out)}")
    story.step("called client_main(['--help'])")
    status = run_client_main(lesson, ["--help"])
    help_text = capsys.readouterr().out
    story.check(status == 0, "--help to exit 0", repr(status))
    story.check(re.search(r"\n\n\S.*\n", help_text.split("options:")[0]) is not None,
                "a sentence saying what the program is, between usage and options",
                short(help_text[:300], 300))
    for flag, shown in [("--host", "127.0.0.1"), ("--timeout", "5"), ("--port", "")]:
        part = help_text[help_text.find("\n  " + flag) + 1:]  # its entry, not the usage line
        part = part[:re.search(r"\n  -", part[2:] + "\n  -").start() + 2]
        described = part.split(None, 2)[2:]  # what follows "--flag METAVAR"
        story.check(shown in part and described and "default: None" not in part,
                    f"{flag} described" + (f", its default {shown} shown" if shown else
                                           ", with no default (it is required)"),
                    short(part, 200))


# --------------------------------------------------------------------------- the client, live


def timed_run_client(lesson, story, fake, lines, timeout):
    story.step(f"called run_client('127.0.0.1', <port>, {lines!r}, out=StringIO(), "
               f"timeout={timeout})")
    out = io.StringIO()
    started = time.monotonic()
    call = run_in_thread(lesson.run_client, LOOPBACK, fake.port, lines, out, timeout,
                         name="grader-run-client")
    status = call.result_for(story, f"run_client to give up and return 1 after {timeout} s",
                             timeout=timeout * 2 + 2)
    return status, out.getvalue(), time.monotonic(), started


@pytest.mark.task("06.client_cli")
@pytest.mark.parametrize("mode", ["silent", "mute"])
def test_run_client_gives_up_on_a_silent_server_in_time(lesson, story, capsys, mode):
    fake = FakeServer(mode)
    story.step("the grader's server " + ("reads each message and never replies" if mode ==
                                         "silent" else "accepts, then never reads or replies"))
    status, out, ended, started = timed_run_client(lesson, story, fake, ["echo hello?\n"], 0.6)
    err = capsys.readouterr().err
    story.check(status == 1, "run_client to return 1 (no reply within its timeout)",
                f"{status!r}; out {short(out)}")
    since = fake.received_at[0] if fake.received_at else started
    check_on_time(story, "run_client giving up (counted from the message)", ended - since, 0.6)
    story.check(err.strip().lower().startswith("error") and
                any(w in err.lower() for w in ("time", "no reply", "silent")),
                "one clear line on stderr, e.g. 'error: no reply from ... within 0.6 s'",
                short(err, 200))
    fake.finish()


@pytest.mark.task("06.client_cli")
def test_run_client_reads_a_long_reply_whole(lesson, story):
    fake = FakeServer("big")
    story.step(f"the grader's server answers with a {BIG}-byte reply, sent in 4 KiB pieces")
    status, out, _, _ = timed_run_client(lesson, story, fake, ["echo abc\n", "echo def\n"], 2.0)
    fake.finish()
    want = [("cba ohce" * BIG)[:BIG], ("fed ohce" * BIG)[:BIG]]
    got = out.splitlines()
    story.check(got == want, f"two replies of {BIG} characters each, whole (read the length, "
                "then exactly that many bytes, however many recv() calls it takes)",
                f"{len(got)} lines of lengths {[len(line) for line in got]}")
    story.check(status == 0, "status 0 at the end of input", repr(status))


def read_line(lines, wait=WAIT):
    try:
        return lines.get(timeout=wait)
    except queue.Empty:
        return None


@pytest.mark.task("06.client_cli")
def test_the_client_answers_each_line_as_it_is_typed(programs, story):
    fake = FakeServer()
    story.step("the grader's server replies with each message reversed")
    flags = ("--host", LOOPBACK, "--port", str(fake.port))
    story.step(f"ran: {programs.describe('message_client', *flags)}, typing one line at a time "
               "and waiting for each reply before typing the next")
    proc = subprocess.Popen(programs.command("message_client", *flags), env=programs.env,
                            cwd=REPO, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    programs.procs.append(proc)
    lines = queue.Queue()

    def pump():
        for line in proc.stdout:
            lines.put(line.rstrip("\n"))
        lines.put(None)
    threading.Thread(target=pump, name="grader-stdout", daemon=True).start()
    try:
        for typed, reply in [("echo one", "eno ohce"), ("upper two", "owt reppu"),
                             ("quit", "bye")]:
            proc.stdin.write(typed + "\n")
            proc.stdin.flush()
            story.step(f"typed {typed!r}")
            got = read_line(lines, wait=FIRST_LINE_WAIT if typed == "echo one" else WAIT)
            if got is None:
                try:  # stdout can close a moment before the process is reaped: wait for it
                    proc.wait(timeout=WAIT)
                except subprocess.TimeoutExpired:
                    pass
                if proc.returncode is not None:
                    raise_if_not_implemented(proc.stderr.read())
            story.check(got == reply, f"{reply!r} on stdout at once, while the input is still "
                        "open (read stdin line by line; print each reply with flush=True)",
                        "nothing yet" if got is None else repr(got))
        status = proc.wait(timeout=WAIT)
    finally:
        if proc.stdin and not proc.stdin.closed:
            try:
                proc.stdin.close()
            except OSError:
                pass
    story.check(status == 0, "exit status 0 after quit", str(status))
    fake.finish()


@pytest.mark.task("06.client_cli")
def test_the_client_program_gives_up_on_a_silent_server_in_time(programs, story):
    fake = FakeServer("silent")
    story.step("the grader's server reads messages but never replies")
    done = programs.client(fake.port, "echo hello?\n", "--timeout", "1.0", timeout=6.0)
    ended = time.monotonic()
    fake.finish()
    story.check(done.returncode == 1, "exit status 1 (no reply within --timeout)",
                f"status {done.returncode}, stdout {short(done.stdout)}")
    story.check(bool(fake.received_at), "the message to reach the server", "it never came")
    # The exit is seen a little after the client gives up: the interpreter has to shut down.
    check_on_time(story, "the client's exit (counted from its message)",
                  ended - fake.received_at[0] - 0.1, 1.0)
    story.check("error" in done.stderr.lower(), "an 'error: ...' line on stderr",
                short(done.stderr, 200))


# --------------------------------------------------------------------------- logs


def admitted(address, story, within=2.0):
    """A client the server has let in: it says 'echo in' and gets 'in', retrying while the
    server says busy (the previous client's slot comes back a moment after it leaves)."""
    ends = time.monotonic() + within
    while True:
        sock = socket.create_connection(address, timeout=WAIT)
        sock.sendall(frame("echo in"))
        try:
            reply = read_frame(sock)
        except OSError as exc:
            reply = describe(exc).encode()
        if reply == b"in":
            story.step(f"a client was let in ('echo in' -> 'in')")
            return sock
        sock.close()
        if time.monotonic() > ends:
            story.fail(f"a client to be let in within {within} s", short(reply))
        time.sleep(0.05)


ENDINGS = {  # how a connection ended -> words, one of which its log lines must contain
    "quit": ("quit", "bye"),
    "close": ("disconnect", "closed", "eof", "hung up", "left"),
    "reset": ("reset",),
    "idle": ("idle", "timeout", "timed out", "silent"),
    "deadline": ("deadline", "too slow", "slowloris"),
    "oversize": ("too large", "limit", "over", "announced", "max"),
    "reject": ("reject", "busy", "capacity", "full"),
}


@pytest.mark.task("06.end_to_end")
def test_every_way_a_connection_ends_is_logged(programs, story):
    server = programs.server("--idle-timeout", "0.4", "--message-deadline", "0.4",
                             "--max-msg", "100", "--max-clients", "1")
    peers = {}
    with admitted(server.address, story) as client:
        peers["quit"] = peer_of(client)
        expect(client, story, "quit", "bye")
        expect_dropped(client, story, "after 'bye'")
    client = admitted(server.address, story)
    peers["close"] = peer_of(client)
    client.close()
    story.step("the client closed the connection")
    client = admitted(server.address, story)
    peers["reset"] = peer_of(client)
    reset(client, story)
    with admitted(server.address, story) as client:
        peers["idle"] = peer_of(client)
        expect_dropped(client, story, "--idle-timeout 0.4")
    with admitted(server.address, story) as client:
        peers["deadline"] = peer_of(client)
        trickle_until_dropped(client, story, frame("echo " + "d" * 30), wait=2.0)
    with admitted(server.address, story) as holder:
        peers["oversize"] = peer_of(holder)
        peers["reject"] = expect_busy(server.address, story, "a second client (--max-clients 1)")
        holder.sendall(struct.pack("!I", 1000))
        story.step("the first client announced 1000 bytes (--max-msg 100)")
        expect_dropped(holder, story, "over --max-msg")
    for ending, peer in peers.items():
        words = ENDINGS[ending]
        line = None
        ends = time.monotonic() + WAIT
        while line is None and time.monotonic() < ends:
            mine = [l for l in server.stderr().splitlines() if peer in l]
            line = next((l for l in mine if any(w in l.lower() for w in words)), None)
            time.sleep(0.02)
        story.check(line is not None, f"a log line naming {peer} that says how it ended "
                    f"({ending}: a word like {', '.join(repr(w) for w in words[:3])})",
                    f"its lines: {short(mine, 400)}")
    idle_lines = [l for l in server.stderr().splitlines() if peers["idle"] in l]
    story.check(not any("deadline" in l.lower() for l in idle_lines),
                "an idle client's lines not to blame a deadline (tell the two clocks apart)",
                short(idle_lines, 300))


@pytest.mark.task("06.end_to_end")
def test_no_character_from_a_client_garbles_the_server_log(programs, story):
    server = programs.server()
    with connect(server.address, story) as client:
        for nasty in ["\n", "\r", "\x1b[31m", "\u2028", "\x00", "\x85", "\u202e", "\x08"]:
            text = f"echo a{nasty}2099-01-01 CRITICAL forged"
            expect(client, story, text, text[5:])
        expect(client, story, "quit", "bye")
    time.sleep(0.1)
    raw = server.stderr()
    lines = raw.split("\n")
    bad = [l for l in lines if l and not l.isprintable()]
    forged = [l for l in lines if l.startswith("2099")]
    story.check(not bad and not forged, "every log line printable and none starting with a "
                "client's text (log repr() of what a client sent)", short((bad or forged)[:2], 300))


# --------------------------------------------------------------------------- stopping


@pytest.fixture
def signal_safety_net():
    """While a test sends itself signals: if the code under test has not installed handlers,
    a signal lands here (and fails the test) instead of killing or interrupting pytest."""
    caught = []

    def net(signum, frame):
        caught.append(signum)
        raise RuntimeError(f"{signal.Signals(signum).name} reached no handler of yours")
    saved = {s: signal.signal(s, net) for s in (signal.SIGINT, signal.SIGTERM)}
    yield caught, net
    for s, handler in saved.items():
        signal.signal(s, handler)


@pytest.mark.task("06.server_cli")
@pytest.mark.timeout(20)
def test_stop_signals_never_miss_a_signal(lesson, story, signal_safety_net):
    import random
    _, net = signal_safety_net
    rounds = 200
    story.step(f"{rounds} times: entered StopSignals(), sent this process SIGINT or SIGTERM "
               "from another thread after 0-3 ms (so it lands at a random moment), and called "
               "wait()")
    pid = os.getpid()
    rng = random.Random(6)
    for i in range(rounds):
        signum = rng.choice([signal.SIGINT, signal.SIGTERM])
        with lesson.StopSignals() as signals:
            timer = threading.Timer(rng.random() * 0.003, os.kill, (pid, signum))
            timer.name = "grader-signal"
            timer.start()
            try:
                got = signals.wait()
            except NotImplementedError:
                raise
            except Exception as exc:
                story.fail(f"wait() to return {signum.name} (round {i + 1})", describe(exc))
            timer.join()
        story.check(got == signum, f"wait() to return {signum.name} (round {i + 1})", repr(got))
        for s in (signal.SIGINT, signal.SIGTERM):
            story.check(signal.getsignal(s) is net, "the previous handlers back after the "
                        "with block (round {})".format(i + 1), repr(signal.getsignal(s)))
    story.step(f"all {rounds} signals were received, none lost, no hang")


@pytest.mark.task("06.server_cli")
def test_the_server_program_stops_at_any_moment(programs, story):
    import random
    rng = random.Random()
    story.step("started 5 servers; each got SIGINT or SIGTERM at a random moment (0-0.2 s after "
               "'listening', one while a client was mid-message)")
    servers = [programs.server() for _ in range(5)]
    client = connect(servers[0].address, story)
    client.sendall(frame("echo unfinished")[:7])
    try:
        for server in servers:
            time.sleep(rng.random() * 0.2)
            server.proc.send_signal(rng.choice([signal.SIGINT, signal.SIGTERM]))
        for i, server in enumerate(servers):
            try:
                status = server.proc.wait(timeout=3.0)
            except subprocess.TimeoutExpired:
                story.fail(f"server {i + 1} to exit within 3 s of its signal", "still running")
            story.check(status == 0, f"server {i + 1} to exit with status 0",
                        f"status {status}; stderr ends {short(server.stderr()[-300:], 300)}")
    finally:
        client.close()


class FirstLineOut(io.StringIO):
    """A stand-in for sys.stdout that notices the first whole line (and whether it was
    flushed after it)."""

    def __init__(self):
        super().__init__()
        self.line_flushed = threading.Event()

    def flush(self):
        super().flush()
        if "\n" in self.getvalue():
            self.line_flushed.set()


def free_port() -> int:
    probe = socket.create_server((LOOPBACK, 0))
    port = probe.getsockname()[1]
    probe.close()
    return port


def drive_server_main(out, seen, port):
    """The helper thread of the in-process server_main test: check each flag by behaviour,
    write what happened into `seen`, then send this process SIGTERM."""
    def hang_up_after(sock, since):
        sock.settimeout(3.0)
        _, how = read_until_close(sock)
        return how, time.monotonic() - since

    try:
        if not out.line_flushed.wait(5.0):
            seen["problem"] = f"no flushed first line within 5 s (stdout: {out.getvalue()!r})"
            return
        seen["first"] = out.getvalue().splitlines()[0]
        address = (LOOPBACK, port)
        with socket.create_connection(address, timeout=WAIT) as holder:
            holder.sendall(frame("upper in process"))
            seen["reply"] = read_frame(holder).decode()
            with socket.create_connection(address, timeout=WAIT) as extra:
                seen["busy"] = read_frame(extra).decode()
            holder.sendall(frame("echo " + "x" * 96))  # 101 bytes: one over --max-msg
            holder.settimeout(3.0)
            data, how = read_until_close(holder)
            seen["oversize"] = how if not data else f"the reply {short(data)}"
        for clock in ("deadline", "idle"):
            ends = time.monotonic() + 2.0
            while True:  # the holder's slot comes back a moment after its close
                sock = socket.create_connection(address, timeout=WAIT)
                sock.sendall(frame("echo in"))
                if read_frame(sock) == b"in" or time.monotonic() > ends:
                    break
                sock.close()
            with sock:
                if clock == "deadline":
                    sock.sendall(b"\x00\x00\x00")
                seen[clock] = hang_up_after(sock, time.monotonic())
    except Exception as exc:
        seen["problem"] = describe(exc)
    finally:
        seen["signalled"] = time.monotonic()
        os.kill(os.getpid(), signal.SIGTERM)


@pytest.mark.task("06.server_cli")
@pytest.mark.timeout(20)
def test_server_main_serves_with_its_flags_then_returns_0_on_sigterm(
        lesson, story, signal_safety_net, monkeypatch, caplog):
    out = FirstLineOut()
    monkeypatch.setattr(sys, "stdout", out)
    caplog.set_level(logging.INFO)
    port, seen = free_port(), {}
    argv = ["--port", str(port), "--max-clients", "1", "--max-msg", "100",
            "--idle-timeout", "1.0", "--message-deadline", "0.4"]
    story.step(f"called server_main({argv}) in the main thread; a helper thread checked "
               "each flag by behaviour, then sent this process SIGTERM")
    before = set(threading.enumerate())
    driver = threading.Thread(target=drive_server_main, args=(out, seen, port),
                              name="grader-driver", daemon=True)
    driver.start()
    try:
        status = lesson.server_main(argv)
    except NotImplementedError:
        raise
    except BaseException as exc:  # SystemExit, or the safety net's RuntimeError
        story.fail("server_main to return 0 after SIGTERM", describe(exc))
    returned = time.monotonic()
    driver.join(WAIT)
    story.check("problem" not in seen, "a flushed first line and a server that answers",
                seen.get("problem", ""))
    story.check(seen.get("first") == f"listening on 127.0.0.1:{port}",
                f"the first line 'listening on 127.0.0.1:{port}' (the --port asked for)",
                repr(seen.get("first")))
    story.check(seen.get("reply") == "IN PROCESS", "the reply 'IN PROCESS'",
                repr(seen.get("reply")))
    story.check(seen.get("busy") == BUSY, f"a second client told {BUSY!r} (--max-clients 1)",
                repr(seen.get("busy")))
    story.check(seen.get("oversize") in ("closed", "reset"), "a 101-byte message dropped "
                "without a reply (--max-msg 100)", repr(seen.get("oversize")))
    for clock, limit, flag in [("deadline", 0.4, "--message-deadline 0.4, after 3 header bytes"),
                               ("idle", 1.0, "--idle-timeout 1.0, after a reply")]:
        how, took = seen.get(clock, ("not tried", 0.0))
        story.check(how in ("closed", "reset"), f"a hang-up ({flag})", how)
        check_on_time(story, f"the hang-up ({flag})", took, limit)
    story.check(status == 0, "server_main to return 0 after SIGTERM", repr(status))
    story.check(returned - seen["signalled"] < 3.0, "server_main to return within 3 s of "
                "SIGTERM", f"{returned - seen['signalled']:.2f} s")
    left = [t.name for t in threading.enumerate()
            if t not in before and t.is_alive() and not t.name.startswith("grader-")]
    story.check(not left, "every server thread gone when server_main returns (server.stop())",
                ", ".join(left))
    story.check(signal.getsignal(signal.SIGTERM) is signal_safety_net[1],
                "the previous SIGTERM handler back after server_main", "it was not restored")
    said = [r.getMessage() for r in caplog.records]
    story.check(any("SIGTERM" in line and "stop" in line.lower() for line in said),
                "a log line saying SIGTERM arrived and the server is stopping",
                short(said[-3:], 300))


@pytest.mark.task("06.server_cli")
@pytest.mark.timeout(15)
def test_server_main_reports_a_port_in_use(lesson, story, signal_safety_net, monkeypatch,
                                           capsys):
    taken = socket.create_server((LOOPBACK, 0))
    port = taken.getsockname()[1]
    story.step(f"the grader listens on a port itself, then called server_main(['--port', "
               f"<that port>])")
    rescue = threading.Timer(3.0, os.kill, (os.getpid(), signal.SIGTERM))
    rescue.name = "grader-rescue"
    rescue.start()
    try:
        status = exit_status(lesson.server_main, ["--port", str(port)])
    finally:
        rescue.cancel()
        taken.close()
    captured = capsys.readouterr()
    story.check(status == 1, "server_main to return 1 at once (the flags were fine, the port "
                "was not: 2 means a usage error)", repr(status))
    story.check(captured.err.startswith("error: ") and "listening" not in captured.out,
                "one line on stderr beginning 'error: ' and no 'listening' on stdout",
                f"stderr {short(captured.err, 120)}; stdout {short(captured.out, 120)}")


@pytest.mark.task("06.client_cli")
@pytest.mark.parametrize("mode", ["busy", "hang-up"])
def test_run_client_reports_a_busy_or_vanishing_server(lesson, story, capsys, mode):
    fake = FakeServer(mode)
    story.step("the grader's server " + ("says 'server busy, try later' at once" if mode ==
                                         "busy" else "hangs up after the first message"))
    status, out, _, _ = timed_run_client(lesson, story, fake, ["echo hi\n", "echo again\n"], 2.0)
    err = capsys.readouterr().err
    fake.finish()
    story.check(status == 1 and out == "", "run_client to print no reply and return 1",
                f"status {status!r}, out {short(out)}")
    story.check(err.startswith("error: "), "one line on stderr beginning 'error: '",
                short(err, 200))
    if mode == "busy":
        story.check("busy" in err, "the error to say the server is busy", short(err, 200))


@pytest.mark.task("06.server_cli")
def test_the_usage_lines_say_how_to_run_the_programs(lesson, story, capsys):
    package = lesson.__name__.rpartition(".")[0]
    usage = lesson.build_server_parser().format_usage()
    story.step("called build_server_parser().format_usage()")
    story.check(usage.startswith(f"usage: python -m {package}.message_server"),
                f"'usage: python -m {package}.message_server ...' (prog=: how it is run, not "
                "the file name)", short(usage, 120))
    story.step("called client_main(['--help'])")
    status = run_client_main(lesson, ["--help"])
    usage = capsys.readouterr().out
    story.check(status == 0 and usage.startswith(f"usage: python -m {package}.message_client"),
                f"exit 0 and 'usage: python -m {package}.message_client ...'",
                f"status {status}; {short(usage, 120)}")

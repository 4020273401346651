"""Graders for lesson 06, the capstone.  Run: pytest exercises -k lesson06

These graders run your programs for real, as a user would:

    python -m exercises.message_server --port 0 ...
    python -m exercises.message_client --host 127.0.0.1 --port PORT   (commands on stdin)

(with --against DIR, DIR's name replaces "exercises").
"""
import io
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

from graderkit import (BUSY, LOOPBACK, WAIT, check_is_now, connect, describe, expect,
                       expect_busy, expect_dropped, frame, read_frame, run_in_thread, short,
                       trickling)

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


class FakeServer:
    """The grader's own server for testing your client on its own. It replies to each message
    with the text reversed (so a client cannot pass by printing anything of its own), to
    "quit" with "bye", and records what it received and how the connection ended."""

    def __init__(self, mode="normal"):
        # "normal"; "busy"; "hang-up": closes after one message, no reply; "silent": never replies
        self.mode = mode
        self.received = []
        self.ending = "no connection"
        self.listener = socket.create_server((LOOPBACK, 0))
        self.listener.settimeout(WAIT)
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
            conn.settimeout(10.0 if self.mode == "silent" else WAIT)
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
                if self.mode == "silent":
                    continue
                if self.mode in ("busy", "hang-up"):
                    self.ending = "the server hung up"
                    return
                if text.strip().lower() == "quit":
                    conn.sendall(frame("bye"))
                    self.ending = "bye"
                    return
                conn.sendall(frame(text[::-1]))

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
    out = io.StringIO()
    story.step("called run_client('127.0.0.1', <port>, ['echo x\\n', 'quit\\n'], out=StringIO(), "
               "timeout=2.0) against the grader's server")
    call = run_in_thread(lesson.run_client, LOOPBACK, fake.port, ["echo x\n", "quit\n"], out,
                         2.0, name="grader-run-client")
    try:
        status = call.result(timeout=5.0)
    except NotImplementedError:
        raise
    except Exception as exc:
        story.fail("run_client to return 0", describe(exc))
    fake.finish()
    story.check(out.getvalue().splitlines() == ["x ohce", "bye"],
                "'x ohce' and 'bye' written to out", repr(out.getvalue()))
    story.check(status == 0, "run_client to return 0", repr(status))


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
            holders.append(connect(server.address, story))
            expect(holders[-1], story, f"echo holder {i}", f"holder {i}", who=f"client {i}")
        expect_busy(server.address, story, "client 10 (the eleventh; default --max-clients 10)",
                    check_close=False)
    finally:
        for sock in holders:
            sock.close()

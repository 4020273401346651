"""Graders for lesson 04, a secure-by-default message server.  Run: pytest exercises -k lesson04"""
import logging
import shlex
import struct
import time

import pytest

from graderkit import (WAIT, ask, check_is_now, connect, expect, is_closed, make_server, peer_of, serving, short,
                       wait_for_line)

UNKNOWN = "error: unknown command"
BAD_UTF8 = "error: invalid UTF-8"


@pytest.fixture
def lesson(graded):
    return graded("lesson04_message_server")


# --------------------------------------------------------------------------- helpers




def injection_attempts(marker):
    """(message, the harmless reply) pairs. Each would create `marker` if the server handed
    the message to eval/exec, os.system or a shell."""
    path, quoted = str(marker), shlex.quote(str(marker))
    return [
        (f"__import__('pathlib').Path({path!r}).write_text('pwned')", UNKNOWN),
        (f"exec(\"open({path!r}, 'w').write('pwned')\")", UNKNOWN),
        (f"__import__('os').system('touch ' + {path!r})", UNKNOWN),
        (f"touch {quoted}", UNKNOWN),
        (f"; touch {quoted}", UNKNOWN),
        (f"echo pwned > {quoted}", f"pwned > {quoted}"),
        (f"echo $(touch {quoted})", f"$(touch {quoted})"),
        (f"echo `touch {quoted}`", f"`touch {quoted}`"),
        (f"echo hi; touch {quoted}", f"hi; touch {quoted}"),
        (f"upper hi && touch {quoted}", f"HI && TOUCH {quoted.upper()}"),
    ]


# --------------------------------------------------------------------------- 04.clean


@pytest.mark.task("04.clean")
@pytest.mark.parametrize("text, cleaned", [
    ("  hello  ", "hello"), ("\tx y\r\n", "x y"), ("echo  a  b", "echo  a  b"), ("   ", "")])
def test_clean_strips_surrounding_whitespace(lesson, story, text, cleaned):
    story.step(f"called clean({text!r})")
    got = lesson.clean(text)
    story.check(got == cleaned, f"{cleaned!r} (whitespace gone from both ends, inner kept)",
                repr(got))


@pytest.mark.task("04.clean")
def test_clean_cuts_to_500_characters_after_stripping(lesson, story):
    cases = [("a" * 600, "a" * 500), ("é" * 501, "é" * 500), ("b" * 500, "b" * 500),
             ("   " + "c" * 600, "c" * 500), ("d" * 499 + "   ", "d" * 499)]
    for text, cleaned in cases:
        story.step(f"called clean({short(text, 30)}) ({len(text)} characters)")
        got = lesson.clean(text)
        story.check(got == cleaned, f"{short(cleaned, 30)} ({len(cleaned)} characters: strip, "
                    f"then keep the first 500)", f"{short(got, 30)} ({len(got)} characters)")


@pytest.mark.task("04.clean")
def test_clean_uses_the_limit_it_is_given(lesson, story):
    story.step("called clean('  abcdef  ', limit=3)")
    got = lesson.clean("  abcdef  ", limit=3)
    story.check(got == "abc", "'abc'", repr(got))


# --------------------------------------------------------------------------- 04.commands


@pytest.mark.task("04.commands")
@pytest.mark.parametrize("line", ["time", "TIME", "Time"])
def test_time_is_the_current_iso_time(lesson, story, line):
    story.step(f"called run_command({line!r})")
    check_is_now(story, lesson.run_command(line))


@pytest.mark.task("04.commands")
@pytest.mark.parametrize("line, reply", [
    ("echo hello", "hello"), ("echo hello world", "hello world"), ("ECHO Mixed Case", "Mixed Case"),
    ("echo a  b", "a  b"), ("echo", ""), ("echo 1+1", "1+1"),
    ("upper hello", "HELLO"), ("UPPER mixed Case", "MIXED CASE"), ("upper é ß", "É SS")])
def test_echo_and_upper(lesson, story, line, reply):
    story.step(f"called run_command({line!r})")
    got = lesson.run_command(line)
    story.check(got == reply, repr(reply), repr(got))


@pytest.mark.task("04.commands")
@pytest.mark.parametrize("line", ["", "bogus", "echoes hi", "timex", "uppercase x", "help",
                                  "1+1", "quit-ish", "echos"])
def test_anything_else_is_an_unknown_command(lesson, story, line):
    story.step(f"called run_command({line!r})")
    got = lesson.run_command(line)
    story.check(got == UNKNOWN, repr(UNKNOWN) + " (only whole, known command words count)",
                repr(got))


# --------------------------------------------------------------------------- 04.injection


@pytest.mark.task("04.injection")
def test_injection_attempts_run_nothing(lesson, story, tmp_path):
    marker = tmp_path / "marker"
    story.step(f"each message below would create {marker.name} in a temporary folder if it "
               "were run by eval/exec, os.system or a shell")
    for line, reply in injection_attempts(marker):
        story.step(f"called run_command({line!r})")
        got = lesson.run_command(line)
        story.check(not marker.exists(), "no file created: the text is data, never code",
                    f"{marker} exists, so the message was EXECUTED")
        story.check(got == reply, repr(reply), repr(got))
    story.step("called run_command('echo still fine')")
    got = lesson.run_command("echo still fine")
    story.check(got == "still fine", "'still fine' (real commands still work)", repr(got))


@pytest.mark.task("04.injection")
def test_injection_over_the_wire_runs_nothing(lesson, story, tmp_path, logs):
    marker = tmp_path / "marker"
    server = make_server(lesson.MessageServer, story, idle_timeout=2.0, logger=logs.logger)
    with serving(server, story) as address, connect(address, story) as client:
        expect(client, story, "echo before", "before")
        for line, reply in injection_attempts(marker):
            expect(client, story, line, reply)
            story.check(not marker.exists(), "no file created: the text is data, never code",
                        f"{marker} exists, so the server EXECUTED the message")
        expect(client, story, "upper after", "AFTER")


# --------------------------------------------------------------------------- 04.server


@pytest.mark.task("04.server")
def test_a_conversation(lesson, story, logs):
    server = make_server(lesson.MessageServer, story, idle_timeout=2.0, logger=logs.logger)
    with serving(server, story) as address, connect(address, story) as client:
        expect(client, story, "echo hello", "hello")
        expect(client, story, "upper quiet please", "QUIET PLEASE")
        check_is_now(story, ask(client, story, "time"))
        expect(client, story, "nonsense", UNKNOWN)
        expect(client, story, "   echo padded   ", "padded")
        expect(client, story, "quit", "bye")
        how = is_closed(client)
        story.check(how in ("closed", "reset"), "the server to close the connection after 'bye'",
                    how)


@pytest.mark.task("04.server")
@pytest.mark.parametrize("line", ["quit", "QUIT", "  Quit  "])
def test_quit_says_bye_and_closes(lesson, story, logs, line):
    server = make_server(lesson.MessageServer, story, idle_timeout=2.0, logger=logs.logger)
    with serving(server, story) as address, connect(address, story) as client:
        expect(client, story, "echo hi", "hi")
        expect(client, story, line, "bye")
        how = is_closed(client)
        story.check(how in ("closed", "reset"), "the server to close the connection after 'bye'",
                    how)


@pytest.mark.task("04.server")
def test_replies_are_cleaned_and_truncated(lesson, story, logs):
    server = make_server(lesson.MessageServer, story, idle_timeout=2.0, logger=logs.logger)
    with serving(server, story) as address, connect(address, story) as client:
        story.step("(the whole message is cut to 500 characters: 'echo ' and 495 x's)")
        expect(client, story, "echo " + "x" * 600, "x" * 495)
        expect(client, story, "\t upper spaced out \n", "SPACED OUT")


@pytest.mark.task("04.server")
def test_connect_message_and_close_are_logged(lesson, story, logs):
    server = make_server(lesson.MessageServer, story, idle_timeout=2.0, logger=logs.logger)
    with serving(server, story) as address:
        with connect(address, story) as client:
            peer = peer_of(client)
            expect(client, story, "echo hello log", "hello log")
            story.step("the client closed the connection without saying quit")
        for parts, what in [(("CONNECT", peer), f"a line 'CONNECT {peer}'"),
                            (("MSG", peer, "echo hello log"),
                             f"a line 'MSG {peer} ...' showing the message"),
                            (("CLOSE", peer), f"a line 'CLOSE {peer}' (logged in a finally, "
                                              "so it appears however the client leaves)")]:
            line = wait_for_line(logs, *parts)
            story.check(line is not None, f"{what} in the log",
                        f"these lines: {logs.lines()}")


@pytest.mark.task("04.server")
def test_a_message_cannot_forge_or_flood_the_log(lesson, story, logs):
    server = make_server(lesson.MessageServer, story, idle_timeout=2.0, logger=logs.logger)
    with serving(server, story) as address, connect(address, story) as client:
        forged = "echo hi\nCLOSE 10.6.6.6:666 (a forged line)"
        expect(client, story, forged, forged[5:])
        expect(client, story, "echo " + "A" * 490, "A" * 490)
        expect(client, story, "quit", "bye")
    lines = logs.lines()
    multi = [line for line in lines if "\n" in line or "\r" in line]
    story.check(not multi, "every log line on one line (log repr(text), so a newline shows "
                "as \\n and a client cannot write a fake line of its own)", repr(multi[:1]))
    long_lines = [line for line in lines if len(line) > 200]
    story.check(not long_lines, "log lines of at most ~100 characters (show the message cut "
                "to about 80)", f"a line of {max(map(len, lines), default=0)} characters")


@pytest.mark.task("04.server")
def test_two_clients_get_their_own_replies(lesson, story, logs):
    server = make_server(lesson.MessageServer, story, idle_timeout=2.0, logger=logs.logger)
    with serving(server, story) as address:
        with connect(address, story) as one, connect(address, story) as two:
            for i in range(3):
                expect(one, story, f"echo one {i}", f"one {i}", who="client one")
                expect(two, story, f"upper two {i}", f"TWO {i}", who="client two")


# --------------------------------------------------------------------------- 04.limits


def check_dropped(client, story, why):
    how = is_closed(client, wait=WAIT)
    story.check(how in ("closed", "reset"),
                f"the server to hang up at once, without reading a body ({why})",
                f"the connection still open after {WAIT} s: {how}"
                if how == "timeout" else how)


@pytest.mark.task("04.limits")
def test_a_forged_4gib_length_is_dropped_unread(lesson, story, logs):
    server = make_server(lesson.MessageServer, story, max_msg=100, idle_timeout=5.0,
                         logger=logs.logger)
    with serving(server, story) as address:
        with connect(address, story) as client:
            expect(client, story, "echo hi", "hi")
            peer = peer_of(client)
            client.sendall(struct.pack("!I", 0xFFFFFFFF))
            story.step("sent a header announcing 4294967295 bytes (4 GiB), and no body")
            check_dropped(client, story, "the idle timeout is 5 s, so waiting for the body "
                          "would keep it open")
        line = wait_for_line(logs, "DROP", peer, min_level=logging.WARNING)
        story.check(line is not None, f"a warning 'DROP {peer} ...' in the log",
                    f"these lines: {logs.lines()}")
        with connect(address, story) as again:
            expect(again, story, "echo still serving", "still serving", who="a new client")


@pytest.mark.task("04.limits")
def test_the_cap_is_max_msg(lesson, story, logs):
    server = make_server(lesson.MessageServer, story, max_msg=100, idle_timeout=5.0,
                         logger=logs.logger)
    with serving(server, story) as address:
        with connect(address, story) as client:
            expect(client, story, "echo " + "x" * 95, "x" * 95)  # exactly 100 bytes: allowed
            client.sendall(struct.pack("!I", 101))
            story.step("sent a header announcing 101 bytes (max_msg=100), and no body")
            check_dropped(client, story, "101 > max_msg")
        with connect(address, story) as again:
            expect(again, story, "echo next", "next", who="a new client")


@pytest.mark.task("04.limits")
def test_invalid_utf8_gets_an_error_and_the_conversation_goes_on(lesson, story, logs):
    server = make_server(lesson.MessageServer, story, idle_timeout=2.0, logger=logs.logger)
    with serving(server, story) as address, connect(address, story) as client:
        expect(client, story, b"\xff\xfe\xfd", BAD_UTF8)
        expect(client, story, b"echo caf\xc3", BAD_UTF8)  # a character cut in half
        expect(client, story, "echo still here", "still here")


@pytest.mark.task("04.limits")
def test_an_empty_frame_is_an_unknown_command(lesson, story, logs):
    server = make_server(lesson.MessageServer, story, idle_timeout=2.0, logger=logs.logger)
    with serving(server, story) as address, connect(address, story) as client:
        expect(client, story, b"", UNKNOWN)
        expect(client, story, "   ", UNKNOWN)
        expect(client, story, "echo ok", "ok")


@pytest.mark.task("04.limits")
def test_a_silent_client_is_dropped_after_the_idle_timeout(lesson, story, logs):
    server = make_server(lesson.MessageServer, story, idle_timeout=0.3, logger=logs.logger)
    with serving(server, story) as address:
        with connect(address, story) as client:
            expect(client, story, "echo hi", "hi")
            story.step("the client then said nothing; idle_timeout is 0.3 s")
            started = time.monotonic()
            how = is_closed(client, wait=WAIT)
            story.check(how in ("closed", "reset"), f"the server to hang up within {WAIT} s",
                        how)
            story.step(f"the server hung up after {time.monotonic() - started:.2f} s")
        with connect(address, story) as again:
            expect(again, story, "echo next", "next", who="a new client")

"""Graders for lesson 04, a secure-by-default message server.  Run: pytest exercises -k lesson04"""
import logging
import shlex
import struct
import time

import pytest

from graderkit import (WAIT, ListHandler, ask, check_is_now, connect, expect, expect_dropped,
                       frame, is_closed, make_server, peer_of, read_frame, reset,
                       run_in_thread, serving, short, slow_reader, wait_for_line)

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
        for start, parts, what in [
                (f"CONNECT {peer}", (), f"a line 'CONNECT {peer}'"),
                (f"MSG {peer} ", ("echo hello log",),
                 f"a line 'MSG {peer} ...' showing the message"),
                (f"CLOSE {peer}", (), f"a line 'CLOSE {peer}' (logged in a finally, so it "
                                      "appears however the client leaves)")]:
            line = wait_for_line(logs, *parts, start=start)
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
        line = wait_for_line(logs, "4294967295", min_level=logging.WARNING,
                             start=f"DROP {peer} ")
        story.check(line is not None, f"a warning 'DROP {peer} <why>' in the log, the why "
                    "naming the size announced (log the MessageTooLarge message)",
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


# Look-alikes: one character off, a NUL, a zero-width space, Cyrillic letters, full-width
# letters (which NFKC normalisation would turn into "time"). Only the exact word counts.
LOOK_ALIKES = ["tim", "times", "time\x00", "echo\x00hi", "echohi", "upperx", "time\u200b",
               "t\u0456me", "\u0435cho hi", "\uff54\uff49\uff4d\uff45", "\uff45cho hi",
               "up per x", "e cho hi", "time;", "echo;hi"]


@pytest.mark.task("04.commands")
def test_only_the_exact_command_words_count(lesson, story):
    story.step("(the command word may change case, and nothing else: every line below is an "
               "unknown command)")
    for line in LOOK_ALIKES:
        story.step(f"called run_command({line!r})")
        got = lesson.run_command(line)
        story.check(got == UNKNOWN, f"{UNKNOWN!r}: {line!r} is not exactly 'time', 'echo' or "
                    "'upper' (compare the word as it is, lower-cased; never normalise, trim "
                    "inside or match a prefix)", repr(got))


@pytest.mark.task("04.limits")
def test_a_silent_client_is_dropped_after_the_idle_timeout(lesson, story, logs):
    server = make_server(lesson.MessageServer, story, idle_timeout=0.6, logger=logs.logger)
    with serving(server, story) as address:
        with connect(address, story) as client:
            expect(client, story, "echo hi", "hi")
            story.step("the client then said nothing; idle_timeout is 0.6 s")
            expect_dropped(client, story, "idle timeout, counted from the reply", clock=0.6)
        with connect(address, story) as again:
            expect(again, story, "echo next", "next", who="a new client")


@pytest.mark.task("04.limits")
def test_a_client_that_never_says_anything_is_dropped_in_time(lesson, story, logs):
    server = make_server(lesson.MessageServer, story, idle_timeout=0.6, logger=logs.logger)
    with serving(server, story) as address:
        started = time.monotonic()
        with connect(address, story) as client:
            peer = peer_of(client)
            story.step("the client connected and never sent a byte; idle_timeout is 0.6 s")
            expect_dropped(client, story, "idle timeout, counted from the connection",
                           clock=0.6, since=started)
        line = wait_for_line(logs, start=f"CLOSE {peer}")
        story.check(line is not None, f"a line 'CLOSE {peer}' in the log",
                    f"these lines: {logs.lines()}")


# --------------------------------------------------------------------------- 04.server, rough peers


# The longest reply the 500-character cap allows is made of 4-byte characters: ~2 KB.
WIDE = "\U0001F600" * 480


def pipelined(count):
    """count requests 'echo NNN <480 emoji>' in one go, and the reply stream they should get."""
    requests = b"".join(frame(f"echo {i:03d} {WIDE}") for i in range(count))
    return requests, b"".join(frame(f"{i:03d} {WIDE}") for i in range(count))


@pytest.mark.task("04.server")
def test_large_replies_reach_a_slow_reader_whole(lesson, story, logs):
    server = make_server(lesson.MessageServer, story, sndbuf=4096, idle_timeout=5.0,
                         logger=logs.logger)
    story.step("(the grader gave each connection a 4 KiB send buffer: a slow reader soon fills "
               "it, and then the server must wait before it can send more)")
    requests, expected = pipelined(400)
    with serving(server, story) as address, slow_reader(address, story) as client:
        story.step(f"the client sent 400 requests in a row, each asking for a ~2 KB reply "
                   f"({len(expected)} bytes in all), and read only 512 bytes every 50 ms for "
                   "0.4 s, then the rest as fast as it could")
        sender = run_in_thread(client.sendall, requests, name="grader-send")
        got = bytearray()
        slow_until = time.monotonic() + 0.4
        while len(got) < len(expected):
            if time.monotonic() < slow_until:
                time.sleep(0.05)
            try:
                chunk = client.recv(512 if time.monotonic() < slow_until else 65536)
            except OSError:
                break
            if not chunk:
                break
            got += chunk
        sender.result_for(story, "the 400 requests to be sent")
    same = next((i for i, (a, b) in enumerate(zip(got, expected)) if a != b), None)
    story.check(bytes(got) == expected,
                "all 400 reply frames whole and in order (when the client reads slowly, wait "
                "for it: sendall, as send_msg does; never skip or cut a reply)",
                f"{len(got)} of {len(expected)} bytes; "
                + (f"the stream goes wrong at byte {same}" if same is not None
                   else "what came was right, but the rest never came"))


def reset_before_first_byte(client, story):
    reset(client, story, "before sending a byte")


def reset_mid_header(client, story):
    client.sendall(b"\x00\x00")
    story.step("the client sent 2 of a header's 4 bytes")
    reset(client, story)


def reset_mid_body(client, story):
    client.sendall(struct.pack("!I", 50) + b"echo half")
    story.step("the client sent a header announcing 50 bytes, then 9 of them")
    reset(client, story)


def reset_while_replying(client, story):
    requests, _ = pipelined(100)
    client.sendall(requests)
    story.step("the client sent 100 requests for ~2 KB replies and read none of them")
    time.sleep(0.3)  # by now the server is stuck sending into the client's full buffer
    reset(client, story, "while the server was replying")


@pytest.mark.task("04.server")
@pytest.mark.parametrize("stage", [reset_before_first_byte, reset_mid_header, reset_mid_body,
                                   reset_while_replying],
                         ids=["before-first-byte", "mid-header", "mid-body", "while-replying"])
def test_a_reset_at_any_stage_is_survived_and_logged(lesson, story, logs, stage):
    server = make_server(lesson.MessageServer, story, sndbuf=4096, idle_timeout=5.0,
                         logger=logs.logger)
    with serving(server, story) as address:
        client = slow_reader(address, story)
        peer = peer_of(client)
        stage(client, story)
        line = wait_for_line(logs, start=f"CLOSE {peer}", server=server)
        story.check(line is not None, f"a line 'CLOSE {peer}' in the log (the handler's "
                    "finally runs however the connection ends, a reset too)",
                    f"these lines: {logs.lines()}")
        with connect(address, story) as again:
            expect(again, story, "echo still serving", "still serving", who="a new client")


# Characters that would end, rewrite or colour a log line if written raw: newline, carriage
# return, NEL, the Unicode line and paragraph separators, NUL, an ANSI escape, a backspace,
# a right-to-left override.
NASTY = ["\n", "\r", "\x85", "\u2028", "\u2029", "\x00", "\x1b[2J", "\x08", "\u202e", "\x0b",
         "\x0c"]


@pytest.mark.task("04.server")
def test_no_character_from_a_client_garbles_the_log(lesson, story, logs):
    server = make_server(lesson.MessageServer, story, idle_timeout=2.0, logger=logs.logger)
    with serving(server, story) as address, connect(address, story) as client:
        for nasty in NASTY:
            text = f"echo a{nasty}CLOSE 10.6.6.6:666"
            expect(client, story, text, text[5:])
        expect(client, story, "quit", "bye")
    bad = [line for line in logs.lines() if not line.isprintable()]
    story.check(not bad, "every log line made of printable characters only (log repr(text): "
                "it escapes every control and separator character)", repr(bad[:2]))


@pytest.mark.task("04.server")
def test_the_defaults_and_the_default_logger(lesson, story):
    named = logging.getLogger("message_server")
    handler = ListHandler()
    level, named.level = named.level, logging.INFO
    named.addHandler(handler)
    try:
        server = make_server(lesson.MessageServer, story)
        story.step("(no arguments: the defaults; no logger: the 'message_server' logger)")
        story.check(server.idle_timeout == 30 and server.max_msg == 64 * 1024,
                    "idle_timeout 30 s and max_msg 65536 by default",
                    f"idle_timeout {server.idle_timeout!r}, max_msg {server.max_msg!r}")
        with serving(server, story) as address:
            story.check(address[0] == "127.0.0.1" and address[1] >= 1024,
                        "127.0.0.1 and a port the OS chose (port 0 by default)",
                        f"{address[0]}:{address[1]}")
            with connect(address, story) as client:
                peer = peer_of(client)
                expect(client, story, "echo logged", "logged")
            line = wait_for_line(handler, start=f"CLOSE {peer}")
            story.check(line is not None, f"'CLOSE {peer}' in the 'message_server' logger "
                        "(the default when no logger is given)", f"its lines: {handler.lines()}")
    finally:
        named.removeHandler(handler)
        named.level = level

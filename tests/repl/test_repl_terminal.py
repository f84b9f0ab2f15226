"""``cogvid repl`` in a real pseudo-terminal: line editing, Ctrl-C, history kept across sessions."""

from __future__ import annotations

import fcntl
import os
import pty
import re
import select
import struct
import sys
import termios
import time
from pathlib import Path

import pytest

ANSI = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)|\x1b[=>()][0-9A-Za-z]?")
PROMPT = "cogvid>"  # prompt_toolkit moves the cursor instead of printing the trailing space


class Terminal:
    """A child process on its own pseudo-terminal (its controlling tty, so Ctrl-C becomes SIGINT)."""

    def __init__(self, args: list[str], env: dict[str, str], cwd: Path) -> None:
        pid, fd = pty.fork()
        if pid == 0:  # the child: become the program
            try:
                os.chdir(cwd)
                os.execve(sys.executable, [sys.executable, *args], env)
            finally:
                os._exit(127)
        self.pid, self.fd = pid, fd
        fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 160, 0, 0))
        self.text = ""  # everything shown so far, without escape sequences
        self.position = 0  # where the next expect() starts looking
        self.returncode: int | None = None

    def _read(self, timeout: float) -> bool:
        ready, _, _ = select.select([self.fd], [], [], timeout)
        if not ready:
            return True
        try:
            data = os.read(self.fd, 65536)
        except OSError:  # EIO: the child closed the terminal
            return False
        if not data:
            return False
        self.text += ANSI.sub("", data.decode("utf-8", errors="replace")).replace("\r", "")
        return True

    def expect(self, pattern: str, timeout: float = 60) -> re.Match:
        """Wait until ``pattern`` (a regex) shows up after the previous match; fail with the screen."""
        deadline = time.monotonic() + timeout
        while True:
            match = re.compile(pattern).search(self.text, self.position)
            if match:
                self.position = match.end()
                return match
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not self._read(min(remaining, 0.5)):
                match = re.compile(pattern).search(self.text, self.position)
                if match:
                    self.position = match.end()
                    return match
                raise AssertionError(f"{pattern!r} did not show up; the terminal shows:\n{self.text[-3000:]}")

    def send(self, keys: str) -> None:
        os.write(self.fd, keys.encode())

    def wait(self, timeout: float = 30) -> int:
        """Read until the child exits; its exit status."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                self.returncode = os.waitstatus_to_exitcode(status)
                os.close(self.fd)
                return self.returncode
            self._read(0.2)
        self.kill()
        raise AssertionError(f"the repl did not exit; the terminal shows:\n{self.text[-3000:]}")

    def kill(self) -> None:
        if self.returncode is None:
            try:
                os.kill(self.pid, 9)
                os.waitpid(self.pid, 0)
            except (ProcessLookupError, ChildProcessError):
                pass
            self.returncode = -9
            os.close(self.fd)


def _start(tmp_path: Path, *args: str) -> Terminal:
    # no cursor-position requests: a test terminal does not answer them
    env = {**os.environ, "TERM": "xterm-256color", "PROMPT_TOOLKIT_NO_CPR": "1", "COLUMNS": "160", "LINES": "40"}
    return Terminal(["-m", "cogvid", "repl", *args], env, tmp_path)


def _videos(out: Path) -> list[str]:
    return sorted(path.name for path in out.rglob("*") if path.is_file())


@pytest.mark.slow
def test_terminal_session_cancel_and_history_across_restarts(tmp_path):
    out = tmp_path / "out"
    term = _start(tmp_path, "--steps", "2", "--frames", "9", "--out", str(out))
    try:
        term.expect(r"/help for commands")
        term.expect(PROMPT)
        term.send("a red ball\r")
        term.expect(r"0000-a-red-ball-s\d+\.mp4")
        term.expect(r"generated in [\d.]+ s")
        term.expect(PROMPT)

        term.send("half a line")  # Ctrl-C at the prompt drops the line and asks again
        term.expect("half a line")
        term.send("\x03")
        term.expect(PROMPT)
        term.send("a blue cube\r")
        term.expect(r"0001-a-blue-cube-s\d+\.mp4")
        term.expect(PROMPT)
        assert term.text.count("loading model") == 1  # the second prompt did not reload

        term.send("/set steps 1000\r")
        term.expect(r"steps = 1000")
        term.expect(PROMPT)
        term.send("a slow one\r")
        term.expect(r"denoising")  # the bar shows once the first step is done
        time.sleep(0.1)  # 1000 steps: seconds of denoising still ahead
        started = time.monotonic()
        term.send("\x03")
        term.expect(r"cancelling after the current step")
        term.expect(r"cancelled", timeout=30)
        cancel_seconds = time.monotonic() - started
        term.expect(PROMPT)
        print(f"\ncancelled {cancel_seconds:.1f} s after Ctrl-C")
        assert not any("slow-one" in name for name in _videos(out))  # no partial files
        assert len(_videos(out)) == 4  # two videos and their sidecars

        term.send("/quit\r")
        assert term.wait() == 0
    finally:
        term.kill()

    history = Path(os.environ["XDG_DATA_HOME"]) / "cogvid" / "repl_history"
    saved = history.read_text()
    for line in ("a red ball", "a blue cube", "/set steps 1000", "a slow one", "/quit"):
        assert f"+{line}\n" in saved
    assert "half a line" not in saved

    # a new session starts with the old history: Up twice brings back the prompt before /quit
    again = _start(tmp_path, "--steps", "2", "--frames", "9", "--out", str(out))
    try:
        again.expect(PROMPT)
        again.send("\x1b[A")
        again.expect(r"/quit")
        again.send("\x1b[A")
        again.expect(r"a slow one")
        again.send("\x03")  # clear the recalled line
        again.expect(PROMPT)
        again.send("/model\r")  # the picker lists the models whose weights are present: here the demo
        again.expect(r"model \(only those whose weights are present\)")
        again.expect(r"test-tiny")
        again.send("\r")
        again.expect(r"test-tiny is already loaded")
        again.expect(PROMPT)
        again.send("\x04")  # Ctrl-D on an empty line leaves
        assert again.wait() == 0
    finally:
        again.kill()

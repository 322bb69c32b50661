#!/usr/bin/env python3
"""`pdsd chat` REPL under a pseudo-terminal (Python's stdlib only), as a user types:
/set and /show, a multi-line \"\"\" message answered with a tokens/s line, history recall
(Ctrl-P) within a run and from the history file in a second run, Ctrl-C at the prompt -> 130.

  tests/chat/repl_pty_test.py PDSD MODEL_DIR
Exit 77 (skip) when the build has no line editing (libedit-dev missing at configure time).
"""
import os
import pty
import select
import signal
import sys
import tempfile
import time

PDSD, MODEL = sys.argv[1], sys.argv[2]
HOME = tempfile.mkdtemp(prefix="pdsd-repl-")


class Repl:
    def __init__(self):
        env = dict(os.environ, HOME=HOME, TERM="xterm", LANG="C.UTF-8")
        env.pop("PDSD_HISTORY", None)
        self.pid, self.fd = pty.fork()
        if self.pid == 0:
            signal.pthread_sigmask(signal.SIG_SETMASK, [])  # a CI runner's blocked signals stay out
            os.execve(PDSD, [PDSD, "chat", "--model", MODEL, "--temperature", "0", "--max_new_tokens", "4"], env)
        self.out = b""

    def expect(self, needle, timeout=60):
        """Reads until `needle` (bytes) appears after everything matched so far; returns the text."""
        deadline = time.time() + timeout
        while needle not in self.out:
            left = deadline - time.time()
            if left <= 0:
                raise AssertionError(f"timed out waiting for {needle!r}; output so far:\n{self.out.decode(errors='replace')}")
            r, _, _ = select.select([self.fd], [], [], left)
            if r:
                try:
                    chunk = os.read(self.fd, 4096)
                except OSError:
                    chunk = b""
                if not chunk:
                    raise AssertionError(f"pdsd exited waiting for {needle!r}:\n{self.out.decode(errors='replace')}")
                self.out += chunk
        at = self.out.index(needle) + len(needle)
        seen, self.out = self.out[:at], self.out[at:]
        return seen.decode(errors="replace")

    def send(self, text):
        os.write(self.fd, text.encode())

    def exit_code(self, timeout=30):
        deadline = time.time() + timeout
        while time.time() < deadline:
            r, _, _ = select.select([self.fd], [], [], 0.05)
            if r:  # drain so the child never blocks on a full pty (never a blocking read)
                try:
                    self.out += os.read(self.fd, 4096)
                except OSError:
                    pass
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                return os.waitstatus_to_exitcode(status)
        os.kill(self.pid, 9)
        raise AssertionError(f"pdsd did not exit; output since the last match:\n{self.out.decode(errors='replace')}")


def main():
    r = Repl()
    banner = r.expect(b">>> ")
    if "/? for help" not in banner:
        raise AssertionError(f"no banner: {banner!r}")

    r.send("/set parameter num_predict 3\r")
    r.expect(b"Set parameter 'num_predict' to '3'")
    r.expect(b">>> ")
    r.send("/set parameter temperature warm\r")
    r.expect(b"expected a number >= 0, found 'warm'")  # a bad value is answered, the REPL goes on
    r.expect(b">>> ")
    r.send("/show parameters\r")
    shown = r.expect(b">>> ")
    if "num_predict         3" not in shown:
        raise AssertionError(f"/show parameters lacks num_predict 3:\n{shown}")

    r.send('"""\r')
    r.expect(b"... ")
    r.send("第一行\r")
    r.expect(b"... ")
    r.send('second line"""\r')
    answer = r.expect(b">>> ")
    if "3 tokens, " not in answer or "tokens/s" not in answer:  # num_predict 3 took effect
        raise AssertionError(f"no '3 tokens, ... tokens/s' line after the answer:\n{answer}")

    r.send("/show info\r")
    r.expect(b"turns in history    1")
    r.expect(b">>> ")
    r.send("\x10\r")  # Ctrl-P: the previous line again
    r.expect(b"turns in history    1")
    r.expect(b">>> ")

    r.send("\x03")  # Ctrl-C at the prompt
    code = r.exit_code()
    if code != 130:
        raise AssertionError(f"Ctrl-C at the prompt: exit {code}, expected 130")

    hist = os.path.join(HOME, ".pdsd", "history")
    if not os.path.exists(hist):
        raise AssertionError("no history file at ~/.pdsd/history")
    r2 = Repl()  # a new run recalls the last run's lines from the file
    r2.expect(b">>> ")
    r2.send("\x10\r")
    r2.expect(b"turns in history    0")
    r2.expect(b">>> ")
    r2.send("/bye\r")
    code = r2.exit_code()
    if code != 0:
        raise AssertionError(f"/bye: exit {code}, expected 0")
    print("repl pty: /set, /show, multi-line, tokens/s, history (in run and from file), Ctrl-C 130: ok")


if __name__ == "__main__":
    main()

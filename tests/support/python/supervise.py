"""Supervisor that ties a server's lifetime to the test process that started it.

Usage: supervise.py [--cleanup DIR] LOG_FILE -- COMMAND [ARGS...]

Starts COMMAND in its own process group (and session), with stdin from
/dev/null and stdout/stderr appended to LOG_FILE, then blocks reading this
script's own stdin. The test process holds the write end of that pipe and never
writes to it, so EOF means the test process has exited (normally or killed):
the whole process group of COMMAND is then terminated (SIGTERM, then SIGKILL
after a grace period) and, with --cleanup, DIR is removed. If COMMAND exits on
its own first, the rest of its group is killed and this script exits with
COMMAND's exit code, so the test side can notice and report the log.

SIGTERM, SIGINT and SIGHUP sent to this script also tear the group down.
"""

import os
import shutil
import signal
import subprocess
import sys
import threading
import time

GRACE_SECONDS = 5.0


def log(message):
    sys.stderr.write("[supervise.py %d] %s\n" % (os.getpid(), message))
    sys.stderr.flush()


def group_alive(pgid):
    try:
        os.killpg(pgid, 0)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        return True


def kill_group(pgid):
    """SIGTERM the group, wait up to GRACE_SECONDS, then SIGKILL what is left."""
    try:
        os.killpg(pgid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + GRACE_SECONDS
    while time.monotonic() < deadline:
        if not group_alive(pgid):
            return
        time.sleep(0.05)
    try:
        os.killpg(pgid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def main(argv):
    cleanup = None
    args = list(argv)
    if len(args) >= 2 and args[0] == "--cleanup":
        cleanup = args[1]
        args = args[2:]
    if len(args) < 3 or args[1] != "--":
        sys.stderr.write(__doc__)
        return 2
    log_file, command = args[0], args[2:]

    with open(log_file, "ab", buffering=0) as out:
        proc = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    pgid = proc.pid  # start_new_session makes the child its group leader
    log("started pid/pgid %d: %s" % (pgid, " ".join(command)))

    lock = threading.Lock()
    state = {"stopping": False}

    def shutdown(reason, code, remove_dir):
        """Kill the group, optionally remove the cleanup dir, exit. Runs once:
        a second caller (e.g. the main thread seeing the command die because
        the first caller killed it) just waits for the first to exit."""
        with lock:
            if state["stopping"]:
                while True:
                    time.sleep(3600)
            state["stopping"] = True
        log("%s: stopping process group %d" % (reason, pgid))
        kill_group(pgid)
        try:
            proc.wait(timeout=GRACE_SECONDS)
        except subprocess.TimeoutExpired:
            pass
        if remove_dir and cleanup:
            shutil.rmtree(cleanup, ignore_errors=True)
        os._exit(code)

    def watch_stdin():
        try:
            while True:
                chunk = os.read(0, 4096)
                if not chunk:
                    break
        except OSError:
            pass
        shutdown("stdin closed (test process gone)", 0, True)

    def on_signal(signum, _frame):
        shutdown("signal %d" % signum, 128 + signum, True)

    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, on_signal)

    threading.Thread(target=watch_stdin, daemon=True).start()

    code = proc.wait()
    # Keep the directory (and its log) so the still-running test process can
    # report it; it removes the directory itself.
    shutdown(
        "command exited by itself with code %d" % code,
        code if code >= 0 else 128 - code,
        False,
    )
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

#!/usr/bin/env python3
"""A beanstalkd queue worker written for rdaemon (or systemd) supervision.

Python 3.8+ and only the standard library (socket, signal, os): it speaks
beanstalkd's text protocol itself and the sd_notify protocol with one
datagram socket. What it shows, each in one short function below:

- SIGTERM / SIGINT: finish the job in hand, then exit 0. A job reserved
  after the signal arrived is released back to the queue untouched.
- SIGHUP: the same, but exit with the recycle code (a "reload").
- READY=1 once the queue connection is up; WATCHDOG=1 often enough for
  WATCHDOG_USEC while idle and between jobs; STATUS= with a job count;
  STOPPING=1 on the way out. No NOTIFY_SOCKET: all of it is a no-op.
- --max-jobs N: exit after N jobs so the supervisor starts a fresh process
  (like Laravel's queue:work --max-jobs or Celery's max_tasks_per_child),
  with exit status 0 or --recycle-code.

Usage: python3 worker.py [--tube NAME] [--max-jobs N] [--recycle-code N]

Environment (options win over it):
  BEANSTALK_HOST      default 127.0.0.1
  BEANSTALK_PORT      default 11300
  BEANSTALK_TUBE      default "default"
  MAX_JOBS            default 0 (never recycle)
  RECYCLE_EXIT_CODE   default 0
  RESULTS_FILE        where each processed job is recorded as "JOBID PID"
                      (the stand-in for real work; tests count the lines)

A job's body is the work to do: a whole number is read as milliseconds of
simulated work, anything else as no work. Replace handle_job() with your own
code; keep it idempotent, because a queue delivers at least once (a worker
killed with SIGKILL after the work but before `delete` leaves the job to be
delivered again).
"""

import os
import signal
import socket
import sys
import time

EXIT_USAGE = 2
EXIT_QUEUE = 1


class QueueError(Exception):
    pass


class Beanstalk:
    """beanstalkd's text protocol over one TCP connection."""

    def __init__(self, host, port):
        try:
            self.sock = socket.create_connection((host, port), timeout=10)
        except OSError as e:
            raise QueueError(f"cannot connect to beanstalkd at {host}:{port}: {e}") from e
        self.reader = self.sock.makefile("rb")

    def watch_only(self, tube):
        """Watches only `tube` (reserve takes jobs from it alone)."""
        self._expect(self._command(f"watch {tube}"), "WATCHING")
        if tube != "default":
            self._expect(self._command("ignore default"), "WATCHING")

    def reserve(self, seconds):
        """Waits up to `seconds` for a job: (id, body), or None on timeout
        (TIMED_OUT, or DEADLINE_SOON for a job we hold)."""
        # The read may block for `seconds`: allow for that plus a margin.
        # A signal does not cut it short (PEP 475): the flag is seen after.
        self.sock.settimeout(seconds + 30)
        reply = self._command(f"reserve-with-timeout {seconds}")
        if reply in ("TIMED_OUT", "DEADLINE_SOON"):
            return None
        word, *rest = reply.split()
        if word != "RESERVED" or len(rest) != 2 or not all(x.isdigit() for x in rest):
            raise QueueError(f"unexpected reply to reserve: {reply}")
        size = int(rest[1])
        body = self._read_exactly(size + 2)[:size]
        return rest[0], body

    def delete(self, job_id):
        self._expect(self._command(f"delete {job_id}"), "DELETED")

    def release(self, job_id):
        """Puts a reserved job back in the ready queue, at the front."""
        self._expect(self._command(f"release {job_id} 0 0"), "RELEASED")

    def _command(self, line):
        try:
            self.sock.sendall(line.encode() + b"\r\n")
            reply = self.reader.readline()
        except OSError as e:
            raise QueueError(f"beanstalkd: no reply to '{line}' ({e})") from e
        if not reply:
            raise QueueError(f"beanstalkd: no reply to '{line}' (connection closed)")
        return reply.decode("ascii", "replace").rstrip("\r\n")

    def _read_exactly(self, n):
        data = self.reader.read(n)
        if data is None or len(data) != n:
            raise QueueError("beanstalkd: connection closed inside a job body")
        return data

    @staticmethod
    def _expect(reply, word):
        if reply.split(" ", 1)[0] != word:
            raise QueueError(f"beanstalkd: expected {word}, got '{reply}'")


class Notifier:
    """sd_notify: one datagram per message to $NOTIFY_SOCKET (a path, or an
    abstract socket name written with a leading "@"). Without the variable
    every call is a no-op."""

    def __init__(self):
        self.sock = None
        addr = os.environ.get("NOTIFY_SOCKET", "")
        if not addr:
            return
        if addr[0] == "@":
            addr = "\0" + addr[1:]
        elif addr[0] != "/":
            log(f"NOTIFY_SOCKET={addr} is neither a path nor @abstract; not notifying")
            return
        try:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            sock.connect(addr)
        except OSError as e:
            log(f"cannot reach NOTIFY_SOCKET: {e}")
            return
        self.sock = sock

    def send(self, message):
        if self.sock is not None:
            try:
                self.sock.send(message.encode())
            except OSError as e:
                log(f"sd_notify failed: {e}")


class Heartbeat:
    """Keeps the supervisor's watchdog fed and STATUS= current.

    beat() runs after every job and every empty wait; the worker wakes at
    least every `wake` seconds (the reserve timeout, or the pause between
    polls). It pings when waiting for the next wake-up could overshoot
    half of WATCHDOG_USEC, so pings are never further apart than that
    while idle. A job must finish well within WATCHDOG_USEC (or ping from
    inside it). A new STATUS= goes out at most once a second, so a busy
    worker does not flood the supervisor.
    """

    def __init__(self, notifier, wake):
        self.notifier = notifier
        self.wake = wake
        self.every = float("inf")
        usec = int(os.environ.get("WATCHDOG_USEC") or 0)
        pid = os.environ.get("WATCHDOG_PID", "")
        if usec > 0 and (not pid or pid == str(os.getpid())):
            self.every = usec / 2e6
        self.last = time.monotonic()
        self.last_status = ""

    def beat(self, status):
        now = time.monotonic()
        watchdog_due = now + self.wake >= self.last + self.every
        status_due = status != self.last_status and now >= self.last + 1.0
        if not (watchdog_due or status_due):
            return
        ping = "WATCHDOG=1\n" if self.every != float("inf") else ""
        self.notifier.send(f"{ping}STATUS={status}")
        self.last = now
        self.last_status = status


def handle_job(job_id, body, results_file):
    """The work: record the job, after simulating `body` milliseconds of effort."""
    if body.isdigit():
        time.sleep(int(body) / 1000)  # resumed after a signal handler (PEP 475)
    if results_file:
        # One O_APPEND write per job: lines from concurrent workers never mix.
        fd = os.open(results_file, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            os.write(fd, f"{job_id} {os.getpid()}\n".encode())
        finally:
            os.close(fd)


ME = f"worker {os.getpid()}" + (f" (slot {os.environ['RDAEMON_SLOT']})" if os.environ.get("RDAEMON_SLOT") else "")


def log(text):
    print(f"{ME}: {text}", file=sys.stderr, flush=True)


def options(argv):
    """--tube, --max-jobs, --recycle-code (also as --opt=value), over the environment."""
    opts = {}
    args = iter(argv)
    for arg in args:
        key, eq, value = arg.partition("=")
        if key not in ("--tube", "--max-jobs", "--recycle-code"):
            log(f"unknown argument {arg!r}")
            sys.exit(EXIT_USAGE)
        opts[key[2:]] = value if eq else next(args, "")
    return opts


def whole(value, what):
    if not value.isdigit():
        log(f"{what} must be a whole number, not {value!r}")
        sys.exit(EXIT_USAGE)
    return int(value)


def main():
    opts = options(sys.argv[1:])
    host = os.environ.get("BEANSTALK_HOST") or "127.0.0.1"
    port = whole(os.environ.get("BEANSTALK_PORT") or "11300", "BEANSTALK_PORT")
    tube = opts.get("tube") or os.environ.get("BEANSTALK_TUBE") or "default"
    max_jobs = whole(opts.get("max-jobs") or os.environ.get("MAX_JOBS") or "0", "--max-jobs")
    recycle_code = whole(
        opts.get("recycle-code") or os.environ.get("RECYCLE_EXIT_CODE") or "0", "--recycle-code"
    )
    results_file = os.environ.get("RESULTS_FILE", "")

    # Signals only set a flag; the loop below acts on it between jobs.
    stop = []  # empty: keep going; else [the exit status to leave with]

    def on_stop(code):
        return lambda _sig, _frame: stop or stop.append(code)

    signal.signal(signal.SIGTERM, on_stop(0))
    signal.signal(signal.SIGINT, on_stop(0))
    signal.signal(signal.SIGHUP, on_stop(recycle_code))

    notifier = Notifier()
    try:
        queue = Beanstalk(host, port)
        queue.watch_only(tube)
    except QueueError as e:
        log(str(e))
        return EXIT_QUEUE

    # beanstalkd's timeouts are whole seconds: wake once a second, or poll
    # when the watchdog wants pings more often than that.
    usec = int(os.environ.get("WATCHDOG_USEC") or 0)
    wait = 0 if 0 < usec < 2_000_000 else 1
    pause = usec / 4e6 if wait == 0 else 0  # seconds between polls
    heartbeat = Heartbeat(notifier, wait + pause)
    notifier.send(f"READY=1\nSTATUS=waiting for jobs on {tube}")
    log(f"ready on {host}:{port} tube {tube}")

    done = 0
    try:
        while not stop and (max_jobs == 0 or done < max_jobs):
            job = queue.reserve(wait)
            if job is None:
                heartbeat.beat(f"processed {done} jobs")
                time.sleep(pause)
                continue
            job_id, body = job
            if stop:
                queue.release(job_id)  # stop asked while we waited: hand it back
                break
            handle_job(job_id, body.decode("utf-8", "replace"), results_file)
            queue.delete(job_id)
            done += 1
            heartbeat.beat(f"processed {done} jobs")
    except QueueError as e:
        # Jobs this connection still holds go back to the queue when it
        # closes: nothing is lost.
        log(str(e))
        return EXIT_QUEUE

    code = stop[0] if stop else recycle_code
    why = f"stopping after {done} jobs" if stop else f"recycling after {done} jobs"
    notifier.send(f"STOPPING=1\nSTATUS={why}")
    log(f"{why}, exit {code}")
    return code


if __name__ == "__main__":
    sys.exit(main())

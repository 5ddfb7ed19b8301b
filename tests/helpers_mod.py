"""Importable helpers for the shoal tests.

Everything in here that is meant to run inside a worker is a plain
module-level function so that it can be pickled by reference.  The module
also hosts a few process-inspection utilities used by the fault tests.
"""

from __future__ import annotations

import os
import signal
import threading
import time

# ---------------------------------------------------------------------------
# Simple task functions
# ---------------------------------------------------------------------------


def square(x):
    return x * x


def add(a, b):
    return a + b


def mul(x, y):
    return x * y


def identity(x):
    return x


def get_pid(_=None):
    return os.getpid()


def square_with_pid(x):
    return x * x, os.getpid()


def slow_square(x, delay=0.0):
    time.sleep(delay)
    return x * x


def sleep_and_return(value, seconds):
    time.sleep(seconds)
    return value


def sleep_pair(pair):
    value, seconds = pair
    time.sleep(seconds)
    return value


def sleep_and_print(seconds, message):
    time.sleep(seconds)
    print(message, flush=True)


def sleep_seconds(seconds):
    time.sleep(seconds)
    return seconds


def echo_args(*args, **kwargs):
    return args, kwargs


def big_bytes(n):
    """Deterministic ``n``-byte payload."""
    pattern = bytes(range(256))
    reps, rest = divmod(n, len(pattern))
    return pattern * reps + pattern[:rest]


def payload_len(data):
    return len(data)


# ---------------------------------------------------------------------------
# Errors
# ---------------------------------------------------------------------------


class CustomError(Exception):
    """A picklable user-defined exception."""


class SayWhenError(ValueError):
    pass


class BadInitError(Exception):
    """Pickles fine, but cannot be *unpickled* (``__init__`` needs 2 args)."""

    def __init__(self, a, b):
        super().__init__(a)
        self.b = b


def raise_value_error(message="boom"):
    raise ValueError(message)


def raise_custom_error(message="custom"):
    raise CustomError(message)


def raise_key_error():
    raise KeyError("key")


def raise_if_equal(x, bad=5):
    if x == bad:
        raise ValueError(f"bad value {x}")
    return x * x


def raise_large_value_error(wait):
    time.sleep(wait)
    raise ValueError("x" * 1024**2)


def raise_unpicklable_exception():
    raise ValueError("carries a lock", threading.Lock())


def raise_bad_init_error():
    raise BadInitError("a", "b")


def exception_throwing_generator(total, when):
    if when == -1:
        raise SayWhenError("Somebody said when")
    for i in range(total):
        if i == when:
            raise SayWhenError("Somebody said when")
        yield i


# ---------------------------------------------------------------------------
# Unpicklable results
# ---------------------------------------------------------------------------


def return_lock(_=None):
    """Return an object no pickler (pickle or cloudpickle) can serialise."""
    return threading.Lock()


def return_lock_if(x, bad=3):
    if x == bad:
        return threading.Lock()
    return x


# ---------------------------------------------------------------------------
# Initializer support
# ---------------------------------------------------------------------------

INIT_VALUE = None
INIT_CALLS = 0


def set_init_value(value, suffix=""):
    global INIT_VALUE, INIT_CALLS
    INIT_VALUE = f"{value}{suffix}"
    INIT_CALLS += 1


def get_init_value(_=None):
    return INIT_VALUE


def get_init_state(_=None):
    return os.getpid(), INIT_VALUE, INIT_CALLS


# ---------------------------------------------------------------------------
# Object lifetime tracking (port of CPython's CountedObject)
# ---------------------------------------------------------------------------


class CountedObject:
    n_instances = 0

    def __new__(cls):
        cls.n_instances += 1
        return object.__new__(cls)

    def __del__(self):
        type(self).n_instances -= 1


# ---------------------------------------------------------------------------
# Fault injection
# ---------------------------------------------------------------------------


def announce_and_sleep(directory, seconds):
    """Record that this worker started a task, then sleep.

    Writes a file named after the worker pid into ``directory`` so that the
    test knows which process is busy *right now*.
    """
    pid = os.getpid()
    path = os.path.join(directory, str(pid))
    with open(path + ".tmp", "w") as f:
        f.write(str(pid))
    os.replace(path + ".tmp", path)
    time.sleep(seconds)
    return pid


def exit_process(code):
    os._exit(code)


def kill_self(sig=signal.SIGKILL):
    os.kill(os.getpid(), sig)
    time.sleep(10)


# ---------------------------------------------------------------------------
# Process inspection utilities (used by the test process, not by workers)
# ---------------------------------------------------------------------------


def _read_stat(pid):
    with open(f"/proc/{pid}/stat") as f:
        data = f.read()
    # The command name is in parentheses and may contain spaces.
    rest = data.rsplit(")", 1)[1].split()
    state, ppid = rest[0], int(rest[1])
    return state, ppid


def pid_alive(pid):
    """True if ``pid`` exists and is not a zombie."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        state, _ = _read_stat(pid)
    except (FileNotFoundError, ProcessLookupError, IndexError, ValueError):
        return False
    return state not in ("Z", "X")


def wait_until(predicate, timeout, interval=0.05):
    """Poll ``predicate`` until it is true or ``timeout`` elapses."""
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)


def wait_pids_gone(pids, timeout):
    """Wait until none of ``pids`` is alive; return the survivors."""
    wait_until(lambda: not any(pid_alive(p) for p in pids), timeout)
    return [p for p in pids if pid_alive(p)]


def child_pids(parent=None, include_zombies=True):
    """Pids of all direct children of ``parent`` (default: this process)."""
    parent = os.getpid() if parent is None else parent
    result = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            state, ppid = _read_stat(int(entry))
        except (FileNotFoundError, ProcessLookupError, IndexError, ValueError):
            continue
        if ppid != parent:
            continue
        if not include_zombies and state in ("Z", "X"):
            continue
        result.append(int(entry))
    return sorted(result)


def open_fd_count():
    return len(os.listdir("/proc/self/fd"))


def os_thread_count():
    return len(os.listdir("/proc/self/task"))


def force_kill(pids):
    """Best-effort SIGKILL of processes the test itself caused to exist."""
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass


def exit_via_system_exit(code):
    raise SystemExit(code)


def exit_once_then_square(marker, x):
    """Kills its worker the first time it runs (marker file absent)."""
    if not os.path.exists(marker):
        with open(marker, "w"):
            pass
        os._exit(7)
    return x * x


# ---------------------------------------------------------------------------
# Output, logging, retries and memory (test_output.py, test_options.py)
# ---------------------------------------------------------------------------


def chatty(x):
    """Prints a line to stdout and one to stderr, then returns x."""
    import sys

    print(f"out {x}")
    print(f"err {x}", file=sys.stderr)
    return x


def print_many(worker_tag, lines, width):
    """Prints ``lines`` long lines quickly, each made of one repeated tag."""
    for i in range(lines):
        print(f"{worker_tag}:{i}:" + worker_tag * width)
    return lines


def print_partial(text):
    print(text, end="")
    return text


def print_from_thread(text):
    t = threading.Thread(target=print, args=(text,))
    t.start()
    t.join()
    return text


def log_record(name, message):
    import logging

    logging.getLogger(name).info("%s says %d", message, 42)
    try:
        raise ValueError("inside")
    except ValueError:
        logging.getLogger(name).exception("it failed")
    return message


def print_then_die(text):
    print(text)
    os._exit(3)


def initializer_that_prints():
    print("initializer ran")


class Flaky(Exception):
    """Raised by ``fail_until`` until its attempt count is reached."""


def fail_until(path, succeed_on, exc=Flaky):
    """Appends an attempt to ``path``; raises ``exc`` until attempt
    ``succeed_on``."""
    with open(path, "a") as f:
        f.write(f"{os.getpid()}\n")
    with open(path) as f:
        attempts = len(f.read().split())
    if attempts < succeed_on:
        raise exc(f"attempt {attempts}")
    return attempts


def hold_memory(megabytes, seconds):
    """Keeps ``megabytes`` resident for ``seconds``."""
    block = bytearray(megabytes << 20)
    block[::4096] = b"\x01" * len(block[::4096])  # touch every page
    time.sleep(seconds)
    return len(block)


_leaked = []


def leak_memory_later(megabytes, delay):
    """Returns at once; ``delay`` seconds later, while the worker is idle,
    makes ``megabytes`` resident for the rest of its life."""

    def grow():
        time.sleep(delay)
        _leaked.append(b"\x01" * (megabytes << 20))  # written, so resident

    threading.Thread(target=grow, daemon=True).start()
    return os.getpid()


# --- loops (tests/test_loops.py, tests/test_backend.py) ---------------------


def index_and_worker(i):
    """A loop body that says which worker ran index ``i``."""
    import shoal

    return i, shoal.worker_id(), shoal.num_workers()


def sleep_index_ms(i):
    """An iteration that costs ``i`` milliseconds: later ones are slower."""
    time.sleep(i / 1000)
    return i


def reduce_term(i):
    return (i * 7919) % 23 + 1


def busy_python(n):
    """Pure-Python CPU work: holds the GIL throughout."""
    total = 0
    for i in range(n):
        total += i * i % 7
    return total


def spin_until(event, seconds):
    """Pure-Python CPU work until ``event`` is set (at most ``seconds``)."""
    deadline = time.monotonic() + seconds
    while not event.is_set() and time.monotonic() < deadline:
        busy_python(1_000)


def busy_python_index(i):
    return busy_python(2_000) + i


def digest_rounds(rounds):
    """CPU work that releases the GIL: hashlib does, on large inputs."""
    import hashlib

    data = b"shoal" * 200_000
    digest = b""
    for _ in range(rounds):
        digest = hashlib.sha256(data + digest).digest()
    return digest.hex()


def log_call_busy(path_and_item):
    """Appends the item to a file (one line per call, from any process),
    works a little, and returns it."""
    path, item = path_and_item
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
    try:
        os.write(fd, f"{item}\n".encode())
    finally:
        os.close(fd)
    busy_python(3_000)
    return item


def imported(name):
    """Whether this process has imported module ``name``."""
    import sys

    return name in sys.modules


def print_and_return(x):
    print(x)
    return x


# ---------------------------------------------------------------------------
# For test_hangs.py
# ---------------------------------------------------------------------------


def touch(path):
    """Creates the file at ``path``: shows that the task ran."""
    open(path, "w").close()
    return path


def many_queue_references(n):
    """A result that holds one queue ``n`` times: it travels as ``2 * n``
    descriptors."""
    import shoal

    q = shoal.Queue()
    return [q] * n


def write_without_newline(pieces, size):
    """Writes ``pieces`` pieces of ``size`` characters and no newline."""
    import sys

    piece = "x" * size
    for _ in range(pieces):
        sys.stdout.write(piece)
    return "written"


def child_ignores_sigint():
    """Whether a program this task starts ignores SIGINT."""
    import subprocess

    proc = subprocess.Popen(["sleep", "30"])
    try:
        with open(f"/proc/{proc.pid}/status") as status:
            for line in status:
                if line.startswith("SigIgn:"):
                    return bool(int(line.split()[1], 16) & (1 << (signal.SIGINT - 1)))
    finally:
        proc.kill()
        proc.wait()
    return None


def _sleep_then_load(seconds):
    time.sleep(seconds)
    return SlowToLoad(seconds)


class SlowToLoad:
    """A callable whose unpickling sleeps ``seconds`` first."""

    def __init__(self, seconds):
        self.seconds = seconds

    def __call__(self):
        return "loaded"

    def __reduce__(self):
        return (_sleep_then_load, (self.seconds,))


def cores_two_threads_get(func, arg) -> float:
    """Cores two plain threads running ``func(arg)`` over and over keep
    busy between them, over a tenth of a second: what this machine gives
    two threads just now."""
    from shoal.parallel import auto

    stop = threading.Event()

    def spin():
        while not stop.is_set():
            func(arg)

    threads = [threading.Thread(target=spin) for _ in range(2)]
    for t in threads:
        t.start()
    try:
        time.sleep(0.02)
        before = [auto._ran_and_queued(t)[0] for t in threads]
        started = time.perf_counter()
        time.sleep(0.1)
        after = [auto._ran_and_queued(t)[0] for t in threads]
        return (sum(after) - sum(before)) / (time.perf_counter() - started)
    finally:
        stop.set()
        for t in threads:
            t.join()


def auto_picks_threads(run, func, arg, rounds: int = 5) -> None:
    """Asserts that ``run()``, a call with ``backend="auto"`` of a function
    that releases the GIL, runs on threads because they ran in parallel.
    How many cores two threads get depends on what else the machine runs,
    and changes from one moment to the next: each round runs auto, and if
    it did not pick threads, measures right after what two plain threads
    running ``func(arg)`` get. Should they get under 1.5 cores, the machine
    is too busy to tell and the test is skipped; it fails only if auto said
    processes in every round while plain threads got the cores each time."""
    import pytest
    import shoal

    for _ in range(rounds):
        run()
        choice = shoal.last_choice()
        if choice.backend == "threads":
            assert "parallel" in choice.reason, choice
            return
        used = cores_two_threads_get(func, arg)
        if used < 1.5:
            pytest.skip(f"this machine gave two threads only {used:.2f} cores just now")
    pytest.fail(f"two threads kept {used:.2f} cores busy, yet auto said {choice}")

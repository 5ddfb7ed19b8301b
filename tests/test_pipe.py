"""``shoal.Pipe``, ported from CPython's ``_TestConnection`` and
``_TestPoll``, plus large arrays through shared memory."""

from __future__ import annotations

import array
import multiprocessing
import os
import pickle
import time

import mp_helpers as mh
import numpy as np
import pytest
import shoal
from shoal import _shoal

pytestmark = pytest.mark.timeout(60)

TIMEOUT = 0.1


started = mh.started


def test_connection():
    conn, child_conn = shoal.Pipe()
    p = started(mh.echo, child_conn)
    seq = [1, 2.25, None]
    msg = b"hello world"
    longmsg = msg * 10
    arr = array.array("i", list(range(4)))
    assert type(conn.fileno()) is int
    assert conn.send(seq) is None
    assert conn.recv() == seq
    assert conn.send_bytes(msg) is None
    assert conn.recv_bytes() == msg
    buffer = array.array("i", [0] * 10)
    expected = list(arr) + [0] * (10 - len(arr))
    assert conn.send_bytes(arr) is None
    assert conn.recv_bytes_into(buffer) == len(arr) * buffer.itemsize
    assert list(buffer) == expected
    buffer = array.array("i", [0] * 10)
    expected = [0] * 3 + list(arr) + [0] * (10 - 3 - len(arr))
    assert conn.send_bytes(arr) is None
    assert conn.recv_bytes_into(buffer, 3 * buffer.itemsize) == len(arr) * buffer.itemsize
    assert list(buffer) == expected
    buffer = bytearray(b" " * 40)
    assert conn.send_bytes(longmsg) is None
    with pytest.raises(multiprocessing.BufferTooShort) as too_short:
        conn.recv_bytes_into(buffer)
    assert too_short.value.args == (longmsg,)
    t = time.monotonic()
    assert conn.poll() is False
    assert conn.poll(-1) is False
    assert time.monotonic() - t < 0.05
    t = time.monotonic()
    assert conn.poll(TIMEOUT) is False
    assert time.monotonic() - t >= TIMEOUT - 0.01
    conn.send(None)
    time.sleep(0.1)
    assert conn.poll(TIMEOUT) is True
    assert conn.recv() is None
    really_big_msg = b"X" * (1024 * 1024 * 16)
    conn.send_bytes(really_big_msg)
    assert conn.recv_bytes() == really_big_msg
    conn.send_bytes(b"")  # the echo's sentinel
    child_conn.close()
    assert conn.readable is True
    assert conn.writable is True
    with pytest.raises(EOFError):
        conn.recv()
    with pytest.raises(EOFError):
        conn.recv_bytes()
    p.join(30)


def test_duplex_false():
    reader, writer = shoal.Pipe(duplex=False)
    assert writer.send(1) is None
    assert reader.recv() == 1
    assert reader.readable is True
    assert reader.writable is False
    assert writer.readable is False
    assert writer.writable is True
    with pytest.raises(OSError):
        reader.send(2)
    with pytest.raises(OSError):
        writer.recv()
    with pytest.raises(OSError):
        writer.poll()


def test_spawn_close():
    conn, child_conn = shoal.Pipe()
    p = started(mh.echo, child_conn)
    child_conn.close()
    msg = b"hello"
    conn.send_bytes(msg)
    assert conn.recv_bytes() == msg
    conn.send_bytes(b"")
    conn.close()
    p.join(30)


def test_sendbytes():
    msg = b"abcdefghijklmnopqrstuvwxyz"
    a, b = shoal.Pipe()
    a.send_bytes(msg)
    assert b.recv_bytes() == msg
    a.send_bytes(msg, 5)
    assert b.recv_bytes() == msg[5:]
    a.send_bytes(msg, 7, 8)
    assert b.recv_bytes() == msg[7 : 7 + 8]
    a.send_bytes(msg, 26)
    assert b.recv_bytes() == b""
    a.send_bytes(msg, 26, 0)
    assert b.recv_bytes() == b""
    for args in ((27,), (22, 5), (26, 1), (-1,), (4, -1)):
        with pytest.raises(ValueError):
            a.send_bytes(msg, *args)


def test_context():
    a, b = shoal.Pipe()
    with a, b:
        a.send(1729)
        assert b.recv() == 1729
        assert not a.closed
        assert not b.closed
    assert a.closed
    assert b.closed
    with pytest.raises(OSError):
        a.recv()
    with pytest.raises(OSError):
        b.recv()


def test_empty_string():
    a, b = shoal.Pipe()
    assert a.poll() is False
    b.send_bytes(b"")
    assert a.poll() is True
    assert a.poll() is True


def test_strings():
    strings = (b"hello", b"", b"a", b"b", b"", b"bye", b"", b"lop")
    a, b = shoal.Pipe()
    p = started(mh.send_strings, b, strings)
    for s in strings:
        for _ in range(200):
            if a.poll(0.01):
                break
        assert a.recv_bytes() == s
    p.join(30)


def test_dont_merge():
    a, b = shoal.Pipe()
    assert a.poll(0.0) is False
    assert a.poll(0.1) is False
    p = started(mh.dont_merge, b)
    assert a.recv_bytes() == b"a"
    assert a.poll(1.0) is True
    assert a.poll(1.0) is True
    assert a.recv_bytes() == b"b"
    assert a.poll(1.0) is True
    assert a.poll(0.0) is True
    assert a.recv_bytes() == b"cd"
    p.join(30)


def test_subclassing_style_server():
    parent, child = shoal.Pipe()
    p = started(mh.upper_server, child)
    child.close()
    parent.send("hello")
    assert parent.recv() == "HELLO"
    parent.send("world")
    assert parent.recv() == "WORLD"
    parent.send(None)
    with pytest.raises(EOFError):
        parent.recv()
    p.join(30)


def test_a_large_array_travels_through_shared_memory():
    a, b = shoal.Pipe()
    p = started(mh.array_sum_back, b)
    x = np.arange(2_000_000, dtype=np.float64)  # 16 MB
    a.send(x)
    total, doubled = a.recv()
    assert total == float(x.sum())
    np.testing.assert_array_equal(doubled, x * 2)
    # The result arrived backed by a shared memory segment, not copied
    # through the socket.
    assert _shoal.locate(doubled)[2] is not None
    p.join(30)


def test_send_to_a_closed_end_is_a_broken_pipe():
    a, b = shoal.Pipe()
    b.close()
    with pytest.raises(BrokenPipeError):
        a.send("x")
    assert a.poll(0) is True, "the end is readable: recv raises EOFError"
    with pytest.raises(EOFError):
        a.recv()


def test_ends_refuse_plain_pickle_and_close_their_descriptor():
    a, b = shoal.Pipe()
    with pytest.raises(TypeError, match="not pickled otherwise"):
        pickle.dumps(a)
    fd = a.fileno()
    a.close()
    with pytest.raises(OSError):
        os.fstat(fd)

"""``progress=`` and ``on_progress=`` on the map family (``shoal.pool.progress``)."""

from __future__ import annotations

import threading

import helpers_mod as h
import pytest
import shoal

pytestmark = pytest.mark.timeout(60)


class Recorder:
    def __init__(self):
        self.calls = []
        self.lock = threading.Lock()

    def __call__(self, done, total):
        with self.lock:
            self.calls.append((done, total))


@pytest.mark.parametrize("method", ["map", "starmap", "map_async"])
def test_on_progress_counts_every_item_once(make_pool, method):
    p = make_pool(2)
    seen = Recorder()
    args = [(i,) for i in range(50)] if method == "starmap" else list(range(50))
    func = getattr(p, method)
    out = func(h.square, args, chunksize=7, on_progress=seen)
    if method == "map_async":
        out = out.get(timeout=20)
    assert out == [i * i for i in range(50)]
    done = [d for d, _ in seen.calls]
    assert done == sorted(done), "counts only grow"
    assert done[-1] == 50
    assert {t for _, t in seen.calls} == {50}
    assert len(seen.calls) == 8, "one report per chunk of 7"


@pytest.mark.parametrize("ordered", [True, False])
def test_imap_progress_with_and_without_a_known_length(make_pool, ordered):
    p = make_pool(2)
    method = p.imap if ordered else p.imap_unordered
    sized, unsized = Recorder(), Recorder()
    assert sorted(method(h.square, range(30), chunksize=4, on_progress=sized)) == sorted(
        i * i for i in range(30)
    )
    assert sized.calls[-1] == (30, 30)
    generator = (i for i in range(30))
    list(method(h.square, generator, chunksize=4, on_progress=unsized))
    assert unsized.calls[-1] == (30, None)


def test_pool_wide_progress_applies_to_every_call(capsys):
    seen = Recorder()
    with shoal.Pool(2, on_progress=seen) as p:
        p.map(h.square, range(10), chunksize=5)
        p.map(h.square, range(4), chunksize=2)
    assert [c for c in seen.calls if c[0] == c[1]] == [(10, 10), (4, 4)]


def test_a_bar_is_drawn_when_asked_always(make_pool, capsys):
    p = make_pool(2)
    p.map(h.square, range(40), chunksize=4, progress="always")
    err = capsys.readouterr().err
    assert "map(square)" in err
    assert "40/40" in err


def test_no_bar_when_not_a_terminal_unless_always(make_pool, capsys):
    p = make_pool(2)
    p.map(h.square, range(40), chunksize=4, progress=True)  # capsys: not a terminal
    assert "40/40" not in capsys.readouterr().err


def test_a_raising_progress_callback_does_not_stop_the_map(make_pool, capsys):
    p = make_pool(2)

    def broken(done, total):
        raise RuntimeError("callback bug")

    assert p.map(h.square, range(10), chunksize=2, on_progress=broken) == [i * i for i in range(10)]
    assert "callback bug" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"progress": "yes"}, ValueError),
        ({"progress": 1}, ValueError),
        ({"on_progress": 3}, TypeError),
    ],
)
def test_bad_progress_options_are_refused(kwargs, error):
    with pytest.raises(error, match="progress"):
        shoal.Pool(1, **kwargs)
    with shoal.Pool(1) as p:
        with pytest.raises(error, match="progress"):
            p.map(h.square, [1], **kwargs)

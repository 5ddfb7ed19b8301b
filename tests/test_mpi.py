"""Message passing with mpi4py's API: every call, on shoal's own transport
(``shoal run``) and on real MPI (``mpiexec`` with mpi4py), with the same
expected output for both. Programs run in their own processes, each with a
timeout, so a hang fails its test."""

from __future__ import annotations

import pytest
from mpi_helpers import BACKENDS, ok, program, rank_lines, require_real_mpi, run

pytestmark = pytest.mark.timeout(180)


@pytest.fixture(params=BACKENDS)
def backend(request) -> str:
    if request.param == "mpi":
        require_real_mpi()
    return request.param


def test_ranks_and_environment(backend, tmp_path):
    path = program(
        tmp_path,
        """
        t0 = MPI.Wtime()
        out("rank", rank, comm.rank, "of", size, comm.size, comm.Get_name())
        out("host is a str:", isinstance(MPI.Get_processor_name(), str))
        out("clock:", MPI.Wtime() >= t0, 0 < MPI.Wtick() < 1)
        out("initialized:", MPI.Is_initialized(), MPI.Is_finalized())
        out("self:", MPI.COMM_SELF.Get_size(), MPI.COMM_SELF.Get_rank())
        out("intra:", comm.Is_intra(), comm.Is_inter())
        """,
    )
    found = ok(run(backend, path, 3))
    for r in range(3):
        assert rank_lines(found, r) == [
            f"rank {r} {r} of 3 3 MPI_COMM_WORLD",
            "host is a str: True",
            "clock: True True",
            "initialized: True False",
            "self: 1 0",
            "intra: True False",
        ]


def test_send_and_recv_of_objects(backend, tmp_path):
    path = program(
        tmp_path,
        """
        import numpy as np
        status = MPI.Status()
        if rank == 0:
            comm.send({"a": [1, 2, 3]}, dest=1, tag=11)
            comm.send(None, dest=1, tag=12)
            comm.send(np.arange(5.0), dest=1)
            comm.send(np.arange(300_000, dtype=np.int64), dest=1, tag=3)  # 2.4 MB
            comm.send(b"x" * 200_000, dest=1, tag=4)
            comm.send(list(range(50_000)), dest=1, tag=5)                  # a large pickle
            got = comm.recv(source=MPI.ANY_SOURCE, tag=MPI.ANY_TAG, status=status)
            out("from", status.Get_source(), "tag", status.Get_tag(), got)
        elif rank == 1:
            out(comm.recv(source=0, tag=11))
            out(comm.recv(source=0, tag=12, status=status), status.source, status.tag)
            a = comm.recv(source=0)
            out(type(a).__name__, a.tolist())
            big = comm.recv(source=0, tag=3)
            out(big.dtype, big.shape, int(big.sum()), bool(big.flags.writeable))
            big[0] = 7  # the received array is this rank's own
            out(len(comm.recv(source=0, tag=4)), sum(comm.recv(source=0, tag=5)))
            comm.send("back", dest=0, tag=9)
        """,
    )
    found = ok(run(backend, path, 2))
    assert rank_lines(found, 1) == [
        "{'a': [1, 2, 3]}",
        "None 0 12",
        "ndarray [0.0, 1.0, 2.0, 3.0, 4.0]",
        "int64 (300000,) 44999850000 True",
        "200000 1249975000",
    ]
    assert rank_lines(found, 0) == ["from 1 tag 9 back"]


def test_messages_keep_their_order_per_pair_communicator_and_tag(backend, tmp_path):
    path = program(
        tmp_path,
        """
        other = comm.Dup()
        if rank == 0:
            for i in range(300):
                comm.send(i, dest=1, tag=i % 3)
                other.send(-i, dest=1, tag=0)
            comm.send("done", dest=1, tag=7)
        elif rank == 1:
            comm.recv(source=0, tag=7)  # everything has been sent
            ones = [comm.recv(source=0, tag=1) for _ in range(100)]
            dup = [other.recv(source=0, tag=0) for _ in range(300)]
            rest = [comm.recv(source=0, tag=MPI.ANY_TAG) for _ in range(200)]
            out(ones == list(range(1, 300, 3)))
            out(dup == [-i for i in range(300)])
            out(rest == [i for i in range(300) if i % 3 != 1])
        """,
    )
    found = ok(run(backend, path, 2))
    assert rank_lines(found, 1) == ["True", "True", "True"]


def test_nonblocking_requests(backend, tmp_path):
    path = program(
        tmp_path,
        """
        peer = 1 - rank
        early = comm.irecv(source=peer, tag=1)      # posted before anything is sent
        flag, value = early.test()
        out("test before:", flag, value)
        comm.barrier()
        send = comm.isend({"from": rank}, dest=peer, tag=1)
        comm.send("second", dest=peer, tag=1)
        out("send request done:", send.test()[0])
        out("late recv:", comm.recv(source=peer, tag=1))
        out("early request:", early.wait())
        reqs = [comm.irecv(source=peer, tag=t) for t in (2, 3)]
        for t in (3, 2):
            comm.send(t * 10, dest=peer, tag=t)
        out("waitall:", MPI.Request.waitall(reqs))
        reqs = [comm.irecv(source=peer, tag=4), comm.isend(5, dest=peer, tag=5)]
        i, v = MPI.Request.waitany(reqs)
        out("waitany:", i, v)
        out("recv 5:", comm.recv(source=peer, tag=5))
        comm.send("x", dest=peer, tag=4)
        if not MPI.Request.testall(reqs[:1])[0]:
            reqs[0].wait()
        out("testall:", MPI.Request.testall(reqs[:1])[0])
        cancelled = comm.irecv(source=peer, tag=99)
        cancelled.cancel()
        comm.barrier()
        """,
    )
    found = ok(run(backend, path, 2))
    for r in range(2):
        assert rank_lines(found, r) == [
            "test before: False None",
            "send request done: True",
            "late recv: second",
            f"early request: {{'from': {1 - r}}}",
            "waitall: [20, 30]",
            "waitany: 1 None",
            "recv 5: 5",
            "testall: True",
        ]


def test_sendrecv_around_a_ring_and_proc_null(backend, tmp_path):
    path = program(
        tmp_path,
        """
        right, left = (rank + 1) % size, (rank - 1) % size
        got = comm.sendrecv(rank * 10, dest=right, source=left)
        out("got", got)
        nothing = comm.sendrecv(rank, dest=MPI.PROC_NULL, source=MPI.PROC_NULL)
        st = MPI.Status()
        comm.recv(source=MPI.PROC_NULL, status=st)
        out("proc null:", nothing, st.Get_source())
        """,
    )
    found = ok(run(backend, path, 4))
    for r in range(4):
        assert rank_lines(found, r) == [f"got {((r - 1) % 4) * 10}", "proc null: None -2"]


def test_probe_and_iprobe(backend, tmp_path):
    path = program(
        tmp_path,
        """
        if rank == 0:
            comm.send("hello", dest=1, tag=42)
            comm.barrier()
        else:
            st = MPI.Status()
            comm.probe(source=MPI.ANY_SOURCE, tag=MPI.ANY_TAG, status=st)
            out("probed from", st.Get_source(), "tag", st.Get_tag(), "count>0:", st.Get_count() > 0)
            out("iprobe other tag:", comm.iprobe(source=0, tag=41))
            out("iprobe:", comm.iprobe(source=0, tag=42))
            out("recv:", comm.recv(source=st.Get_source(), tag=st.Get_tag()))
            out("after:", comm.iprobe())
            comm.barrier()
        """,
    )
    found = ok(run(backend, path, 2))
    assert rank_lines(found, 1) == [
        "probed from 0 tag 42 count>0: True",
        "iprobe other tag: False",
        "iprobe: True",
        "recv: hello",
        "after: False",
    ]


def test_send_and_recv_of_buffers(backend, tmp_path):
    path = program(
        tmp_path,
        """
        import numpy as np
        peer = 1 - rank
        if rank == 0:
            comm.Send(np.arange(10, dtype="i4"), dest=1, tag=1)
            comm.Send([np.arange(6.0), MPI.DOUBLE], dest=1, tag=2)
            comm.Send([np.arange(8, dtype="i4"), 3, MPI.INT], dest=1, tag=3)
            comm.Send(np.full((1000, 1000), 2.5), dest=1, tag=4)   # 8 MB
            comm.Send(bytearray(b"bytes!"), dest=1, tag=5)
            req = comm.Isend(np.ones(4), dest=1, tag=6)
            req.Wait()
        else:
            a = np.zeros(10, dtype="i4")
            st = MPI.Status()
            comm.Recv(a, source=0, tag=1, status=st)
            out(a.tolist(), st.Get_source(), st.Get_tag(), st.Get_count(MPI.INT))
            b = np.zeros(6)
            comm.Recv([b, MPI.DOUBLE], source=0, tag=2)
            c = np.zeros(8, dtype="i4")
            comm.Recv([c, MPI.INT], source=0, tag=3, status=st)
            out(b.tolist(), c.tolist(), st.Get_count(MPI.INT))
            d = np.empty((1000, 1000))
            comm.Recv(d, source=0, tag=4)
            out(float(d.sum()))
            e = bytearray(6)
            comm.Recv(e, source=0, tag=5)
            out(bytes(e))
            f = np.zeros(4)
            comm.Irecv(f, source=0, tag=6).Wait()
            out(f.tolist())
        x = np.array([rank] * 3, dtype="f8")
        y = np.zeros(3)
        comm.Sendrecv(x, dest=peer, sendtag=7, recvbuf=y, source=peer, recvtag=7)
        out("Sendrecv", y.tolist())
        """,
    )
    found = ok(run(backend, path, 2))
    assert rank_lines(found, 1) == [
        "[0, 1, 2, 3, 4, 5, 6, 7, 8, 9] 0 1 10",
        "[0.0, 1.0, 2.0, 3.0, 4.0, 5.0] [0, 1, 2, 0, 0, 0, 0, 0] 3",
        "2500000.0",
        "b'bytes!'",
        "[1.0, 1.0, 1.0, 1.0]",
        "Sendrecv [0.0, 0.0, 0.0]",
    ]
    assert rank_lines(found, 0) == ["Sendrecv [1.0, 1.0, 1.0]"]


def test_collectives_on_objects(backend, tmp_path):
    path = program(
        tmp_path,
        """
        import numpy as np
        comm.barrier()
        out("bcast", comm.bcast({"k": "v"} if rank == 1 else None, root=1))
        out("scatter", comm.scatter([i * i for i in range(size)] if rank == 2 else None, root=2))
        out("gather", comm.gather(rank + 100, root=1))
        out("allgather", comm.allgather(chr(65 + rank)))
        out("alltoall", comm.alltoall([f"{rank}>{j}" for j in range(size)]))
        out("reduce", comm.reduce(rank + 1, op=MPI.SUM, root=3), comm.reduce(rank + 1, op=MPI.PROD))
        out("allreduce", comm.allreduce(rank), comm.allreduce(rank, op=MPI.MAX),
            comm.allreduce(rank, op=MPI.MIN))
        out("logic", comm.allreduce(rank > 0, op=MPI.LAND), comm.allreduce(rank > 2, op=MPI.LOR),
            comm.allreduce(1 << rank, op=MPI.BOR), comm.allreduce(7, op=MPI.BAND))
        out("loc", comm.allreduce((rank % 3, rank), op=MPI.MAXLOC),
            comm.allreduce((rank % 3, rank), op=MPI.MINLOC))
        def concat(a, b, datatype=None):  # mpi4py passes a third argument, None
            return a + b
        concat = MPI.Op.Create(concat, commute=False)
        out("ordered", comm.allreduce(str(rank), op=concat))
        out("arrays", comm.allreduce(np.arange(3) * rank).tolist())
        out("scan", comm.scan(rank + 1), comm.exscan(rank + 1))
        """,
    )
    found = ok(run(backend, path, 4))
    for r in range(4):
        assert rank_lines(found, r) == [
            "bcast {'k': 'v'}",
            f"scatter {r * r}",
            "gather " + ("[100, 101, 102, 103]" if r == 1 else "None"),
            "allgather ['A', 'B', 'C', 'D']",
            f"alltoall {[f'{i}>{r}' for i in range(4)]}",
            "reduce " + ("10" if r == 3 else "None") + " " + ("24" if r == 0 else "None"),
            "allreduce 6 3 0",
            "logic False True 15 7",
            "loc (2, 2) (0, 0)",
            "ordered 0123",
            "arrays [0, 6, 12]",
            f"scan {(r + 1) * (r + 2) // 2} " + ("None" if r == 0 else str(r * (r + 1) // 2)),
        ]


def test_collectives_on_buffers(backend, tmp_path):
    path = program(
        tmp_path,
        """
        import numpy as np
        comm.Barrier()
        a = np.arange(4, dtype="i8") if rank == 0 else np.zeros(4, dtype="i8")
        comm.Bcast(a, root=0)
        out("Bcast", a.tolist())
        send = np.arange(size * 2, dtype="f8") if rank == 1 else None
        part = np.zeros(2)
        comm.Scatter(send, part, root=1)
        out("Scatter", part.tolist())
        whole = np.zeros(size * 2) if rank == 1 else None
        comm.Gather(part * 10, whole, root=1)
        out("Gather", None if whole is None else whole.tolist())
        every = np.zeros(size, dtype="i4")
        comm.Allgather(np.array([rank * 3], dtype="i4"), every)
        out("Allgather", every.tolist())
        total = np.zeros(3)
        comm.Reduce(np.ones(3) * rank, total if rank == 2 else None, op=MPI.SUM, root=2)
        out("Reduce", total.tolist())
        mx = np.zeros(5, dtype="i4")
        comm.Allreduce(np.arange(5, dtype="i4") * (rank + 1), mx, op=MPI.MAX)
        out("Allreduce", mx.tolist())
        big = np.full(100_000, rank + 1.0)                # 800 KB: the shared arena
        res = np.zeros_like(big)
        comm.Allreduce(big, res, op=MPI.SUM)
        out("big", float(res[0]), float(res[-1]), float(res.sum()))
        comm.Allreduce(big * 2, res, op=MPI.PROD)
        out("big prod", float(res[12345]))
        inplace = np.array([rank + 1.0, 1.0])
        comm.Allreduce(MPI.IN_PLACE, inplace, op=MPI.SUM)
        out("in place", inplace.tolist())
        pairs = np.zeros(2, dtype=np.dtype([("value", "f8"), ("index", "i4")], align=True))
        pairs["value"] = [rank % 2, -rank]
        pairs["index"] = rank
        best = np.zeros_like(pairs)
        comm.Allreduce([pairs, MPI.DOUBLE_INT], [best, MPI.DOUBLE_INT], op=MPI.MAXLOC)
        out("MAXLOC", best["value"].tolist(), best["index"].tolist())
        def add(inbuf, inoutbuf, datatype):
            x = np.frombuffer(inbuf, dtype="f8")
            y = np.frombuffer(inoutbuf, dtype="f8")
            y[:] = x + y
        user = MPI.Op.Create(add, commute=True)
        got = np.zeros(2)
        comm.Allreduce(np.array([1.0, rank]), got, op=user)
        out("user op", got.tolist())
        """,
    )
    found = ok(run(backend, path, 4))
    for r in range(4):
        assert rank_lines(found, r) == [
            "Bcast [0, 1, 2, 3]",
            f"Scatter [{2.0 * r}, {2.0 * r + 1}]",
            "Gather " + (str([float(10 * i) for i in range(8)]) if r == 1 else "None"),
            "Allgather [0, 3, 6, 9]",
            "Reduce " + ("[6.0, 6.0, 6.0]" if r == 2 else "[0.0, 0.0, 0.0]"),
            "Allreduce [0, 4, 8, 12, 16]",
            "big 10.0 10.0 1000000.0",
            "big prod 384.0",
            "in place [10.0, 4.0]",
            "MAXLOC [1.0, 0.0] [1, 0]",
            "user op [4.0, 6.0]",
        ]


def test_split_and_dup(backend, tmp_path):
    path = program(
        tmp_path,
        """
        half = comm.Split(color=rank % 2, key=-rank)
        out("split", half.Get_rank(), half.Get_size(), half.allgather(rank))
        out("sum", half.allreduce(rank))
        lone = comm.Split(color=0 if rank == 0 else MPI.UNDEFINED)
        out("undefined", lone == MPI.COMM_NULL, bool(lone))
        dup = comm.Dup()
        if rank == 0:
            dup.send("on the dup", dest=1, tag=5)
            comm.send("on the world", dest=1, tag=5)
        elif rank == 1:
            out("world", comm.recv(source=0, tag=5))
            out("dup", dup.recv(source=0, tag=5))
        dup.Free()
        """,
    )
    found = ok(run(backend, path, 4))
    expected = {
        0: ["split 1 2 [2, 0]", "sum 2", "undefined False True"],
        1: [
            "split 1 2 [3, 1]",
            "sum 4",
            "undefined True False",
            "world on the world",
            "dup on the dup",
        ],
        2: ["split 0 2 [2, 0]", "sum 2", "undefined True False"],
        3: ["split 0 2 [3, 1]", "sum 4", "undefined True False"],
    }
    for r in range(4):
        assert rank_lines(found, r) == expected[r]


def test_bad_input_raises_mpi_exceptions(backend, tmp_path):
    path = program(
        tmp_path,
        """
        import numpy as np

        def check(name, call):
            try:
                call()
            except MPI.Exception as exc:
                kind = MPI.Get_error_string(exc.Get_error_class()).split(":")[0]
                out(name, "MPI.Exception", kind)
            except (TypeError, ValueError) as exc:
                out(name, type(exc).__name__)
            else:
                out(name, "no error")

        if rank == 0:
            check("send to rank 5", lambda: comm.send(1, dest=5))
            check("negative tag", lambda: comm.send(1, dest=1, tag=-3))
            check("recv from rank 9", lambda: comm.recv(source=9))
            check("bcast root 9", lambda: comm.bcast(1, root=9))
            check("Send a list", lambda: comm.Send([1, 2, 3], dest=1))
            comm.Send(np.arange(10.0), dest=1, tag=7)
        else:
            small = np.zeros(5)
            check("Recv too small", lambda: comm.Recv(small, source=0, tag=7))
        comm.barrier()
        """,
    )
    found = ok(run(backend, path, 2))
    assert rank_lines(found, 0) == [
        "send to rank 5 MPI.Exception MPI_ERR_RANK",
        "negative tag MPI.Exception MPI_ERR_TAG",
        "recv from rank 9 MPI.Exception MPI_ERR_RANK",
        "bcast root 9 MPI.Exception MPI_ERR_ROOT",
        "Send a list TypeError",
    ]
    assert rank_lines(found, 1) == ["Recv too small MPI.Exception MPI_ERR_TRUNCATE"]


def test_abort_ends_every_rank_with_its_code(backend, tmp_path):
    path = program(
        tmp_path,
        """
        import time
        if rank == 1:
            out("aborting")
            comm.Abort(3)
        time.sleep(60)
        """,
    )
    done = run(backend, path, 3, timeout=60)
    assert done.returncode == 3, done.stdout + done.stderr
    assert "1: aborting" in done.stdout


def test_the_rest_of_the_api(backend, tmp_path):
    path = program(
        tmp_path,
        """
        import numpy as np
        peer = 1 - rank
        buf = np.array([rank * 1.0, rank + 0.5])
        comm.Sendrecv_replace(buf, dest=peer, source=peer)
        out("Sendrecv_replace", buf.tolist())
        reqs = [comm.Irecv(np.zeros(2), source=peer, tag=3), comm.Issend(buf, dest=peer, tag=3)]
        MPI.Request.Waitall(reqs)
        st = MPI.Status()
        comm.Isend(np.arange(3, dtype="i8"), dest=peer, tag=4).Wait()
        comm.Probe(source=peer, tag=4, status=st)
        out("Probe", comm.Iprobe(source=peer, tag=4), st.Get_elements(MPI.LONG), st.Get_count())
        got = np.zeros(3, dtype="i8")
        req = comm.Irecv(got, source=peer, tag=4)
        index = MPI.Request.Waitany([req])
        out("Waitany", index, got.tolist(), req.Get_status())
        flag = MPI.Request.Testall([comm.isend("t", dest=peer, tag=5)])
        out("Testall", flag, comm.recv(source=peer, tag=5))
        clone = comm.Clone()
        clone.Set_name("mine")
        out("names", clone.Get_name(), comm.Compare(comm) == MPI.IDENT,
            comm.Compare(clone) in (MPI.CONGRUENT, MPI.SIMILAR))
        out("self", MPI.COMM_SELF.allreduce(7), MPI.COMM_SELF.bcast("s"))
        comm.Barrier()
        """,
    )
    found = ok(run(backend, path, 2))
    for r in range(2):
        assert rank_lines(found, r) == [
            f"Sendrecv_replace [{1.0 - r}, {1.5 - r}]",
            "Probe True 3 24",
            "Waitany 0 [0, 1, 2] True",
            "Testall True t",
            "names mine True True",
            "self 7 s",
        ]

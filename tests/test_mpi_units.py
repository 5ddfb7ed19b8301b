"""shoal.mpi's pieces on their own: ops, datatypes, buffer checks, Status,
the detection of an MPI launch, and a program started without a launcher
(a world of one rank)."""

from __future__ import annotations

import pickle
import subprocess
import sys
import time

import numpy as np
import pytest
from mpi_helpers import BIN, ok, program, require_real_mpi, run
from shoal.mpi import MPI as M
from shoal.mpi import buffers, datatypes, detect
from shoal.mpi.exception import MPIError

pytestmark = pytest.mark.timeout(120)


# ------------------------------------------------------------------- ops


def test_ops_on_objects():
    assert M.SUM(2, 3) == 5 and M.PROD(2, 3) == 6
    assert M.MAX(2, 3) == 3 and M.MIN(2, 3) == 2
    assert M.MAX(np.array([1, 5]), np.array([4, 2])).tolist() == [4, 5]
    assert M.LAND(True, 0) == 0 and M.LOR(0, 7) == 7 and M.LXOR(1, 1) is False
    assert M.BAND(6, 3) == 2 and M.BOR(6, 3) == 7 and M.BXOR(6, 3) == 5
    assert M.MAXLOC((3, 1), (3, 0)) == (3, 0) and M.MAXLOC((1, 0), (2, 5)) == (2, 5)
    assert M.MINLOC((3, 4), (3, 2)) == (3, 2) and M.MINLOC((1, 9), (2, 0)) == (1, 9)
    assert M.REPLACE(1, 2) == 2 and M.NO_OP(1, 2) == 1
    assert M.SUM.Is_commutative() and not M.REPLACE.is_commutative


def test_user_ops_take_mpi4pys_three_arguments_or_two():
    three = M.Op.Create(lambda a, b, datatype: (a, b, datatype), commute=True)
    two = M.Op.Create(lambda a, b: a - b)
    assert three(1, 2) == (1, 2, None) and two(5, 3) == 2
    assert three.Is_commutative() and not two.Is_commutative()
    with pytest.raises(TypeError, match="needs a function"):
        M.Op.Create(42)


def test_ops_combine_arrays_in_place():
    right = np.array([1.0, 5.0])
    M.MAX.combine_into(np.array([3.0, 2.0]), right)
    assert right.tolist() == [3.0, 5.0]
    pair = np.dtype([("value", "f8"), ("index", "i4")], align=True)
    left = np.array([(2.0, 3), (1.0, 0), (4.0, 1)], dtype=pair)
    right = np.array([(2.0, 1), (5.0, 2), (4.0, 2)], dtype=pair)
    M.MAXLOC.combine_into(left, right)
    assert right.tolist() == [(2.0, 1), (5.0, 2), (4.0, 1)]
    with pytest.raises(TypeError, match="pairs"):
        M.MAXLOC.combine_into(np.zeros(2), np.zeros(2))

    def sub(inbuf, inoutbuf, datatype):
        a, b = np.frombuffer(inbuf, "f8"), np.frombuffer(inoutbuf, "f8")
        b[:] = a - b

    out = np.array([1.0, 1.0])
    M.Op.Create(sub).combine_into(np.array([5.0, 3.0]), out)
    assert out.tolist() == [4.0, 2.0]


def test_predefined_objects_pickle_to_themselves():
    for obj in (M.SUM, M.MAXLOC, M.DOUBLE, M.DOUBLE_INT, M.IN_PLACE):
        assert pickle.loads(pickle.dumps(obj)) is obj


# ------------------------------------------------------------- datatypes


def test_datatypes_match_numpy_and_mpi():
    assert M.DOUBLE.Get_size() == 8 and M.DOUBLE.dtype == np.float64
    assert M.INT.dtype == np.int32 and M.BYTE.Get_size() == 1
    assert M.DOUBLE_INT.Get_size() == 12 and M.DOUBLE_INT.Get_extent() == (0, 16)
    assert M.DOUBLE.Get_name() == "MPI_DOUBLE"
    assert datatypes.from_dtype(np.dtype("f4")) is M.FLOAT
    assert datatypes.code(np.dtype("f8")) == datatypes.code(np.dtype("<f8")) != 0
    assert datatypes.name_of(datatypes.code(np.dtype("i4"))) == "int32"


def test_buffers_are_checked_with_clear_errors():
    b = buffers.message(np.arange(6, dtype="i4").reshape(2, 3), "Send")
    assert (b.count, b.nbytes, b.array.ndim) == (6, 24, 1)
    b = buffers.message([np.arange(8.0), (3, 2), M.DOUBLE], "Send")
    assert b.array.tolist() == [2.0, 3.0, 4.0]
    assert buffers.message([np.zeros(3), M.BYTE], "Send").count == 24
    with pytest.raises(MPIError, match="not contiguous") as info:
        buffers.message(np.arange(10.0)[::2], "Send")
    assert info.value.Get_error_class() == M.ERR_BUFFER
    with pytest.raises(MPIError, match="read-only"):
        a = np.zeros(3)
        a.flags.writeable = False
        buffers.message(a, "Recv", writable=True)
    with pytest.raises(MPIError, match=r"holds float64 values but the datatype given is MPI_INT"):
        buffers.message([np.zeros(3), M.INT], "Send")
    with pytest.raises(MPIError, match="does not fit") as info:
        buffers.message([np.zeros(3), 4, M.DOUBLE], "Send")
    assert info.value.Get_error_class() == M.ERR_COUNT
    with pytest.raises(TypeError, match="lower-case send"):
        buffers.message([1, 2, 3], "Send")
    with pytest.raises(TypeError, match="Python objects"):
        buffers.message(np.array([object()]), "Send")


def test_status_defaults_and_counts():
    st = M.Status()
    assert (st.Get_source(), st.Get_tag(), st.Get_error()) == (M.ANY_SOURCE, M.ANY_TAG, 0)
    st._set(3, 7, 24)
    assert st.Get_count() == 24 and st.Get_count(M.DOUBLE) == 3 and st.Get_count(M.INT) == 6
    assert M.Status(st).Get_source() == 3


# ------------------------------------------------------------ detection


@pytest.mark.parametrize(
    ("env", "who"),
    [
        ({"OMPI_COMM_WORLD_SIZE": "4", "OMPI_COMM_WORLD_RANK": "0"}, "Open MPI"),
        ({"PMIX_RANK": "1"}, "PMIx"),
        ({"PMI_RANK": "0", "PMI_SIZE": "2"}, "MPICH"),
        ({"SLURM_PROCID": "0", "SLURM_STEP_ID": "0", "SLURM_NTASKS": "4"}, "srun"),
        ({"SLURM_PROCID": "0", "SLURM_STEP_ID": "0", "SLURM_NTASKS": "1"}, None),
        ({"SLURM_PROCID": "0", "SLURM_NTASKS": "4"}, None),  # a batch script, not srun
        ({}, None),
    ],
)
def test_an_mpi_launch_is_told_by_the_environment(env, who):
    found = detect.launcher(env)
    if who is None:
        assert found is None
    else:
        assert who in found


def test_without_a_launcher_shoal_mpi_is_shoals_own():
    import shoal

    assert shoal.MPI is M
    assert M.COMM_WORLD.Get_size() == 1 and M.COMM_WORLD.Get_rank() == 0


def test_under_an_mpi_launcher_without_mpi4py_the_error_says_what_to_install():
    code = "import sys; sys.modules['mpi4py'] = None\nfrom shoal import MPI"
    done = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=60,
        env={"OMPI_COMM_WORLD_SIZE": "2", "PATH": BIN},
    )
    assert done.returncode == 1
    assert "started by Open MPI's mpiexec (OMPI_COMM_WORLD_SIZE is set)" in done.stderr
    assert "pip install 'shoal[mpi]'" in done.stderr


@pytest.mark.mpi
def test_under_mpiexec_shoal_mpi_is_mpi4pys(tmp_path):
    require_real_mpi()
    path = program(tmp_path, "out(MPI.__name__, type(comm).__module__)")
    assert sorted(ok(run("mpi", path, 2))) == [f"{r}: mpi4py.MPI mpi4py.MPI" for r in (0, 1)]
    assert sorted(ok(run("shoal", path, 2))) == [
        "0: shoal.mpi.MPI shoal.mpi.comm",
        "1: shoal.mpi.MPI shoal.mpi.comm",
    ]


# ---------------------------------------------------- one rank, no launcher


def test_a_program_started_alone_is_one_rank(tmp_path):
    path = program(
        tmp_path,
        """
        import numpy as np
        comm.send({"to": "myself"}, dest=0, tag=1)
        out(size, comm.recv(source=0, tag=1))
        out(comm.bcast(5), comm.allreduce(3), comm.gather("g"), comm.scan(2))
        a = np.arange(3.0)
        b = np.zeros(3)
        comm.Allreduce(a, b)
        comm.Sendrecv(a * 2, dest=0, recvbuf=b, source=0)
        out(b.tolist())
        t0 = time.monotonic()
        try:
            comm.recv(source=0, tag=99)       # nothing will ever come
        except Exception as exc:
            out(type(exc).__name__, round(time.monotonic() - t0))
        """,
    )
    with open(path) as f:
        source = f.read()
    with open(path, "w") as f:
        f.write("import time\n" + source)
    started = time.monotonic()
    done = subprocess.run([sys.executable, path], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        "0: 1 {'to': 'myself'}",
        "0: 5 3 ['g'] 2",
        "0: [0.0, 2.0, 4.0]",
        "0: DeadlockError 1",
    ]
    assert time.monotonic() - started < 20

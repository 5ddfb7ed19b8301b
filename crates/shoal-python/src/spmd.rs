//! SPMD message passing for Python (see `shoal_core::spmd`): `Endpoint`,
//! a rank's transport; `Message`, a received message whose payload may
//! still be arriving; `Job`, the launcher's handle on its ranks.
//!
//! Failures of a wait come out as `SpmdFailure(kind, *details)`, which
//! `shoal.mpi` turns into `RankLostError`, `DeadlockError`,
//! `CollectiveMismatchError` or `MPI.Exception` with the whole picture.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use pyo3::create_exception;
use pyo3::exceptions::{PyException, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyList, PyTuple};
use shoal_core::fds::SharedFd;
use shoal_core::spmd::endpoint::{Budget, Deps, Endpoint, Msg, Outgoing, Poll, Spec, SpmdError};
use shoal_core::spmd::job::{Event, Job, JobConfig};
use shoal_core::spmd::ring::RecordHeader;
use shoal_core::spmd::world::{state, SlotView, WaitInfo, World};

use crate::blocking::{seconds, wait_interruptibly};
use crate::errors::to_py;
use crate::shm::{fd_list, shared_fds, PyFd, RawBuffer};

create_exception!(
    _shoal,
    SpmdFailure,
    PyException,
    "A wait between ranks failed: args are (kind, *details); shoal.mpi explains it."
);

/// A blocked call checks for signals this often.
const SLICE: Duration = Duration::from_millis(50);
/// How long a wait polls before it lets go of the GIL.
const HELD_SPIN: Duration = Duration::from_micros(5);
/// A lone rank (no launcher) that has waited this long waits for itself.
const ALONE: Duration = Duration::from_secs(1);

fn failure(err: SpmdError) -> PyErr {
    match err {
        SpmdError::Lost { rank, ended } => SpmdFailure::new_err((
            "lost",
            rank,
            ended.order,
            ended.code,
            ended.signal,
            ended.finalized,
        )),
        SpmdError::Deadlock => SpmdFailure::new_err(("deadlock",)),
        SpmdError::Corrupt(src) => SpmdFailure::new_err(("corrupt", src)),
        SpmdError::Core(e) => to_py(e),
    }
}

/// Takes ownership of descriptor `n`, inherited from the launcher.
#[pyfunction]
pub(crate) fn adopt_fd(n: i32) -> PyResult<PyFd> {
    let fd = shoal_core::fds::adopt_inherited(n).map_err(|e| {
        PyValueError::new_err(format!(
            "{e}: this process was not started by shoal run (or shoal.spmd)"
        ))
    })?;
    Ok(PyFd {
        fd: SharedFd::new(fd),
    })
}

/// `(world, [(inbox_tx, inbox_rx)])` of a new world of `size` ranks that
/// lives in this process (a program run without a launcher has one rank).
#[pyfunction]
pub(crate) fn local_world(size: usize) -> PyResult<(PyFd, Vec<(PyFd, PyFd)>)> {
    let world = World::create(size).map_err(to_py)?;
    let mut inboxes = Vec::with_capacity(size);
    for _ in 0..size {
        let q = shoal_core::queue::MessageQueue::new().map_err(to_py)?;
        let [tx, rx] = q.fds();
        inboxes.push((PyFd { fd: tx.clone() }, PyFd { fd: rx.clone() }));
    }
    Ok((
        PyFd {
            fd: world.fd().clone(),
        },
        inboxes,
    ))
}

fn view_tuple<'py>(py: Python<'py>, v: &SlotView) -> PyResult<Bound<'py, PyTuple>> {
    let (order, code, signal, finalized) = match &v.ended {
        Some(e) => (e.order, e.code, e.signal, e.finalized),
        None => (0, None, None, false),
    };
    let w = &v.wait;
    PyTuple::new(
        py,
        [
            v.pid.into_pyobject(py)?.into_any(),
            v.state.into_pyobject(py)?.into_any(),
            order.into_pyobject(py)?.into_any(),
            code.into_pyobject(py)?.into_any(),
            signal.into_pyobject(py)?.into_any(),
            finalized.into_pyobject(py)?.to_owned().into_any(),
            w.op.into_pyobject(py)?.into_any(),
            w.ctx.into_pyobject(py)?.into_any(),
            w.peer.into_pyobject(py)?.into_any(),
            w.tag.into_pyobject(py)?.into_any(),
            w.seq.into_pyobject(py)?.into_any(),
            w.root.into_pyobject(py)?.into_any(),
            w.location.as_str().into_pyobject(py)?.into_any(),
            v.drained.into_pyobject(py)?.to_owned().into_any(),
        ],
    )
}

/// Every rank's slot: `(pid, state, ended_order, exit_code, signal,
/// finalized, op, ctx, peer, tag, seq, root, location, drained)`.
fn snapshot<'py>(py: Python<'py>, world: &World) -> PyResult<Bound<'py, PyList>> {
    let views = py.detach(|| world.views());
    let items = views
        .iter()
        .map(|v| view_tuple(py, v))
        .collect::<PyResult<Vec<_>>>()?;
    PyList::new(py, items)
}

/// `(src, ctx, tag, op, root)` of a message nobody received.
type Envelope = (usize, u32, i32, u8, i32);

/// What a blocked call publishes about itself.
struct Waiting {
    state: u32,
    info: WaitInfo,
    deps: Deps,
    verdicts: bool,
    /// Whether to publish it at all: a rank copying a staged payload out
    /// waits only for a sender that is writing it (or dead), and is busy
    /// itself; published as asleep, it could look deadlocked.
    publish: bool,
}

/// A plain pickle at least this long goes through shoal's transfer
/// instead (it may hold buffers that belong in shared memory).
const SMALL_PICKLE: usize = 64 * 1024;

/// What `send_obj` and `recv_obj` pickle with: `_pickle.dumps`,
/// `_pickle.loads`, and shoal's `unpack` for payloads with segments.
struct Pickling {
    dumps: Py<PyAny>,
    /// `{"buffer_callback": shoal.mpi.payload.refuse_buffers}`: plain
    /// pickling stops at the first numpy array (shoal's transfer takes it).
    refuse: Py<PyDict>,
    loads: Py<PyAny>,
    unpack: Py<PyAny>,
}

#[pyclass(frozen, name = "Endpoint", module = "shoal._shoal")]
pub(crate) struct PyEndpoint {
    ep: Arc<Endpoint>,
    /// `where() -> str`: the user's line, asked for only before sleeping.
    where_fn: Py<PyAny>,
    alone: bool,
    pickling: Arc<Pickling>,
    /// Objects naming `__main__` go by value (see `shoal.mpi.payload`).
    main_by_value: Arc<AtomicBool>,
}

impl PyEndpoint {
    fn deps(&self, deps: i64) -> PyResult<Deps> {
        Ok(match deps {
            d if d >= 0 => {
                let r = d as usize;
                if r >= self.ep.size() {
                    return Err(PyValueError::new_err(format!("no rank {r}")));
                }
                Deps::Peer(r)
            }
            -1 => Deps::None,
            d => {
                let id = (-d - 2) as usize;
                Deps::Group(
                    self.ep
                        .group(id)
                        .ok_or_else(|| PyValueError::new_err(format!("no group {id}")))?,
                )
            }
        })
    }

    /// Runs `step` (one slice of a wait) until it is ready: one attempt
    /// with the GIL held, then with the GIL released a spell of polling,
    /// then sleeps in slices, checking for signals between them. Publishes
    /// where the caller waits before it first sleeps.
    fn run<T, F>(&self, py: Python<'_>, mut waiting: Waiting, mut step: F) -> PyResult<T>
    where
        T: Send,
        F: FnMut(&Endpoint, &Waiting, Budget) -> Result<Poll<T>, SpmdError> + Send,
    {
        let ep = &*self.ep;
        // A message that is there, or comes within a few microseconds, is
        // taken without letting go of the GIL (which costs as much).
        match step(ep, &waiting, Budget::Poll(HELD_SPIN)) {
            Ok(Poll::Ready(v)) => return Ok(v),
            Ok(Poll::Pending) => {}
            Err(e) => return Err(self.failure(py, e)),
        }
        let mut budget = Budget::Spin;
        let mut published: Option<Instant> = None;
        let result = loop {
            let got = py.detach(|| step(ep, &waiting, budget));
            match got {
                Ok(Poll::Ready(v)) => break Ok(v),
                Err(e) => break Err(self.failure(py, e)),
                Ok(Poll::Pending) => {}
            }
            if let Err(e) = py.check_signals() {
                break Err(e);
            }
            budget = Budget::Sleep(SLICE);
            match published {
                None if !waiting.publish => {}
                None => {
                    waiting.info.location = match self.where_fn.call0(py) {
                        Ok(loc) => loc.extract::<String>(py).unwrap_or_default(),
                        Err(_) => String::new(),
                    };
                    ep.world()
                        .publish_wait(ep.rank(), waiting.state, &waiting.info);
                    published = Some(Instant::now());
                }
                Some(since) => {
                    if self.alone && waiting.verdicts && since.elapsed() >= ALONE {
                        break Err(self.failure(py, SpmdError::Deadlock));
                    }
                }
            }
        };
        if published.is_some() {
            ep.world().set_running(ep.rank());
        }
        result
    }

    /// The exception for a failed wait; a deadlock's comes with the
    /// picture as it is now, before the ranks wake and move on.
    fn failure(&self, py: Python<'_>, err: SpmdError) -> PyErr {
        match err {
            SpmdError::Deadlock => match snapshot(py, self.ep.world()) {
                Ok(picture) => SpmdFailure::new_err(("deadlock", picture.unbind())),
                Err(e) => e,
            },
            other => failure(other),
        }
    }

    fn wait_info(
        what: u32,
        ctx: u32,
        peer: i32,
        tag: i32,
        collective: bool,
        root: i32,
    ) -> WaitInfo {
        WaitInfo {
            op: what,
            ctx,
            peer,
            tag,
            seq: if collective { tag as u32 } else { 0 },
            root,
            location: String::new(),
        }
    }

    /// The payload of `msg` as `bytes`, or `(bytes, [Fd])` with the
    /// descriptors its pickle needs.
    fn payload<'py>(&self, py: Python<'py>, msg: &Msg) -> PyResult<Bound<'py, PyAny>> {
        let body = if msg.header.kind == shoal_core::spmd::ring::kind::INLINE {
            PyBytes::new(py, &msg.body)
        } else {
            let total = msg.header.total as usize;
            let mut data = vec![0u8; total];
            let mut done = 0;
            let waiting = Waiting {
                state: state::BLOCKED,
                info: Self::wait_info(0, msg.header.ctx, msg.src as i32, msg.header.tag, false, -1),
                deps: Deps::Peer(msg.src),
                verdicts: false,
                publish: false,
            };
            self.run(py, waiting, |ep, _w, budget| {
                ep.read_step(msg, &mut data, &mut done, budget)
            })?;
            PyBytes::new(py, &data)
        };
        let fds = msg.attachments();
        if fds.is_empty() {
            Ok(body.into_any())
        } else {
            Ok((body, fd_list(py, fds.to_vec())?)
                .into_pyobject(py)?
                .into_any())
        }
    }

    /// Copies `msg`'s payload into `buffer`; a message that does not fit
    /// (or is of another type) is put back and reported.
    fn read_into(
        &self,
        py: Python<'_>,
        msg: Msg,
        buffer: &Bound<'_, PyAny>,
        dtype: u32,
    ) -> PyResult<usize> {
        let raw = RawBuffer::get_writable(buffer)?;
        let (addr, cap) = (raw.addr(), raw.len());
        let h = msg.header;
        if h.dtype != 0 && dtype != 0 && h.dtype != dtype {
            let (src, tag) = (msg.src, h.tag);
            self.ep.put_back(msg);
            return Err(SpmdFailure::new_err(("dtype", src, tag, h.dtype, dtype)));
        }
        let total = h.total as usize;
        if total > cap {
            let (src, tag) = (msg.src, h.tag);
            self.ep.put_back(msg);
            return Err(SpmdFailure::new_err(("truncated", src, tag, total, cap)));
        }
        let mut done = 0;
        let waiting = Waiting {
            state: state::BLOCKED,
            info: Self::wait_info(0, h.ctx, msg.src as i32, h.tag, false, -1),
            deps: Deps::Peer(msg.src),
            verdicts: false,
            publish: false,
        };
        self.run(py, waiting, |ep, _w, budget| {
            // SAFETY: `raw` holds the writable buffer (and a reference to
            // its exporter) until after `run` returns; `total <= cap`.
            let dst = unsafe { std::slice::from_raw_parts_mut(addr as *mut u8, total) };
            ep.read_step(&msg, dst, &mut done, budget)
        })?;
        drop(raw);
        Ok(total)
    }

    #[allow(clippy::too_many_arguments)]
    fn send_to(
        &self,
        py: Python<'_>,
        dests: Vec<usize>,
        ctx: u32,
        tag: i32,
        op: u8,
        root: i32,
        dtype: u32,
        payload: &Bound<'_, PyAny>,
        fds: &Bound<'_, PyAny>,
        what: u32,
    ) -> PyResult<()> {
        let size = self.ep.size();
        if let Some(bad) = dests.iter().find(|&&d| d >= size) {
            return Err(PyValueError::new_err(format!("no rank {bad}")));
        }
        let fds = if fds.is_none() {
            Vec::new()
        } else {
            shared_fds(fds)?
        };
        let raw = RawBuffer::get(payload)?;
        let (addr, len) = (raw.addr(), raw.len());
        let header = RecordHeader {
            op,
            ctx,
            tag,
            root,
            dtype,
            ..Default::default()
        };
        let peer = if dests.len() == 1 {
            dests[0] as i32
        } else {
            -1
        };
        let waiting = Waiting {
            state: state::BLOCKED,
            info: Self::wait_info(what, ctx, peer, tag, op != 0, root),
            deps: Deps::None,
            verdicts: true,
            publish: true,
        };
        // SAFETY: `raw` keeps the exporter's buffer alive and unmoved until
        // it is dropped below, after the send; the bytes are only read.
        let data = unsafe { std::slice::from_raw_parts(addr as *const u8, len) };
        let mut out = Outgoing::new(dests, header, data, fds);
        let sent = self.run(py, waiting, |ep, _w, budget| ep.send_step(&mut out, budget));
        drop(out);
        drop(raw);
        sent
    }

    /// Takes a point-to-point message and unpickles it.
    fn take_obj(
        &self,
        py: Python<'_>,
        ctx: u32,
        src: i32,
        tag: i32,
        what: u32,
        deps: i64,
    ) -> PyResult<(Msg, Py<PyAny>)> {
        let spec = self.spec(ctx, src, tag, false)?;
        let msg = self.take(py, spec, what, deps, -1)?;
        let obj = if msg.header.kind == shoal_core::spmd::ring::kind::INLINE && msg.fds.is_empty() {
            let body = PyBytes::new(py, &msg.body);
            self.pickling.loads.call1(py, (body,))?
        } else {
            let payload = self.payload(py, &msg)?;
            match payload.cast::<PyBytes>() {
                Ok(bytes) => self.pickling.loads.call1(py, (bytes,))?,
                Err(_) => self.pickling.unpack.call1(py, payload.cast::<PyTuple>()?)?,
            }
        };
        Ok((msg, obj))
    }

    fn spec(&self, ctx: u32, src: i32, tag: i32, collective: bool) -> PyResult<Spec> {
        if src >= self.ep.size() as i32 {
            return Err(PyValueError::new_err(format!("no rank {src}")));
        }
        Ok(Spec {
            ctx,
            src,
            tag,
            collective,
        })
    }

    /// Takes a message `spec` accepts, waiting for it.
    #[allow(clippy::too_many_arguments)]
    fn take(&self, py: Python<'_>, spec: Spec, what: u32, deps: i64, root: i32) -> PyResult<Msg> {
        let waiting = Waiting {
            state: state::BLOCKED,
            info: Self::wait_info(what, spec.ctx, spec.src, spec.tag, spec.collective, root),
            deps: self.deps(deps)?,
            verdicts: true,
            publish: true,
        };
        self.run(py, waiting, |ep, w, budget| {
            ep.block(&w.deps, w.verdicts, budget, || ep.try_take(&spec))
        })
    }
}

/// Whether a pickle names `__main__`.
fn names_main(pickle: &[u8]) -> bool {
    pickle.windows(8).any(|w| w == b"__main__")
}

fn check_collective(msg: &Msg, op: u8, root: i32, seq: i32) -> PyResult<()> {
    let h = &msg.header;
    if h.op != op || h.root != root || h.tag != seq {
        return Err(SpmdFailure::new_err((
            "mismatch", msg.src, h.op, h.root, h.tag, op, root, seq,
        )));
    }
    Ok(())
}

#[pymethods]
impl PyEndpoint {
    /// This rank's end of a world: `world` segment, its `inbox`, every
    /// rank's inbox (sending ends), how long a wait polls before sleeping,
    /// whether to give the core away while polling, and `where()`.
    #[new]
    #[pyo3(signature = (rank, world, inbox, outboxes, spin_us, yield_in_spin, where_fn))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        py: Python<'_>,
        rank: usize,
        world: &PyFd,
        inbox: &PyFd,
        outboxes: Vec<PyRef<'_, PyFd>>,
        spin_us: f64,
        yield_in_spin: bool,
        where_fn: Py<PyAny>,
    ) -> PyResult<Self> {
        let world = World::map(world.fd.clone()).map_err(to_py)?;
        let alone = world.size() == 1;
        let outboxes = outboxes.iter().map(|f| f.fd.clone()).collect();
        let spin = Duration::from_secs_f64(spin_us.max(0.0) / 1e6);
        let ep = Endpoint::new(world, rank, inbox.fd.clone(), outboxes, spin, yield_in_spin)
            .map_err(to_py)?;
        let pickle = py.import("_pickle")?;
        let refuse = PyDict::new(py);
        refuse.set_item(
            "buffer_callback",
            py.import("shoal.mpi.payload")?.getattr("refuse_buffers")?,
        )?;
        let pickling = Pickling {
            dumps: pickle.getattr("dumps")?.unbind(),
            refuse: refuse.unbind(),
            loads: pickle.getattr("loads")?.unbind(),
            unpack: py
                .import("shoal.wire.transfer")?
                .getattr("unpack")?
                .unbind(),
        };
        Ok(PyEndpoint {
            ep: Arc::new(ep),
            where_fn,
            alone,
            pickling: Arc::new(pickling),
            main_by_value: Arc::new(AtomicBool::new(true)),
        })
    }

    /// Whether objects that name `__main__` must go by value (ranks that
    /// run another process's function) rather than plainly.
    #[getter]
    fn get_main_by_value(&self) -> bool {
        self.main_by_value.load(Ordering::Relaxed)
    }

    #[setter]
    fn set_main_by_value(&self, value: bool) {
        self.main_by_value.store(value, Ordering::Relaxed);
    }

    /// Sends `obj` pickled plainly, if that is how it should travel (a
    /// small pickle, nothing of `__main__` that must go by value); False
    /// if it needs shoal's transfer instead (then nothing was sent).
    #[pyo3(signature = (dest, ctx, tag, obj, what))]
    fn send_obj(
        &self,
        py: Python<'_>,
        dest: usize,
        ctx: u32,
        tag: i32,
        obj: &Bound<'_, PyAny>,
        what: u32,
    ) -> PyResult<bool> {
        let refuse = self.pickling.refuse.bind(py);
        let data = match self.pickling.dumps.call(py, (obj, 5), Some(refuse)) {
            Ok(data) => data.into_bound(py),
            Err(e) if e.is_instance_of::<PyException>(py) => return Ok(false),
            Err(e) => return Err(e),
        };
        let bytes = data.cast::<PyBytes>()?.as_bytes();
        if bytes.len() >= SMALL_PICKLE
            || (self.main_by_value.load(Ordering::Relaxed) && names_main(bytes))
        {
            return Ok(false);
        }
        self.send_to(
            py,
            vec![dest],
            ctx,
            tag,
            0,
            -1,
            0,
            &data,
            &py.None().into_bound(py),
            what,
        )?;
        Ok(true)
    }

    /// Receives an object (the caller wants no status).
    #[pyo3(signature = (ctx, src, tag, what, deps))]
    fn recv_obj(
        &self,
        py: Python<'_>,
        ctx: u32,
        src: i32,
        tag: i32,
        what: u32,
        deps: i64,
    ) -> PyResult<Py<PyAny>> {
        let (_, obj) = self.take_obj(py, ctx, src, tag, what, deps)?;
        Ok(obj)
    }

    /// Receives an object: `(src, tag, nbytes, obj)`.
    #[pyo3(signature = (ctx, src, tag, what, deps))]
    fn recv_obj_status<'py>(
        &self,
        py: Python<'py>,
        ctx: u32,
        src: i32,
        tag: i32,
        what: u32,
        deps: i64,
    ) -> PyResult<Bound<'py, PyTuple>> {
        let (msg, obj) = self.take_obj(py, ctx, src, tag, what, deps)?;
        (msg.src, msg.header.tag, msg.header.total, obj).into_pyobject(py)
    }

    #[getter]
    fn rank(&self) -> usize {
        self.ep.rank()
    }

    #[getter]
    fn size(&self) -> usize {
        self.ep.size()
    }

    /// Largest payload that travels inside the rings.
    #[getter]
    fn inline_max(&self) -> usize {
        self.ep.inline_max()
    }

    /// Registers a communicator's members (world ranks); returns the value
    /// to pass as `deps` for waits on any of them.
    fn add_group(&self, ranks: Vec<usize>) -> PyResult<i64> {
        if ranks.iter().any(|&r| r >= self.ep.size()) {
            return Err(PyValueError::new_err(
                "a group names a rank that does not exist",
            ));
        }
        Ok(-2 - self.ep.add_group(ranks) as i64)
    }

    /// Sends `payload` (any contiguous buffer) with `fds` to world rank `dest`.
    #[allow(clippy::too_many_arguments)]
    #[pyo3(signature = (dest, ctx, tag, op, root, dtype, payload, fds, what))]
    fn send(
        &self,
        py: Python<'_>,
        dest: usize,
        ctx: u32,
        tag: i32,
        op: u8,
        root: i32,
        dtype: u32,
        payload: &Bound<'_, PyAny>,
        fds: &Bound<'_, PyAny>,
        what: u32,
    ) -> PyResult<()> {
        self.send_to(
            py,
            vec![dest],
            ctx,
            tag,
            op,
            root,
            dtype,
            payload,
            fds,
            what,
        )
    }

    /// One payload to several ranks (copied to shared memory once).
    #[allow(clippy::too_many_arguments)]
    #[pyo3(signature = (dests, ctx, tag, op, root, dtype, payload, fds, what))]
    fn send_many(
        &self,
        py: Python<'_>,
        dests: Vec<usize>,
        ctx: u32,
        tag: i32,
        op: u8,
        root: i32,
        dtype: u32,
        payload: &Bound<'_, PyAny>,
        fds: &Bound<'_, PyAny>,
        what: u32,
    ) -> PyResult<()> {
        self.send_to(py, dests, ctx, tag, op, root, dtype, payload, fds, what)
    }

    /// Receives a pickled message: `(src, tag, payload)` with `payload`
    /// bytes or `(bytes, [Fd])`. `op` is 0 for point-to-point; a
    /// collective's receive names its op, root and sequence number (`tag`)
    /// and fails with a mismatch if the message is of another collective.
    #[allow(clippy::too_many_arguments)]
    #[pyo3(signature = (ctx, src, tag, op, root, what, deps))]
    fn recv<'py>(
        &self,
        py: Python<'py>,
        ctx: u32,
        src: i32,
        tag: i32,
        op: u8,
        root: i32,
        what: u32,
        deps: i64,
    ) -> PyResult<Bound<'py, PyTuple>> {
        let spec = self.spec(ctx, src, tag, op != 0)?;
        let msg = self.take(py, spec, what, deps, root)?;
        if op != 0 {
            check_collective(&msg, op, root, tag)?;
        }
        let payload = self.payload(py, &msg)?;
        (msg.src, msg.header.tag, payload).into_pyobject(py)
    }

    /// Receives into a writable buffer: `(src, tag, nbytes)`. A message
    /// larger than the buffer, or of another dtype, is left in the queue
    /// and reported.
    #[allow(clippy::too_many_arguments)]
    #[pyo3(signature = (ctx, src, tag, op, root, what, deps, buffer, dtype))]
    fn recv_into(
        &self,
        py: Python<'_>,
        ctx: u32,
        src: i32,
        tag: i32,
        op: u8,
        root: i32,
        what: u32,
        deps: i64,
        buffer: &Bound<'_, PyAny>,
        dtype: u32,
    ) -> PyResult<(usize, i32, usize)> {
        let spec = self.spec(ctx, src, tag, op != 0)?;
        let msg = self.take(py, spec, what, deps, root)?;
        if op != 0 {
            check_collective(&msg, op, root, tag)?;
        }
        let (from, got_tag) = (msg.src, msg.header.tag);
        let n = self.read_into(py, msg, buffer, dtype)?;
        Ok((from, got_tag, n))
    }

    /// `(src, tag, nbytes, dtype)` of the first message `(ctx, src, tag)`
    /// accepts, without taking it; None if there is none and not `block`.
    #[allow(clippy::too_many_arguments)]
    #[pyo3(signature = (ctx, src, tag, what, deps, block))]
    fn probe(
        &self,
        py: Python<'_>,
        ctx: u32,
        src: i32,
        tag: i32,
        what: u32,
        deps: i64,
        block: bool,
    ) -> PyResult<Option<(usize, i32, u64, u32)>> {
        let spec = self.spec(ctx, src, tag, false)?;
        let found = if block {
            let waiting = Waiting {
                state: state::BLOCKED,
                info: Self::wait_info(what, ctx, src, tag, false, -1),
                deps: self.deps(deps)?,
                verdicts: true,
                publish: true,
            };
            Some(self.run(py, waiting, |ep, w, budget| {
                ep.block(&w.deps, w.verdicts, budget, || ep.try_probe(&spec))
            })?)
        } else {
            py.detach(|| self.ep.try_probe(&spec)).map_err(failure)?
        };
        Ok(found.map(|(s, h)| (s, h.tag, h.total, h.dtype)))
    }

    /// Posts a receive (`irecv`); returns its id.
    fn post(&self, ctx: u32, src: i32, tag: i32) -> PyResult<u64> {
        let spec = self.spec(ctx, src, tag, false)?;
        Ok(self.ep.post(spec))
    }

    /// The message of posted receive `id` if it has come, else None.
    fn test(&self, py: Python<'_>, request: u64) -> PyResult<Option<PyMessage>> {
        let got = py
            .detach(|| self.ep.try_complete(request))
            .map_err(failure)?;
        Ok(got.map(|msg| PyMessage::new(self, msg)))
    }

    /// Waits for the first of `ids` to complete: `(index, Message)`.
    #[pyo3(signature = (ids, what, deps))]
    fn wait_any(
        &self,
        py: Python<'_>,
        ids: Vec<u64>,
        what: u32,
        deps: i64,
    ) -> PyResult<(usize, PyMessage)> {
        let waiting = Waiting {
            state: state::BLOCKED,
            info: Self::wait_info(what, 0, -1, -1, false, -1),
            deps: self.deps(deps)?,
            verdicts: true,
            publish: true,
        };
        let (k, msg) = self.run(py, waiting, |ep, w, budget| {
            ep.block(&w.deps, w.verdicts, budget, || ep.try_complete_any(&ids))
        })?;
        Ok((k, PyMessage::new(self, msg)))
    }

    /// Withdraws a posted receive; False if it was not pending.
    fn cancel(&self, request: u64) -> bool {
        self.ep.cancel(request)
    }

    /// The exit barrier: waits until every rank has finished its program
    /// (or ended), then returns what nobody received: `[(src, ctx, tag,
    /// op, root)]`.
    fn finalize(&self, py: Python<'_>, what: u32) -> PyResult<Vec<Envelope>> {
        let ep = &*self.ep;
        let info = Self::wait_info(what, 0, -1, -1, false, -1);
        let location = self
            .where_fn
            .call0(py)
            .and_then(|l| l.extract::<String>(py))
            .unwrap_or_default();
        ep.world()
            .publish_wait(ep.rank(), state::FINALIZING, &WaitInfo { location, ..info });
        ep.ring_all();
        let waiting = Waiting {
            state: state::FINALIZING,
            info: Self::wait_info(what, 0, -1, -1, false, -1),
            deps: Deps::None,
            verdicts: false,
            publish: true,
        };
        // Published above: sleep at once.
        let result = loop {
            let got = py.detach(|| {
                ep.block(&waiting.deps, false, Budget::Sleep(SLICE), || {
                    ep.try_finalize()
                })
            });
            match got {
                Ok(Poll::Ready(())) => break Ok(()),
                Ok(Poll::Pending) => py.check_signals()?,
                Err(e) => break Err(failure(e)),
            }
        };
        result?;
        let left = py.detach(|| ep.leftovers()).map_err(failure)?;
        ep.world().set_finalized(ep.rank());
        Ok(left
            .iter()
            .map(|m| {
                (
                    m.src,
                    m.header.ctx,
                    m.header.tag,
                    m.header.op,
                    m.header.root,
                )
            })
            .collect())
    }

    /// Every rank's slot (see `Job.snapshot`).
    fn snapshot<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        snapshot(py, self.ep.world())
    }

    /// The messages that arrived and wait for a receive, in order:
    /// `[(src, ctx, tag, op, root, nbytes)]`.
    fn pending(&self) -> Vec<(usize, u32, i32, u8, i32, u64)> {
        self.ep
            .pending()
            .into_iter()
            .map(|(src, h)| (src, h.ctx, h.tag, h.op, h.root, h.total))
            .collect()
    }

    /// Records `Abort(code)` in the world; the launcher ends the job when
    /// this rank exits.
    fn abort(&self, code: i32) {
        self.ep.world().abort(self.ep.rank(), code);
    }
}

/// A completed receive request: its envelope, and its payload to take.
#[pyclass(frozen, name = "Message", module = "shoal._shoal")]
pub(crate) struct PyMessage {
    owner: Py<PyAny>,
    msg: Mutex<Option<Msg>>,
    #[pyo3(get)]
    src: usize,
    #[pyo3(get)]
    tag: i32,
    #[pyo3(get)]
    nbytes: u64,
    #[pyo3(get)]
    dtype: u32,
}

impl PyMessage {
    fn new(owner: &PyEndpoint, msg: Msg) -> PyMessage {
        PyMessage {
            owner: Python::attach(|py| {
                Py::new(
                    py,
                    PyEndpoint {
                        ep: owner.ep.clone(),
                        where_fn: owner.where_fn.clone_ref(py),
                        alone: owner.alone,
                        pickling: owner.pickling.clone(),
                        main_by_value: owner.main_by_value.clone(),
                    },
                )
                .map(|p| p.into_any())
                .expect("an Endpoint object")
            }),
            src: msg.src,
            tag: msg.header.tag,
            nbytes: msg.header.total,
            dtype: msg.header.dtype,
            msg: Mutex::new(Some(msg)),
        }
    }

    fn take(&self) -> PyResult<Msg> {
        self.msg
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
            .ok_or_else(|| PyValueError::new_err("this message's payload was already taken"))
    }
}

#[pymethods]
impl PyMessage {
    /// The pickled payload: bytes, or `(bytes, [Fd])`.
    fn payload<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let msg = self.take()?;
        let owner = self.owner.bind(py).cast::<PyEndpoint>()?.get();
        owner.payload(py, &msg)
    }

    /// Copies the payload into a writable buffer; returns the bytes copied.
    #[pyo3(signature = (buffer, dtype))]
    fn read_into(&self, py: Python<'_>, buffer: &Bound<'_, PyAny>, dtype: u32) -> PyResult<usize> {
        let msg = self.take()?;
        let owner = self.owner.bind(py).cast::<PyEndpoint>()?.get();
        owner.read_into(py, msg, buffer, dtype)
    }
}

// ------------------------------------------------------- communicators

/// `send`'s and `recv`'s call codes (as in `shoal.mpi.constants`).
const CALL_SEND: u32 = 1;
const CALL_RECV: u32 = 2;
/// MPI's wildcards and the largest tag (`shoal.mpi.constants`).
const ANY_SOURCE: i64 = -1;
const ANY_TAG: i64 = -1;
const TAG_UB: i64 = i32::MAX as i64;

/// A plain int's value (not a bool, not another type with `__index__`:
/// those go the slow way, which checks them).
fn plain_int(obj: &Bound<'_, PyAny>) -> Option<i64> {
    if obj.is_exact_instance_of::<pyo3::types::PyInt>() {
        obj.extract::<i64>().ok()
    } else {
        None
    }
}

/// The base of `shoal.mpi.comm.Comm`: its lower-case `send` and `recv` in
/// their common case (a rank and a tag that are plain ints in range, an
/// object whose pickle is small, no status) without a Python frame. Every
/// other case, and every failure, goes to the Python class's
/// `_send_slow`, `_recv_slow` and `_translate`.
#[pyclass(subclass, frozen, name = "CommCore", module = "shoal._shoal")]
pub(crate) struct PyCommCore {
    ep: Py<PyEndpoint>,
    ctx: u32,
    ranks: Vec<usize>,
    deps: i64,
}

impl PyCommCore {
    fn failed(slf: &Bound<'_, Self>, err: PyErr, call: u32, peer: i64, tag: i64) -> PyErr {
        let py = slf.py();
        if !err.is_instance_of::<SpmdFailure>(py) {
            return err;
        }
        match slf.call_method1("_translate", (err.value(py), call, peer, tag)) {
            Ok(exc) => PyErr::from_value(exc),
            Err(e) => e,
        }
    }
}

#[pymethods]
impl PyCommCore {
    /// A communicator of the world ranks `ranks` (in their order here)
    /// with context id `ctx`.
    #[new]
    #[pyo3(signature = (ep, ctx, ranks, *_rest))]
    fn new(
        ep: Bound<'_, PyEndpoint>,
        ctx: u32,
        ranks: Vec<usize>,
        _rest: &Bound<'_, PyTuple>,
    ) -> PyResult<Self> {
        let endpoint = ep.get();
        let identity =
            ranks.len() == endpoint.ep.size() && ranks.iter().enumerate().all(|(i, &r)| i == r);
        let deps = if identity {
            -2
        } else {
            endpoint.add_group(ranks.clone())?
        };
        Ok(PyCommCore {
            ep: ep.unbind(),
            ctx,
            ranks,
            deps,
        })
    }

    /// What to pass as `deps` for waits on any rank of this communicator.
    #[getter]
    fn _core_deps(&self) -> i64 {
        self.deps
    }

    /// Sends a picklable object to `dest` (returns once it is buffered).
    #[pyo3(signature = (obj, dest, tag=None))]
    fn send(
        slf: &Bound<'_, Self>,
        obj: &Bound<'_, PyAny>,
        dest: &Bound<'_, PyAny>,
        tag: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<()> {
        let py = slf.py();
        let me = slf.get();
        let t = match tag {
            None => Some(0),
            Some(t) => plain_int(t),
        };
        if let (Some(d), Some(t)) = (plain_int(dest), t) {
            if d >= 0 && (d as usize) < me.ranks.len() && (0..=TAG_UB).contains(&t) {
                let world = me.ranks[d as usize];
                let ep = me.ep.bind(py).get();
                match ep.send_obj(py, world, me.ctx, t as i32, obj, CALL_SEND) {
                    Ok(true) => return Ok(()),
                    Ok(false) => {}
                    Err(e) => return Err(Self::failed(slf, e, CALL_SEND, world as i64, t)),
                }
            }
        }
        let tag = match tag {
            Some(t) => t.clone(),
            None => 0i64.into_pyobject(py)?.into_any(),
        };
        slf.call_method1("_send_slow", (obj, dest, tag)).map(drop)
    }

    /// Receives an object from `source` (any rank by default) with `tag`.
    #[pyo3(signature = (buf=None, source=None, tag=None, status=None))]
    fn recv(
        slf: &Bound<'_, Self>,
        buf: Option<&Bound<'_, PyAny>>,
        source: Option<&Bound<'_, PyAny>>,
        tag: Option<&Bound<'_, PyAny>>,
        status: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Py<PyAny>> {
        let py = slf.py();
        let me = slf.get();
        let s = source.map_or(Some(ANY_SOURCE), plain_int);
        let t = tag.map_or(Some(ANY_TAG), plain_int);
        let no_status = status.is_none_or(|s| s.is_none());
        if let (true, Some(s), Some(t)) = (no_status, s, t) {
            let source_ok = s == ANY_SOURCE || (s >= 0 && (s as usize) < me.ranks.len());
            if source_ok && ((0..=TAG_UB).contains(&t) || t == ANY_TAG) {
                let (world, deps) = if s == ANY_SOURCE {
                    (-1, me.deps)
                } else {
                    let w = me.ranks[s as usize];
                    (w as i32, w as i64)
                };
                let ep = me.ep.bind(py).get();
                return match ep.take_obj(py, me.ctx, world, t as i32, CALL_RECV, deps) {
                    Ok((_, obj)) => Ok(obj),
                    Err(e) => Err(Self::failed(slf, e, CALL_RECV, world as i64, t)),
                };
            }
        }
        let none = py.None().into_bound(py);
        let any_source = ANY_SOURCE.into_pyobject(py)?.into_any();
        let any_tag = ANY_TAG.into_pyobject(py)?.into_any();
        let args = (
            buf.unwrap_or(&none),
            source.unwrap_or(&any_source),
            tag.unwrap_or(&any_tag),
            status.unwrap_or(&none),
        );
        Ok(slf.call_method1("_recv_slow", args)?.unbind())
    }
}

// ------------------------------------------------------------------ the job

#[pyclass(frozen, name = "Job", module = "shoal._shoal")]
pub(crate) struct PyJob {
    job: Mutex<Option<Job>>,
}

impl PyJob {
    fn with<T>(&self, f: impl FnOnce(&Job) -> T) -> PyResult<T> {
        let guard = self.job.lock().unwrap_or_else(|e| e.into_inner());
        guard
            .as_ref()
            .map(f)
            .ok_or_else(|| PyValueError::new_err("the job has been closed"))
    }
}

#[pymethods]
impl PyJob {
    /// Starts `size` ranks running `program args...` with `env` added; each
    /// gets `init` (and `init_fds`) as the first message on its control
    /// socket. `tick`: seconds between looks for a deadlock.
    #[new]
    #[pyo3(signature = (size, program, args, env, init, init_fds, stdin_to_rank0, tick))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        py: Python<'_>,
        size: usize,
        program: PathBuf,
        args: Vec<String>,
        env: Vec<(String, String)>,
        init: Vec<u8>,
        init_fds: &Bound<'_, PyAny>,
        stdin_to_rank0: bool,
        tick: f64,
    ) -> PyResult<Self> {
        let init_fds = shared_fds(init_fds)?;
        let tick = seconds(Some(tick))?.unwrap_or(Duration::from_millis(100));
        let config = JobConfig {
            size,
            program,
            args,
            env,
            init,
            init_fds,
            stdin_to_rank0,
            tick,
        };
        let job = py.detach(move || Job::start(config)).map_err(to_py)?;
        Ok(PyJob {
            job: Mutex::new(Some(job)),
        })
    }

    #[getter]
    fn pids(&self) -> PyResult<Vec<u32>> {
        self.with(|j| j.pids().to_vec())
    }

    /// What happened since the last call, waiting at most `timeout`
    /// seconds (forever if None) for something: a list of tuples
    /// `("output", stream, bytes)`, `("message", rank, body, [Fd])`,
    /// `("ended", rank, code, signal)`, `("deadlock",)`, `("aborted",
    /// rank, code)`, `("finished",)`.
    #[pyo3(signature = (timeout=None))]
    fn events<'py>(&self, py: Python<'py>, timeout: Option<f64>) -> PyResult<Bound<'py, PyList>> {
        let timeout = seconds(timeout)?;
        let guard = self.job.lock().unwrap_or_else(|e| e.into_inner());
        let job = guard
            .as_ref()
            .ok_or_else(|| PyValueError::new_err("the job has been closed"))?;
        let got = wait_interruptibly(py, timeout, |slice| {
            let events = job.events(slice);
            (!events.is_empty()).then_some(events)
        })?
        .unwrap_or_default();
        drop(guard);
        let mut items: Vec<Bound<'py, PyAny>> = Vec::with_capacity(got.len());
        for event in got {
            let item = match event {
                Event::Output { stream, text } => ("output", stream, PyBytes::new(py, &text))
                    .into_pyobject(py)?
                    .into_any(),
                Event::Message { rank, body, fds } => {
                    ("message", rank, PyBytes::new(py, &body), fd_list(py, fds)?)
                        .into_pyobject(py)?
                        .into_any()
                }
                Event::Ended { rank, code, signal } => {
                    ("ended", rank, code, signal).into_pyobject(py)?.into_any()
                }
                Event::Deadlock => ("deadlock",).into_pyobject(py)?.into_any(),
                Event::Aborted { rank, code } => {
                    ("aborted", rank, code).into_pyobject(py)?.into_any()
                }
                Event::Finished => ("finished",).into_pyobject(py)?.into_any(),
            };
            items.push(item);
        }
        PyList::new(py, items)
    }

    /// Sends `signal` to every rank still running.
    fn signal(&self, signal: i32) -> PyResult<()> {
        self.with(|j| j.signal(signal))
    }

    /// Every rank's slot: `(pid, state, ended_order, exit_code, signal,
    /// finalized, op, ctx, peer, tag, seq, root, location, drained)`.
    fn snapshot<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        let guard = self.job.lock().unwrap_or_else(|e| e.into_inner());
        let job = guard
            .as_ref()
            .ok_or_else(|| PyValueError::new_err("the job has been closed"))?;
        snapshot(py, job.world())
    }

    /// Kills what still runs and lets go of everything.
    fn close(&self, py: Python<'_>) {
        let job = self.job.lock().unwrap_or_else(|e| e.into_inner()).take();
        py.detach(move || drop(job));
    }
}

pub(crate) fn add_spmd_items(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<PyEndpoint>()?;
    m.add_class::<PyMessage>()?;
    m.add_class::<PyJob>()?;
    m.add_class::<PyCommCore>()?;
    m.add_function(wrap_pyfunction!(adopt_fd, m)?)?;
    m.add_function(wrap_pyfunction!(local_world, m)?)?;
    m.add("SpmdFailure", m.py().get_type::<SpmdFailure>())?;
    m.add("SPMD_STATE_RUNNING", state::RUNNING)?;
    m.add("SPMD_STATE_BLOCKED", state::BLOCKED)?;
    m.add("SPMD_STATE_FINALIZING", state::FINALIZING)?;
    Ok(())
}

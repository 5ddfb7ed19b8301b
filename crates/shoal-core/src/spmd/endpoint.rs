//! A rank's end of the transport: sending to other ranks, taking what
//! arrives, matching it to receives, and waiting without ever hanging.
//!
//! Messages travel in the world segment's rings (see [`super::ring`]),
//! straight from sender to receiver. Descriptors (the staged segment of a
//! large payload, the shared memory of large arrays in a pickle) travel
//! through the receiver's *inbox*, a `SOCK_SEQPACKET` socket every rank
//! may send to, as packets named `(sender, packet id)`; the ring record
//! names its packet. The sender sends the packet before the record, so
//! the packet is there when the record is read.
//!
//! Matching follows MPI: receives posted earlier (`irecv`) take a message
//! first; messages nobody has asked for yet wait in an "unexpected" queue
//! in the order they were read. One sender's messages are read in the
//! order they were sent, so messages between two ranks on one
//! communicator and tag are never overtaken.
//!
//! Every wait drains the rings (so a peer waiting for room in a full ring
//! always gets it), spins for a short while, then sleeps on the rank's
//! doorbell. Before sleeping the caller publishes what it waits for (see
//! [`World::publish_wait`]). A wait ends with an error when a rank it
//! depends on has ended ([`SpmdError::Lost`]) or when the launcher has
//! declared a deadlock ([`SpmdError::Deadlock`]).

use std::collections::{HashMap, VecDeque};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::time::{Duration, Instant};

use crate::error::CoreError;
use crate::fds::{FdReceiver, SharedFd};
use crate::shm::{Access, Mapping};

use super::ring::{kind, Corrupt, RecordHeader};
use super::staged::{inode, pread_exact, Acquired, StagedCache};
use super::world::{Ended, World};

/// `source`/`tag` wildcard.
pub const ANY: i32 = -1;

/// What a receive accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Spec {
    pub ctx: u32,
    /// A world rank, or [`ANY`].
    pub src: i32,
    /// A tag (a collective's sequence number), or [`ANY`].
    pub tag: i32,
    /// A collective's receive: it also takes messages of *earlier*
    /// sequence numbers from its source, which can only come from a
    /// mismatched collective (the caller checks op, root and sequence).
    pub collective: bool,
}

impl Spec {
    fn matches(&self, src: usize, h: &RecordHeader) -> bool {
        h.ctx == self.ctx
            && (self.src < 0 || src == self.src as usize)
            && if self.collective {
                h.tag.wrapping_sub(self.tag) <= 0
            } else {
                self.tag < 0 || h.tag == self.tag
            }
    }
}

/// A message taken from a ring.
#[derive(Debug)]
pub struct Msg {
    /// The sender's world rank.
    pub src: usize,
    pub header: RecordHeader,
    /// The inline payload (empty for staged and one-shot payloads).
    pub body: Vec<u8>,
    /// For staged and one-shot payloads the segment first, then the rest.
    pub fds: Vec<SharedFd>,
}

impl Msg {
    /// Descriptors that belong to the payload's pickle (not the segment).
    pub fn attachments(&self) -> &[SharedFd] {
        match self.header.kind {
            kind::INLINE => &self.fds,
            _ => &self.fds[1..],
        }
    }
}

/// Which ranks a wait depends on: if one of them ends, the wait fails.
#[derive(Debug, Clone)]
pub enum Deps {
    None,
    Peer(usize),
    Group(Arc<[usize]>),
}

#[derive(Debug, thiserror::Error)]
pub enum SpmdError {
    #[error("rank {rank} ended")]
    Lost { rank: usize, ended: Ended },
    #[error("deadlock declared")]
    Deadlock,
    #[error(
        "the ring from rank {0} holds bytes that are not a message (shared memory overwritten?)"
    )]
    Corrupt(usize),
    #[error(transparent)]
    Core(#[from] CoreError),
}

/// How long one call of a wait may take.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Budget {
    /// One attempt, no waiting (the caller may hold the GIL).
    Once,
    /// Poll for the endpoint's spin time.
    Spin,
    /// Poll for this long.
    Poll(Duration),
    /// Sleep on the doorbell between attempts, for at most this long.
    Sleep(Duration),
}

/// The outcome of one slice of a wait.
#[derive(Debug)]
pub enum Poll<T> {
    Ready(T),
    /// Not yet: the caller may check for signals, publish where it waits,
    /// and call again.
    Pending,
}

struct Posted {
    id: u64,
    spec: Spec,
    got: Option<Msg>,
}

struct RecvState {
    unexpected: VecDeque<Msg>,
    posted: Vec<Posted>,
    next_id: u64,
    /// Descriptor packets read before the record that names them.
    stash: HashMap<(usize, u32), Vec<SharedFd>>,
    fdrx: FdReceiver,
}

struct SendState {
    cache: StagedCache,
    next_packet: Vec<u32>,
    /// Each receiver's read position as last seen (see `try_write_cached`).
    tails: Vec<u64>,
}

/// How far a send has got (a send that waits for room is resumed).
pub struct Outgoing<'a> {
    dests: Vec<usize>,
    header: RecordHeader,
    payload: &'a [u8],
    fds: Vec<SharedFd>,
    prepared: bool,
    /// All descriptors to send: the payload's segment first, if any.
    all_fds: Vec<SharedFd>,
    next: usize,
    packet: Option<u32>,
    stage: Option<usize>,
}

impl<'a> Outgoing<'a> {
    /// A message to `dests` (world ranks, not this rank) with the header's
    /// ctx, tag, op, root and dtype; `fds` ride along (a pickle's segments).
    pub fn new(
        dests: Vec<usize>,
        header: RecordHeader,
        payload: &'a [u8],
        fds: Vec<SharedFd>,
    ) -> Outgoing<'a> {
        Outgoing {
            dests,
            header,
            payload,
            fds,
            prepared: false,
            all_fds: Vec::new(),
            next: 0,
            packet: None,
            stage: None,
        }
    }
}

/// Other ranks' staged segments mapped here, by `(sender, stage slot)`,
/// with the segment's inode.
type StagedMaps = HashMap<(usize, u8), (u64, Arc<Mapping>)>;

/// Bytes of a packet body: the sender's rank and the packet id.
const PACKET_BYTES: usize = 8;

pub struct Endpoint {
    world: World,
    me: usize,
    /// This rank's inbox (receiving end).
    inbox: SharedFd,
    /// Every rank's inbox (sending ends), by rank.
    outboxes: Vec<SharedFd>,
    recv: Mutex<RecvState>,
    send: Mutex<SendState>,
    groups: RwLock<Vec<Arc<[usize]>>>,
    /// Other ranks' staged segments, mapped here once: `(sender, stage
    /// slot) -> (inode, mapping)`. A sender reuses its segments, so copying
    /// out of a mapping that stays is a plain `memcpy` of warm pages.
    staged_maps: Mutex<StagedMaps>,
    seen_verdict: AtomicU32,
    spin: Duration,
    yield_in_spin: bool,
    inline_max: usize,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Endpoint {
    /// `spin`: how long a wait polls before it sleeps; `yield_in_spin`
    /// when there are more ranks than cores (a spinning rank then gives
    /// its core away at each poll).
    pub fn new(
        world: World,
        me: usize,
        inbox: SharedFd,
        outboxes: Vec<SharedFd>,
        spin: Duration,
        yield_in_spin: bool,
    ) -> Result<Endpoint, CoreError> {
        let size = world.size();
        if me >= size || outboxes.len() != size {
            return Err(CoreError::Config(format!(
                "rank {me} of {size} with {} inboxes",
                outboxes.len()
            )));
        }
        let inline_max = (world.ring_capacity() / 4).min(64 << 10) - super::ring::HEADER_BYTES;
        world.set_pid(me, std::process::id());
        world.set_running(me);
        let seen = world.verdict();
        Ok(Endpoint {
            me,
            inbox,
            outboxes,
            recv: Mutex::new(RecvState {
                unexpected: VecDeque::new(),
                posted: Vec::new(),
                next_id: 1,
                stash: HashMap::new(),
                fdrx: FdReceiver::default(),
            }),
            send: Mutex::new(SendState {
                cache: StagedCache::new(),
                next_packet: vec![0; size],
                tails: vec![0; size],
            }),
            groups: RwLock::new(vec![(0..size).collect()]),
            staged_maps: Mutex::new(HashMap::new()),
            seen_verdict: AtomicU32::new(seen),
            spin,
            yield_in_spin,
            inline_max,
            world,
        })
    }

    pub fn rank(&self) -> usize {
        self.me
    }

    pub fn size(&self) -> usize {
        self.world.size()
    }

    pub fn world(&self) -> &World {
        &self.world
    }

    /// Largest payload that travels inside the ring.
    pub fn inline_max(&self) -> usize {
        self.inline_max
    }

    /// Registers a group of world ranks (a communicator's members) for
    /// [`Deps::Group`]; group 0 is the whole world.
    pub fn add_group(&self, ranks: Vec<usize>) -> usize {
        let mut groups = self.groups.write().unwrap_or_else(|e| e.into_inner());
        groups.push(ranks.into());
        groups.len() - 1
    }

    pub fn group(&self, id: usize) -> Option<Arc<[usize]>> {
        let groups = self.groups.read().unwrap_or_else(|e| e.into_inner());
        groups.get(id).cloned()
    }

    // -------------------------------------------------------------- waits

    fn pause(&self, spins: u32) {
        if self.yield_in_spin || spins % 1024 == 0 {
            // SAFETY: sched_yield has no preconditions.
            unsafe { libc::sched_yield() };
        } else {
            // One PAUSE (up to ~140 cycles): more would delay noticing.
            std::hint::spin_loop();
        }
    }

    /// Fails the wait if a rank it depends on ended, or (if `verdicts`) if
    /// a deadlock was declared since this rank last heard of one.
    fn check(&self, deps: &Deps, verdicts: bool) -> Result<(), SpmdError> {
        if verdicts {
            let v = self.world.verdict();
            if self.seen_verdict.swap(v, Ordering::AcqRel) != v {
                return Err(SpmdError::Deadlock);
            }
        }
        let lost = match deps {
            Deps::None => None,
            Deps::Peer(r) => self.world.ended(*r).map(|e| (*r, e)),
            Deps::Group(g) => g
                .iter()
                .filter(|&&r| r != self.me)
                .filter_map(|&r| self.world.ended(r).map(|e| (r, e)))
                .min_by_key(|(_, e)| e.order),
        };
        match lost {
            Some((rank, ended)) => Err(SpmdError::Lost { rank, ended }),
            None => Ok(()),
        }
    }

    /// Calls `attempt` until it gives a value or `budget` is spent: one
    /// attempt (`Once`), polling for the spin time (`Spin`: the caller then
    /// publishes where it waits), or sleeping on the doorbell between
    /// attempts (`Sleep`).
    pub fn block<T>(
        &self,
        deps: &Deps,
        verdicts: bool,
        budget: Budget,
        mut attempt: impl FnMut() -> Result<Option<T>, SpmdError>,
    ) -> Result<Poll<T>, SpmdError> {
        // Most waits are over at the first attempt: the clock starts after it.
        if let Some(v) = attempt()? {
            return Ok(Poll::Ready(v));
        }
        let start = Instant::now();
        let mut spins: u32 = 0;
        loop {
            if spins > 0 {
                if let Some(v) = attempt()? {
                    return Ok(Poll::Ready(v));
                }
            }
            // While polling, deaths and verdicts (which need not be seen
            // within microseconds) and the clock are looked at now and then.
            spins = spins.wrapping_add(1);
            let polling = matches!(budget, Budget::Spin | Budget::Poll(_));
            if polling && spins % 32 != 1 {
                self.pause(spins);
                continue;
            }
            self.check(deps, verdicts)?;
            let elapsed = start.elapsed();
            let slice = match budget {
                Budget::Once => return Ok(Poll::Pending),
                Budget::Spin | Budget::Poll(_) => {
                    let limit = match budget {
                        Budget::Poll(d) => d,
                        _ => self.spin,
                    };
                    if elapsed < limit {
                        self.pause(spins);
                        continue;
                    }
                    return Ok(Poll::Pending);
                }
                Budget::Sleep(slice) => slice,
            };
            if elapsed >= slice {
                return Ok(Poll::Pending);
            }
            let seen = self.world.prepare_sleep(self.me);
            let again = attempt().and_then(|v| self.check(deps, verdicts).map(|()| v));
            match again {
                Ok(None) => self.world.sleep(self.me, seen, slice - elapsed),
                other => {
                    self.world.awake(self.me);
                    return other.map(|v| Poll::Ready(v.expect("checked above")));
                }
            }
            self.world.awake(self.me);
        }
    }

    // ----------------------------------------------------------- receiving

    fn take_packet(
        &self,
        st: &mut RecvState,
        src: usize,
        packet: u32,
    ) -> Result<Vec<SharedFd>, SpmdError> {
        if let Some(fds) = st.stash.remove(&(src, packet)) {
            return Ok(fds);
        }
        loop {
            let mut buf = [0u8; PACKET_BYTES];
            let mut fds = Vec::new();
            let got = st.fdrx.recv(
                self.inbox.as_raw_fd(),
                &mut buf,
                libc::MSG_DONTWAIT,
                &mut fds,
            );
            match got {
                Ok(PACKET_BYTES) => {
                    let from = u32::from_le_bytes(buf[..4].try_into().expect("4 bytes")) as usize;
                    let id = u32::from_le_bytes(buf[4..].try_into().expect("4 bytes"));
                    if (from, id) == (src, packet) {
                        return Ok(fds);
                    }
                    st.stash.insert((from, id), fds);
                }
                Ok(_) => return Err(SpmdError::Corrupt(src)),
                Err(e) => {
                    return Err(CoreError::io(
                        "take the shared memory of a message from the inbox",
                        e,
                    )
                    .into())
                }
            }
        }
    }

    fn deliver(st: &mut RecvState, msg: Msg) {
        for p in st.posted.iter_mut() {
            if p.got.is_none() && p.spec.matches(msg.src, &msg.header) {
                p.got = Some(msg);
                return;
            }
        }
        st.unexpected.push_back(msg);
    }

    /// Takes the next message from `src`'s ring, if there is one.
    fn read_one(&self, st: &mut RecvState, src: usize) -> Result<Option<Msg>, SpmdError> {
        let ring = self.world.ring(src, self.me);
        let mut body = Vec::new();
        let (header, waiting) = match ring.read(&mut body) {
            Ok(Some(got)) => got,
            Ok(None) => return Ok(None),
            Err(Corrupt) => return Err(SpmdError::Corrupt(src)),
        };
        if waiting {
            self.world.ring_bell_always(src);
        }
        let fds = if header.nfds > 0 {
            let fds = self.take_packet(st, src, header.packet)?;
            if fds.len() != header.nfds as usize {
                return Err(SpmdError::Corrupt(src));
            }
            fds
        } else {
            Vec::new()
        };
        Ok(Some(Msg {
            src,
            header,
            body,
            fds,
        }))
    }

    /// Reads every ring into this rank, delivering what it holds.
    fn drain(&self, st: &mut RecvState) -> Result<(), SpmdError> {
        for src in 0..self.world.size() {
            if src == self.me {
                continue;
            }
            while let Some(msg) = self.read_one(st, src)? {
                Self::deliver(st, msg);
            }
        }
        Ok(())
    }

    /// Drains, then takes the first unexpected message that `spec` accepts.
    pub fn try_take(&self, spec: &Spec) -> Result<Option<Msg>, SpmdError> {
        let mut st = lock(&self.recv);
        if st.unexpected.is_empty()
            && st.posted.is_empty()
            && spec.src >= 0
            && spec.src as usize != self.me
        {
            // Nothing waits here: the next message from that rank is the
            // first it sent, so if it matches it is the one, straight from
            // its ring.
            match self.read_one(&mut st, spec.src as usize)? {
                Some(msg) if spec.matches(msg.src, &msg.header) => return Ok(Some(msg)),
                Some(msg) => Self::deliver(&mut st, msg),
                None => {}
            }
        }
        self.drain(&mut st)?;
        let i = st
            .unexpected
            .iter()
            .position(|m| spec.matches(m.src, &m.header));
        Ok(i.and_then(|i| st.unexpected.remove(i)))
    }

    /// Drains, then describes the first unexpected message `spec` accepts.
    pub fn try_probe(&self, spec: &Spec) -> Result<Option<(usize, RecordHeader)>, SpmdError> {
        let mut st = lock(&self.recv);
        self.drain(&mut st)?;
        Ok(st
            .unexpected
            .iter()
            .find(|m| spec.matches(m.src, &m.header))
            .map(|m| (m.src, m.header)))
    }

    /// Puts a taken message back in front (a receive that refused it).
    pub fn put_back(&self, msg: Msg) {
        lock(&self.recv).unexpected.push_front(msg);
    }

    /// Posts a receive (`irecv`): it takes the first message that `spec`
    /// accepts, before any receive posted later. Returns its id.
    pub fn post(&self, spec: Spec) -> u64 {
        let mut st = lock(&self.recv);
        let id = st.next_id;
        st.next_id += 1;
        let i = st
            .unexpected
            .iter()
            .position(|m| spec.matches(m.src, &m.header));
        let got = i.and_then(|i| st.unexpected.remove(i));
        st.posted.push(Posted { id, spec, got });
        id
    }

    /// The message of posted receive `id`, if it has come (the receive is
    /// then done and forgotten). An error for an unknown id.
    pub fn try_complete(&self, id: u64) -> Result<Option<Msg>, SpmdError> {
        let mut st = lock(&self.recv);
        self.drain(&mut st)?;
        Self::take_posted(&mut st, id)
    }

    fn take_posted(st: &mut RecvState, id: u64) -> Result<Option<Msg>, SpmdError> {
        let i = st
            .posted
            .iter()
            .position(|p| p.id == id)
            .ok_or_else(|| CoreError::Config(format!("no receive request {id} is pending")))?;
        if st.posted[i].got.is_none() {
            return Ok(None);
        }
        Ok(st.posted.remove(i).got)
    }

    /// The first of `ids` whose message has come: `(index, message)`.
    pub fn try_complete_any(&self, ids: &[u64]) -> Result<Option<(usize, Msg)>, SpmdError> {
        let mut st = lock(&self.recv);
        self.drain(&mut st)?;
        for (k, &id) in ids.iter().enumerate() {
            if let Some(msg) = Self::take_posted(&mut st, id)? {
                return Ok(Some((k, msg)));
            }
        }
        Ok(None)
    }

    /// Withdraws posted receive `id`. A message it had already taken goes
    /// back to the front of the queue; false if there was no such receive.
    pub fn cancel(&self, id: u64) -> bool {
        let mut st = lock(&self.recv);
        let Some(i) = st.posted.iter().position(|p| p.id == id) else {
            return false;
        };
        if let Some(msg) = st.posted.remove(i).got {
            st.unexpected.push_front(msg);
        }
        true
    }

    // ------------------------------------------------------------- sending

    /// Sends (part of) `out`; `Pending` when a ring or an inbox is full,
    /// or the staged segment to reuse is still being read, for longer than
    /// `budget` (call again with the same `out`).
    pub fn send_step(&self, out: &mut Outgoing<'_>, budget: Budget) -> Result<Poll<()>, SpmdError> {
        if out.dests.contains(&self.me) {
            // To itself: straight into its own queue, nothing shared.
            out.dests.retain(|&d| d != self.me);
            let mut header = out.header;
            header.kind = kind::INLINE;
            header.len = out.payload.len() as u32;
            header.total = out.payload.len() as u64;
            header.nfds = out.fds.len() as u8;
            let msg = Msg {
                src: self.me,
                header,
                body: out.payload.to_vec(),
                fds: out.fds.clone(),
            };
            Self::deliver(&mut lock(&self.recv), msg);
            self.world.ring_bell(self.me);
        }
        if out.dests.is_empty() {
            return Ok(Poll::Ready(()));
        }
        let mut sending = lock(&self.send);
        if !out.prepared {
            let ready = self.block(&Deps::None, true, budget, || {
                self.prepare(&mut sending, out)
            })?;
            if let Poll::Pending = ready {
                return Ok(Poll::Pending);
            }
        }
        while out.next < out.dests.len() {
            let dest = out.dests[out.next];
            let sent = self.block(&Deps::Peer(dest), true, budget, || {
                self.try_send_one(&mut sending, out, dest)
            })?;
            if let Poll::Pending = sent {
                return Ok(Poll::Pending);
            }
            out.next += 1;
            out.packet = None;
        }
        if let Some(index) = out.stage.take() {
            let stage = self.world.stage(self.me, index);
            sending.cache.fill(index, out.payload, |done| {
                stage.written.store(done as u64, Ordering::Release);
                for &d in &out.dests {
                    self.world.ring_bell(d);
                }
            });
        }
        Ok(Poll::Ready(()))
    }

    /// Decides where the payload goes; None while the staged segment it
    /// should reuse is still being read (by ranks that have started).
    fn prepare(
        &self,
        sending: &mut SendState,
        out: &mut Outgoing<'_>,
    ) -> Result<Option<()>, SpmdError> {
        let len = out.payload.len();
        let h = &mut out.header;
        h.total = len as u64;
        h.len = 0;
        h.stage = 0;
        out.all_fds.clear();
        if len <= self.inline_max {
            h.kind = kind::INLINE;
            h.len = len as u32;
        } else {
            let ended = |r: usize| self.world.ended(r).is_some();
            match sending
                .cache
                .acquire(&self.world, self.me, len, &out.dests, ended)?
            {
                Acquired::Slot(index) => {
                    h.kind = kind::STAGED;
                    h.stage = index as u8;
                    out.stage = Some(index);
                    out.all_fds.push(sending.cache.segment(index).fd().clone());
                }
                Acquired::Wait => {
                    {
                        let mut st = lock(&self.recv);
                        self.drain(&mut st)?;
                    }
                    return Ok(None);
                }
                Acquired::None => {
                    h.kind = kind::ONESHOT;
                    let fd = crate::shm::create_copy(out.payload, true)?;
                    out.all_fds.push(SharedFd::new(fd));
                }
            }
        }
        out.all_fds.extend(out.fds.iter().cloned());
        if out.all_fds.len() > crate::fds::MAX_FDS_PER_MSG {
            return Err(CoreError::Config(format!(
                "a message may carry at most {} shared buffers, not {}",
                crate::fds::MAX_FDS_PER_MSG - 1,
                out.all_fds.len()
            ))
            .into());
        }
        out.header.nfds = out.all_fds.len() as u8;
        out.prepared = true;
        Ok(Some(()))
    }

    /// One attempt to send `out` to `dest`: its descriptors, then its record.
    fn try_send_one(
        &self,
        sending: &mut SendState,
        out: &mut Outgoing<'_>,
        dest: usize,
    ) -> Result<Option<()>, SpmdError> {
        if !out.all_fds.is_empty() && out.packet.is_none() {
            let id = sending.next_packet[dest];
            let mut body = [0u8; PACKET_BYTES];
            body[..4].copy_from_slice(&(self.me as u32).to_le_bytes());
            body[4..].copy_from_slice(&id.to_le_bytes());
            match crate::fds::send_packet(self.outboxes[dest].as_raw_fd(), &body, &out.all_fds) {
                Ok(()) => {
                    sending.next_packet[dest] = id.wrapping_add(1);
                    out.packet = Some(id);
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    let mut st = lock(&self.recv);
                    self.drain(&mut st)?;
                    return Ok(None);
                }
                Err(e) if e.raw_os_error() == Some(libc::EPIPE) => {
                    // The receiver is gone: the wait's check names it.
                    return Ok(None);
                }
                Err(e) => return Err(CoreError::io("send shared memory to another rank", e).into()),
            }
        }
        let mut header = out.header;
        header.packet = out.packet.unwrap_or(0);
        let inline = if header.kind == kind::INLINE {
            out.payload
        } else {
            &[]
        };
        let ring = self.world.ring(self.me, dest);
        let tail = &mut sending.tails[dest];
        if !ring.try_write_cached(&header, inline, tail) {
            // Keep our own rings moving while we wait: the peer may be
            // waiting for room in them.
            {
                let mut st = lock(&self.recv);
                self.drain(&mut st)?;
            }
            ring.want_space();
            if !ring.try_write_cached(&header, inline, tail) {
                return Ok(None);
            }
        }
        self.world.ring_bell(dest);
        Ok(Some(()))
    }

    // ----------------------------------------------------- reading payloads

    /// Copies `msg`'s payload into `dst` (its exact size), from `*done` on;
    /// a staged payload is copied as its sender writes it.
    pub fn read_step(
        &self,
        msg: &Msg,
        dst: &mut [u8],
        done: &mut usize,
        budget: Budget,
    ) -> Result<Poll<()>, SpmdError> {
        let total = msg.header.total as usize;
        assert_eq!(
            dst.len(),
            total,
            "read_step needs a buffer of the payload's size"
        );
        match msg.header.kind {
            kind::INLINE => {
                dst.copy_from_slice(&msg.body);
                Ok(Poll::Ready(()))
            }
            kind::ONESHOT => {
                pread_exact(&msg.fds[0], dst, 0)?;
                Ok(Poll::Ready(()))
            }
            _ => {
                let stage = self.world.stage(msg.src, msg.header.stage as usize);
                if *done == 0 {
                    // Started: the sender may wait for us rather than make
                    // a fresh segment.
                    let _ =
                        stage
                            .unstarted
                            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                                n.checked_sub(1)
                            });
                }
                let fd = &msg.fds[0];
                let map = self.staged_map(msg.src, msg.header.stage, fd, total)?;
                let got = self.block(&Deps::Peer(msg.src), false, budget, || {
                    let written = (stage.written.load(Ordering::Acquire) as usize).min(total);
                    if written > *done {
                        match &map {
                            // SAFETY: the mapping holds at least `total` bytes
                            // (checked in `staged_map`) and the sender wrote
                            // every byte below `written` before publishing it
                            // (acquired above); it writes no more until every
                            // reader is done.
                            Some(map) => unsafe {
                                std::ptr::copy_nonoverlapping(
                                    map.as_ptr().add(*done),
                                    dst.as_mut_ptr().add(*done),
                                    written - *done,
                                );
                            },
                            None => pread_exact(fd, &mut dst[*done..written], *done)?,
                        }
                        *done = written;
                    }
                    if *done < total {
                        // Keep our rings moving while the sender copies.
                        let mut st = lock(&self.recv);
                        self.drain(&mut st)?;
                        return Ok(None);
                    }
                    Ok(Some(()))
                })?;
                if let Poll::Ready(()) = got {
                    if stage.readers.fetch_sub(1, Ordering::AcqRel) == 1 {
                        self.world.ring_bell(msg.src);
                    }
                }
                Ok(got)
            }
        }
    }

    /// A mapping of a sender's staged segment (kept for its next
    /// messages); None if it cannot be mapped (then `pread` does).
    fn staged_map(
        &self,
        src: usize,
        stage: u8,
        fd: &SharedFd,
        total: usize,
    ) -> Result<Option<Arc<Mapping>>, SpmdError> {
        let ino = inode(fd)?;
        let mut maps = lock(&self.staged_maps);
        if let Some((known, map)) = maps.get(&(src, stage)) {
            if *known == ino && map.len() >= total {
                return Ok(Some(map.clone()));
            }
        }
        let Ok(map) = Mapping::map(fd.clone(), Access::ReadOnly) else {
            return Ok(None);
        };
        if map.len() < total {
            return Ok(None);
        }
        maps.insert((src, stage), (ino, map.clone()));
        Ok(Some(map))
    }

    // ------------------------------------------------------------ the end

    /// The envelopes of the messages that wait for a receive, in order,
    /// without draining: `(src, header)`.
    pub fn pending(&self) -> Vec<(usize, RecordHeader)> {
        let st = lock(&self.recv);
        st.unexpected.iter().map(|m| (m.src, m.header)).collect()
    }

    /// Leftover messages at exit: drains and hands over everything no
    /// receive took (the caller reports mismatched collectives).
    pub fn leftovers(&self) -> Result<Vec<Msg>, SpmdError> {
        let mut st = lock(&self.recv);
        self.drain(&mut st)?;
        let mut out: Vec<Msg> = st.unexpected.drain(..).collect();
        out.extend(st.posted.drain(..).filter_map(|p| p.got));
        Ok(out)
    }

    /// Whether every rank is finalizing or has ended (drains meanwhile).
    pub fn try_finalize(&self) -> Result<Option<()>, SpmdError> {
        let mut st = lock(&self.recv);
        self.drain(&mut st)?;
        Ok(self.world.all_finalizing().then_some(()))
    }

    /// Wakes every rank (this rank's state changed in a way they may wait for).
    pub fn ring_all(&self) {
        for r in 0..self.world.size() {
            if r != self.me {
                self.world.ring_bell_always(r);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spmd::world::state;

    /// `n` endpoints of one world, all in this process (one per thread).
    fn job(n: usize) -> Vec<Arc<Endpoint>> {
        let world = World::create(n).unwrap();
        let inboxes: Vec<(SharedFd, SharedFd)> = (0..n)
            .map(|_| {
                let q = crate::queue::MessageQueue::new().unwrap();
                let [tx, rx] = q.fds();
                (tx.clone(), rx.clone())
            })
            .collect();
        (0..n)
            .map(|r| {
                let w = World::map(SharedFd::new(world.fd().duplicate().unwrap())).unwrap();
                let outboxes = inboxes.iter().map(|(tx, _)| tx.clone()).collect();
                Arc::new(
                    Endpoint::new(
                        w,
                        r,
                        inboxes[r].1.clone(),
                        outboxes,
                        Duration::from_micros(20),
                        false,
                    )
                    .unwrap(),
                )
            })
            .collect()
    }

    fn header(ctx: u32, tag: i32) -> RecordHeader {
        RecordHeader {
            ctx,
            tag,
            root: -1,
            ..Default::default()
        }
    }

    fn send(ep: &Endpoint, dest: usize, tag: i32, payload: &[u8]) {
        let mut out = Outgoing::new(vec![dest], header(0, tag), payload, vec![]);
        loop {
            match ep
                .send_step(&mut out, Budget::Sleep(Duration::from_millis(50)))
                .unwrap()
            {
                Poll::Ready(()) => return,
                Poll::Pending => continue,
            }
        }
    }

    fn recv(ep: &Endpoint, src: i32, tag: i32) -> (usize, i32, Vec<u8>) {
        let spec = Spec {
            ctx: 0,
            src,
            tag,
            collective: false,
        };
        let deps = if src >= 0 {
            Deps::Peer(src as usize)
        } else {
            Deps::Group(ep.group(0).unwrap())
        };
        let msg = loop {
            match ep
                .block(
                    &deps,
                    true,
                    Budget::Sleep(Duration::from_millis(50)),
                    || ep.try_take(&spec),
                )
                .unwrap()
            {
                Poll::Ready(m) => break m,
                Poll::Pending => continue,
            }
        };
        let mut data = vec![0u8; msg.header.total as usize];
        let mut done = 0;
        while let Poll::Pending = ep
            .read_step(
                &msg,
                &mut data,
                &mut done,
                Budget::Sleep(Duration::from_millis(50)),
            )
            .unwrap()
        {}
        (msg.src, msg.header.tag, data)
    }

    #[test]
    fn messages_keep_their_order_per_tag() {
        let eps = job(2);
        for i in 0..500u32 {
            send(&eps[0], 1, (i % 3) as i32, &i.to_le_bytes());
        }
        // Tag 1 first: the others wait, in order.
        for i in (0..500u32).filter(|i| i % 3 == 1) {
            assert_eq!(recv(&eps[1], 0, 1).2, i.to_le_bytes());
        }
        for i in (0..500u32).filter(|i| i % 3 != 1) {
            let (src, tag, data) = recv(&eps[1], ANY, ANY);
            assert_eq!(
                (src, tag, data),
                (0, (i % 3) as i32, i.to_le_bytes().to_vec())
            );
        }
    }

    #[test]
    fn large_payloads_are_staged_and_reused() {
        let eps = job(2);
        let big: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
        let (a, b) = (eps[0].clone(), eps[1].clone());
        let data = big.clone();
        let sender = std::thread::spawn(move || {
            for _ in 0..3 {
                send(&a, 1, 7, &data);
            }
        });
        for _ in 0..3 {
            assert_eq!(recv(&b, 0, 7).2, big);
        }
        sender.join().unwrap();
        // Every stage slot is free again.
        for i in 0..crate::spmd::world::STAGE_SLOTS {
            assert_eq!(
                eps[0].world().stage(0, i).readers.load(Ordering::Acquire),
                0
            );
        }
    }

    #[test]
    fn a_full_ring_waits_for_the_reader() {
        let eps = job(2);
        let (a, b) = (eps[0].clone(), eps[1].clone());
        let chunk = vec![5u8; 30_000];
        let n = 200; // far more than a 256 KiB ring holds
        let sender = std::thread::spawn(move || {
            for _ in 0..n {
                send(&a, 1, 0, &chunk);
            }
        });
        for _ in 0..n {
            assert_eq!(recv(&b, 0, 0).2.len(), 30_000);
        }
        sender.join().unwrap();
    }

    #[test]
    fn posted_receives_take_messages_first() {
        let eps = job(2);
        let spec = Spec {
            ctx: 0,
            src: 0,
            tag: 4,
            collective: false,
        };
        let id = eps[1].post(spec);
        send(&eps[0], 1, 4, b"first");
        send(&eps[0], 1, 4, b"second");
        assert_eq!(recv(&eps[1], 0, 4).2, b"second");
        let msg = eps[1].try_complete(id).unwrap().unwrap();
        assert_eq!(msg.body, b"first");
        assert!(
            eps[1].try_complete(id).is_err(),
            "a finished request is forgotten"
        );
        // A cancelled request gives its message back.
        let id = eps[1].post(spec);
        send(&eps[0], 1, 4, b"third");
        eps[1].try_complete_any(&[]).unwrap();
        assert!(eps[1].cancel(id));
        assert_eq!(recv(&eps[1], 0, 4).2, b"third");
    }

    #[test]
    fn a_wait_on_an_ended_rank_fails_at_once() {
        let eps = job(3);
        eps[0].world().mark_ended(2, None, Some(9));
        let spec = Spec {
            ctx: 0,
            src: 2,
            tag: ANY,
            collective: false,
        };
        let err = eps[0]
            .block(
                &Deps::Peer(2),
                true,
                Budget::Sleep(Duration::from_secs(5)),
                || eps[0].try_take(&spec),
            )
            .unwrap_err();
        match err {
            SpmdError::Lost { rank, ended } => {
                assert_eq!((rank, ended.signal, ended.order), (2, Some(9), 1))
            }
            other => panic!("{other:?}"),
        }
        // A message sent before the death is still received.
        send(&eps[1], 0, 3, b"last words");
        assert_eq!(recv(&eps[0], 1, 3).2, b"last words");
    }

    #[test]
    fn a_verdict_wakes_a_sleeper() {
        let eps = job(2);
        let e = eps[0].clone();
        let t = std::thread::spawn(move || {
            let spec = Spec {
                ctx: 0,
                src: 1,
                tag: 0,
                collective: false,
            };
            e.world()
                .publish_wait(0, state::BLOCKED, &Default::default());
            loop {
                match e.block(
                    &Deps::Peer(1),
                    true,
                    Budget::Sleep(Duration::from_secs(10)),
                    || e.try_take(&spec),
                ) {
                    Ok(Poll::Pending) => continue,
                    other => return other.map(|_| ()),
                }
            }
        });
        std::thread::sleep(Duration::from_millis(50));
        eps[1].world().declare_deadlock();
        assert!(matches!(t.join().unwrap(), Err(SpmdError::Deadlock)));
    }

    #[test]
    fn collective_receives_take_earlier_sequence_numbers() {
        let eps = job(2);
        let mut out = Outgoing::new(vec![1], header(1, 5), b"seq5", vec![]);
        eps[0]
            .send_step(&mut out, Budget::Sleep(Duration::from_millis(50)))
            .unwrap();
        let later = Spec {
            ctx: 1,
            src: 0,
            tag: 4,
            collective: true,
        };
        assert!(eps[1].try_take(&later).unwrap().is_none());
        let at = Spec { tag: 6, ..later };
        assert_eq!(eps[1].try_take(&at).unwrap().unwrap().header.tag, 5);
    }
}

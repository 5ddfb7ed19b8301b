//! The launcher's side of an SPMD job: it makes the world, starts the
//! ranks, and watches them until they have all ended.
//!
//! Each rank is a fresh process started from shoal's launcher thread (so
//! `PR_SET_PDEATHSIG` kills it when the launching process dies, whatever
//! thread asked for it). It finds at fixed descriptor numbers:
//!
//! ```text
//! 3      its control socket to the launcher (the first message: what to run)
//! 4      the world segment
//! 5      its inbox (receiving end)
//! 6 + i  rank i's inbox (sending end), for every rank i
//! ```
//!
//! and `SHOAL_MPI_RANK` / `SHOAL_MPI_SIZE` in its environment. Ranks talk
//! to each other directly; the launcher only watches. One watcher thread
//! polls every rank's pidfd, stdout and stderr pipes and control socket:
//! it tags output lines with `[rank R]`, records in the world how each
//! rank ended (which wakes the ranks waiting on it), and every `tick`
//! looks at the ranks' slots for a deadlock (see [`super::judge`]).

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};

use crate::error::{CoreError, Result};
use crate::fds::SharedFd;
use crate::queue::{MessageQueue, Received};

use super::judge;
use super::world::World;

/// Where a rank finds its descriptors.
pub const CONTROL_FD: RawFd = 3;
pub const WORLD_FD: RawFd = 4;
pub const INBOX_FD: RawFd = 5;
pub const OUTBOX_BASE_FD: RawFd = 6;

/// How to start a job.
#[derive(Debug, Clone)]
pub struct JobConfig {
    pub size: usize,
    pub program: PathBuf,
    pub args: Vec<String>,
    /// Added to the launcher's environment.
    pub env: Vec<(String, String)>,
    /// The first message on every rank's control socket.
    pub init: Vec<u8>,
    pub init_fds: Vec<SharedFd>,
    /// Rank 0 reads the launcher's stdin (as under `mpiexec`); the others
    /// read nothing.
    pub stdin_to_rank0: bool,
    /// How often the watcher looks for a deadlock.
    pub tick: Duration,
}

/// What the watcher reports.
#[derive(Debug)]
pub enum Event {
    /// Whole lines a rank wrote, each tagged `[rank R] ` (stream 1 or 2).
    Output { stream: u8, text: Vec<u8> },
    /// A message a rank sent on its control socket.
    Message {
        rank: usize,
        body: Vec<u8>,
        fds: Vec<SharedFd>,
    },
    /// A rank ended: its exit code, or the signal that killed it.
    Ended {
        rank: usize,
        code: Option<i32>,
        signal: Option<i32>,
    },
    /// Every live rank waits for another: the ranks have been told.
    Deadlock,
    /// A rank called `Abort(code)`; the others have been killed.
    Aborted { rank: usize, code: i32 },
    /// Every rank has ended and its output has been read.
    Finished,
}

struct Rank {
    child: Child,
    pidfd: Arc<OwnedFd>,
    stdout: OwnedFd,
    stderr: OwnedFd,
    control: MessageQueue,
}

/// A running job. Dropping it kills every rank still running.
pub struct Job {
    world: Arc<World>,
    pids: Vec<u32>,
    pidfds: Vec<Arc<OwnedFd>>,
    events: Receiver<Event>,
    stop: Arc<AtomicBool>,
    wake: Arc<OwnedFd>,
    watcher: Option<JoinHandle<()>>,
}

fn os_error(context: &'static str) -> CoreError {
    CoreError::io(context, std::io::Error::last_os_error())
}

fn dup_above(fd: RawFd, min: RawFd) -> Result<OwnedFd> {
    // SAFETY: F_DUPFD_CLOEXEC on a descriptor we hold; checked below.
    let raw = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, min) };
    if raw < 0 {
        return Err(os_error("fcntl(F_DUPFD_CLOEXEC)"));
    }
    // SAFETY: a new descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(raw) })
}

fn set_nonblocking(fd: RawFd) {
    // SAFETY: fcntl flag changes on a descriptor we hold.
    unsafe {
        let flags = libc::fcntl(fd, libc::F_GETFL);
        libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK);
    }
}

fn pidfd_open(pid: u32) -> Result<OwnedFd> {
    // SAFETY: pidfd_open on the pid of a child we have not reaped.
    let raw = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) };
    if raw < 0 {
        return Err(os_error("pidfd_open (shoal run needs Linux 5.3 or later)"));
    }
    // SAFETY: a new descriptor nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(raw as RawFd) })
}

/// Signals the process behind `pidfd` (nothing happens once it has ended
/// and been reaped: a pidfd never names a recycled pid).
fn pidfd_signal(pidfd: &OwnedFd, signal: i32) {
    // SAFETY: pidfd_send_signal with a pidfd we hold and no siginfo.
    unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            pidfd.as_raw_fd(),
            signal,
            std::ptr::null::<libc::siginfo_t>(),
            0,
        );
    }
}

/// Starts one rank: its descriptors are `map` (source, number in the child).
fn spawn_rank(
    config: &JobConfig,
    rank: usize,
    map: Vec<(RawFd, RawFd)>,
    stdin: Stdio,
) -> std::io::Result<Child> {
    let parent_pid = std::process::id() as libc::pid_t;
    let soft_limit = crate::spawn::child_soft_limit();
    let mut command = Command::new(&config.program);
    command
        .args(&config.args)
        .envs(config.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .env("SHOAL_MPI_RANK", rank.to_string())
        .env("SHOAL_MPI_SIZE", config.size.to_string())
        .stdin(stdin)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    // SAFETY: the closure runs in the forked child before exec and only
    // calls `prepare_child`, which is made for that; `map` was allocated
    // before the fork, with sources above every number it maps to.
    unsafe {
        command
            .pre_exec(move || crate::spawn::prepare_child(parent_pid, &map, soft_limit.as_ref()));
    }
    command.spawn()
}

impl Job {
    pub fn start(config: JobConfig) -> Result<Job> {
        let n = config.size;
        let world = Arc::new(World::create(n)?);
        // A rank pair needs descriptors of its own: many ranks need many.
        crate::fds::raise_fd_limit();
        // Inboxes: one packet socket per rank that every rank may send to.
        let inboxes: Vec<MessageQueue> =
            (0..n).map(|_| MessageQueue::new()).collect::<Result<_>>()?;
        let base = OUTBOX_BASE_FD + n as RawFd + 16;
        let mut ranks = Vec::with_capacity(n);
        for rank in 0..n {
            let control = MessageQueue::new()?;
            let [ours, theirs] = control.fds();
            let ours = MessageQueue::from_fds(ours.clone(), ours.clone());
            ours.put(&config.init, &config.init_fds, Duration::ZERO)
                .and_then(|sent| {
                    sent.then_some(())
                        .ok_or_else(|| CoreError::Config("the first message did not fit".into()))
                })?;
            let mut owned = vec![
                (dup_above(theirs.as_raw_fd(), base)?, CONTROL_FD),
                (dup_above(world.fd().as_raw_fd(), base)?, WORLD_FD),
                (
                    dup_above(inboxes[rank].fds()[1].as_raw_fd(), base)?,
                    INBOX_FD,
                ),
            ];
            for (i, inbox) in inboxes.iter().enumerate() {
                let tx = dup_above(inbox.fds()[0].as_raw_fd(), base)?;
                owned.push((tx, OUTBOX_BASE_FD + i as RawFd));
            }
            let map: Vec<(RawFd, RawFd)> =
                owned.iter().map(|(fd, to)| (fd.as_raw_fd(), *to)).collect();
            let stdin = if rank == 0 && config.stdin_to_rank0 {
                Stdio::inherit()
            } else {
                Stdio::null()
            };
            let cfg = config.clone();
            let spawned = crate::process::on_launcher_thread(move || {
                let child = spawn_rank(&cfg, rank, map, stdin);
                drop(owned); // our copies of the child's descriptors
                child
            })?;
            let mut child = match spawned {
                Ok(child) => child,
                Err(source) => {
                    for r in &ranks {
                        let r: &Rank = r;
                        pidfd_signal(&r.pidfd, libc::SIGKILL);
                    }
                    return Err(CoreError::Spawn {
                        program: config.program.display().to_string(),
                        source,
                    });
                }
            };
            let pidfd = Arc::new(pidfd_open(child.id())?);
            let stdout: OwnedFd = child.stdout.take().expect("piped").into();
            let stderr: OwnedFd = child.stderr.take().expect("piped").into();
            set_nonblocking(stdout.as_raw_fd());
            set_nonblocking(stderr.as_raw_fd());
            ranks.push(Rank {
                child,
                pidfd,
                stdout,
                stderr,
                control: ours,
            });
        }
        let pids = ranks.iter().map(|r| r.child.id()).collect();
        let pidfds = ranks.iter().map(|r| r.pidfd.clone()).collect();
        // SAFETY: eventfd with valid flags; checked below.
        let raw = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
        if raw < 0 {
            return Err(os_error("eventfd"));
        }
        // SAFETY: a new descriptor nothing else owns.
        let wake = Arc::new(unsafe { OwnedFd::from_raw_fd(raw) });
        let (tx, rx) = crossbeam_channel::unbounded();
        let stop = Arc::new(AtomicBool::new(false));
        let watcher = {
            let (world, stop, wake) = (world.clone(), stop.clone(), wake.clone());
            let tick = config.tick;
            std::thread::Builder::new()
                .name("shoal-spmd-watch".into())
                .spawn(move || Watcher::new(world, ranks, tx, stop, wake, tick).run())
                .map_err(|e| CoreError::io("start the job's watcher thread", e))?
        };
        Ok(Job {
            world,
            pids,
            pidfds,
            events: rx,
            stop,
            wake,
            watcher: Some(watcher),
        })
    }

    pub fn world(&self) -> &World {
        &self.world
    }

    pub fn pids(&self) -> &[u32] {
        &self.pids
    }

    /// Events so far, waiting at most `wait` for the first.
    pub fn events(&self, wait: Duration) -> Vec<Event> {
        let mut out = Vec::new();
        if let Ok(first) = self.events.recv_timeout(wait) {
            out.push(first);
            out.extend(self.events.try_iter());
        }
        out
    }

    /// Sends `signal` to every rank still running.
    pub fn signal(&self, signal: i32) {
        for (rank, pidfd) in self.pidfds.iter().enumerate() {
            if self.world.ended(rank).is_none() {
                pidfd_signal(pidfd, signal);
            }
        }
    }
}

impl Drop for Job {
    fn drop(&mut self) {
        self.signal(libc::SIGKILL);
        self.stop.store(true, Ordering::Release);
        let one = 1u64;
        // SAFETY: writing 8 bytes to our eventfd.
        unsafe { libc::write(self.wake.as_raw_fd(), (&one as *const u64).cast(), 8) };
        if let Some(w) = self.watcher.take() {
            let _ = w.join();
        }
    }
}

/// One output stream of a rank: a partial line waits for its newline.
struct Stream {
    rank: usize,
    which: u8,
    partial: Vec<u8>,
    open: bool,
}

struct Watcher {
    world: Arc<World>,
    ranks: Vec<Rank>,
    reaped: Vec<bool>,
    streams: Vec<Stream>,
    tx: Sender<Event>,
    stop: Arc<AtomicBool>,
    wake: Arc<OwnedFd>,
    tick: Duration,
    before: Option<Vec<super::world::SlotView>>,
    last_verdict: Option<Vec<(u32, bool)>>,
    aborted: bool,
}

impl Watcher {
    fn new(
        world: Arc<World>,
        ranks: Vec<Rank>,
        tx: Sender<Event>,
        stop: Arc<AtomicBool>,
        wake: Arc<OwnedFd>,
        tick: Duration,
    ) -> Watcher {
        let n = ranks.len();
        let streams = (0..n)
            .flat_map(|rank| {
                [1u8, 2].map(|which| Stream {
                    rank,
                    which,
                    partial: Vec::new(),
                    open: true,
                })
            })
            .collect();
        Watcher {
            world,
            ranks,
            reaped: vec![false; n],
            streams,
            tx,
            stop,
            wake,
            tick,
            before: None,
            last_verdict: None,
            aborted: false,
        }
    }

    fn stream_fd(&self, i: usize) -> RawFd {
        let s = &self.streams[i];
        let r = &self.ranks[s.rank];
        if s.which == 1 {
            r.stdout.as_raw_fd()
        } else {
            r.stderr.as_raw_fd()
        }
    }

    /// Reads what stream `i` has now; tags and sends its whole lines.
    fn read_stream(&mut self, i: usize) {
        let fd = self.stream_fd(i);
        let mut buf = vec![0u8; 64 * 1024];
        let mut text = Vec::new();
        loop {
            // SAFETY: reading into a valid buffer from a pipe we hold.
            let n = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
            if n > 0 {
                let s = &mut self.streams[i];
                s.partial.extend_from_slice(&buf[..n as usize]);
                if let Some(last) = s.partial.iter().rposition(|&b| b == b'\n') {
                    let rest = s.partial.split_off(last + 1);
                    let lines = std::mem::replace(&mut s.partial, rest);
                    tag_lines(s.rank, &lines, &mut text);
                }
                continue;
            }
            if n < 0 {
                let err = std::io::Error::last_os_error();
                if err.kind() == std::io::ErrorKind::Interrupted {
                    continue;
                }
                if err.kind() == std::io::ErrorKind::WouldBlock {
                    break;
                }
            }
            // End of stream (or an error): the last partial line too.
            let s = &mut self.streams[i];
            s.open = false;
            if !s.partial.is_empty() {
                let mut lines = std::mem::take(&mut s.partial);
                lines.push(b'\n');
                tag_lines(s.rank, &lines, &mut text);
            }
            break;
        }
        if !text.is_empty() {
            let which = self.streams[i].which;
            let _ = self.tx.send(Event::Output {
                stream: which,
                text,
            });
        }
    }

    fn read_control(&mut self, rank: usize) {
        loop {
            match self.ranks[rank].control.get(Duration::ZERO) {
                Ok(Received::Message(body, fds)) => {
                    let _ = self.tx.send(Event::Message { rank, body, fds });
                }
                _ => return,
            }
        }
    }

    fn reap(&mut self, rank: usize) {
        if self.reaped[rank] {
            return;
        }
        let Ok(Some(status)) = self.ranks[rank].child.try_wait() else {
            return;
        };
        self.reaped[rank] = true;
        // Output written just before the end comes before the end.
        for i in [2 * rank, 2 * rank + 1] {
            if self.streams[i].open {
                self.read_stream(i);
            }
        }
        self.read_control(rank);
        let (code, signal) = (status.code(), status.signal());
        self.world.mark_ended(rank, code, signal);
        let _ = self.tx.send(Event::Ended { rank, code, signal });
        if !self.aborted {
            if let Some((who, code)) = self.world.aborted() {
                self.aborted = true;
                for (r, other) in self.ranks.iter().enumerate() {
                    if !self.reaped[r] {
                        pidfd_signal(&other.pidfd, libc::SIGKILL);
                    }
                }
                let _ = self.tx.send(Event::Aborted { rank: who, code });
            }
        }
    }

    fn judge(&mut self) {
        if self.reaped.iter().all(|&r| r) {
            return;
        }
        let now = self.world.views();
        if let Some(before) = &self.before {
            let epochs = judge::epochs(&now);
            if judge::deadlocked(before, &now) && self.last_verdict.as_ref() != Some(&epochs) {
                self.world.declare_deadlock();
                self.last_verdict = Some(epochs);
                let _ = self.tx.send(Event::Deadlock);
            }
        }
        self.before = Some(now);
    }

    fn run(mut self) {
        let n = self.ranks.len();
        let mut next_tick = Instant::now() + self.tick;
        let mut all_ended_at: Option<Instant> = None;
        loop {
            if self.stop.load(Ordering::Acquire) {
                break;
            }
            // What to wait on: pidfds, open streams, control sockets, wake.
            let mut polls: Vec<libc::pollfd> = Vec::new();
            let mut what: Vec<(u8, usize)> = Vec::new();
            let mut add = |fd: RawFd, kind: u8, index: usize| {
                polls.push(libc::pollfd {
                    fd,
                    events: libc::POLLIN,
                    revents: 0,
                });
                what.push((kind, index));
            };
            add(self.wake.as_raw_fd(), 0, 0);
            for r in 0..n {
                if !self.reaped[r] {
                    add(self.ranks[r].pidfd.as_raw_fd(), 1, r);
                    add(self.ranks[r].control.fds()[0].as_raw_fd(), 3, r);
                }
            }
            for i in 0..self.streams.len() {
                if self.streams[i].open {
                    add(self.stream_fd(i), 2, i);
                }
            }
            let now = Instant::now();
            let mut wait = next_tick.saturating_duration_since(now);
            if let Some(at) = all_ended_at {
                // Output pipes a rank's own children keep open are not
                // waited for long after every rank has ended.
                wait = wait.min((at + Duration::from_millis(500)).saturating_duration_since(now));
            }
            let ms = wait.as_millis().clamp(0, 1000) as libc::c_int;
            // SAFETY: polling a valid array of pollfds.
            let rc = unsafe { libc::poll(polls.as_mut_ptr(), polls.len() as libc::nfds_t, ms) };
            if rc > 0 {
                // Streams and control sockets first, then deaths (whose
                // handling reads what is left of their streams).
                let mut order: Vec<usize> = (0..polls.len()).collect();
                order.sort_by_key(|&k| what[k].0 == 1);
                for k in order {
                    if polls[k].revents == 0 {
                        continue;
                    }
                    let (kind, index) = what[k];
                    match kind {
                        1 => self.reap(index),
                        2 if self.streams[index].open => self.read_stream(index),
                        3 => self.read_control(index),
                        _ => {}
                    }
                }
            }
            if Instant::now() >= next_tick {
                self.judge();
                next_tick = Instant::now() + self.tick;
            }
            if self.reaped.iter().all(|&r| r) {
                let at = *all_ended_at.get_or_insert_with(Instant::now);
                let open = self.streams.iter().any(|s| s.open);
                if !open || at.elapsed() >= Duration::from_millis(500) {
                    for i in 0..self.streams.len() {
                        if self.streams[i].open {
                            self.read_stream(i);
                        }
                    }
                    let _ = self.tx.send(Event::Finished);
                    return;
                }
            }
        }
        // Stopped: the job was dropped after killing its ranks. Reap them.
        for (r, rank) in self.ranks.iter_mut().enumerate() {
            if !self.reaped[r] {
                let _ = rank.child.wait();
            }
        }
    }
}

/// Appends `lines` (whole lines) to `out`, each prefixed `[rank R] `.
fn tag_lines(rank: usize, lines: &[u8], out: &mut Vec<u8>) {
    let tag = format!("[rank {rank}] ");
    for line in lines.split_inclusive(|&b| b == b'\n') {
        out.extend_from_slice(tag.as_bytes());
        out.extend_from_slice(line);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sh(size: usize, script: &str) -> JobConfig {
        JobConfig {
            size,
            program: "/bin/sh".into(),
            args: vec!["-c".into(), script.into()],
            env: vec![],
            init: b"hello".to_vec(),
            init_fds: vec![],
            stdin_to_rank0: false,
            tick: Duration::from_millis(50),
        }
    }

    fn run_to_end(job: &Job) -> Vec<Event> {
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut all = Vec::new();
        while Instant::now() < deadline {
            let events = job.events(Duration::from_millis(100));
            let done = events.iter().any(|e| matches!(e, Event::Finished));
            all.extend(events);
            if done {
                return all;
            }
        }
        panic!("the job did not finish: {all:?}");
    }

    #[test]
    fn output_is_tagged_and_ends_are_reported() {
        let job = Job::start(sh(
            3,
            "echo out $SHOAL_MPI_RANK; printf 'no newline' >&2; \
             ls /proc/self/fd/6 /proc/self/fd/8 >/dev/null && exit $SHOAL_MPI_RANK",
        ))
        .unwrap();
        let events = run_to_end(&job);
        let mut out = String::new();
        let mut err = String::new();
        let mut codes = vec![None; 3];
        for e in &events {
            match e {
                Event::Output { stream: 1, text } => {
                    out.push_str(std::str::from_utf8(text).unwrap())
                }
                Event::Output { text, .. } => err.push_str(std::str::from_utf8(text).unwrap()),
                Event::Ended { rank, code, .. } => codes[*rank] = *code,
                _ => {}
            }
        }
        for r in 0..3 {
            assert!(out.contains(&format!("[rank {r}] out {r}\n")), "{out}");
            assert!(err.contains(&format!("[rank {r}] no newline\n")), "{err}");
        }
        assert_eq!(codes, vec![Some(0), Some(1), Some(2)]);
        assert!(job.world().ended(1).is_some());
    }

    #[test]
    fn a_killed_rank_is_recorded_with_its_signal() {
        let job = Job::start(sh(2, "sleep 30")).unwrap();
        std::thread::sleep(Duration::from_millis(100));
        job.signal(libc::SIGKILL);
        let events = run_to_end(&job);
        let signals: Vec<_> = events
            .iter()
            .filter_map(|e| match e {
                Event::Ended { signal, .. } => Some(*signal),
                _ => None,
            })
            .collect();
        assert_eq!(signals, vec![Some(libc::SIGKILL); 2]);
    }
}

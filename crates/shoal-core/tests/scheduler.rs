//! End-to-end tests of the engine: real worker processes, real sockets.
//!
//! The worker is this test binary itself (rayon's trick): the engine starts
//! `current_exe() worker_main --exact ...` with `SHOAL_TEST_WORKER=1`, and the
//! `worker_main` test below then runs a worker loop instead of returning.
//!
//! The worker's "functions" are plain byte strings; the body decides what a
//! task does (see [`run_task`]). The `cmd` function takes its behaviour from
//! the task's arguments, so one submission can mix echoes, crashes and sleeps.
//!
//! Every wait is bounded: a hang fails the test instead of blocking forever.

use std::collections::{HashMap, HashSet};
use std::ops::Deref;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use shoal_core::fds::SharedFd;
use shoal_core::frame::Kind;
use shoal_core::link::WorkerLink;
use shoal_core::shm;
use shoal_core::timing::monotonic_ns;
use shoal_core::{
    BrokenPool, Completion, CoreError, Engine, EngineConfig, Launch, Next, Outcome, Payload,
    Stream, Submission, TaskOptions, ThreadLauncher, WorkerCommand, WorkerEnds, WorkerOutput,
};

const WORKER_ENV: &str = "SHOAL_TEST_WORKER";
/// Milliseconds a worker waits before it reads its first frames.
const DELAY_ENV: &str = "SHOAL_TEST_WORKER_START_DELAY_MS";

// ---------------------------------------------------------------------------
// The worker side.
// ---------------------------------------------------------------------------

/// Not a real test: the entry point of worker processes. Does nothing unless
/// started by the engine with `SHOAL_TEST_WORKER=1`.
#[test]
fn worker_main() {
    if std::env::var(WORKER_ENV).as_deref() != Ok("1") {
        return;
    }
    // Lets a test make sure that everything the engine sends at start-up
    // (Init, Func, the first tasks) arrives in one batch.
    if let Ok(ms) = std::env::var(DELAY_ENV) {
        std::thread::sleep(Duration::from_millis(ms.parse().unwrap_or(0)));
    }
    let link = match WorkerLink::from_inherited() {
        Ok(link) => link,
        Err(e) => {
            eprintln!("test worker: {e}");
            std::process::exit(70);
        }
    };
    let code = worker_loop(&link);
    // `exit` runs no destructors: the socket stays open until the kernel
    // tears the process down, so the parent sees end-of-file only as the
    // process ends (as it would for a real interpreter exiting).
    std::process::exit(code);
}

fn worker_loop(link: &WorkerLink) -> i32 {
    let pid = std::process::id();
    let mut functions: HashMap<u64, Vec<u8>> = HashMap::new();
    loop {
        let frames = match link.recv_batch() {
            Ok(frames) => frames,
            // The parent went away: nothing left to do.
            Err(_) => return 0,
        };
        for frame in frames {
            match frame.kind {
                Kind::Init => match frame.body.as_slice() {
                    b"fail-init" => {
                        let _ = link.queue(Kind::InitFailed, 0, 0, b"initializer raised");
                        let _ = link.flush();
                        return 1;
                    }
                    // Dies before saying Ready, as a broken interpreter would.
                    b"exit-now" => return 3,
                    // An initializer that never returns.
                    b"hang" => loop {
                        std::thread::sleep(Duration::from_secs(60));
                    },
                    // The same, once the first tasks have surely been sent.
                    b"exit-later" => {
                        std::thread::sleep(Duration::from_millis(300));
                        return 3;
                    }
                    // Follows "process the whole batch, then flush" to the
                    // letter: Ready leaves with the batch's other replies.
                    b"strict-batch" => {
                        if link.queue(Kind::Ready, u64::from(pid), 0, &[]).is_err() {
                            return 71;
                        }
                    }
                    _ => {
                        let _ = link.queue(Kind::Ready, u64::from(pid), 0, &[]);
                        // Ready goes out at once, so the parent knows this
                        // worker started even if its first task kills it.
                        if link.flush().is_err() {
                            return 0;
                        }
                    }
                },
                // A function whose loading never ends.
                Kind::Func if frame.body == b"hang-load" => loop {
                    std::thread::sleep(Duration::from_secs(60));
                },
                Kind::Func => {
                    functions.insert(frame.a, frame.body);
                }
                Kind::Forget => {
                    functions.remove(&frame.a);
                }
                Kind::Task if functions.get(&frame.b).map(Vec::as_slice) == Some(b"fds") => {
                    // Answers with the sizes of the segments it was sent,
                    // and sends them back.
                    if !link.begin(frame.a) {
                        continue;
                    }
                    let sizes: Vec<String> = frame
                        .fds
                        .iter()
                        .map(|fd| shm::size(fd).unwrap().to_string())
                        .collect();
                    let body = sizes.join(",").into_bytes();
                    if link
                        .finish(Kind::Done, frame.a, &body, &frame.fds, 0, 0)
                        .is_err()
                    {
                        return 71;
                    }
                }
                Kind::Task => {
                    let (task, fn_id) = (frame.a, frame.b);
                    if !link.begin(task) {
                        continue; // withdrawn after it was sent
                    }
                    let result = match functions.get(&fn_id) {
                        Some(body) => run_task(link, body, &frame.body),
                        None => Err(Raised::Fatal(b"unknown function".to_vec())),
                    };
                    let (kind, body) = match result {
                        Ok(out) => (Kind::Done, out),
                        Err(Raised::Fatal(err)) => (Kind::Failed, err),
                        Err(Raised::Retryable(err)) => (Kind::Retryable, err),
                    };
                    // The fake worker spends no time on (de)serialisation.
                    let queued = link.finish(kind, task, &body, &[], 0, 0);
                    if queued.is_err() {
                        return 71;
                    }
                    // "retire" tasks: answer, then leave as a worker over its
                    // memory limit does.
                    if frame.body == b"retire" {
                        let _ = link.queue(Kind::Retire, 0, 0, &[]);
                        let _ = link.flush();
                        return 0;
                    }
                }
                Kind::Exit => {
                    let _ = link.flush();
                    return 0;
                }
                // The parent sent a worker-to-parent kind.
                Kind::Ready
                | Kind::Done
                | Kind::Failed
                | Kind::InitFailed
                | Kind::Output
                | Kind::Log
                | Kind::Retryable
                | Kind::Retire => return 72,
            }
        }
        if link.flush().is_err() {
            return 0;
        }
    }
}

/// How a test task raised: an ordinary error, or one its `retry_on` names.
enum Raised {
    Fatal(Vec<u8>),
    Retryable(Vec<u8>),
}

impl From<&[u8]> for Raised {
    fn from(msg: &[u8]) -> Raised {
        Raised::Fatal(msg.to_vec())
    }
}

/// Runs one task: `Ok(result)` or `Err(exception)`.
fn run_task(link: &WorkerLink, function: &[u8], args: &[u8]) -> Result<Vec<u8>, Raised> {
    match function {
        b"echo" => Ok(args.to_vec()),
        b"upper" => Ok(args.to_ascii_uppercase()),
        b"sleep" => {
            std::thread::sleep(Duration::from_millis(parse_u64(args)));
            Ok(args.to_vec())
        }
        b"crash" => die(),
        b"fail" => Err(b"failed on purpose"[..].into()),
        b"pid" => Ok(std::process::id().to_string().into_bytes()),
        b"cmd" => run_cmd(link, args),
        _ => Err(b"function body not understood"[..].into()),
    }
}

/// `cmd` tasks: `verb:argument`.
fn run_cmd(link: &WorkerLink, args: &[u8]) -> Result<Vec<u8>, Raised> {
    let text = std::str::from_utf8(args).map_err(|_| Raised::from(&b"args not utf-8"[..]))?;
    let (verb, rest) = text.split_once(':').unwrap_or((text, ""));
    match verb {
        "echo" => Ok(rest.as_bytes().to_vec()),
        "pid" => Ok(std::process::id().to_string().into_bytes()),
        "sleep" => {
            std::thread::sleep(Duration::from_millis(parse_u64(rest.as_bytes())));
            Ok(rest.as_bytes().to_vec())
        }
        "fail" => Err(rest.as_bytes().into()),
        // Appends a line per attempt to the file, then raises an error the
        // task's `retry_on` names.
        "flaky" => {
            append_pid(rest);
            Err(Raised::Retryable(b"flaky failure".to_vec()))
        }
        // Writes a line to stdout and one to stderr, then answers.
        "say" => {
            link.queue(Kind::Output, 1, 0, format!("{rest}\n").as_bytes())
                .expect("queue output");
            link.queue(Kind::Output, 2, 0, format!("err {rest}\n").as_bytes())
                .expect("queue output");
            Ok(b"said".to_vec())
        }
        // Answers at once; 100 ms later, while the worker is idle, makes
        // `MB` megabytes resident for the rest of the process's life.
        "leak-later" => {
            let mb = parse_u64(rest.as_bytes()) as usize;
            std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(100));
                std::mem::forget(std::hint::black_box(vec![1u8; mb << 20]));
            });
            Ok(b"leaking".to_vec())
        }
        // Holds `MB` megabytes (touched, so resident) for `ms` milliseconds.
        "hog" => {
            let (mb, ms) = rest.split_once(':').unwrap_or((rest, "0"));
            let block = std::hint::black_box(vec![1u8; (parse_u64(mb.as_bytes()) as usize) << 20]);
            std::thread::sleep(Duration::from_millis(parse_u64(ms.as_bytes())));
            Ok(block.len().to_string().into_bytes())
        }
        // Leaves a child (a fork of this worker, holding its socket) that
        // sleeps for `ms` milliseconds, writes its pid to `path`, then
        // sleeps for `ms` itself (`fork-sleep:ms:path`) or answers at once
        // (`fork:ms:path`).
        "fork-sleep" | "fork" => {
            let (ms, path) = rest.split_once(':').unwrap_or((rest, ""));
            let ms = parse_u64(ms.as_bytes());
            // SAFETY: the child calls only async-signal-safe functions
            // (sleep, _exit) before it ends.
            let child = unsafe { libc::fork() };
            if child == 0 {
                // SAFETY: as above.
                unsafe {
                    libc::usleep((ms * 1000).min(u32::MAX as u64) as u32);
                    libc::_exit(0);
                }
            }
            std::fs::write(path, child.to_string()).expect("write pid file");
            if verb == "fork-sleep" {
                std::thread::sleep(Duration::from_millis(ms));
            }
            Ok(b"slept".to_vec())
        }
        // Appends this process's pid to the file, then sleeps `ms`
        // (`log-sleep:ms:path`): shows how many times the task ran, where.
        "log-sleep" => {
            let (ms, path) = rest.split_once(':').unwrap_or((rest, ""));
            append_pid(path);
            std::thread::sleep(Duration::from_millis(parse_u64(ms.as_bytes())));
            Ok(b"slept".to_vec())
        }
        // Creates the file at `path`: shows that the task ran.
        "touch" => {
            std::fs::write(rest, b"ran").expect("touch");
            Ok(b"touched".to_vec())
        }
        // Records this worker's pid in the file, then dies.
        "crash" => {
            std::fs::write(rest, std::process::id().to_string()).expect("write pid file");
            die()
        }
        // Appends a line per attempt to the file, then dies.
        "crashlog" => {
            append_pid(rest);
            die()
        }
        // Dies the first time (creating the marker), succeeds afterwards.
        "crash-once" => {
            if Path::new(rest).exists() {
                Ok(b"survived".to_vec())
            } else {
                std::fs::write(rest, b"").expect("create marker");
                die()
            }
        }
        // Exits with this code, mid-task.
        "exit" => std::process::exit(parse_u64(rest.as_bytes()) as i32),
        // Closes the socket first, lingers, then exits with this code, like
        // an interpreter that tears down its objects before it ends.
        "close-exit" => {
            // SAFETY: closing the inherited socket descriptor; the link that
            // owns it is never used again because this process exits below.
            unsafe {
                libc::close(3);
            }
            std::thread::sleep(Duration::from_millis(200));
            std::process::exit(parse_u64(rest.as_bytes()) as i32)
        }
        other => Err(format!("unknown verb {other}").as_bytes().into()),
    }
}

/// Appends this process's pid as a line to the file at `path`.
fn append_pid(path: &str) {
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .expect("open attempt log");
    writeln!(f, "{}", std::process::id()).expect("append attempt log");
}

fn parse_u64(bytes: &[u8]) -> u64 {
    std::str::from_utf8(bytes)
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0)
}

/// Kills this worker process with SIGKILL (no core dump, no unwinding).
fn die() -> ! {
    // SAFETY: plain system calls on our own pid.
    unsafe {
        libc::kill(libc::getpid(), libc::SIGKILL);
    }
    // SIGKILL cannot be caught; this is only reached if kill itself failed.
    std::process::abort()
}

// ---------------------------------------------------------------------------
// The parent side: helpers.
// ---------------------------------------------------------------------------

const ECHO: u64 = 1;
const UPPER: u64 = 2;
const SLEEP: u64 = 3;
const CRASH: u64 = 4;
const FAIL: u64 = 5;
const PID: u64 = 6;
const CMD: u64 = 7;
/// Answers with the sizes of the segments a task carries, and returns them.
const FDS: u64 = 8;

fn worker_command() -> WorkerCommand {
    WorkerCommand {
        program: std::env::current_exe().expect("current_exe"),
        args: [
            "worker_main",
            "--exact",
            "--nocapture",
            "--test-threads=1",
            "--quiet",
        ]
        .map(String::from)
        .to_vec(),
        env: vec![(WORKER_ENV.to_string(), "1".to_string())],
    }
}

fn config(workers: usize) -> EngineConfig {
    EngineConfig {
        workers,
        launch: Launch::Process(worker_command()),
        init: b"init".to_vec().into(),
        max_tasks_per_child: None,
        max_memory: None,
    }
}

fn command_of(cfg: &mut EngineConfig) -> &mut WorkerCommand {
    match &mut cfg.launch {
        Launch::Process(command) => command,
        Launch::Thread(_) => panic!("not a process config"),
    }
}

/// An engine that is terminated when the test ends, and never blocks the
/// test forever on the way out: if the scheduler does not stop in time the
/// engine is leaked rather than joined.
struct Pool(Option<Engine>);

impl Pool {
    fn start(config: EngineConfig) -> Pool {
        let engine = Engine::start(config).expect("engine starts");
        for (id, body) in [
            (ECHO, &b"echo"[..]),
            (UPPER, b"upper"),
            (SLEEP, b"sleep"),
            (CRASH, b"crash"),
            (FAIL, b"fail"),
            (PID, b"pid"),
            (CMD, b"cmd"),
            (FDS, b"fds"),
        ] {
            engine
                .register_function(id, body.to_vec())
                .expect("register");
        }
        Pool(Some(engine))
    }

    fn with_workers(workers: usize) -> Pool {
        Pool::start(config(workers))
    }
}

impl Deref for Pool {
    type Target = Engine;
    fn deref(&self) -> &Engine {
        self.0.as_ref().expect("engine present")
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        if let Some(engine) = self.0.take() {
            engine.terminate();
            if !engine.join(Some(Duration::from_secs(5))) {
                eprintln!("engine did not stop within 5 s; leaking it");
                std::mem::forget(engine);
            }
        }
    }
}

fn submission<T: AsRef<[u8]>>(fn_id: u64, tasks: &[(u64, T)], options: TaskOptions) -> Submission {
    Submission {
        fn_id,
        tasks: tasks
            .iter()
            .map(|(id, a)| (*id, a.as_ref().to_vec().into()))
            .collect(),
        options,
    }
}

/// Collects completions until every task in `expected` has completed, each
/// exactly once; fails on duplicates, unknown ids, an early `Finished`, or
/// when `within` passes first.
fn collect(engine: &Engine, expected: &[u64], within: Duration) -> HashMap<u64, Completion> {
    let deadline = Instant::now() + within;
    let wanted: HashSet<u64> = expected.iter().copied().collect();
    assert_eq!(
        wanted.len(),
        expected.len(),
        "duplicate ids in the expected set"
    );
    let mut got: HashMap<u64, Completion> = HashMap::new();
    while got.len() < wanted.len() {
        let now = Instant::now();
        if now >= deadline {
            let missing: Vec<u64> = wanted
                .iter()
                .filter(|t| !got.contains_key(t))
                .copied()
                .collect();
            panic!(
                "timed out after {within:?}: {} of {} tasks completed; missing (up to 20): {:?}",
                got.len(),
                wanted.len(),
                &missing[..missing.len().min(20)]
            );
        }
        match engine.next_completions(Some(deadline - now)) {
            Next::Batch(batch) => {
                assert!(!batch.is_empty(), "an empty batch");
                for c in batch.done {
                    assert!(
                        wanted.contains(&c.task),
                        "completion for unexpected task: {c:?}"
                    );
                    let id = c.task;
                    if let Some(prev) = got.insert(id, c) {
                        panic!(
                            "task {id} completed twice: first {prev:?}, then {:?}",
                            got[&id]
                        );
                    }
                }
            }
            Next::TimedOut => {}
            Next::Finished => panic!(
                "engine finished with {} of {} tasks completed",
                got.len(),
                wanted.len()
            ),
        }
    }
    got
}

/// Waits until the engine reports `Finished`; no completion may arrive first.
fn expect_finished(engine: &Engine, within: Duration) {
    let deadline = Instant::now() + within;
    loop {
        let now = Instant::now();
        assert!(now < deadline, "engine did not finish within {within:?}");
        match engine.next_completions(Some(deadline - now)) {
            Next::Finished => return,
            Next::TimedOut => {}
            Next::Batch(batch) => panic!("unexpected completions before Finished: {batch:?}"),
        }
    }
}

/// Asserts nothing more completes for `quiet`.
fn expect_quiet(engine: &Engine, quiet: Duration) {
    match engine.next_completions(Some(quiet)) {
        Next::TimedOut => {}
        other => panic!("expected no more completions, got {other:?}"),
    }
}

/// Collects completions of `expected` as [`collect`] does, and every piece
/// of worker output published up to the last of them, in order.
fn collect_with_output(
    engine: &Engine,
    expected: &[u64],
    within: Duration,
) -> (HashMap<u64, Completion>, Vec<WorkerOutput>) {
    let deadline = Instant::now() + within;
    let mut got = HashMap::new();
    let mut output = Vec::new();
    while got.len() < expected.len() {
        let now = Instant::now();
        assert!(now < deadline, "timed out; completed so far: {got:?}");
        if let Next::Batch(batch) = engine.next_completions(Some(deadline - now)) {
            output.extend(batch.output);
            for c in batch.done {
                assert!(expected.contains(&c.task), "unexpected {c:?}");
                got.insert(c.task, c);
            }
        }
    }
    (got, output)
}

fn done_body(c: &Completion) -> &[u8] {
    match &c.outcome {
        Outcome::Done(payload) => &payload.body,
        other => panic!("task {} did not succeed: {other:?}", c.task),
    }
}

fn pid_of(c: &Completion) -> u32 {
    std::str::from_utf8(done_body(c))
        .expect("utf-8 pid")
        .parse()
        .expect("numeric pid")
}

fn process_exists(pid: u32) -> bool {
    // SAFETY: signal 0 only checks that the process exists.
    unsafe { libc::kill(pid as libc::pid_t, 0) == 0 }
}

/// Polls `cond` every 10 ms until it holds or `within` passes.
fn eventually(within: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + within;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// A fresh, empty directory for files the workers write, removed with it.
struct ScratchDir(PathBuf);

impl std::ops::Deref for ScratchDir {
    type Target = std::path::Path;
    fn deref(&self) -> &std::path::Path {
        &self.0
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn scratch_dir(name: &str) -> ScratchDir {
    let dir = std::env::temp_dir().join(format!("shoal-core-test-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir); // left by an earlier run with this pid
    std::fs::create_dir_all(&dir).expect("create scratch dir");
    ScratchDir(dir)
}

fn ids(range: std::ops::Range<u64>) -> Vec<u64> {
    range.collect()
}

const LONG: Duration = Duration::from_secs(10);

// ---------------------------------------------------------------------------
// The tests.
// ---------------------------------------------------------------------------

#[test]
fn thousand_echoes_on_two_workers() {
    let pool = Pool::with_workers(2);
    let pids = pool.worker_pids();
    assert_eq!(pids.len(), 2, "worker_pids: {pids:?}");
    assert_ne!(pids[0], pids[1]);

    let tasks: Vec<(u64, String)> = (1..=1000).map(|i| (i, format!("payload-{i}"))).collect();
    pool.submit(submission(ECHO, &tasks, TaskOptions::default()))
        .unwrap();
    let got = collect(&pool, &ids(1..1001), LONG);
    for (id, payload) in &tasks {
        assert_eq!(done_body(&got[id]), payload.as_bytes(), "task {id}");
    }
    expect_quiet(&pool, Duration::from_millis(50));
    // Nobody died, so the same two workers are still there.
    assert_eq!(pool.worker_pids(), pids);
}

#[test]
fn segments_travel_to_workers_and_back() {
    let pool = Pool::with_workers(2);
    let small = SharedFd::new(shm::create_copy(b"hello", true).unwrap());
    let big = SharedFd::new(shm::create_copy(&vec![7u8; 1 << 20], true).unwrap());
    // The same segment goes to many tasks, a couple of times in one.
    let tasks: Vec<(u64, Payload)> = (1..=200)
        .map(|i| {
            let fds = if i % 2 == 0 {
                vec![small.clone(), big.clone(), small.clone()]
            } else {
                vec![big.clone()]
            };
            (i, Payload { body: vec![], fds })
        })
        .collect();
    pool.submit(Submission {
        fn_id: FDS,
        tasks,
        options: TaskOptions::default(),
    })
    .unwrap();
    let got = collect(&pool, &ids(1..201), LONG);
    for i in 1..=200u64 {
        let Outcome::Done(payload) = &got[&i].outcome else {
            panic!("task {i}: {:?}", got[&i].outcome);
        };
        let want = if i % 2 == 0 { "5,1048576,5" } else { "1048576" };
        assert_eq!(payload.body, want.as_bytes(), "task {i}");
        let back: Vec<usize> = payload
            .fds
            .iter()
            .map(|fd| shm::size(fd).unwrap())
            .collect();
        let sizes: Vec<String> = back.iter().map(usize::to_string).collect();
        assert_eq!(sizes.join(","), want);
        assert!(payload.fds.iter().all(shm::is_sealed));
    }
}

#[test]
fn two_functions_then_release_and_a_new_one() {
    let pool = Pool::with_workers(2);
    let a: Vec<(u64, String)> = (1..=50).map(|i| (i, format!("a{i}"))).collect();
    let b: Vec<(u64, String)> = (51..=100).map(|i| (i, format!("b{i}"))).collect();
    pool.submit(submission(ECHO, &a, TaskOptions::default()))
        .unwrap();
    pool.submit(submission(UPPER, &b, TaskOptions::default()))
        .unwrap();
    let got = collect(&pool, &ids(1..101), LONG);
    for (id, p) in &a {
        assert_eq!(done_body(&got[id]), p.as_bytes());
    }
    for (id, p) in &b {
        assert_eq!(done_body(&got[id]), p.to_ascii_uppercase().as_bytes());
    }

    // Release UPPER (no live tasks: dropped at once, workers told to forget)
    // and bring in a new function id.
    pool.release_function(UPPER);
    pool.register_function(100, b"upper".to_vec()).unwrap();
    let c: Vec<(u64, String)> = (101..=150).map(|i| (i, format!("c{i}"))).collect();
    pool.submit(submission(100, &c, TaskOptions::default()))
        .unwrap();
    let got = collect(&pool, &ids(101..151), LONG);
    for (id, p) in &c {
        assert_eq!(done_body(&got[id]), p.to_ascii_uppercase().as_bytes());
    }

    // The released id is gone everywhere: a task naming it reaches the
    // worker as an unknown function (the Forget frame went first).
    let d: Vec<(u64, &str)> = (151..=160).map(|i| (i, "late")).collect();
    pool.submit(submission(UPPER, &d, TaskOptions::default()))
        .unwrap();
    let got = collect(&pool, &ids(151..161), LONG);
    for c in got.values() {
        assert_eq!(
            c.outcome,
            Outcome::Failed(b"unknown function".to_vec()),
            "{c:?}"
        );
    }
}

#[test]
fn release_while_tasks_run_keeps_the_function_until_they_finish() {
    let pool = Pool::with_workers(2);
    pool.register_function(50, b"sleep".to_vec()).unwrap();
    let tasks: Vec<(u64, &str)> = (1..=6).map(|i| (i, "30")).collect();
    pool.submit(submission(50, &tasks, TaskOptions::default()))
        .unwrap();
    pool.release_function(50);
    let got = collect(&pool, &ids(1..7), LONG);
    for c in got.values() {
        assert_eq!(done_body(c), b"30");
    }
    let late = [(7u64, "1")];
    pool.submit(submission(50, &late, TaskOptions::default()))
        .unwrap();
    let got = collect(&pool, &[7], LONG);
    assert_eq!(
        got[&7].outcome,
        Outcome::Failed(b"unknown function".to_vec())
    );
}

#[test]
fn failures_and_unknown_functions_are_reported() {
    let pool = Pool::with_workers(1);
    pool.submit(submission(FAIL, &[(1, "x")], TaskOptions::default()))
        .unwrap();
    pool.submit(submission(999, &[(2, "x")], TaskOptions::default()))
        .unwrap();
    pool.submit(submission(
        CMD,
        &[(3, "fail:custom error")],
        TaskOptions::default(),
    ))
    .unwrap();
    pool.submit(submission(ECHO, &[(4, "fine")], TaskOptions::default()))
        .unwrap();
    let got = collect(&pool, &[1, 2, 3, 4], LONG);
    assert_eq!(
        got[&1].outcome,
        Outcome::Failed(b"failed on purpose".to_vec())
    );
    assert_eq!(
        got[&2].outcome,
        Outcome::Failed(b"unknown function".to_vec())
    );
    assert_eq!(got[&3].outcome, Outcome::Failed(b"custom error".to_vec()));
    assert_eq!(done_body(&got[&4]), b"fine");
    // A raised exception does not cost the worker.
    assert_eq!(pool.worker_pids().len(), 1);
}

#[test]
fn crash_is_lost_others_complete_and_worker_is_replaced() {
    let dir = scratch_dir("crash");
    let pid_file = dir.join("crashed-pid");
    let pool = Pool::with_workers(2);
    let before = pool.worker_pids();
    assert_eq!(before.len(), 2);

    let mut tasks: Vec<(u64, String)> = (1..=40).map(|i| (i, format!("echo:{i}"))).collect();
    tasks[19].1 = format!("crash:{}", pid_file.display()); // task 20
    pool.submit(submission(CMD, &tasks, TaskOptions::default()))
        .unwrap();
    let got = collect(&pool, &ids(1..41), LONG);

    let crashed: u32 = std::fs::read_to_string(&pid_file)
        .expect("the crash task ran")
        .parse()
        .unwrap();
    assert!(
        before.contains(&crashed),
        "crashed pid {crashed} not among {before:?}"
    );
    match &got[&20].outcome {
        Outcome::Lost(exit) => {
            assert_eq!(exit.pid, crashed, "{exit:?}");
            assert!(exit.signal.is_some() || exit.code.is_some(), "{exit:?}");
            assert_eq!(exit.signal, Some(libc::SIGKILL), "{exit:?}");
        }
        other => panic!("crash task ended as {other:?}"),
    }
    for (id, args) in &tasks {
        if *id != 20 {
            assert_eq!(
                done_body(&got[id]),
                args.strip_prefix("echo:").unwrap().as_bytes()
            );
        }
    }

    // A replacement takes the dead worker's place.
    assert!(
        eventually(Duration::from_secs(5), || {
            let now = pool.worker_pids();
            now.len() == 2 && !now.contains(&crashed)
        }),
        "no replacement worker: before {before:?}, now {:?}",
        pool.worker_pids()
    );
    assert!(
        !process_exists(crashed),
        "the crashed worker was not reaped"
    );

    // And later tasks work, on both workers.
    let more: Vec<(u64, &str)> = (41..=60).map(|i| (i, "pid")).collect();
    pool.submit(submission(CMD, &more, TaskOptions::default()))
        .unwrap();
    let got = collect(&pool, &ids(41..61), LONG);
    let now = pool.worker_pids();
    for c in got.values() {
        let pid = pid_of(c);
        assert_ne!(pid, crashed);
        assert!(now.contains(&pid), "pid {pid} not among {now:?}");
    }
}

#[test]
fn crash_without_retries_left_is_lost_after_every_attempt() {
    let dir = scratch_dir("retries-lost");
    let log = dir.join("attempts");
    let pool = Pool::with_workers(2);
    let opts = TaskOptions {
        timeout: None,
        retries: 2,
    };
    let args = format!("crashlog:{}", log.display());
    pool.submit(submission(CMD, &[(1, args.as_str())], opts))
        .unwrap();
    pool.submit(submission(
        ECHO,
        &[(2, "bystander")],
        TaskOptions::default(),
    ))
    .unwrap();
    let got = collect(&pool, &[1, 2], LONG);
    let attempts: Vec<u32> = std::fs::read_to_string(&log)
        .unwrap()
        .lines()
        .map(|l| l.parse().unwrap())
        .collect();
    assert_eq!(
        attempts.len(),
        3,
        "1 attempt + 2 retries, got pids {attempts:?}"
    );
    let distinct: HashSet<u32> = attempts.iter().copied().collect();
    assert_eq!(
        distinct.len(),
        3,
        "each attempt kills its worker: {attempts:?}"
    );
    match &got[&1].outcome {
        Outcome::Lost(exit) => {
            assert_eq!(
                exit.pid,
                *attempts.last().unwrap(),
                "blame the last attempt's worker"
            );
            assert_eq!(exit.signal, Some(libc::SIGKILL));
        }
        other => panic!("expected Lost, got {other:?}"),
    }
    assert_eq!(done_body(&got[&2]), b"bystander");
    // The pool survived three deaths in a row (all after Ready).
    let more: Vec<(u64, &str)> = (3..=6).map(|i| (i, "ok")).collect();
    pool.submit(submission(ECHO, &more, TaskOptions::default()))
        .unwrap();
    let got = collect(&pool, &ids(3..7), LONG);
    assert!(got.values().all(|c| done_body(c) == b"ok"));
}

#[test]
fn plain_crash_with_no_retries_is_lost_at_once() {
    let pool = Pool::with_workers(1);
    let pid = pool.worker_pids()[0];
    pool.submit(submission(CRASH, &[(1, "")], TaskOptions::default()))
        .unwrap();
    let got = collect(&pool, &[1], LONG);
    match &got[&1].outcome {
        Outcome::Lost(exit) => {
            assert_eq!(exit.pid, pid);
            assert_eq!(exit.signal, Some(libc::SIGKILL));
            assert_eq!(exit.code, None);
        }
        other => panic!("expected Lost, got {other:?}"),
    }
    assert_eq!(got[&1].duration_ns, 0);
}

#[test]
fn a_worker_exiting_mid_task_reports_its_exit_code() {
    let pool = Pool::with_workers(1);
    let pid = pool.worker_pids()[0];
    pool.submit(submission(CMD, &[(1, "exit:7")], TaskOptions::default()))
        .unwrap();
    let got = collect(&pool, &[1], LONG);
    assert_eq!(
        got[&1].outcome,
        Outcome::Lost(shoal_core::ExitInfo {
            pid,
            code: Some(7),
            signal: None
        })
    );
}

#[test]
fn a_worker_closing_its_socket_before_exiting_reports_its_exit_code() {
    let pool = Pool::with_workers(1);
    let pid = pool.worker_pids()[0];
    pool.submit(submission(
        CMD,
        &[(1, "close-exit:7")],
        TaskOptions::default(),
    ))
    .unwrap();
    let got = collect(&pool, &[1], LONG);
    assert_eq!(
        got[&1].outcome,
        Outcome::Lost(shoal_core::ExitInfo {
            pid,
            code: Some(7),
            signal: None
        })
    );
}

#[test]
fn retry_after_one_crash_succeeds() {
    let dir = scratch_dir("crash-once");
    let pool = Pool::with_workers(2);
    let opts = TaskOptions {
        timeout: None,
        retries: 1,
    };
    let tasks: Vec<(u64, String)> = (1..=3)
        .map(|i| {
            (
                i,
                format!("crash-once:{}", dir.join(format!("marker-{i}")).display()),
            )
        })
        .collect();
    pool.submit(submission(CMD, &tasks, opts)).unwrap();
    let got = collect(&pool, &ids(1..4), LONG);
    for c in got.values() {
        assert_eq!(done_body(c), b"survived", "{c:?}");
    }
    for i in 1..=3 {
        assert!(dir.join(format!("marker-{i}")).exists());
    }
}

#[test]
fn timeout_kills_the_worker_and_others_finish() {
    let pool = Pool::with_workers(2);
    let before = pool.worker_pids();
    let start = Instant::now();
    let timed = TaskOptions {
        timeout: Some(Duration::from_millis(200)),
        retries: 3, // a timeout is final, not retried
    };
    pool.submit(submission(SLEEP, &[(1, "5000")], timed))
        .unwrap();
    let others: Vec<(u64, String)> = (2..=41).map(|i| (i, format!("o{i}"))).collect();
    pool.submit(submission(ECHO, &others, TaskOptions::default()))
        .unwrap();
    let got = collect(&pool, &ids(1..42), Duration::from_secs(3));
    let elapsed = start.elapsed();
    assert!(elapsed < Duration::from_secs(2), "took {elapsed:?}");
    match &got[&1].outcome {
        Outcome::TimedOut {
            pid,
            timeout,
            started,
        } => {
            assert_eq!(*timeout, Duration::from_millis(200));
            assert!(*started);
            assert!(before.contains(pid), "pid {pid} not among {before:?}");
        }
        other => panic!("expected TimedOut, got {other:?}"),
    }
    for (id, p) in &others {
        assert_eq!(done_body(&got[id]), p.as_bytes());
    }
    // The killed worker is replaced and the pool still works.
    let more: Vec<(u64, &str)> = (42..=45).map(|i| (i, "10")).collect();
    pool.submit(submission(SLEEP, &more, timed)).unwrap();
    let got = collect(&pool, &ids(42..46), LONG);
    assert!(got.values().all(|c| done_body(c) == b"10"));
    assert_eq!(pool.worker_pids().len(), 2);
}

#[test]
fn timeout_on_a_single_worker_requeues_what_waited_behind_it() {
    let pool = Pool::with_workers(1);
    let first = pool.worker_pids()[0];
    let timed = TaskOptions {
        timeout: Some(Duration::from_millis(150)),
        retries: 0,
    };
    pool.submit(submission(SLEEP, &[(1, "5000")], timed))
        .unwrap();
    let others: Vec<(u64, &str)> = (2..=21).map(|i| (i, "pid")).collect();
    pool.submit(submission(CMD, &others, TaskOptions::default()))
        .unwrap();
    let got = collect(&pool, &ids(1..22), Duration::from_secs(3));
    assert_eq!(
        got[&1].outcome,
        Outcome::TimedOut {
            pid: first,
            timeout: Duration::from_millis(150),
            started: true,
        }
    );
    for id in 2..=21 {
        assert_ne!(
            pid_of(&got[&id]),
            first,
            "task {id} ran on the killed worker"
        );
    }
}

#[test]
fn timeout_does_not_fire_for_fast_tasks() {
    let pool = Pool::with_workers(1);
    let opts = TaskOptions {
        timeout: Some(Duration::from_millis(500)),
        retries: 0,
    };
    let tasks: Vec<(u64, &str)> = (1..=5).map(|i| (i, "20")).collect();
    let pid = pool.worker_pids()[0];
    pool.submit(submission(SLEEP, &tasks, opts)).unwrap();
    let got = collect(&pool, &ids(1..6), LONG);
    assert!(got.values().all(|c| done_body(c) == b"20"));
    assert!(got.values().all(|c| c.duration_ns >= 20_000_000), "{got:?}");
    assert_eq!(pool.worker_pids(), vec![pid]);
}

#[test]
fn cancel_queued_tasks() {
    let pool = Pool::with_workers(1);
    let tasks: Vec<(u64, &str)> = (1..=10).map(|i| (i, "100")).collect();
    pool.submit(submission(SLEEP, &tasks, TaskOptions::default()))
        .unwrap();
    pool.cancel((6..=10).collect(), false);
    let start = Instant::now();
    let got = collect(&pool, &ids(1..11), LONG);
    for id in 1..=5 {
        assert_eq!(done_body(&got[&id]), b"100", "task {id}");
    }
    for id in 6..=10 {
        assert_eq!(got[&id].outcome, Outcome::Cancelled, "task {id}");
        assert_eq!(got[&id].duration_ns, 0);
    }
    // Cancelled tasks did not run: five sleeps of 100 ms, not ten.
    assert!(
        start.elapsed() < Duration::from_millis(900),
        "{:?}",
        start.elapsed()
    );
    // Cancelling finished or unknown ids is harmless.
    pool.cancel(vec![1, 6, 12345], false);
    expect_quiet(&pool, Duration::from_millis(100));
}

#[test]
fn withdraw_cancels_only_tasks_no_worker_holds_and_held_says_which_it_holds() {
    let pool = Pool::with_workers(1);
    let tasks: Vec<(u64, &str)> = (1..=6).map(|i| (i, "300")).collect();
    pool.submit(submission(SLEEP, &tasks, TaskOptions::default()))
        .unwrap();
    // Nothing measured yet: the worker holds one task at a time.
    assert!(eventually(LONG, || pool.held(ids(1..7)) == vec![1]));
    let withdrawn = pool.withdraw(vec![1, 4, 5, 999]);
    assert_eq!(
        withdrawn,
        vec![4, 5],
        "the held task and an unknown id stay"
    );
    let got = collect(&pool, &ids(1..7), LONG);
    for id in [1, 2, 3, 6] {
        assert_eq!(done_body(&got[&id]), b"300", "task {id} ran");
    }
    for id in [4, 5] {
        assert_eq!(got[&id].outcome, Outcome::Cancelled, "task {id}");
        assert!(got[&id].run.is_none(), "task {id} never reached a worker");
    }
    // Finished tasks are neither held nor withdrawn.
    assert!(pool.held(ids(1..7)).is_empty());
    assert!(pool.withdraw(ids(1..7)).is_empty());
    expect_quiet(&pool, Duration::from_millis(100));
}

#[test]
fn withdraw_and_held_answer_empty_once_the_engine_has_stopped() {
    let pool = Pool::with_workers(1);
    pool.terminate();
    assert!(pool.join(Some(LONG)));
    assert!(pool.withdraw(vec![1, 2]).is_empty());
    assert!(pool.held(vec![1, 2]).is_empty());
}

#[test]
fn retryable_failures_use_the_retries_then_fail() {
    let dir = scratch_dir("retryable");
    let pool = Pool::with_workers(1);
    let log = dir.join("attempts");
    let opts = TaskOptions {
        timeout: None,
        retries: 2,
    };
    let arg = format!("flaky:{}", log.display());
    pool.submit(submission(CMD, &[(1, arg.as_str())], opts))
        .unwrap();
    let got = collect(&pool, &[1], LONG);
    assert_eq!(got[&1].outcome, Outcome::Failed(b"flaky failure".to_vec()));
    let attempts = std::fs::read_to_string(&log).unwrap();
    assert_eq!(attempts.lines().count(), 3, "one run and two retries");
    // Retrying an exception needs no new worker.
    let pids: HashSet<&str> = attempts.lines().collect();
    assert_eq!(pids.len(), 1);

    // Ordinary failures are not retried.
    let plain = dir.join("plain");
    pool.submit(submission(CMD, &[(2, "fail:no")], opts))
        .unwrap();
    assert_eq!(
        collect(&pool, &[2], LONG)[&2].outcome,
        Outcome::Failed(b"no".to_vec())
    );
    assert!(!plain.exists());
}

#[test]
fn output_arrives_tagged_with_the_slot_before_the_answer() {
    let pool = Pool::with_workers(1);
    let pid = pool.worker_pids()[0];
    pool.submit(submission(CMD, &[(1, "say:hello")], TaskOptions::default()))
        .unwrap();
    let (got, output) = collect_with_output(&pool, &[1], LONG);
    assert_eq!(done_body(&got[&1]), b"said");
    let expected = [(Stream::Stdout, "hello\n"), (Stream::Stderr, "err hello\n")];
    assert_eq!(output.len(), 2, "{output:?}");
    for (out, (stream, text)) in output.iter().zip(expected) {
        assert_eq!((out.slot, out.pid, out.stream), (0, pid, stream));
        assert_eq!(out.body, text.as_bytes());
    }

    // A replacement takes the slot of the worker it replaces.
    pool.submit(submission(CRASH, &[(2, "")], TaskOptions::default()))
        .unwrap();
    collect(&pool, &[2], LONG);
    pool.submit(submission(CMD, &[(3, "say:again")], TaskOptions::default()))
        .unwrap();
    let (_, output) = collect_with_output(&pool, &[3], LONG);
    assert_eq!(output[0].slot, 0);
    assert_ne!(output[0].pid, pid);
}

#[test]
fn a_worker_that_retires_itself_loses_nothing() {
    let pool = Pool::with_workers(1);
    let first = pool.worker_pids()[0];
    let mut tasks = vec![(1, "retire".to_string())];
    tasks.extend((2..=20).map(|i| (i, format!("x{i}"))));
    pool.submit(submission(ECHO, &tasks, TaskOptions::default()))
        .unwrap();
    let got = collect(&pool, &ids(1..21), LONG);
    for (id, body) in &tasks {
        assert_eq!(done_body(&got[id]), body.as_bytes());
    }
    assert!(eventually(LONG, || {
        let pids = pool.worker_pids();
        pids.len() == 1 && pids[0] != first
    }));
}

fn memory_config(limit_mb: u64) -> EngineConfig {
    let mut cfg = config(1);
    cfg.max_memory = Some(limit_mb << 20);
    cfg
}

#[test]
fn a_task_over_max_memory_is_killed_and_blamed() {
    let pool = Pool::start(memory_config(100));
    let first = pool.worker_pids()[0];
    let opts = TaskOptions {
        timeout: None,
        retries: 1,
    };
    let start = Instant::now();
    pool.submit(submission(
        CMD,
        &[(1, "hog:300:5000"), (2, "echo:fine")],
        opts,
    ))
    .unwrap();
    let got = collect(&pool, &[1, 2], LONG);
    // Killed at the first check over the limit, twice (one retry), well
    // before the five seconds the task would have taken.
    assert!(
        start.elapsed() < Duration::from_secs(4),
        "{:?}",
        start.elapsed()
    );
    match got[&1].outcome {
        Outcome::OverMemory { pid, rss, limit } => {
            assert_eq!(limit, 100 << 20);
            assert!(rss > limit);
            assert_ne!(pid, first, "the retry ran on the replacement");
        }
        ref other => panic!("expected OverMemory, got {other:?}"),
    }
    assert_eq!(done_body(&got[&2]), b"fine");
}

#[test]
fn an_idle_worker_over_max_memory_is_replaced_without_failing_anything() {
    let pool = Pool::start(memory_config(100));
    let first = pool.worker_pids()[0];
    pool.submit(submission(
        CMD,
        &[(1, "leak-later:200")],
        TaskOptions::default(),
    ))
    .unwrap();
    assert_eq!(done_body(&collect(&pool, &[1], LONG)[&1]), b"leaking");
    assert!(eventually(LONG, || {
        let pids = pool.worker_pids();
        pids.len() == 1 && pids[0] != first
    }));
    pool.submit(submission(PID, &[(2, "")], TaskOptions::default()))
        .unwrap();
    assert_ne!(pid_of(&collect(&pool, &[2], LONG)[&2]), first);
}

#[test]
fn cancel_stops_a_running_task_and_requeues_the_rest() {
    let pool = Pool::with_workers(1);
    let first = pool.worker_pids()[0];
    pool.submit(submission(
        SLEEP,
        &[(1, "10000"), (2, "10"), (3, "10")],
        TaskOptions::default(),
    ))
    .unwrap();
    assert!(eventually(LONG, || pool.worker_pids() == vec![first]));
    std::thread::sleep(Duration::from_millis(300)); // task 1 is running
    let start = Instant::now();
    pool.cancel(vec![1], true);
    let got = collect(&pool, &[1, 2, 3], LONG);
    assert!(
        start.elapsed() < Duration::from_secs(3),
        "{:?}",
        start.elapsed()
    );
    assert_eq!(got[&1].outcome, Outcome::Cancelled);
    assert_eq!(done_body(&got[&2]), b"10");
    assert_eq!(done_body(&got[&3]), b"10");
    assert_ne!(pool.worker_pids(), vec![first], "its worker was replaced");
}

#[test]
fn cancel_without_stop_running_leaves_a_running_task_alone() {
    let pool = Pool::with_workers(1);
    pool.submit(submission(SLEEP, &[(1, "300")], TaskOptions::default()))
        .unwrap();
    std::thread::sleep(Duration::from_millis(100));
    pool.cancel(vec![1], false);
    assert_eq!(done_body(&collect(&pool, &[1], LONG)[&1]), b"300");
}

#[test]
fn completions_say_where_and_when_each_task_ran() {
    let pool = Pool::with_workers(2);
    let pids = pool.worker_pids();
    let before = monotonic_ns();
    let tasks: Vec<(u64, &str)> = (1..=20).map(|i| (i, "5")).collect();
    pool.submit(submission(SLEEP, &tasks, TaskOptions::default()))
        .unwrap();
    let got = collect(&pool, &ids(1..21), LONG);
    let after = monotonic_ns();
    let mut slots = HashSet::new();
    for c in got.values() {
        let run = c.run.expect("a worker answered");
        slots.insert(run.slot);
        assert!(pids.contains(&run.pid), "{run:?}");
        assert!(c.duration_ns >= 5_000_000);
        assert!(run.timing.start_ns >= before, "{run:?}");
        assert!(run.timing.start_ns + c.duration_ns <= after, "{run:?}");
    }
    assert_eq!(slots, HashSet::from([0, 1]));

    // A task no worker answered for has no run; the dead worker stays in
    // the records, ended, and its replacement has its slot.
    pool.submit(submission(CMD, &[(21, "pid")], TaskOptions::default()))
        .unwrap();
    let answered_pid = pid_of(&collect(&pool, &[21], LONG)[&21]);
    pool.submit(submission(CRASH, &[(22, "")], TaskOptions::default()))
        .unwrap();
    let lost = &collect(&pool, &[22], LONG)[&22];
    assert!(matches!(lost.outcome, Outcome::Lost(_)));
    assert_eq!(lost.run, None);
    assert!(eventually(LONG, || pool.workers().len() == 3));
    let records = pool.workers();
    let dead = records.iter().find(|r| r.ended_ns.is_some()).unwrap();
    let newest = records.last().unwrap();
    assert_eq!(newest.slot, dead.slot);
    assert!(pids.contains(&dead.pid));
    let answered = records.iter().find(|r| r.pid == answered_pid).unwrap();
    assert!(
        answered.cpu_ns > 0,
        "CPU time comes with answers: {answered:?}"
    );
}

#[test]
fn max_tasks_per_child_recycles_workers() {
    let mut cfg = config(1);
    cfg.max_tasks_per_child = Some(2);
    let pool = Pool::start(cfg);
    let tasks: Vec<(u64, &str)> = (1..=10).map(|i| (i, "")).collect();
    pool.submit(submission(PID, &tasks, TaskOptions::default()))
        .unwrap();
    let got = collect(&pool, &ids(1..11), LONG);
    let mut per_pid: HashMap<u32, usize> = HashMap::new();
    for c in got.values() {
        *per_pid.entry(pid_of(c)).or_default() += 1;
    }
    assert!(per_pid.len() > 1, "{per_pid:?}");
    assert!(
        per_pid.values().all(|&n| n <= 2),
        "a worker ran more than 2 tasks: {per_pid:?}"
    );
    assert!(per_pid.len() >= 5, "{per_pid:?}");
    // Retired workers exit; the pool keeps one live worker.
    assert!(
        eventually(Duration::from_secs(5), || {
            per_pid.keys().filter(|&&p| process_exists(p)).count() <= 1
        }),
        "retired workers still alive"
    );
}

#[test]
fn max_tasks_per_child_with_two_workers_and_many_tasks() {
    let mut cfg = config(2);
    cfg.max_tasks_per_child = Some(3);
    let pool = Pool::start(cfg);
    let tasks: Vec<(u64, &str)> = (1..=60).map(|i| (i, "")).collect();
    pool.submit(submission(PID, &tasks, TaskOptions::default()))
        .unwrap();
    let got = collect(&pool, &ids(1..61), LONG);
    let mut per_pid: HashMap<u32, usize> = HashMap::new();
    for c in got.values() {
        *per_pid.entry(pid_of(c)).or_default() += 1;
    }
    assert!(per_pid.values().all(|&n| n <= 3), "{per_pid:?}");
    assert!(per_pid.len() >= 20, "{per_pid:?}");
}

#[test]
fn initializer_failure_breaks_the_pool() {
    let mut cfg = config(2);
    cfg.init = b"fail-init".to_vec().into();
    let pool = Pool::start(cfg);
    let tasks: Vec<(u64, &str)> = (1..=5).map(|i| (i, "x")).collect();
    pool.submit(submission(ECHO, &tasks, TaskOptions::default()))
        .unwrap();
    let got = collect(&pool, &ids(1..6), LONG);
    for c in got.values() {
        assert_eq!(
            c.outcome,
            Outcome::Broken(BrokenPool::InitializerFailed(
                b"initializer raised".to_vec()
            )),
            "{c:?}"
        );
    }
    // Later submissions are broken at once, too.
    pool.submit(submission(ECHO, &[(6, "y")], TaskOptions::default()))
        .unwrap();
    let got = collect(&pool, &[6], LONG);
    assert!(matches!(
        got[&6].outcome,
        Outcome::Broken(BrokenPool::InitializerFailed(_))
    ));
    // A broken pool still closes cleanly.
    pool.close();
    expect_finished(&pool, Duration::from_secs(5));
    assert!(pool.join(Some(Duration::from_secs(5))));
}

/// Starts a pool whose workers all exit with code 3 before saying Ready (at
/// once, or 300 ms late with `exit-later`) and submits tasks 1..=3 to it;
/// returns their completions.
fn run_on_workers_that_never_start(init: &[u8]) -> (Pool, HashMap<u64, Completion>) {
    let mut cfg = config(2);
    cfg.init = init.to_vec().into();
    let pool = Pool::start(cfg);
    let tasks: Vec<(u64, &str)> = (1..=3).map(|i| (i, "x")).collect();
    pool.submit(submission(ECHO, &tasks, TaskOptions::default()))
        .unwrap();
    let got = collect(&pool, &ids(1..4), LONG);
    (pool, got)
}

#[test]
fn workers_that_die_before_ready_break_the_pool() {
    let (pool, got) = run_on_workers_that_never_start(b"exit-now");
    // A task held by a worker that died before Ready is not charged with the
    // death (see the test below); the pool ends up broken with the workers'
    // exit status.
    let mut broken = 0;
    for c in got.values() {
        match &c.outcome {
            Outcome::Broken(BrokenPool::WorkersCannotStart(exit)) => {
                assert_eq!((exit.code, exit.signal), (Some(3), None), "{exit:?}");
                broken += 1;
            }
            Outcome::Lost(exit) => assert_eq!(exit.code, Some(3), "{exit:?}"),
            other => panic!("unexpected outcome {other:?}"),
        }
    }
    assert!(broken >= 1, "{got:?}");
    pool.submit(submission(ECHO, &[(4, "y")], TaskOptions::default()))
        .unwrap();
    let late = collect(&pool, &[4], LONG);
    assert!(
        matches!(
            late[&4].outcome,
            Outcome::Broken(BrokenPool::WorkersCannotStart(_))
        ),
        "{late:?}"
    );
    pool.close();
    expect_finished(&pool, Duration::from_secs(5));
    assert!(pool.join(Some(Duration::from_secs(5))));
}

#[test]
fn workers_that_die_before_ready_never_blame_a_task() {
    // The workers die 300 ms after start, holding tasks 1 and 2.
    let (_pool, got) = run_on_workers_that_never_start(b"exit-later");
    for c in got.values() {
        assert!(
            matches!(
                c.outcome,
                Outcome::Broken(BrokenPool::WorkersCannotStart(_))
            ),
            "task {} never ran, yet ended as {:?}",
            c.task,
            c.outcome
        );
    }
}

#[test]
fn crashing_task_with_retries_does_not_break_a_batching_pool() {
    // The worker sends Ready together with the replies of the rest of its
    // first batch. A fresh worker usually finds Init, Func and Task in that
    // one batch, so a task that kills it takes the unsent Ready along.
    let dir = scratch_dir("strict-batch");
    let log = dir.join("attempts");
    let mut cfg = config(1);
    cfg.init = b"strict-batch".to_vec().into();
    command_of(&mut cfg)
        .env
        .push((DELAY_ENV.to_string(), "100".to_string()));
    let pool = Pool::start(cfg);
    let opts = TaskOptions {
        timeout: None,
        retries: 2,
    };
    let args = format!("crashlog:{}", log.display());
    pool.submit(submission(CMD, &[(1, args.as_str())], opts))
        .unwrap();
    let got = collect(&pool, &[1], LONG);
    let attempts = std::fs::read_to_string(&log)
        .unwrap_or_default()
        .lines()
        .count();
    assert!(
        matches!(got[&1].outcome, Outcome::Lost(_)),
        "{:?} after {attempts} attempts",
        got[&1]
    );
    assert_eq!(attempts, 3);
    // One bad task must not break the pool for everyone else.
    pool.submit(submission(ECHO, &[(2, "ok")], TaskOptions::default()))
        .unwrap();
    let got = collect(&pool, &[2], LONG);
    assert_eq!(done_body(&got[&2]), b"ok");
}

#[test]
fn strict_batching_workers_run_tasks() {
    let mut cfg = config(2);
    cfg.init = b"strict-batch".to_vec().into();
    let pool = Pool::start(cfg);
    let tasks: Vec<(u64, String)> = (1..=300).map(|i| (i, i.to_string())).collect();
    pool.submit(submission(ECHO, &tasks, TaskOptions::default()))
        .unwrap();
    let got = collect(&pool, &ids(1..301), LONG);
    for (id, c) in &got {
        assert_eq!(done_body(c), id.to_string().as_bytes());
    }
}

#[test]
fn close_finishes_everything_then_stops() {
    let pool = Pool::with_workers(2);
    let pids = pool.worker_pids();
    let tasks: Vec<(u64, String)> = (1..=200).map(|i| (i, format!("t{i}"))).collect();
    pool.submit(submission(ECHO, &tasks, TaskOptions::default()))
        .unwrap();
    let slow: Vec<(u64, &str)> = (201..=204).map(|i| (i, "50")).collect();
    pool.submit(submission(SLEEP, &slow, TaskOptions::default()))
        .unwrap();
    pool.close();
    assert!(matches!(
        pool.submit(submission(ECHO, &[(999, "late")], TaskOptions::default())),
        Err(CoreError::Closed)
    ));
    assert!(matches!(
        pool.register_function(77, b"echo".to_vec()),
        Err(CoreError::Closed)
    ));
    let got = collect(&pool, &ids(1..205), LONG);
    for (id, p) in &tasks {
        assert_eq!(done_body(&got[id]), p.as_bytes());
    }
    for id in 201..=204 {
        assert_eq!(done_body(&got[&id]), b"50");
    }
    expect_finished(&pool, Duration::from_secs(5));
    // Finished stays finished.
    assert_eq!(
        pool.next_completions(Some(Duration::from_millis(10))),
        Next::Finished
    );
    assert!(pool.join(Some(Duration::from_secs(5))));
    assert!(pool.worker_pids().is_empty(), "{:?}", pool.worker_pids());
    for pid in pids {
        assert!(!process_exists(pid), "worker {pid} still exists after join");
    }
    // close() twice and terminate() after close are harmless.
    pool.close();
    pool.terminate();
    assert!(pool.join(Some(Duration::from_secs(1))));
}

#[test]
fn close_while_a_crashed_task_waits_for_its_retry() {
    let dir = scratch_dir("close-retry");
    let pool = Pool::with_workers(1);
    let opts = TaskOptions {
        timeout: None,
        retries: 1,
    };
    let args = format!("crash-once:{}", dir.join("marker").display());
    pool.submit(submission(CMD, &[(1, args.as_str())], opts))
        .unwrap();
    pool.close();
    let got = collect(&pool, &[1], LONG);
    assert_eq!(done_body(&got[&1]), b"survived");
    expect_finished(&pool, Duration::from_secs(5));
    assert!(pool.join(Some(Duration::from_secs(5))));
}

#[test]
fn close_with_nothing_to_do() {
    let pool = Pool::with_workers(2);
    pool.close();
    expect_finished(&pool, Duration::from_secs(5));
    assert!(pool.join(Some(Duration::from_secs(5))));
}

#[test]
fn terminate_cancels_running_tasks_and_kills_workers() {
    let pool = Pool::with_workers(2);
    let pids = pool.worker_pids();
    assert_eq!(pids.len(), 2);
    let tasks: Vec<(u64, &str)> = (1..=6).map(|i| (i, "5000")).collect();
    pool.submit(submission(SLEEP, &tasks, TaskOptions::default()))
        .unwrap();
    // Let both workers start a sleep.
    std::thread::sleep(Duration::from_millis(300));
    let start = Instant::now();
    pool.terminate();
    let got = collect(&pool, &ids(1..7), Duration::from_secs(3));
    for c in got.values() {
        assert_eq!(c.outcome, Outcome::Cancelled, "{c:?}");
    }
    expect_finished(&pool, Duration::from_secs(3));
    assert!(pool.join(Some(Duration::from_secs(3))));
    assert!(
        eventually(Duration::from_secs(2), || pids
            .iter()
            .all(|&p| !process_exists(p))),
        "workers {pids:?} still exist"
    );
    assert!(
        start.elapsed() < Duration::from_secs(3),
        "{:?}",
        start.elapsed()
    );
    assert!(matches!(
        pool.submit(submission(ECHO, &[(7, "x")], TaskOptions::default())),
        Err(CoreError::Closed)
    ));
}

#[test]
fn dropping_an_engine_kills_its_workers() {
    let engine = Engine::start(config(2)).unwrap();
    engine.register_function(SLEEP, b"sleep".to_vec()).unwrap();
    engine
        .submit(submission(
            SLEEP,
            &[(1, "5000"), (2, "5000")],
            TaskOptions::default(),
        ))
        .unwrap();
    let pids = engine.worker_pids();
    std::thread::sleep(Duration::from_millis(100));
    let start = Instant::now();
    drop(engine);
    assert!(start.elapsed() < Duration::from_secs(3));
    assert!(pids.iter().all(|&p| !process_exists(p)), "{pids:?}");
}

#[test]
fn start_with_missing_program_fails() {
    let mut cfg = config(2);
    command_of(&mut cfg).program = PathBuf::from("/nonexistent/shoal/worker-binary");
    match Engine::start(cfg) {
        Err(CoreError::Spawn { program, source }) => {
            assert!(program.contains("worker-binary"), "{program}");
            assert_eq!(source.kind(), std::io::ErrorKind::NotFound);
        }
        Err(other) => panic!("expected Spawn error, got {other:?}"),
        Ok(_) => panic!("engine started with a missing program"),
    }
}

#[test]
fn bad_configs_are_refused() {
    let mut cfg = config(0);
    assert!(matches!(
        Engine::start(cfg.clone()),
        Err(CoreError::Config(_))
    ));
    cfg.workers = 1;
    cfg.max_tasks_per_child = Some(0);
    assert!(matches!(Engine::start(cfg), Err(CoreError::Config(_))));
}

#[test]
fn large_payloads_round_trip() {
    let pool = Pool::with_workers(2);
    let big: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
    let tasks = vec![(1u64, big.clone()), (2, big.clone()), (3, Vec::new())];
    pool.submit(submission(ECHO, &tasks, TaskOptions::default()))
        .unwrap();
    let got = collect(&pool, &[1, 2, 3], LONG);
    assert_eq!(done_body(&got[&1]), &big[..]);
    assert_eq!(done_body(&got[&2]), &big[..]);
    assert_eq!(done_body(&got[&3]), b"");
}

#[test]
fn submissions_from_many_threads() {
    let pool = Pool::with_workers(2);
    std::thread::scope(|s| {
        for t in 0..4u64 {
            let pool = &pool;
            s.spawn(move || {
                for chunk in 0..10u64 {
                    let base = t * 1000 + chunk * 10 + 1;
                    let tasks: Vec<(u64, String)> =
                        (base..base + 10).map(|i| (i, i.to_string())).collect();
                    pool.submit(submission(ECHO, &tasks, TaskOptions::default()))
                        .unwrap();
                }
            });
        }
    });
    let expected: Vec<u64> = (0..4u64)
        .flat_map(|t| (t * 1000 + 1)..=(t * 1000 + 100))
        .collect();
    let got = collect(&pool, &expected, LONG);
    for (id, c) in &got {
        assert_eq!(done_body(c), id.to_string().as_bytes());
    }
}

// ---------------------------------------------------------------------------
// Thread workers: the same loop on threads of this test process.
// ---------------------------------------------------------------------------

/// Counts of the thread workers a launcher started and whose loops ended.
#[derive(Default)]
struct ThreadCounts {
    started: AtomicUsize,
    ended: AtomicUsize,
}

/// A config whose workers are threads running [`worker_loop`]; with
/// `start_fails`, each thread drops its ends at once (a worker that dies
/// before it is ready).
fn thread_config(workers: usize, counts: &Arc<ThreadCounts>, start_fails: bool) -> EngineConfig {
    let counts = counts.clone();
    let launcher: ThreadLauncher = Arc::new(move |ends: WorkerEnds| {
        counts.started.fetch_add(1, Ordering::SeqCst);
        let counts = counts.clone();
        std::thread::Builder::new()
            .name(format!("test-thread-worker-{}", ends.slot))
            .spawn(move || {
                if !start_fails {
                    let link = WorkerLink::from_fds(ends.sock, ends.status).expect("link");
                    worker_loop(&link);
                }
                counts.ended.fetch_add(1, Ordering::SeqCst);
            })?;
        Ok(())
    });
    EngineConfig {
        workers,
        launch: Launch::Thread(launcher),
        init: b"init".to_vec().into(),
        max_tasks_per_child: None,
        max_memory: None,
    }
}

#[test]
fn thread_workers_run_tasks_in_this_process() {
    let counts = Arc::new(ThreadCounts::default());
    let pool = Pool::start(thread_config(2, &counts, false));
    let me = std::process::id();
    assert_eq!(pool.worker_pids(), vec![me, me]);
    let tasks: Vec<(u64, String)> = (1..=500).map(|i| (i, format!("p{i}"))).collect();
    pool.submit(submission(ECHO, &tasks, TaskOptions::default()))
        .unwrap();
    pool.submit(submission(PID, &[(501, "")], TaskOptions::default()))
        .unwrap();
    let got = collect(&pool, &ids(1..502), LONG);
    for (id, payload) in &tasks {
        assert_eq!(done_body(&got[id]), payload.as_bytes());
    }
    assert_eq!(pid_of(&got[&501]), me);
    assert_eq!(counts.started.load(Ordering::SeqCst), 2);
}

#[test]
fn a_timed_out_thread_is_abandoned_and_replaced() {
    let counts = Arc::new(ThreadCounts::default());
    let pool = Pool::start(thread_config(1, &counts, false));
    let timed = TaskOptions {
        timeout: Some(Duration::from_millis(100)),
        retries: 0,
    };
    let start = Instant::now();
    pool.submit(submission(SLEEP, &[(1, "1500")], timed))
        .unwrap();
    pool.submit(submission(ECHO, &[(2, "after")], TaskOptions::default()))
        .unwrap();
    let got = collect(&pool, &[1, 2], LONG);
    assert!(
        matches!(got[&1].outcome, Outcome::TimedOut { pid, .. } if pid == std::process::id()),
        "{:?}",
        got[&1]
    );
    // The echo waited behind the sleep and ran on the replacement thread,
    // long before the abandoned sleep could end.
    assert_eq!(done_body(&got[&2]), b"after");
    assert!(
        start.elapsed() < Duration::from_millis(1200),
        "{:?}",
        start.elapsed()
    );
    assert_eq!(counts.started.load(Ordering::SeqCst), 2);
    // The abandoned thread ends on its own once its sleep returns.
    assert!(eventually(Duration::from_secs(5), || counts
        .ended
        .load(Ordering::SeqCst)
        >= 1));
}

#[test]
fn cancel_abandons_a_running_thread_and_the_rest_go_on() {
    let counts = Arc::new(ThreadCounts::default());
    let pool = Pool::start(thread_config(1, &counts, false));
    pool.submit(submission(SLEEP, &[(1, "3000")], TaskOptions::default()))
        .unwrap();
    pool.submit(submission(ECHO, &[(2, "next")], TaskOptions::default()))
        .unwrap();
    assert!(eventually(Duration::from_secs(2), || counts
        .started
        .load(Ordering::SeqCst)
        == 1));
    std::thread::sleep(Duration::from_millis(100));
    pool.cancel(vec![1], true);
    let got = collect(&pool, &[1, 2], Duration::from_secs(2));
    assert_eq!(got[&1].outcome, Outcome::Cancelled);
    assert_eq!(done_body(&got[&2]), b"next");
}

#[test]
fn terminate_does_not_wait_for_busy_threads() {
    let counts = Arc::new(ThreadCounts::default());
    let pool = Pool::start(thread_config(2, &counts, false));
    let tasks: Vec<(u64, &str)> = (1..=4).map(|i| (i, "3000")).collect();
    pool.submit(submission(SLEEP, &tasks, TaskOptions::default()))
        .unwrap();
    std::thread::sleep(Duration::from_millis(200));
    let start = Instant::now();
    pool.terminate();
    let got = collect(&pool, &ids(1..5), Duration::from_secs(2));
    assert!(got.values().all(|c| c.outcome == Outcome::Cancelled));
    assert!(pool.join(Some(Duration::from_secs(1))));
    assert!(
        start.elapsed() < Duration::from_secs(1),
        "{:?}",
        start.elapsed()
    );
}

#[test]
fn close_lets_thread_workers_finish_and_end() {
    let counts = Arc::new(ThreadCounts::default());
    let pool = Pool::start(thread_config(3, &counts, false));
    let tasks: Vec<(u64, &str)> = (1..=9).map(|i| (i, "20")).collect();
    pool.submit(submission(SLEEP, &tasks, TaskOptions::default()))
        .unwrap();
    pool.close();
    collect(&pool, &ids(1..10), LONG);
    expect_finished(&pool, Duration::from_secs(5));
    assert!(pool.join(Some(Duration::from_secs(5))));
    assert!(eventually(Duration::from_secs(2), || counts
        .ended
        .load(Ordering::SeqCst)
        == 3));
}

#[test]
fn threads_that_end_before_ready_break_the_pool() {
    let counts = Arc::new(ThreadCounts::default());
    let pool = Pool::start(thread_config(1, &counts, true));
    pool.submit(submission(ECHO, &[(1, "x")], TaskOptions::default()))
        .unwrap();
    let got = collect(&pool, &[1], LONG);
    assert!(
        matches!(
            got[&1].outcome,
            Outcome::Broken(BrokenPool::WorkersCannotStart(_))
        ),
        "{:?}",
        got[&1]
    );
    assert_eq!(counts.started.load(Ordering::SeqCst), 3);
}

#[test]
fn a_failing_launcher_fails_the_start_and_max_memory_is_refused() {
    let launcher: ThreadLauncher =
        Arc::new(|_ends: WorkerEnds| Err(std::io::Error::other("no threads today")));
    let mut cfg = EngineConfig {
        workers: 1,
        launch: Launch::Thread(launcher),
        init: Payload::default(),
        max_tasks_per_child: None,
        max_memory: None,
    };
    match Engine::start(cfg.clone()) {
        Err(e) => assert!(e.to_string().contains("worker thread"), "{e}"),
        Ok(_) => panic!("started without a worker"),
    }
    cfg.max_memory = Some(1 << 30);
    assert!(matches!(Engine::start(cfg), Err(CoreError::Config(_))));
}

// ---------------------------------------------------------------------------
// Hangs: every one of these waited forever (or for a child's lifetime).
// ---------------------------------------------------------------------------

/// Kills the process whose pid is in `path`, if it is there.
fn kill_pid_in(path: &Path) {
    if let Ok(text) = std::fs::read_to_string(path) {
        if let Ok(pid) = text.trim().parse::<i32>() {
            // SAFETY: SIGKILL to a process this test made.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
    }
}

#[test]
fn a_timed_out_task_whose_child_holds_the_socket_fails_at_its_timeout() {
    let dir = scratch_dir("fork-timeout");
    let pid_file = dir.join("grandchild");
    let pool = Pool::with_workers(1);
    let timed = TaskOptions {
        timeout: Some(Duration::from_millis(300)),
        retries: 0,
    };
    let task = format!("fork-sleep:30000:{}", pid_file.display());
    let started = Instant::now();
    pool.submit(submission(CMD, &[(1, task)], timed)).unwrap();
    // The worker is killed at 300 ms; the child it forked still holds the
    // socket for 30 s.
    let got = collect(&pool, &[1], Duration::from_secs(5));
    kill_pid_in(&pid_file);
    assert!(
        matches!(got[&1].outcome, Outcome::TimedOut { started: true, .. }),
        "{:?}",
        got[&1].outcome
    );
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    // A new worker took its place and runs tasks.
    pool.submit(submission(ECHO, &[(2, "after")], TaskOptions::default()))
        .unwrap();
    assert_eq!(done_body(&collect(&pool, &[2], LONG)[&2]), b"after");
}

#[test]
fn a_worker_that_crashes_while_its_child_holds_the_socket_is_noticed() {
    let dir = scratch_dir("fork-crash");
    let pid_file = dir.join("grandchild");
    let pool = Pool::with_workers(1);
    let fork = format!("fork:30000:{}", pid_file.display());
    // The first task leaves a forked child behind, then answers; the next
    // one kills the worker.
    pool.submit(submission(CMD, &[(1, fork)], TaskOptions::default()))
        .unwrap();
    collect(&pool, &[1], LONG);
    pool.submit(submission(CRASH, &[(2, "")], TaskOptions::default()))
        .unwrap();
    let got = collect(&pool, &[2], Duration::from_secs(5));
    kill_pid_in(&pid_file);
    assert!(
        matches!(got[&2].outcome, Outcome::Lost(_)),
        "{:?}",
        got[&2].outcome
    );
}

#[test]
fn a_timeout_covers_an_initializer_that_never_returns() {
    let mut cfg = config(1);
    cfg.init = b"hang".to_vec().into();
    let pool = Pool::start(cfg);
    let timed = TaskOptions {
        timeout: Some(Duration::from_millis(300)),
        retries: 0,
    };
    let started = Instant::now();
    pool.submit(submission(ECHO, &[(1, "x")], timed)).unwrap();
    let got = collect(&pool, &[1], Duration::from_secs(5));
    assert!(
        matches!(got[&1].outcome, Outcome::TimedOut { started: false, .. }),
        "{:?}",
        got[&1].outcome
    );
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
}

#[test]
fn a_timeout_covers_loading_a_function_that_never_loads() {
    let pool = Pool::with_workers(1);
    // The worker is ready and warm before the function arrives.
    pool.submit(submission(ECHO, &[(1, "warm")], TaskOptions::default()))
        .unwrap();
    collect(&pool, &[1], LONG);
    pool.register_function(100, b"hang-load".to_vec()).unwrap();
    let timed = TaskOptions {
        timeout: Some(Duration::from_millis(300)),
        retries: 0,
    };
    pool.submit(submission(100, &[(2, "x")], timed)).unwrap();
    let got = collect(&pool, &[2], Duration::from_secs(5));
    assert!(
        matches!(got[&2].outcome, Outcome::TimedOut { started: false, .. }),
        "{:?}",
        got[&2].outcome
    );
}

#[test]
fn cancel_withdraws_tasks_a_worker_holds_but_has_not_started() {
    let dir = scratch_dir("withdraw");
    let pool = Pool::with_workers(1);
    let pid = pool.worker_pids()[0];
    // Quick tasks first, so the worker's window holds more than one task.
    let quick: Vec<(u64, &str)> = (1..=50).map(|i| (i, "x")).collect();
    pool.submit(submission(ECHO, &quick, TaskOptions::default()))
        .unwrap();
    collect(&pool, &ids(1..51), LONG);
    let marks: Vec<(u64, String)> = (52..=60)
        .map(|i| (i, format!("touch:{}", dir.join(i.to_string()).display())))
        .collect();
    let mut tasks = vec![(51, "sleep:600".to_string())];
    tasks.extend(marks.iter().cloned());
    pool.submit(submission(CMD, &tasks, TaskOptions::default()))
        .unwrap();
    // Task 51 runs; the others wait behind it at the worker.
    std::thread::sleep(Duration::from_millis(150));
    pool.cancel(ids(52..61), true);
    let got = collect(&pool, &ids(51..61), LONG);
    assert_eq!(done_body(&got[&51]), b"600");
    for id in 52..=60 {
        assert_eq!(got[&id].outcome, Outcome::Cancelled, "task {id}");
    }
    // None of them ran, and the worker was not killed for them.
    pool.submit(submission(PID, &[(61, "")], TaskOptions::default()))
        .unwrap();
    assert_eq!(pid_of(&collect(&pool, &[61], LONG)[&61]), pid);
    for (id, _) in &marks {
        assert!(
            !dir.join(id.to_string()).exists(),
            "task {id} ran after its cancel"
        );
    }
}

#[test]
fn an_idle_worker_takes_back_a_task_queued_behind_a_long_one() {
    let dir = scratch_dir("take-back");
    let pool = Pool::with_workers(2);
    // Short tasks first: once durations are known, each worker keeps one
    // task queued behind the one it runs.
    let warm: Vec<(u64, &str)> = (1..=20).map(|i| (i, "sleep:5")).collect();
    pool.submit(submission(CMD, &warm, TaskOptions::default()))
        .unwrap();
    collect(&pool, &ids(1..21), LONG);
    let log = |id: u64| dir.join(id.to_string());
    let mut tasks = vec![(21, format!("log-sleep:1500:{}", log(21).display()))];
    tasks.extend((22..=27).map(|i| (i, format!("log-sleep:20:{}", log(i).display()))));
    pool.submit(submission(CMD, &tasks, TaskOptions::default()))
        .unwrap();
    // One short task was queued behind the long one; the other worker,
    // done with its share, takes it back: no short task waits 1.5 s.
    collect(&pool, &ids(22..28), Duration::from_millis(1200));
    collect(&pool, &[21], LONG);
    for id in 21..=27 {
        let runs = std::fs::read_to_string(log(id)).unwrap();
        assert_eq!(runs.lines().count(), 1, "task {id} ran {runs:?}");
    }
}

//! The checkpoint store: results of finished tasks in a SQLite file, so that
//! a re-run computes only what is missing.
//!
//! The file is SQLite in WAL mode (on a network filesystem, with a rollback
//! journal instead: see [`crate::store_file`]), made readable and writable
//! by its owner alone, and marked as shoal's by the header's
//! `application_id` and versioned by its `user_version`, so a foreign file, a
//! newer format or a damaged file is refused with an error naming the path.
//!
//! Writes go to an in-memory buffer that a background thread commits at
//! least every [`COMMIT_EVERY`] (sooner when the buffer is large or `flush`
//! asks): the hot path of a map only appends to a buffer, and a killed
//! process loses at most the last fraction of a second of results. Rows not
//! yet committed are visible to this process's lookups. Several processes
//! may write one file at once: each commit holds SQLite's write lock briefly
//! and the others wait for it (`busy_timeout`).

use std::collections::hash_map::Entry;
use std::collections::HashMap;
use std::mem::ManuallyDrop;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rusqlite::{params, Connection, ErrorCode, OpenFlags, OptionalExtension, TransactionBehavior};

use crate::digest::Key;
use crate::error::{CoreError, Result, StoreError};
use crate::fork::Owner;
pub use crate::store_file::Journal;

/// "SHOL" in the SQLite header: this file is a shoal checkpoint store.
const APPLICATION_ID: i32 = 0x5348_4f4c;
/// The store format this build writes and reads. 2: a row holds the
/// results of `tasks` tasks (a map's chunk).
pub const FORMAT_VERSION: i32 = 2;
/// Longest time a stored result waits in memory before it is committed.
pub const COMMIT_EVERY: Duration = Duration::from_millis(250);
/// A buffer this large is committed at once.
const COMMIT_ROWS: usize = 20_000;
const COMMIT_BYTES: usize = 64 << 20;
/// Page size of a new store.
const PAGE_SIZE: i64 = 16 << 10;
/// Page cache per connection, in KiB.
const CACHE_KIB: i64 = 64 << 10;
/// How long a write waits for another process's commit to finish.
const BUSY_TIMEOUT: Duration = Duration::from_secs(60);

const SCHEMA: &str = "
    CREATE TABLE functions (
        id INTEGER PRIMARY KEY,
        digest BLOB NOT NULL UNIQUE,
        module TEXT NOT NULL,
        qualname TEXT NOT NULL,
        created INTEGER NOT NULL
    );
    CREATE TABLE results (
        id INTEGER PRIMARY KEY,
        key BLOB NOT NULL,
        function INTEGER NOT NULL,
        created INTEGER NOT NULL,
        tasks INTEGER NOT NULL,
        value BLOB NOT NULL
    );
";

/// A result's row id: the key's first 8 bytes. SQLite finds integer ids
/// several times faster than blob keys; the full key is stored beside and
/// checked, so two keys sharing an id (about 1 in 10^12 for a million
/// tasks) cost a recomputation, never a wrong result.
fn row_id(key: &Key) -> i64 {
    i64::from_le_bytes(key[..8].try_into().expect("keys are longer than 8 bytes"))
}

struct Row {
    /// Who put it (see [`Store::new_writer`]): told if it is lost.
    writer: u64,
    function: i64,
    created: i64,
    /// How many tasks' results `value` holds.
    tasks: i64,
    value: Vec<u8>,
}

#[derive(Default)]
struct Buffer {
    pending: HashMap<Key, Row>,
    pending_bytes: usize,
    /// When the oldest pending row arrived.
    since: Option<Instant>,
    /// The batch being written now, still visible to lookups.
    committing: Arc<HashMap<Key, Row>>,
    /// Flush generations asked for and written.
    requested: u64,
    written: u64,
    closing: bool,
    /// The writer thread has ended.
    stopped: bool,
    /// Why a batch could not be written, per writer whose rows it held;
    /// reported once, to that writer, by its next `put` or `flush`.
    lost: HashMap<u64, String>,
    /// Why the writer thread ended before it was closed: every later call
    /// fails with it.
    failure: Option<String>,
    /// The last writer id handed out.
    writers: u64,
}

#[derive(Default)]
struct Shared {
    buffer: Mutex<Buffer>,
    /// Wakes the writer: rows arrived, a flush was asked for, or closing.
    wake: Condvar,
    /// Wakes callers of `flush`: a batch was written.
    written: Condvar,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Buffer> {
        // A panic elsewhere must not turn every later call into a panic.
        self.buffer.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// What `info` reports about the functions whose results are stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FunctionInfo {
    pub module: String,
    pub qualname: String,
    /// Distinct versions (code, closure) of the function.
    pub versions: u64,
    pub tasks: u64,
    /// Bytes of pickled results.
    pub bytes: u64,
    /// Unix seconds of the first and last stored result.
    pub first: Option<i64>,
    pub last: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreInfo {
    pub format_version: i32,
    pub tasks: u64,
    /// The database file and its write-ahead log.
    pub bytes_on_disk: u64,
    pub functions: Vec<FunctionInfo>,
}

/// What `clear` removed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cleared {
    pub functions: u64,
    pub tasks: u64,
}

/// An open checkpoint store.
///
/// In a child made by `fork()` the copy of a store is left alone: its
/// writer thread is not there, and SQLite's state must not be touched, so
/// closing or dropping it does nothing and using it is an error.
pub struct Store {
    owner: Owner,
    path: PathBuf,
    journal: Journal,
    /// Lookups, function registration, info and clear. (The `ManuallyDrop`
    /// fields are dropped only in the process that opened the store.)
    conn: ManuallyDrop<Mutex<Connection>>,
    shared: ManuallyDrop<Arc<Shared>>,
    writer: ManuallyDrop<Mutex<Option<JoinHandle<()>>>>,
}

impl Store {
    /// Opens the store at `path`, creating it if the file does not exist or
    /// is empty. A new store's file is readable and writable by its owner
    /// alone; a file that another user owns, or that the group or others
    /// may write, is refused (see [`crate::store_file`]).
    pub fn open(path: impl AsRef<Path>) -> Result<Store> {
        Store::open_with(path.as_ref(), true)
    }

    /// Opens the store at `path`, which must be one already: a missing or
    /// empty file is refused, not made a store (for looking at a store).
    pub fn open_existing(path: impl AsRef<Path>) -> Result<Store> {
        Store::open_with(path.as_ref(), false)
    }

    fn open_with(path: &Path, create: bool) -> Result<Store> {
        let path = path.to_path_buf();
        let fail = |source| CoreError::Store {
            path: path.clone(),
            source,
        };
        let journal = crate::store_file::prepare(&path, create).map_err(fail)?;
        let conn = connect(&path, journal).and_then(|c| prepare(&c, journal, create).map(|()| c));
        let conn = conn.map_err(fail)?;
        let writer_conn = connect(&path, journal).map_err(fail)?;
        let shared = Arc::new(Shared::default());
        let writer = {
            let shared = Arc::clone(&shared);
            std::thread::Builder::new()
                .name("shoal-store".into())
                .spawn(move || write_loop(writer_conn, &shared))
                .map_err(|e| CoreError::io("could not start the checkpoint writer thread", e))?
        };
        Ok(Store {
            owner: Owner::here(),
            path,
            journal,
            conn: ManuallyDrop::new(Mutex::new(conn)),
            shared: ManuallyDrop::new(shared),
            writer: ManuallyDrop::new(Mutex::new(Some(writer))),
        })
    }

    /// How this store journals its commits (WAL, or a rollback journal on
    /// a network filesystem).
    pub fn journal(&self) -> Journal {
        self.journal
    }

    fn fail(&self, source: impl Into<StoreError>) -> CoreError {
        CoreError::Store {
            path: self.path.clone(),
            source: source.into(),
        }
    }

    fn conn(&self) -> MutexGuard<'_, Connection> {
        self.conn.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The id of a function (by the digest of its identity), registered on
    /// first use. Results are stored under it so `info` and `clear` can name
    /// them.
    pub fn function_id(&self, digest: &[u8], module: &str, qualname: &str) -> Result<i64> {
        self.owner.check("checkpoint store")?;
        let conn = self.conn();
        let find = |conn: &Connection| {
            conn.prepare_cached("SELECT id FROM functions WHERE digest = ?1")?
                .query_row([digest], |r| r.get(0))
                .optional()
        };
        if let Some(id) = find(&conn).map_err(|e| self.fail(e))? {
            return Ok(id);
        }
        conn.prepare_cached(
            "INSERT OR IGNORE INTO functions (digest, module, qualname, created) \
             VALUES (?1, ?2, ?3, ?4)",
        )
        .and_then(|mut s| s.execute(params![digest, module, qualname, now()]))
        .map_err(|e| self.fail(e))?;
        find(&conn)
            .map_err(|e| self.fail(e))?
            .ok_or_else(|| self.fail(StoreError::Damaged("a function row vanished".into())))
    }

    /// The stored result of each key, `None` where there is none.
    pub fn get_many(&self, keys: &[Key]) -> Result<Vec<Option<Vec<u8>>>> {
        self.owner.check("checkpoint store")?;
        let mut found: Vec<Option<Vec<u8>>> = vec![None; keys.len()];
        let mut missing = Vec::new();
        {
            let buffer = self.shared.lock();
            for (i, key) in keys.iter().enumerate() {
                let row = buffer
                    .pending
                    .get(key)
                    .or_else(|| buffer.committing.get(key));
                match row {
                    Some(row) => found[i] = Some(row.value.clone()),
                    None => missing.push(i),
                }
            }
        }
        if missing.is_empty() {
            return Ok(found);
        }
        // In id order, so the b-tree's pages are visited once, not at random
        // (and a key asked twice comes twice in a row).
        missing.sort_unstable_by_key(|&i| (row_id(&keys[i]), keys[i]));
        let conn = self.conn();
        let mut read = || -> rusqlite::Result<()> {
            // One read transaction for the whole batch: one lock, one snapshot.
            let tx = conn.unchecked_transaction()?;
            {
                let mut stmt = tx.prepare_cached(&lookup_sql())?;
                for group in missing.chunks(ROWS_PER_STATEMENT) {
                    // A short last group repeats its last key: one statement fits all.
                    for p in 0..ROWS_PER_STATEMENT {
                        let i = group[p.min(group.len() - 1)];
                        stmt.raw_bind_parameter(p + 1, row_id(&keys[i]))?;
                    }
                    let mut values = HashMap::with_capacity(group.len());
                    let mut rows = stmt.raw_query();
                    while let Some(row) = rows.next()? {
                        let key: Key = row.get(0)?;
                        values.insert(key, row.get::<_, Vec<u8>>(1)?);
                    }
                    for (n, &i) in group.iter().enumerate() {
                        // Sorted, so a key asked twice comes twice in a row.
                        let again = group.get(n + 1).is_some_and(|&j| keys[j] == keys[i]);
                        found[i] = if again {
                            values.get(&keys[i]).cloned()
                        } else {
                            values.remove(&keys[i])
                        };
                    }
                }
            }
            tx.commit()
        };
        read().map_err(|e| self.fail(e))?;
        Ok(found)
    }

    /// A new writer id: rows put under it that a failed commit loses are
    /// reported to it alone (by its next `put` or `flush`), not to whoever
    /// uses the store next. Writer 0 is everyone else's.
    pub fn new_writer(&self) -> u64 {
        let mut buffer = self.shared.lock();
        buffer.writers += 1;
        buffer.writers
    }

    /// Buffers results for the writer thread, one task's each. A key
    /// already stored keeps its first result. Fails if a commit lost rows
    /// put earlier (by writer 0; reported once).
    pub fn put_many(&self, function: i64, rows: Vec<(Key, Vec<u8>)>) -> Result<()> {
        self.put_rows(
            0,
            function,
            rows.into_iter().map(|(key, value)| (key, 1, value)),
        )
    }

    /// As [`Store::put_many`], for `writer`'s rows of `(key, tasks,
    /// value)`: a value that holds the results of `tasks` tasks (a map's
    /// chunk), counted as such by `info` and `clear`.
    pub fn put_rows(
        &self,
        writer: u64,
        function: i64,
        rows: impl IntoIterator<Item = (Key, i64, Vec<u8>)>,
    ) -> Result<()> {
        self.owner.check("checkpoint store")?;
        let created = now();
        let mut buffer = self.shared.lock();
        if let Some(why) = buffer.lost.remove(&writer) {
            return Err(self.fail(StoreError::WriteFailed(why)));
        }
        if let Some(why) = &buffer.failure {
            return Err(self.fail(StoreError::WriteFailed(why.clone())));
        }
        if buffer.closing || buffer.stopped {
            return Err(self.fail(StoreError::Closed));
        }
        let buffer = &mut *buffer;
        let was_empty = buffer.pending.is_empty();
        for (key, tasks, value) in rows {
            if let Entry::Vacant(slot) = buffer.pending.entry(key) {
                buffer.pending_bytes += value.len();
                slot.insert(Row {
                    writer,
                    function,
                    created,
                    tasks,
                    value,
                });
            }
        }
        if was_empty {
            buffer.since = Some(Instant::now());
        }
        if was_empty || buffer.pending.len() >= COMMIT_ROWS || buffer.pending_bytes >= COMMIT_BYTES
        {
            self.shared.wake.notify_one();
        }
        Ok(())
    }

    /// Asks the writer to commit everything buffered so far; returns the
    /// generation to wait for with [`Store::wait_flushed`].
    pub fn start_flush(&self) -> u64 {
        let mut buffer = self.shared.lock();
        buffer.requested += 1;
        self.shared.wake.notify_one();
        buffer.requested
    }

    /// Waits up to `timeout` for flush `generation`: `None` if it is still
    /// being written, else whether `writer`'s rows were all written.
    pub fn wait_flushed(
        &self,
        writer: u64,
        generation: u64,
        timeout: Duration,
    ) -> Option<Result<()>> {
        let buffer = self.shared.lock();
        let (mut buffer, _) = self
            .shared
            .written
            .wait_timeout_while(buffer, timeout, |b| b.written < generation && !b.stopped)
            .unwrap_or_else(|e| e.into_inner());
        if buffer.written < generation && !buffer.stopped {
            return None;
        }
        let why = buffer
            .lost
            .remove(&writer)
            .or_else(|| buffer.failure.clone());
        Some(match why {
            Some(why) => Err(self.fail(StoreError::WriteFailed(why))),
            None => Ok(()),
        })
    }

    /// Commits everything buffered so far and waits for it; fails if rows
    /// writer 0 put were lost.
    pub fn flush(&self) -> Result<()> {
        self.flush_writer(0)
    }

    /// As [`Store::flush`]; fails if rows `writer` put were lost.
    pub fn flush_writer(&self, writer: u64) -> Result<()> {
        let generation = self.start_flush();
        loop {
            if let Some(done) = self.wait_flushed(writer, generation, Duration::from_secs(1)) {
                return done;
            }
        }
    }

    /// What is stored, per function name (all versions together).
    pub fn info(&self) -> Result<StoreInfo> {
        self.owner.check("checkpoint store")?;
        self.flush()?;
        let conn = self.conn();
        let query = || -> rusqlite::Result<Vec<FunctionInfo>> {
            let tx = conn.unchecked_transaction()?;
            let mut per_id: HashMap<i64, (u64, u64, i64, i64)> = HashMap::new();
            {
                let mut stmt = tx.prepare(
                    "SELECT function, TOTAL(tasks), TOTAL(LENGTH(value)), MIN(created), \
                     MAX(created) FROM results GROUP BY function",
                )?;
                let mut rows = stmt.query([])?;
                while let Some(r) = rows.next()? {
                    let (tasks, bytes): (f64, f64) = (r.get(1)?, r.get(2)?);
                    per_id.insert(
                        r.get(0)?,
                        (tasks as u64, bytes as u64, r.get(3)?, r.get(4)?),
                    );
                }
            }
            let mut by_name: Vec<FunctionInfo> = Vec::new();
            let mut stmt =
                tx.prepare("SELECT id, module, qualname FROM functions ORDER BY module, qualname")?;
            let mut rows = stmt.query([])?;
            while let Some(r) = rows.next()? {
                let (module, qualname): (String, String) = (r.get(1)?, r.get(2)?);
                let same = by_name
                    .last()
                    .is_some_and(|f| f.module == module && f.qualname == qualname);
                if !same {
                    by_name.push(FunctionInfo {
                        module,
                        qualname,
                        versions: 0,
                        tasks: 0,
                        bytes: 0,
                        first: None,
                        last: None,
                    });
                }
                let entry = by_name.last_mut().expect("pushed above");
                entry.versions += 1;
                if let Some(&(tasks, bytes, first, last)) = per_id.get(&r.get(0)?) {
                    entry.tasks += tasks;
                    entry.bytes += bytes;
                    entry.first = Some(entry.first.map_or(first, |f| f.min(first)));
                    entry.last = Some(entry.last.map_or(last, |l| l.max(last)));
                }
            }
            Ok(by_name)
        };
        let functions = query().map_err(|e| self.fail(e))?;
        let wal = append_to_name(&self.path, "-wal");
        let bytes_on_disk = [&self.path, &wal]
            .iter()
            .filter_map(|p| std::fs::metadata(p).ok())
            .map(|m| m.len())
            .sum();
        Ok(StoreInfo {
            format_version: FORMAT_VERSION,
            tasks: functions.iter().map(|f| f.tasks).sum(),
            bytes_on_disk,
            functions,
        })
    }

    /// Removes the results of the functions named `function` (`qualname` or
    /// `module.qualname`), or everything; then gives the space back.
    pub fn clear(&self, function: Option<&str>) -> Result<Cleared> {
        self.owner.check("checkpoint store")?;
        self.flush()?;
        let conn = self.conn();
        let run = || -> rusqlite::Result<Cleared> {
            let tx = conn.unchecked_transaction()?;
            // A row may hold many tasks: count them before they go.
            let tasks = |tx: &rusqlite::Transaction, sql: &str, args: &[&str]| {
                tx.query_row(sql, rusqlite::params_from_iter(args), |r| {
                    r.get::<_, f64>(0)
                })
                .map(|n| n as u64)
            };
            let cleared = match function {
                None => {
                    let n = tasks(&tx, "SELECT TOTAL(tasks) FROM results", &[])?;
                    tx.execute("DELETE FROM results", [])?;
                    Cleared {
                        tasks: n,
                        functions: tx.execute("DELETE FROM functions", [])? as u64,
                    }
                }
                Some(name) => {
                    const OF_NAMED: &str = "FROM results WHERE function IN (SELECT id FROM \
                         functions WHERE qualname = ?1 OR module || '.' || qualname = ?1)";
                    let n = tasks(&tx, &format!("SELECT TOTAL(tasks) {OF_NAMED}"), &[name])?;
                    tx.execute(&format!("DELETE {OF_NAMED}"), [name])?;
                    Cleared {
                        tasks: n,
                        functions: tx.execute(
                            "DELETE FROM functions \
                             WHERE qualname = ?1 OR module || '.' || qualname = ?1",
                            [name],
                        )? as u64,
                    }
                }
            };
            tx.commit()?;
            conn.execute_batch("VACUUM; PRAGMA wal_checkpoint(TRUNCATE);")?;
            Ok(cleared)
        };
        run().map_err(|e| self.fail(e))
    }

    /// Commits what is buffered and stops the writer thread. Later `put`s
    /// fail; lookups still work. In a forked child: nothing (the writer
    /// thread is the parent's).
    pub fn close(&self) -> Result<()> {
        if !self.owner.is_here() {
            return Ok(());
        }
        {
            let mut buffer = self.shared.lock();
            buffer.closing = true;
            self.shared.wake.notify_one();
        }
        let writer = self.writer.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(writer) = writer {
            // The writer does not panic; if it did, the rows are lost anyway.
            let _ = writer.join();
        }
        let mut buffer = self.shared.lock();
        let lost = buffer.lost.drain().map(|(_, why)| why).next();
        match buffer.failure.take().or(lost) {
            Some(why) => Err(self.fail(StoreError::WriteFailed(why))),
            None => Ok(()),
        }
    }
}

impl Drop for Store {
    fn drop(&mut self) {
        if !self.owner.is_here() {
            // A forked child's copy: leave its memory alone (see `Store`).
            return;
        }
        // Dropping must not lose buffered rows; errors have no one to go to.
        let _ = self.close();
        // SAFETY: dropped once, here, and never used again.
        unsafe {
            ManuallyDrop::drop(&mut self.writer);
            ManuallyDrop::drop(&mut self.conn);
            ManuallyDrop::drop(&mut self.shared);
        }
    }
}

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

fn append_to_name(path: &Path, suffix: &str) -> PathBuf {
    crate::store_file::with_suffix(path, suffix)
}

fn connect(path: &Path, journal: Journal) -> std::result::Result<Connection, StoreError> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_CREATE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    conn.busy_timeout(BUSY_TIMEOUT)?;
    // Keys are hashes, so lookups and inserts touch pages at random: keep
    // the tree in memory rather than re-reading it (SQLite's default cache
    // is 2 MiB).
    conn.pragma_update(None, "cache_size", -CACHE_KIB)?;
    // Per connection, so the writer's too: in WAL mode a commit then
    // writes the log without an fsync. A killed process loses nothing
    // committed; a power cut may lose the last commits, which a re-run
    // computes again. With a rollback journal, NORMAL risks the file
    // itself at a power cut: FULL there.
    let sync = match journal {
        Journal::Wal => "NORMAL",
        Journal::Delete { .. } => "FULL",
    };
    conn.pragma_update(None, "synchronous", sync)?;
    Ok(conn)
}

/// `(application_id, user_version, tables)` of the file, read in one
/// transaction: another process may be creating the store meanwhile, and
/// separate reads could see half of its work.
fn header(conn: &Connection) -> rusqlite::Result<(i32, i32, i64)> {
    let in_transaction = !conn.is_autocommit();
    if !in_transaction {
        conn.execute_batch("BEGIN")?;
    }
    let read = (|| {
        let id = conn.query_row("PRAGMA application_id", [], |r| r.get(0))?;
        let version = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
        let tables = conn.query_row("SELECT COUNT(*) FROM sqlite_schema", [], |r| r.get(0))?;
        Ok((id, version, tables))
    })();
    if !in_transaction {
        conn.execute_batch("COMMIT")?;
    }
    read
}

/// Runs `op` again while another connection holds the lock it needs, for
/// up to [`BUSY_TIMEOUT`]: some statements (changing the journal mode) fail
/// at once instead of waiting as SQLite's busy timeout makes others do.
fn when_not_busy<T>(mut op: impl FnMut() -> rusqlite::Result<T>) -> rusqlite::Result<T> {
    let deadline = std::time::Instant::now() + BUSY_TIMEOUT;
    loop {
        match op() {
            Err(rusqlite::Error::SqliteFailure(e, _))
                if e.code == rusqlite::ErrorCode::DatabaseBusy
                    && std::time::Instant::now() < deadline =>
            {
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
            other => return other,
        }
    }
}

fn check_header(conn: &Connection) -> std::result::Result<bool, StoreError> {
    match header(conn)? {
        (APPLICATION_ID, version, _) if version > FORMAT_VERSION => Err(StoreError::NewerFormat {
            found: version,
            supported: FORMAT_VERSION,
        }),
        (APPLICATION_ID, FORMAT_VERSION, _) => Ok(true),
        (APPLICATION_ID, version, _) if version >= 1 => Err(StoreError::OlderFormat {
            found: version,
            supported: FORMAT_VERSION,
        }),
        (APPLICATION_ID, version, _) => Err(StoreError::Damaged(format!(
            "its header says store format {version}, which no shoal wrote"
        ))),
        (0, 0, 0) => Ok(false),
        _ => Err(StoreError::NotAStore(
            "it is a SQLite database of another program".into(),
        )),
    }
}

/// Checks the file is a store this build can read, creates the schema in a
/// new or empty file (with `create`), and sets the journal mode.
fn prepare(
    conn: &Connection,
    journal: Journal,
    create: bool,
) -> std::result::Result<(), StoreError> {
    let is_store = check_header(conn)?;
    if !is_store && !create {
        return Err(StoreError::NotAStore("it holds no shoal tables".into()));
    }
    if !is_store {
        // Larger pages make the tree of hash keys shallower: inserts and
        // lookups run about twice as fast as with 4 KiB. Only takes effect
        // before the file's first write.
        conn.pragma_update(None, "page_size", PAGE_SIZE)?;
    }
    let wanted = match journal {
        Journal::Wal => "wal",
        Journal::Delete { .. } => "delete",
    };
    let mode: String = when_not_busy(|| {
        conn.query_row(&format!("PRAGMA journal_mode = {wanted}"), [], |r| r.get(0))
    })?;
    if !mode.eq_ignore_ascii_case(wanted) {
        return Err(StoreError::NotAStore(format!(
            "SQLite could not put it in {wanted} mode (it stays in {mode} mode)"
        )));
    }
    if !is_store {
        // Two processes may create the same store at once: the write lock
        // serialises them and the second finds the schema made.
        conn.execute_batch("BEGIN IMMEDIATE")?;
        let created = check_header(conn).and_then(|is_store| {
            if !is_store {
                conn.pragma_update(None, "application_id", APPLICATION_ID)?;
                conn.pragma_update(None, "user_version", FORMAT_VERSION)?;
                conn.execute_batch(SCHEMA)?;
            }
            Ok(conn.execute_batch("COMMIT")?)
        });
        if created.is_err() {
            let _ = conn.execute_batch("ROLLBACK");
        }
        created?;
    }
    Ok(())
}

/// The writer thread: commits the buffer when it is old enough, large
/// enough, flushed or closing.
fn write_loop(mut conn: Connection, shared: &Shared) {
    /// However the writer ends, nobody waits for it afterwards.
    struct Stopped<'a>(&'a Shared);
    impl Drop for Stopped<'_> {
        fn drop(&mut self) {
            let mut buffer = self.0.lock();
            if !buffer.stopped {
                buffer.stopped = true;
                buffer
                    .failure
                    .get_or_insert_with(|| "the writer thread failed".into());
            }
            self.0.written.notify_all();
        }
    }
    let _stopped = Stopped(shared);
    let mut buffer = shared.lock();
    loop {
        let asked = buffer.requested;
        let due = asked > buffer.written
            || buffer.closing
            || buffer.since.is_some_and(|t| t.elapsed() >= COMMIT_EVERY)
            || buffer.pending.len() >= COMMIT_ROWS
            || buffer.pending_bytes >= COMMIT_BYTES;
        if due && !buffer.pending.is_empty() {
            let batch = Arc::new(std::mem::take(&mut buffer.pending));
            buffer.pending_bytes = 0;
            buffer.since = None;
            buffer.committing = Arc::clone(&batch);
            drop(buffer);
            let outcome = write_batch(&mut conn, &batch);
            buffer = shared.lock();
            buffer.committing = Arc::default();
            if let Err(e) = outcome {
                // Each writer whose rows the batch held is told, alone.
                let why = e.to_string();
                for row in batch.values() {
                    buffer.lost.entry(row.writer).or_insert_with(|| why.clone());
                }
            }
        }
        // Every row put before flush `asked` was requested is now written.
        if asked > buffer.written {
            buffer.written = asked;
            shared.written.notify_all();
        }
        if buffer.closing && buffer.pending.is_empty() {
            buffer.stopped = true;
            return; // `_stopped` wakes whoever waits
        }
        if buffer.requested > buffer.written || buffer.closing {
            continue;
        }
        buffer = match buffer.since {
            Some(since) => {
                let wait = COMMIT_EVERY.saturating_sub(since.elapsed());
                shared
                    .wake
                    .wait_timeout(buffer, wait)
                    .unwrap_or_else(|e| e.into_inner())
                    .0
            }
            None => shared.wake.wait(buffer).unwrap_or_else(|e| e.into_inner()),
        };
    }
}

fn write_batch(conn: &mut Connection, batch: &HashMap<Key, Row>) -> rusqlite::Result<()> {
    // In id order, so the b-tree is walked once rather than at random.
    let mut rows: Vec<_> = batch.iter().collect();
    rows.sort_unstable_by_key(|(key, _)| row_id(key));
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    {
        let mut stmt = tx.prepare_cached(&insert_sql())?;
        for group in rows.chunks(ROWS_PER_STATEMENT) {
            // A short last group repeats its last row, which the insert ignores.
            for p in 0..ROWS_PER_STATEMENT {
                let (key, row) = group[p.min(group.len() - 1)];
                stmt.raw_bind_parameter(6 * p + 1, row_id(key))?;
                stmt.raw_bind_parameter(6 * p + 2, &key[..])?;
                stmt.raw_bind_parameter(6 * p + 3, row.function)?;
                stmt.raw_bind_parameter(6 * p + 4, row.created)?;
                stmt.raw_bind_parameter(6 * p + 5, row.tasks)?;
                stmt.raw_bind_parameter(6 * p + 6, &row.value)?;
            }
            stmt.raw_execute()?;
        }
    }
    tx.commit()
}

/// Rows per insert and keys per lookup statement: one statement per row
/// costs SQLite more than the row itself.
const ROWS_PER_STATEMENT: usize = 50;

fn insert_sql() -> String {
    let rows = vec!["(?, ?, ?, ?, ?, ?)"; ROWS_PER_STATEMENT].join(", ");
    format!(
        "INSERT OR IGNORE INTO results (id, key, function, created, tasks, value) VALUES {rows}"
    )
}

fn lookup_sql() -> String {
    let keys = vec!["?"; ROWS_PER_STATEMENT].join(", ");
    format!("SELECT key, value FROM results WHERE id IN ({keys})")
}

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> StoreError {
        match e.sqlite_error_code() {
            Some(ErrorCode::NotADatabase) => {
                StoreError::NotAStore("SQLite says it is not a database".into())
            }
            Some(ErrorCode::DatabaseCorrupt) => StoreError::Damaged(e.to_string()),
            Some(ErrorCode::CannotOpen) => StoreError::CannotOpen("SQLite cannot open it".into()),
            Some(ErrorCode::ReadOnly) => StoreError::CannotOpen("it is read-only".into()),
            Some(ErrorCode::PermissionDenied) => StoreError::CannotOpen("permission denied".into()),
            _ => StoreError::Sqlite(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::digest::digest;

    fn temp_path(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("shoal-store-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(name);
        for suffix in ["", "-wal", "-shm"] {
            let _ = std::fs::remove_file(append_to_name(&path, suffix));
        }
        path
    }

    fn key(i: u32) -> Key {
        digest(&[&i.to_le_bytes()])
    }

    fn store_error(result: Result<Store>) -> StoreError {
        match result {
            Err(CoreError::Store { source, .. }) => source,
            Err(other) => panic!("expected a store error, got {other}"),
            Ok(_) => panic!("expected an error, the store opened"),
        }
    }

    #[test]
    fn results_survive_reopening() {
        let path = temp_path("reopen.sqlite");
        {
            let store = Store::open(&path).unwrap();
            let f = store.function_id(b"digest", "mod", "f").unwrap();
            let rows = (0..1000)
                .map(|i| (key(i), i.to_le_bytes().to_vec()))
                .collect();
            store.put_many(f, rows).unwrap();
            // Visible before the writer commits.
            assert_eq!(
                store.get_many(&[key(7)]).unwrap(),
                [Some(7u32.to_le_bytes().to_vec())]
            );
        }
        let store = Store::open(&path).unwrap();
        let got = store.get_many(&[key(0), key(999), key(1000)]).unwrap();
        assert_eq!(got[0].as_deref(), Some(&0u32.to_le_bytes()[..]));
        assert_eq!(got[1].as_deref(), Some(&999u32.to_le_bytes()[..]));
        assert_eq!(got[2], None);
        assert_eq!(store.function_id(b"digest", "mod", "f").unwrap(), 1);
    }

    #[test]
    fn lookups_of_many_and_repeated_keys() {
        let path = temp_path("lookups.sqlite");
        let store = Store::open(&path).unwrap();
        // Every third key stored; 123 rows is not a multiple of a statement's.
        let rows = (0..369)
            .step_by(3)
            .map(|i| (key(i), i.to_le_bytes().to_vec()))
            .collect();
        store.put_many(1, rows).unwrap();
        store.flush().unwrap();
        let asked: Vec<u32> = (0..400).chain([3, 3, 4, 300]).collect();
        let keys: Vec<Key> = asked.iter().map(|&i| key(i)).collect();
        let got = store.get_many(&keys).unwrap();
        for (i, value) in asked.iter().zip(got) {
            let expected = (i % 3 == 0 && *i < 369).then(|| i.to_le_bytes().to_vec());
            assert_eq!(value, expected, "key {i}");
        }
    }

    #[test]
    fn commits_without_a_flush_within_the_interval() {
        let path = temp_path("interval.sqlite");
        let writer = Store::open(&path).unwrap();
        let f = writer.function_id(b"d", "m", "f").unwrap();
        writer.put_many(f, vec![(key(1), b"one".to_vec())]).unwrap();
        let reader = Store::open(&path).unwrap();
        let deadline = Instant::now() + COMMIT_EVERY * 8;
        while reader.get_many(&[key(1)]).unwrap()[0].is_none() {
            assert!(
                Instant::now() < deadline,
                "not committed within {:?}",
                COMMIT_EVERY * 8
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    #[test]
    fn first_result_of_a_key_is_kept() {
        let path = temp_path("first.sqlite");
        let store = Store::open(&path).unwrap();
        store.put_many(1, vec![(key(1), b"a".to_vec())]).unwrap();
        store.flush().unwrap();
        store.put_many(1, vec![(key(1), b"b".to_vec())]).unwrap();
        store.flush().unwrap();
        assert_eq!(store.get_many(&[key(1)]).unwrap(), [Some(b"a".to_vec())]);
    }

    #[test]
    fn info_and_clear_by_function_name() {
        let path = temp_path("info.sqlite");
        let store = Store::open(&path).unwrap();
        let f1 = store.function_id(b"f-v1", "pkg.mod", "f").unwrap();
        let f2 = store.function_id(b"f-v2", "pkg.mod", "f").unwrap();
        let g = store.function_id(b"g", "pkg.mod", "g").unwrap();
        store.put_many(f1, vec![(key(1), vec![0; 10])]).unwrap();
        store.put_many(f2, vec![(key(2), vec![0; 20])]).unwrap();
        store.put_many(g, vec![(key(3), vec![0; 5])]).unwrap();
        let info = store.info().unwrap();
        assert_eq!(info.tasks, 3);
        assert_eq!(info.format_version, FORMAT_VERSION);
        assert!(info.bytes_on_disk > 0);
        let f = &info.functions[0];
        assert_eq!(
            (f.qualname.as_str(), f.versions, f.tasks, f.bytes),
            ("f", 2, 2, 30)
        );
        assert!(f.first.is_some() && f.first <= f.last);
        assert_eq!(
            store.clear(Some("pkg.mod.f")).unwrap(),
            Cleared {
                functions: 2,
                tasks: 2
            }
        );
        assert_eq!(
            store.get_many(&[key(1), key(3)]).unwrap(),
            [None, Some(vec![0; 5])]
        );
        assert_eq!(store.clear(Some("nothing")).unwrap().functions, 0);
        assert_eq!(store.clear(None).unwrap().tasks, 1);
        assert_eq!(store.info().unwrap().tasks, 0);
    }

    #[test]
    fn two_stores_write_one_file_at_once() {
        let path = temp_path("concurrent.sqlite");
        let handles: Vec<_> = (0..2u32)
            .map(|t| {
                let path = path.clone();
                std::thread::spawn(move || {
                    let store = Store::open(&path).unwrap();
                    let f = store.function_id(b"d", "m", "f").unwrap();
                    for chunk in 0..50 {
                        let rows = (0..100)
                            .map(|i| (key(t * 1_000_000 + chunk * 100 + i), vec![t as u8; 100]))
                            .collect();
                        store.put_many(f, rows).unwrap();
                        if chunk % 10 == 0 {
                            store.flush().unwrap();
                        }
                    }
                })
            })
            .collect();
        for h in handles {
            h.join().unwrap();
        }
        let store = Store::open(&path).unwrap();
        assert_eq!(store.info().unwrap().tasks, 10_000);
    }

    #[test]
    fn refuses_files_that_are_not_stores() {
        let text = temp_path("notes.txt");
        std::fs::write(&text, "these are my notes, not a database\n".repeat(200)).unwrap();
        assert!(matches!(
            store_error(Store::open(&text)),
            StoreError::NotAStore(_)
        ));
        assert_eq!(
            std::fs::read_to_string(&text).unwrap(),
            "these are my notes, not a database\n".repeat(200),
            "a refused file is left as it was"
        );

        let other = temp_path("other.sqlite");
        Connection::open(&other)
            .unwrap()
            .execute_batch("CREATE TABLE t (x)")
            .unwrap();
        assert!(matches!(
            store_error(Store::open(&other)),
            StoreError::NotAStore(_)
        ));

        let err = Store::open(&text).err().unwrap().to_string();
        assert!(err.contains("notes.txt"), "{err}");
    }

    #[test]
    fn refuses_a_newer_format() {
        let path = temp_path("newer.sqlite");
        drop(Store::open(&path).unwrap());
        Connection::open(&path)
            .unwrap()
            .pragma_update(None, "user_version", FORMAT_VERSION + 1)
            .unwrap();
        assert!(matches!(
            store_error(Store::open(&path)),
            StoreError::NewerFormat { found, .. } if found == FORMAT_VERSION + 1
        ));
    }

    #[test]
    fn refuses_an_older_format() {
        let path = temp_path("older.sqlite");
        drop(Store::open(&path).unwrap());
        Connection::open(&path)
            .unwrap()
            .pragma_update(None, "user_version", FORMAT_VERSION - 1)
            .unwrap();
        let error = store_error(Store::open(&path));
        assert!(
            matches!(error, StoreError::OlderFormat { found, .. } if found == FORMAT_VERSION - 1)
        );
        assert!(error.to_string().contains("older shoal"), "{error}");
    }

    #[test]
    fn a_row_of_many_tasks_counts_them_all() {
        let path = temp_path("chunks.sqlite");
        let store = Store::open(&path).unwrap();
        let f = store.function_id(b"f", "m", "f").unwrap();
        let g = store.function_id(b"g", "m", "g").unwrap();
        store
            .put_rows(
                0,
                f,
                [(key(1), 100, b"chunk".to_vec()), (key(2), 7, b"c".to_vec())],
            )
            .unwrap();
        store.put_many(g, vec![(key(3), b"one".to_vec())]).unwrap();
        let info = store.info().unwrap();
        assert_eq!(info.tasks, 108);
        assert_eq!(info.functions[0].tasks, 107);
        assert_eq!(
            store.get_many(&[key(1)]).unwrap(),
            [Some(b"chunk".to_vec())]
        );
        assert_eq!(store.clear(Some("m.f")).unwrap().tasks, 107);
        assert_eq!(store.clear(None).unwrap().tasks, 1);
    }

    #[test]
    fn a_damaged_file_is_reported_as_damaged() {
        let path = temp_path("damaged.sqlite");
        {
            let store = Store::open(&path).unwrap();
            let rows = (0..5000).map(|i| (key(i), vec![i as u8; 200])).collect();
            store.put_many(1, rows).unwrap();
        }
        let mut bytes = std::fs::read(&path).unwrap();
        let page = PAGE_SIZE as usize;
        assert!(bytes.len() > 4 * page);
        for b in &mut bytes[page..] {
            *b = b.wrapping_mul(31).wrapping_add(7); // every page but the first
        }
        std::fs::write(&path, bytes).unwrap();
        let keys: Vec<Key> = (0..5000).map(key).collect();
        let error = match Store::open(&path) {
            Err(CoreError::Store { source, .. }) => source,
            Err(other) => panic!("{other}"),
            Ok(store) => match store.get_many(&keys) {
                Err(CoreError::Store { source, .. }) => source,
                other => panic!("read a damaged store: {:?}", other.map(|v| v.len())),
            },
        };
        assert!(matches!(error, StoreError::Damaged(_)), "{error}");
    }

    #[test]
    fn an_empty_file_becomes_a_store() {
        let path = temp_path("empty.sqlite");
        std::fs::write(&path, b"").unwrap();
        let store = Store::open(&path).unwrap();
        store.put_many(1, vec![(key(1), b"x".to_vec())]).unwrap();
        store.flush().unwrap();
    }

    #[test]
    fn a_lost_commit_is_reported_to_the_writer_whose_rows_it_held() {
        let path = temp_path("lost.sqlite");
        let store = Store::open(&path).unwrap();
        let f = store.function_id(b"f", "m", "f").unwrap();
        let (a, b) = (store.new_writer(), store.new_writer());
        store.put_rows(a, f, [(key(1), 1, b"a".to_vec())]).unwrap();
        store.flush_writer(a).unwrap();
        // Another program breaks the store under it: the next commit fails.
        let other = Connection::open(&path).unwrap();
        other.busy_timeout(Duration::from_secs(10)).unwrap();
        other
            .execute_batch("ALTER TABLE results RENAME TO gone")
            .unwrap();
        store.put_rows(b, f, [(key(2), 1, b"b".to_vec())]).unwrap();
        // Committed on its own within COMMIT_EVERY, without a flush.
        std::thread::sleep(COMMIT_EVERY * 4);
        store.flush_writer(a).unwrap(); // a lost nothing
        let err = store.flush_writer(b).unwrap_err().to_string();
        assert!(err.contains("results"), "{err}");
        store.flush_writer(b).unwrap(); // reported once
        let _ = std::fs::remove_file(&path);
    }
}

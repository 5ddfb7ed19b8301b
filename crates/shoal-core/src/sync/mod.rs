//! Synchronisation between processes, in shared memory: each primitive is a
//! few atomics laid over bytes of a segment that every process maps, waited
//! on with futexes. A holder that dies (killed, say) never wedges the
//! others: what it held is taken over or given back.

pub mod barrier;
pub mod condvar;
pub mod counter;
pub mod event;
pub mod futex;
pub mod lock;
pub mod rlock;
pub mod semaphore;

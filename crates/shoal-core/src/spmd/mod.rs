//! SPMD message passing on one machine (`shoal run -n N`, `shoal.spmd`):
//! ranks that send each other messages through shared memory, and a
//! launcher that starts them and sees to it that none waits forever.
//!
//! - [`world`]: the segment every rank maps: status slots and rings.
//! - [`ring`]: one rank's messages to another, in shared memory.
//! - [`staged`]: large payloads, through reused segments.
//! - [`endpoint`]: a rank's sending, receiving, matching and waiting.
//! - [`job`]: the launcher: starts the ranks, tags their output, records
//!   how they ended, and asks [`judge`] whether they are deadlocked.

pub mod endpoint;
pub mod job;
pub mod judge;
pub mod ring;
pub mod staged;
pub mod world;

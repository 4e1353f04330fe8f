//! Test fixtures shared by unit tests, integration tests, benches and fuzz targets (behind the
//! `test-utils` feature): an in-memory guest, an upcall recorder, and models of how a Linux
//! guest consumes events.

mod fifo_guest;
mod fuzz;
mod memory;
mod rng;
mod two_level_guest;
mod upcall;

pub use fifo_guest::FifoGuest;
pub use fuzz::{MAX_ACTIONS, run_hypercalls};
pub use memory::InMemoryGuest;
pub use rng::XorShift;
pub use two_level_guest::TwoLevelGuest;
pub use upcall::UpcallRecorder;

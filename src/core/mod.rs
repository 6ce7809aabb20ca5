//! Pure scheduling logic: schedules, ownership, the planner state machine.
//!
//! Nothing in here reads a clock, sleeps, spawns, or does I/O; time comes in as an
//! argument. The node runtime and the simulator drive the same code.

pub mod after;
pub mod http;
pub mod job;
pub mod limits;
pub mod owner;
pub mod placement;
pub mod planner;
pub mod schedule;
pub mod types;
pub mod unplaceable;

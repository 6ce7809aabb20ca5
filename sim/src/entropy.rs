//! Seeded entropy for the whole process.
//!
//! This file defines the C functions `getrandom` and `getentropy`. Because they are defined
//! in the simulator binary (never in a library), they take precedence over libc's, so std's
//! hash keys, `rand::rng()` (which chitchat uses to pick gossip peers) and tokio's `select!`
//! ordering all draw from a stream derived from the simulation's seed.
//!
//! The stream is per thread: each simulation runs on a fresh thread that calls
//! [`seed_thread`] before anything else, so simulations running side by side in a sweep do
//! not disturb each other. Threads that never call it (the main thread) get a fixed stream,
//! so nothing in this process ever depends on real entropy.

use std::cell::Cell;

use crate::rng::SimRng;

thread_local! {
    static STREAM: Cell<Option<u64>> = const { Cell::new(None) };
    static DRAWN_UNSEEDED: Cell<u64> = const { Cell::new(0) };
}

/// Seeds this thread's entropy stream. Call first thing on a simulation thread.
pub fn seed_thread(seed: u64) {
    STREAM.with(|s| s.set(Some(SimRng::mix(seed ^ 0x5eed_5eed_5eed_5eed))));
}

/// Bytes this thread drew before [`seed_thread`] was called (must be 0 on a sim thread).
pub fn drawn_before_seed() -> u64 {
    DRAWN_UNSEEDED.with(Cell::get)
}

fn fill(buf: &mut [u8]) {
    let state = STREAM.with(|s| match s.get() {
        Some(v) => v,
        None => {
            DRAWN_UNSEEDED.with(|d| d.set(d.get() + buf.len() as u64));
            0x0123_4567_89ab_cdef
        }
    });
    let mut rng = SimRng::new(state);
    for chunk in buf.chunks_mut(8) {
        let v = rng.next_u64().to_le_bytes();
        chunk.copy_from_slice(&v[..chunk.len()]);
    }
    STREAM.with(|s| {
        if s.get().is_some() {
            s.set(Some(rng.state()));
        }
    });
}

/// `ssize_t getrandom(void *buf, size_t buflen, unsigned int flags)`.
///
/// # Safety
/// `buf` must be valid for `len` bytes of writes, as libc's contract requires.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn getrandom(buf: *mut u8, len: usize, _flags: u32) -> isize {
    if buf.is_null() {
        return -1;
    }
    // SAFETY: the caller promises `buf` is valid for `len` bytes.
    let slice = unsafe { std::slice::from_raw_parts_mut(buf, len) };
    fill(slice);
    len as isize
}

/// `int getentropy(void *buf, size_t buflen)`.
///
/// # Safety
/// `buf` must be valid for `len` bytes of writes, as libc's contract requires.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn getentropy(buf: *mut u8, len: usize) -> i32 {
    if buf.is_null() || len > 256 {
        return -1;
    }
    // SAFETY: the caller promises `buf` is valid for `len` bytes.
    let slice = unsafe { std::slice::from_raw_parts_mut(buf, len) };
    fill(slice);
    0
}

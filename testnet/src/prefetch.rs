//! Cache hints: the simulator knows which peers its next two events are for, and asks the processor to bring their
//! state into the cache while it works on the current one.
//!
//! At 10,000 viewers the per-peer state (a few kilobytes each) is far beyond the caches, and nearly every event began
//! by waiting on main memory for the machine it is for, then for what that machine points to. A prefetch is only a
//! hint: it reads nothing into the program, cannot fault, and changes no result, only when the lines arrive. It is
//! the one use of `unsafe` in the workspace (the intrinsic is marked so because it takes a raw address), which is why
//! this crate denies `unsafe_code` where the others forbid it.

/// Asks for the cache lines of `value` (all of them, up to `max_lines`).
#[inline]
pub fn prefetch<T>(value: &T, max_lines: usize) {
    prefetch_bytes((value as *const T).cast(), std::mem::size_of::<T>(), max_lines);
}

/// Asks for the cache lines of a slice's elements (the first `max_lines` of them).
#[inline]
pub fn prefetch_slice<T>(values: &[T], max_lines: usize) {
    prefetch_bytes(values.as_ptr().cast(), std::mem::size_of_val(values), max_lines);
}

/// Asks for the cache lines of `bytes` bytes at `start` (the first `max_lines` of them).
#[inline]
pub fn prefetch_bytes(start: *const u8, bytes: usize, max_lines: usize) {
    let start = start.cast::<i8>();
    for line in 0..bytes.div_ceil(64).min(max_lines) {
        hint(start.wrapping_add(line * 64));
    }
}

#[cfg(target_arch = "x86_64")]
#[inline]
#[allow(unsafe_code)]
fn hint(address: *const i8) {
    // SAFETY: `prefetcht0` is a hint with no architectural effect: it does not read the memory into any register,
    // never faults (whatever the address), and the addresses given here are within a live value anyway.
    unsafe { std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(address) }
}

#[cfg(not(target_arch = "x86_64"))]
#[inline]
fn hint(_address: *const i8) {}

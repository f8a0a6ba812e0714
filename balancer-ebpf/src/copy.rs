//! Copies and fills of small fixed-size values, written out word by word.
//!
//! An assignment between two places the compiler cannot tell apart (a map
//! value and the packet, say) becomes a call to `memmove`, and a zeroed array
//! one to `memset`; on BPF both are loops of one byte per turn, about eight
//! instructions a byte. Volatile accesses keep the compiler from folding these
//! word copies back into such a call.

use core::ptr::{read_volatile, write_volatile};

use balancer_common::RawAddr;

/// `dst = src` for byte arrays that may be unaligned (Ethernet addresses in
/// the packet).
#[inline(always)]
pub fn bytes<const N: usize>(dst: *mut [u8; N], src: &[u8; N]) {
    let (d, s) = (dst as *mut u8, src.as_ptr());
    for i in 0..N {
        // SAFETY: i < N, within both arrays; the caller's `dst` is writable.
        unsafe { write_volatile(d.add(i), read_volatile(s.add(i))) };
    }
}

#[inline(always)]
pub fn addr(dst: &mut RawAddr, src: &RawAddr) {
    for i in 0..4 {
        // SAFETY: in bounds of two 4-word arrays.
        unsafe { write_volatile(&mut dst[i], read_volatile(&src[i])) };
    }
}

/// Zeroes `*dst` four bytes at a time.
///
/// # Safety
/// `dst` must be valid for writes, and all zeroes a valid `T`.
#[inline(always)]
pub unsafe fn zero_words<T>(dst: *mut T) {
    const { assert!(size_of::<T>().is_multiple_of(4) && align_of::<T>() >= 4) };
    let d = dst as *mut u32;
    for i in 0..size_of::<T>() / 4 {
        // SAFETY: within *dst, per the caller's promise.
        unsafe { write_volatile(d.add(i), 0) };
    }
}

/// `*dst = *src` eight bytes at a time.
///
/// # Safety
/// `dst` must be valid for writes and `src` for reads of a `T`.
#[inline(always)]
pub unsafe fn words<T>(dst: *mut T, src: *const T) {
    const { assert!(size_of::<T>().is_multiple_of(8) && align_of::<T>() >= 8) };
    let (d, s) = (dst as *mut u64, src as *const u64);
    for i in 0..size_of::<T>() / 8 {
        // SAFETY: within *dst and *src, per the caller's promise.
        unsafe { write_volatile(d.add(i), read_volatile(s.add(i))) };
    }
}

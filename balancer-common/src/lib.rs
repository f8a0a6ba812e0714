//! The map layout shared by the XDP program (`balancer-ebpf`) and the daemon
//! (`balancer-user`). Every key and value that crosses the kernel boundary is
//! defined here once, `#[repr(C)]` with explicit padding and a size assert.
//!
//! Byte order: fields that hold wire data (addresses, ports) are in network byte
//! order and say so in their name (`_be`) or doc; everything else is host order.
#![no_std]

pub mod cookie;
pub mod csum;
pub mod expiry;
pub mod firewall;
pub mod flow;
pub mod global;
pub mod ha;
pub mod maps;
pub mod sched;
pub mod service;
pub mod stats;

/// Bumped whenever a key or value below changes shape; pinned state from another
/// version is refused instead of misread.
pub const LAYOUT_VERSION: u32 = 9;

pub const FAMILY_V4: u8 = 4;
pub const FAMILY_V6: u8 = 6;
pub const PROTO_TCP: u8 = 6;
pub const PROTO_UDP: u8 = 17;

/// An IPv4 or IPv6 address as it appears on the wire: IPv4 in `[0]`, the rest zero.
pub type RawAddr = [u32; 4];

/// Implements `aya::Pod` for map types when built for user space.
#[macro_export]
#[doc(hidden)]
macro_rules! user_pod {
    ($($t:ty),* $(,)?) => {
        $(
            #[cfg(feature = "user")]
            // SAFETY: the type is #[repr(C)], Copy, with explicit padding fields,
            // so every byte pattern of its size is a valid value.
            unsafe impl aya::Pod for $t {}
        )*
    };
}

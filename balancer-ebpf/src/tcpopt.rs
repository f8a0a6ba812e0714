//! TCP options, as the SYN proxy needs them: the MSS, window scale and SACK
//! permission of a SYN or SYN-ACK, and the SACK blocks of a client's segment.
//!
//! The options are copied out of the frame (`bpf_xdp_load_bytes`) into a
//! per-CPU buffer and walked by `bpf_loop`, one option a turn: the verifier
//! checks the walk once instead of once per option and per path through the
//! ones before (which a loop over the frame itself would make it do).

use core::ptr::{null_mut, read_volatile};

use aya_ebpf::{
    cty::c_void,
    helpers::{bpf_loop, bpf_xdp_load_bytes, bpf_xdp_store_bytes},
    macros::map,
    maps::PerCpuArray,
    programs::XdpContext,
};
use balancer_common::{cookie::NO_WSCALE, csum};

const TCPOPT_EOL: u8 = 0;
const TCPOPT_NOP: u8 = 1;
const TCPOPT_MSS: u8 = 2;
const TCPOPT_WINDOW: u8 = 3;
const TCPOPT_SACK_PERM: u8 = 4;
const TCPOPT_SACK: u8 = 5;
/// The TCP header without options.
const TCP_BASE: usize = 20;
/// The most option bytes a TCP header holds.
pub const MAX_OPTS: usize = 40;
/// The buffer's size: indexes are masked to it, so every read is in bounds.
const BUF: usize = 64;

/// A segment's options and what the walk found in them.
#[repr(C)]
pub struct TcpOpts {
    buf: [u8; BUF],
    /// Option bytes in `buf`.
    len: u32,
    /// The walk's position.
    off: u32,
    pub mss: u32,
    /// [`NO_WSCALE`] when there was none.
    pub wscale: u32,
    pub sack_perm: u32,
    /// Where the SACK option starts in `buf`, and its length (0: none).
    sack_off: u32,
    sack_len: u32,
}

/// Per-CPU room for one segment's options.
#[map]
pub static TCP_OPTS: PerCpuArray<TcpOpts> = PerCpuArray::with_max_entries(1, 0);

/// What a SYN's (or SYN-ACK's) options ask for: MSS (0: none), window scale
/// ([`NO_WSCALE`]: none), SACK permitted (1).
#[derive(Clone, Copy)]
pub struct SynOpts {
    pub mss: u32,
    pub wscale: u32,
    pub sack_perm: u32,
}

/// The options of most SYNs, read straight from the frame when they are laid
/// out as Linux (MSS, SACK permitted, timestamps, NOP, window scale; or
/// without timestamps: MSS, NOP, NOP, SACK permitted, NOP, window scale) or
/// Windows (MSS, NOP, window scale, NOP, NOP, SACK permitted) lay them out,
/// which the walk would read alike; `None` for any other layout.
#[inline(always)]
pub fn common_syn(ctx: &XdpContext, l4_off: usize, doff: usize) -> Option<SynOpts> {
    if l4_off > crate::parse::MAX_L4_OFFSET {
        return None;
    }
    if doff == TCP_BASE + 20 {
        let o = crate::parse::ptr_at::<[u8; 20]>(ctx, l4_off + TCP_BASE)?;
        // SAFETY: bounds checked by ptr_at.
        let o = unsafe { &*o };
        if o[0] == 2 && o[1] == 4 && o[4..8] == [4, 2, 8, 10] && o[16..19] == [1, 3, 3] {
            return Some(SynOpts {
                mss: (o[2] as u32) << 8 | o[3] as u32,
                wscale: o[19] as u32,
                sack_perm: 1,
            });
        }
    } else if doff == TCP_BASE + 12 {
        let o = crate::parse::ptr_at::<[u8; 12]>(ctx, l4_off + TCP_BASE)?;
        // SAFETY: bounds checked by ptr_at.
        let o = unsafe { &*o };
        if o[0] != 2 || o[1] != 4 {
            return None;
        }
        let mss = (o[2] as u32) << 8 | o[3] as u32;
        if o[4..8] == [1, 3, 3, o[7]] && o[8..12] == [1, 1, 4, 2] {
            return Some(SynOpts {
                mss,
                wscale: o[7] as u32,
                sack_perm: 1,
            });
        }
        if o[4..8] == [1, 1, 4, 2] && o[8..11] == [1, 3, 3] {
            return Some(SynOpts {
                mss,
                wscale: o[11] as u32,
                sack_perm: 1,
            });
        }
    }
    None
}

/// What a SYN's options ask for: read straight from the frame in the common
/// layouts ([`common_syn`]), walked otherwise.
#[inline(always)]
pub fn syn_opts(ctx: &XdpContext, l4_off: usize, doff: usize) -> Option<SynOpts> {
    if let Some(o) = common_syn(ctx, l4_off, doff) {
        return Some(o);
    }
    let o = parse(ctx, l4_off, doff)?;
    Some(SynOpts {
        mss: o.mss,
        wscale: o.wscale,
        sack_perm: o.sack_perm,
    })
}

/// The options of the TCP header at `l4_off` whose data offset is `doff`
/// bytes, walked; `None` only when the per-CPU buffer is missing or the frame
/// is shorter than the header says (the parser has checked it is not).
#[inline(never)]
pub fn parse(ctx: &XdpContext, l4_off: usize, doff: usize) -> Option<&'static mut TcpOpts> {
    let o = TCP_OPTS.get_ptr_mut(0)?;
    // SAFETY: this CPU's slot, used by this program run only; the raw pointer
    // is what the loop's callback reaches it by too.
    unsafe {
        (*o).len = 0;
        (*o).off = 0;
        (*o).mss = 0;
        (*o).wscale = NO_WSCALE as u32;
        (*o).sack_perm = 0;
        (*o).sack_off = 0;
        (*o).sack_len = 0;
    }
    if doff <= TCP_BASE {
        // SAFETY: as above.
        return Some(unsafe { &mut *o });
    }
    // Through memory, so that the compiler does not drop the checks below as
    // implied by ones above, which the verifier cannot follow through the mask:
    // it must see the length non-zero and within the buffer.
    let len = (doff - TCP_BASE) as u32;
    // SAFETY: a local.
    let len = unsafe { read_volatile(&len) } & (BUF as u32 - 1);
    if len == 0 || len as usize > MAX_OPTS {
        return None;
    }
    // SAFETY: `buf` holds BUF >= len bytes; the helper checks the frame.
    let rc = unsafe {
        bpf_xdp_load_bytes(
            ctx.ctx,
            (l4_off + TCP_BASE) as u32,
            (*o).buf.as_mut_ptr() as *mut c_void,
            len,
        )
    };
    if rc != 0 {
        return None;
    }
    // SAFETY: as above.
    unsafe { (*o).len = len };
    // SAFETY: walk_one has the callback signature bpf_loop expects and finds
    // its state in TCP_OPTS.
    unsafe { bpf_loop(MAX_OPTS as u32, walk_one as *mut c_void, null_mut(), 0) };
    // SAFETY: as above; the walk is over.
    Some(unsafe { &mut *o })
}

/// One option of the walk; 1 ends it.
#[inline(never)]
extern "C" fn walk_one(_i: u32, _ctx: *mut c_void) -> i64 {
    let Some(o) = TCP_OPTS.get_ptr_mut(0) else {
        return 1;
    };
    // SAFETY: this CPU's slot, filled by `parse`.
    let o = unsafe { &mut *o };
    let off = o.off;
    if off >= o.len {
        return 1;
    }
    let at = |i: u32| o.buf[((off + i) as usize) & (BUF - 1)];
    let kind = at(0);
    if kind == TCPOPT_EOL {
        return 1;
    }
    if kind == TCPOPT_NOP {
        o.off = off + 1;
        return 0;
    }
    if off + 1 >= o.len {
        return 1;
    }
    let size = at(1) as u32;
    if size < 2 || off + size > o.len {
        return 1;
    }
    match (kind, size) {
        (TCPOPT_MSS, 4) => o.mss = (at(2) as u32) << 8 | at(3) as u32,
        (TCPOPT_WINDOW, 3) => o.wscale = at(2) as u32,
        (TCPOPT_SACK_PERM, 2) => o.sack_perm = 1,
        (TCPOPT_SACK, _) if size >= 10 && (size - 2) & 7 == 0 => {
            o.sack_off = off;
            o.sack_len = size;
        }
        _ => {}
    }
    o.off = off + size;
    0
}

impl TcpOpts {
    /// Adds `delta` to every edge of the SACK blocks in the options (of the
    /// TCP header at `l4_off`), writes them back to the frame, and returns
    /// the change to the TCP checksum's sum (0 without SACK blocks).
    #[inline(always)]
    pub fn shift_sack(&mut self, ctx: &XdpContext, l4_off: usize, delta: u32) -> u64 {
        if self.sack_len == 0 {
            return 0;
        }
        let start = self.sack_off + 2;
        let end = self.sack_off + self.sack_len;
        let mut sum = 0u64;
        // At most four blocks, two edges each.
        for edge in 0..8u32 {
            let at = start + edge * 4;
            if at + 4 > end {
                break;
            }
            let i = |k: u32| ((at + k) as usize) & (BUF - 1);
            let old = [
                self.buf[i(0)],
                self.buf[i(1)],
                self.buf[i(2)],
                self.buf[i(3)],
            ];
            let new = u32::from_be_bytes(old).wrapping_add(delta).to_be_bytes();
            self.buf[i(0)] = new[0];
            self.buf[i(1)] = new[1];
            self.buf[i(2)] = new[2];
            self.buf[i(3)] = new[3];
            let mut d = csum::fold(csum::delta_u32(
                u32::from_ne_bytes(old),
                u32::from_ne_bytes(new),
            ));
            // An edge at an odd offset of the header straddles its 16-bit
            // words: its share of the sum is the aligned one byte-swapped.
            if (TCP_BASE as u32 + at) & 1 != 0 {
                d = d.swap_bytes();
            }
            sum += d as u64;
        }
        let len = (self.len as usize) & (BUF - 1);
        if len == 0 {
            return 0;
        }
        // SAFETY: `buf` holds BUF >= len bytes; the helper checks the frame.
        let rc = unsafe {
            bpf_xdp_store_bytes(
                ctx.ctx,
                (l4_off + TCP_BASE) as u32,
                self.buf.as_mut_ptr() as *mut c_void,
                len as u32,
            )
        };
        if rc != 0 {
            return 0;
        }
        sum
    }
}

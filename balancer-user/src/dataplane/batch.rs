//! Whole-map reads with `BPF_MAP_LOOKUP_BATCH`: a few system calls for a map
//! of thousands of entries instead of one or two per entry, and for a hash map
//! a walk by bucket that entries removed meanwhile cannot send back to the
//! start (as `BPF_MAP_GET_NEXT_KEY` does when its key is gone).
//!
//! aya 0.14 has no batch operations; this is the system call itself.

use std::{
    io,
    mem::size_of,
    ops::ControlFlow,
    os::fd::{AsFd, AsRawFd, BorrowedFd},
};

/// `BPF_MAP_LOOKUP_BATCH` of `enum bpf_cmd`.
const BPF_MAP_LOOKUP_BATCH: libc::c_long = 24;

/// `bpf_attr.batch`.
#[repr(C)]
#[derive(Default)]
struct BatchAttr {
    in_batch: u64,
    out_batch: u64,
    keys: u64,
    values: u64,
    count: u32,
    map_fd: u32,
    elem_flags: u64,
    flags: u64,
}

/// A walk over a map's entries, `BPF_MAP_LOOKUP_BATCH` by
/// `BPF_MAP_LOOKUP_BATCH`, that can stop between batches and go on later
/// (a bulk copy of the flow table is read a few thousand entries at a time).
///
/// For arrays and hash maps, whose batch position is a `u32` (an index or a
/// bucket).
pub struct Reader<F> {
    map: F,
    key_size: usize,
    value_size: usize,
    position: Option<u32>,
    done: bool,
    keys: Vec<u8>,
    values: Vec<u8>,
}

impl<F: AsFd> Reader<F> {
    /// `value_size` is what the kernel copies per entry: for a per-CPU map,
    /// the value rounded up to 8 bytes times the possible CPUs.
    pub fn new(map: F, key_size: usize, value_size: usize) -> Self {
        Self {
            map,
            key_size,
            value_size,
            position: None,
            done: false,
            keys: Vec::new(),
            values: Vec::new(),
        }
    }

    /// Whether the walk reached the end of the map.
    pub fn done(&self) -> bool {
        self.done
    }

    /// Calls `f` with the key and value bytes of about `chunk` more entries
    /// (a hash bucket is never split, so it may be more); returns how many.
    pub fn next_batch(&mut self, chunk: u32, mut f: impl FnMut(&[u8], &[u8])) -> io::Result<usize> {
        if self.done {
            return Ok(0);
        }
        let mut chunk = chunk.max(1);
        loop {
            self.keys.resize(self.key_size * chunk as usize, 0);
            self.values.resize(self.value_size * chunk as usize, 0);
            let mut next: u32 = 0;
            let mut attr = BatchAttr {
                in_batch: self.position.as_ref().map_or(0, |p| p as *const u32 as u64),
                out_batch: &mut next as *mut u32 as u64,
                keys: self.keys.as_mut_ptr() as u64,
                values: self.values.as_mut_ptr() as u64,
                count: chunk,
                map_fd: self.map.as_fd().as_raw_fd() as u32,
                ..BatchAttr::default()
            };
            // SAFETY: attr points at buffers of `chunk` keys and values and at
            // `next`, all of which outlive the call; the kernel writes no more.
            let rc = unsafe {
                libc::syscall(
                    libc::SYS_bpf,
                    BPF_MAP_LOOKUP_BATCH,
                    &mut attr as *mut BatchAttr,
                    size_of::<BatchAttr>(),
                )
            };
            if rc < 0 {
                let e = io::Error::last_os_error();
                match e.raw_os_error() {
                    // The end; this call's entries are still valid.
                    Some(libc::ENOENT) => self.done = true,
                    // One hash bucket holds more entries than a chunk.
                    Some(libc::ENOSPC) if chunk < 1 << 20 => {
                        chunk *= 4;
                        continue;
                    }
                    _ => return Err(e),
                }
            }
            let n = attr.count as usize;
            for i in 0..n {
                f(
                    &self.keys[i * self.key_size..(i + 1) * self.key_size],
                    &self.values[i * self.value_size..(i + 1) * self.value_size],
                );
            }
            if n == 0 {
                self.done = true;
            }
            self.position = Some(next);
            return Ok(n);
        }
    }
}

/// Calls `f` with the key and value bytes of every entry of the map, `chunk`
/// entries per system call, until the map ends or `f` breaks. `value_size` is
/// what the kernel copies per entry (see [`Reader::new`]).
pub fn for_each(
    map: BorrowedFd<'_>,
    key_size: usize,
    value_size: usize,
    chunk: u32,
    mut f: impl FnMut(&[u8], &[u8]) -> ControlFlow<()>,
) -> io::Result<()> {
    let mut reader = Reader::new(map, key_size, value_size);
    let mut stopped = false;
    while !stopped && !reader.done() {
        reader.next_batch(chunk, |k, v| {
            if !stopped && f(k, v).is_break() {
                stopped = true;
            }
        })?;
    }
    Ok(())
}

/// The first `len` values of an array map of `T` (fewer if the map is smaller).
pub fn array<T: aya::Pod>(map: BorrowedFd<'_>, len: u32) -> io::Result<Vec<T>> {
    let mut out = Vec::with_capacity(len as usize);
    if len == 0 {
        return Ok(out);
    }
    for_each(
        map,
        size_of::<u32>(),
        size_of::<T>(),
        len.min(CHUNK),
        |_, value| {
            out.push(read(value));
            if out.len() as u32 >= len {
                ControlFlow::Break(())
            } else {
                ControlFlow::Continue(())
            }
        },
    )?;
    Ok(out)
}

/// The first `len` values of a per-CPU array map of `T`, each folded over the
/// CPUs with `sum`.
pub fn per_cpu_array<T: aya::Pod + Default>(
    map: BorrowedFd<'_>,
    len: u32,
    cpus: usize,
    sum: impl Fn(&mut T, &T),
) -> io::Result<Vec<T>> {
    let mut out = Vec::with_capacity(len as usize);
    if len == 0 {
        return Ok(out);
    }
    let stride = size_of::<T>().div_ceil(8) * 8;
    for_each(
        map,
        size_of::<u32>(),
        stride * cpus,
        len.min(CHUNK),
        |_, values| {
            let mut total = T::default();
            for cpu in values.chunks_exact(stride) {
                sum(&mut total, &read(&cpu[..size_of::<T>()]));
            }
            out.push(total);
            if out.len() as u32 >= len {
                ControlFlow::Break(())
            } else {
                ControlFlow::Continue(())
            }
        },
    )?;
    Ok(out)
}

/// Entries per system call for arrays.
const CHUNK: u32 = 4096;

/// A `T` from the bytes the kernel copied.
pub fn read<T: aya::Pod>(bytes: &[u8]) -> T {
    assert!(bytes.len() >= size_of::<T>());
    // SAFETY: `bytes` holds at least size_of::<T>() bytes, and T is Pod: every
    // bit pattern is a valid value. read_unaligned makes no alignment demand.
    unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast::<T>()) }
}

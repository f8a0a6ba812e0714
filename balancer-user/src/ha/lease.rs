//! The kernel's view of whether this node may answer for the floating
//! addresses (`HA_LEASE`): renewed every advert interval while active, so that
//! when the daemon dies (`kill -9`: its addresses stay on the interfaces) the
//! program stops answering ARP for them within `dead_after` intervals, about
//! when the peer takes over.

use std::{path::Path, time::Duration};

use anyhow::{Context, Result};
use aya::maps::{Array, Map, MapData};
use tracing::warn;

pub struct Lease {
    map: Array<MapData, u64>,
    length: Duration,
}

impl Lease {
    pub fn open(pin_dir: &Path, length: Duration) -> Result<Self> {
        let path = pin_dir.join("maps").join("HA_LEASE");
        let data = MapData::from_pin(&path)
            .with_context(|| format!("opening the pinned map {}", path.display()))?;
        let map = Array::try_from(Map::Array(data)).context("HA_LEASE")?;
        Ok(Self { map, length })
    }

    pub fn renew(&mut self) {
        let until = monotonic_ns() + self.length.as_nanos() as u64;
        if let Err(e) = self.map.set(0, until, 0) {
            warn!("renewing the HA lease: {e}");
        }
    }

    /// Not ours (a value of 0 would mean "no high availability").
    pub fn expire(&mut self) {
        if let Err(e) = self.map.set(0, 1, 0) {
            warn!("ending the HA lease: {e}");
        }
    }
}

/// The clock `bpf_ktime_get_ns` reads.
fn monotonic_ns() -> u64 {
    // SAFETY: ts is a valid timespec for the call to fill.
    let mut ts: libc::timespec = unsafe { std::mem::zeroed() };
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

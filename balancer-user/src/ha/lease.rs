//! The kernel's view of whether this node may answer for the floating
//! addresses (`HA_LEASE`): renewed every advert interval while active, so that
//! when the daemon dies (`kill -9`: its addresses stay on the interfaces) the
//! program stops answering ARP for them within `dead_after` intervals, about
//! when the peer takes over.

use std::{path::Path, time::Duration};

use anyhow::Result;
use aya::maps::{Array, MapData};
use balancer_common::maps::HaLease;
use tracing::warn;

use crate::{dataplane::PinnedMaps, ktime};

pub struct Lease {
    map: Array<MapData, u64>,
    length: Duration,
}

impl Lease {
    pub fn open(pin_dir: &Path, length: Duration) -> Result<Self> {
        let map = PinnedMaps::new(pin_dir).open::<HaLease, _>()?;
        Ok(Self { map, length })
    }

    pub fn renew(&mut self) {
        let until = ktime::monotonic_ns() + self.length.as_nanos() as u64;
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

//! The kernel's view of whether this node may answer for the floating
//! addresses (`HA_LEASE`): renewed every advert interval while active, so that
//! when the daemon dies (`kill -9`: its addresses stay on the interfaces) the
//! program stops answering ARP for them within `dead_after` intervals, about
//! when the peer takes over.

use std::{path::Path, time::Duration};

use anyhow::Result;
use aya::maps::{Array, MapData};
use balancer_common::{ha, maps::HaLease};
use tracing::warn;

use crate::{dataplane::PinnedMaps, ktime};

pub struct Lease {
    map: Array<MapData, ha::Lease>,
    length: Duration,
    /// What was last written.
    value: ha::Lease,
}

impl Lease {
    pub fn open(pin_dir: &Path, length: Duration) -> Result<Self> {
        let map = PinnedMaps::new(pin_dir).open::<HaLease, _>()?;
        Ok(Self {
            map,
            length,
            value: ha::Lease::default(),
        })
    }

    pub fn renew(&mut self) {
        self.value.until_ns = ktime::monotonic_ns() + self.length.as_nanos() as u64;
        self.write("renewing");
    }

    /// Not ours (an `until_ns` of 0 would mean "no high availability").
    pub fn expire(&mut self) {
        self.value.until_ns = 1;
        self.value.takeover_grace_until_ns = 0;
        self.write("ending");
    }

    /// Just taken over: for `grace`, segments of no known flow are dropped
    /// rather than reset (see `ha::Lease::takeover_grace_until_ns`).
    pub fn start_takeover_grace(&mut self, grace: Duration) {
        self.value.takeover_grace_until_ns = ktime::monotonic_ns() + grace.as_nanos() as u64;
        self.write("starting the takeover grace of");
    }

    fn write(&mut self, what: &str) {
        if let Err(e) = self.map.set(0, self.value, 0) {
            warn!("{what} the HA lease: {e}");
        }
    }
}

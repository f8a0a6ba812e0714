//! An active-active node leaving without breaking a connection: its routes are
//! withdrawn at once (the HA thread, told through `Inputs::draining`), new
//! flows are still opened for `ha.withdraw_wait_ms` while the routers
//! converge, then the node forwards the flows it owns until none is left or
//! `ha.drain_timeout_s` has passed. It stops then; flows left are its peers'
//! to adopt (they hold copies), so even those survive.

use std::time::{Duration, Instant};

use anyhow::Result;
use tracing::{info, warn};

use crate::{config::Ha, events::TARGET};

pub struct Drain {
    since: Instant,
    withdraw_wait: Duration,
    timeout: Duration,
    /// Flows this node owned at the last count.
    pub flows_left: Option<u64>,
}

impl Drain {
    pub fn start(ha: &Ha, by: &str) -> Self {
        info!(target: TARGET, event = "ha_drain", by, withdraw_wait_ms = ha.withdraw_wait_ms, drain_timeout_s = ha.drain_timeout_s, "draining: routes withdrawn; this node stops once its flows end");
        Self {
            since: Instant::now(),
            withdraw_wait: Duration::from_millis(ha.withdraw_wait_ms.into()),
            timeout: Duration::from_secs(ha.drain_timeout_s.into()),
            flows_left: None,
        }
    }

    /// Whether the drain is over (the node may stop), after counting the
    /// flows it still owns with `own_flows`.
    pub fn done(&mut self, own_flows: impl FnOnce() -> Result<u64>) -> bool {
        let waited = self.since.elapsed();
        if waited < self.withdraw_wait {
            return false;
        }
        let own = match own_flows() {
            Ok(n) => n,
            Err(e) => {
                warn!("counting the flows left to drain: {e:#}");
                u64::MAX
            }
        };
        self.flows_left = Some(own);
        if own == 0 {
            info!(target: TARGET, event = "ha_drain", state = "done", waited_ms = waited.as_millis() as u64, "drained: no flow left");
            return true;
        }
        if waited >= self.withdraw_wait + self.timeout {
            warn!(target: TARGET, event = "ha_drain", state = "timed_out", flows_left = own, "drain_timeout_s passed: stopping; the peers adopt the flows left");
            return true;
        }
        false
    }
}

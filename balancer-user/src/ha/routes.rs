//! Active-active announcing: a host route to each VIP this node can serve, in
//! the kernel routing table `ha.announce_table`, which the node's BGP daemon
//! (BIRD, FRR) exports to the routers. The balancer speaks no BGP: a route
//! added here is an announcement, a route removed a withdrawal.

use std::{collections::BTreeSet, net::IpAddr};

use anyhow::Result;
use tracing::{info, warn};

use crate::{
    events::TARGET,
    netlink::{HostRoute, Netlink},
};

/// The routes' protocol number (`proto 249` in `ip route`): what tells this
/// program's routes from any other in the table, so that a daemon that was
/// killed has its routes removed by the next. `/etc/iproute2/rt_protos.d`
/// names it "balancer" where the package is installed.
pub const PROTOCOL: u8 = 249;

pub struct Routes {
    table: u32,
    announced: BTreeSet<IpAddr>,
}

impl Routes {
    /// Removes what a predecessor left in `table` (a killed daemon cannot
    /// withdraw): this node announces nothing until it can serve.
    pub async fn open(netlink: &Netlink, table: u32) -> Result<Self> {
        for route in netlink.routes(table, PROTOCOL).await? {
            netlink.del_route(route).await?;
            info!(target: TARGET, event = "ha_route", vip = %route.ip, table, announced = false, reason = "left by an earlier run", "route withdrawn");
        }
        Ok(Self {
            table,
            announced: BTreeSet::new(),
        })
    }

    pub fn announced(&self) -> Vec<IpAddr> {
        self.announced.iter().copied().collect()
    }

    /// Announces exactly `vips`; `why` says why one is withdrawn.
    pub async fn set(&mut self, netlink: &Netlink, vips: &[IpAddr], why: &str) {
        let want: BTreeSet<IpAddr> = vips.iter().copied().collect();
        for ip in want.difference(&self.announced.clone()) {
            match netlink.add_route(self.route(*ip)).await {
                Ok(()) => {
                    self.announced.insert(*ip);
                    info!(target: TARGET, event = "ha_route", vip = %ip, table = self.table, announced = true, "route announced");
                }
                Err(e) => warn!(vip = %ip, "announcing: {e:#}"),
            }
        }
        for ip in self.announced.clone().difference(&want) {
            match netlink.del_route(self.route(*ip)).await {
                Ok(()) => {
                    self.announced.remove(ip);
                    info!(target: TARGET, event = "ha_route", vip = %ip, table = self.table, announced = false, reason = why, "route withdrawn");
                }
                Err(e) => warn!(vip = %ip, "withdrawing: {e:#}"),
            }
        }
    }

    fn route(&self, ip: IpAddr) -> HostRoute {
        HostRoute {
            table: self.table,
            protocol: PROTOCOL,
            ip,
        }
    }
}

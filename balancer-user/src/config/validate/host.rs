//! The host-wide sections: `[node]`, `[control]`, `[flows]`, `[firewall]`, `[ha]`.

use std::path::PathBuf;

use toml::Spanned;

use super::{Checker, interface_name};
use crate::config::{
    MAX_INTERFACES, MAX_SNAT_ADDRS, addr,
    raw::{At, Part, RawControl, RawFirewall, RawFlows, RawHa, RawNode, Text},
    types::{Control, Firewall, Flows, Forwarding, Ha, HaMode, Node, RateLimit, SynCookies},
};

impl Checker<'_> {
    pub(super) fn node(&mut self, part: Part<RawNode>) -> Option<Node> {
        let At {
            value: raw,
            line,
            refused,
        } = match part {
            Part::Present(at) => at,
            Part::Refused => return None,
            Part::Absent => {
                self.error(
                    "node",
                    None,
                    "missing: a [node] table with at least `name` and `interfaces` is required",
                );
                return None;
            }
        };
        let name = match raw.name {
            Some(name) => self.non_empty("node.name", name),
            None => {
                self.missing(
                    &refused,
                    "node.name",
                    line,
                    "name this host, like name = \"lb-a\"",
                );
                String::new()
            }
        };
        let interfaces = match raw.interfaces {
            None => {
                self.missing(
                    &refused,
                    "node.interfaces",
                    line,
                    "list the interfaces XDP attaches to, like interfaces = [\"eth0\"]",
                );
                Vec::new()
            }
            Some(list) => {
                if list.get_ref().is_empty() {
                    self.error_at(
                        "node.interfaces",
                        &list,
                        "is empty: XDP needs at least one interface to attach to",
                    );
                } else if list.get_ref().len() > MAX_INTERFACES {
                    let message = format!(
                        "{} interfaces; this version supports at most {MAX_INTERFACES}",
                        list.get_ref().len()
                    );
                    self.error_at("node.interfaces", &list, message);
                }
                self.interface_names("node.interfaces", list.into_inner())
            }
        };
        let forwarding = raw
            .forwarding
            .as_ref()
            .map_or(Forwarding::default(), |f| *f.get_ref());
        let has_snat = raw
            .snat_addresses
            .as_ref()
            .is_some_and(|list| !list.is_empty());
        let snat_addresses = self.ips("node.snat_addresses", raw.snat_addresses);
        let v4 = snat_addresses.iter().filter(|a| a.is_ipv4()).count();
        let per_family = v4.max(snat_addresses.len() - v4);
        if per_family > MAX_SNAT_ADDRS {
            let message = format!(
                "{per_family} addresses of one family; this version uses at most {MAX_SNAT_ADDRS} per family"
            );
            self.error("node.snat_addresses", None, message);
        }
        if forwarding == Forwarding::Dnat && has_snat {
            self.warn(
                "node.snat_addresses",
                "not used with forwarding = \"dnat\", which keeps the client's address",
            );
        }
        let snat_port_range = match raw.snat_port_range {
            None => Node::DEFAULT_SNAT_PORT_RANGE,
            Some(text) => {
                if forwarding == Forwarding::Dnat {
                    self.warn(
                        "node.snat_port_range",
                        "not used with forwarding = \"dnat\", which keeps the client's port",
                    );
                }
                self.snat_port_range(&text)
                    .unwrap_or(Node::DEFAULT_SNAT_PORT_RANGE)
            }
        };
        Some(Node {
            name,
            interfaces,
            xdp_mode: raw.xdp_mode.unwrap_or_default(),
            forwarding,
            snat_addresses,
            snat_port_range,
        })
    }

    fn snat_port_range(&mut self, text: &Text) -> Option<(u16, u16)> {
        const PATH: &str = "node.snat_port_range";
        // Enough for as many concurrent flows to one backend as a busy service sees.
        const MIN_PORTS: u64 = 1024;
        let (first, last) = match addr::port_range(text.get_ref()) {
            Ok(range) => range,
            Err(message) => {
                self.error_at(PATH, text, message);
                return None;
            }
        };
        let message = if first < 1024 || last > 65535 {
            format!("{first}-{last} must lie within 1024-65535 (ports below 1024 are the host's)")
        } else if first > last {
            format!("{first} is above {last}; write the lower port first")
        } else {
            if last - first + 1 < MIN_PORTS {
                // Small ranges are legitimate (tests, a backend with few clients),
                // but they cap concurrent flows per backend.
                self.warn(
                    PATH,
                    format!(
                        "{first}-{last} has {} ports: at most that many concurrent flows per backend and SNAT address",
                        last - first + 1
                    ),
                );
            }
            // Both are within 1024..=65535 here.
            return Some((first as u16, last as u16));
        };
        self.error_at(PATH, text, message);
        None
    }

    pub(super) fn control(&mut self, part: Part<RawControl>) -> Control {
        let Part::Present(At { value: raw, .. }) = part else {
            return Control::default();
        };
        let default = Control::default();
        let metrics = match raw.metrics {
            None => default.metrics,
            Some(text) if text.get_ref().trim() == "off" => None,
            Some(text) => match addr::socket(text.get_ref()) {
                Ok(addr) if addr.port() == 0 => {
                    self.error_at("control.metrics", &text, "port 0 is out of range 1-65535");
                    None
                }
                Ok(addr) => Some(addr),
                Err(message) => {
                    let message = format!("{message}; or \"off\" to disable metrics");
                    self.error_at("control.metrics", &text, message);
                    None
                }
            },
        };
        Control {
            socket: self.path("control.socket", raw.socket, default.socket),
            metrics,
            pin_dir: self.path("control.pin_dir", raw.pin_dir, default.pin_dir),
        }
    }

    pub(super) fn flows(&mut self, part: Part<RawFlows>) -> Flows {
        let default = Flows::default();
        let Part::Present(At { value: raw, .. }) = part else {
            return default;
        };
        let tcp_established_timeout_s = self.at_least_one(
            "flows.tcp_established_timeout_s",
            raw.tcp_established_timeout_s,
            default.tcp_established_timeout_s,
        );
        let tcp_syn_timeout_s = match raw.tcp_syn_timeout_s {
            // The documented default, but never longer than an established flow's limit.
            None => default.tcp_syn_timeout_s.min(tcp_established_timeout_s),
            Some(value) => self.tcp_syn_timeout(&value, tcp_established_timeout_s),
        };
        Flows {
            capacity: self.at_least_one("flows.capacity", raw.capacity, default.capacity),
            tcp_established_timeout_s,
            tcp_transitory_timeout_s: self.at_least_one(
                "flows.tcp_transitory_timeout_s",
                raw.tcp_transitory_timeout_s,
                default.tcp_transitory_timeout_s,
            ),
            tcp_syn_timeout_s,
            udp_timeout_s: self.at_least_one(
                "flows.udp_timeout_s",
                raw.udp_timeout_s,
                default.udp_timeout_s,
            ),
        }
    }

    fn tcp_syn_timeout(&mut self, value: &Spanned<u32>, established: u32) -> u32 {
        const PATH: &str = "flows.tcp_syn_timeout_s";
        const MAX: u32 = Flows::MAX_TCP_SYN_TIMEOUT_S;
        let seconds = *value.get_ref();
        if seconds == 0 {
            self.error_at(PATH, value, "must be at least 1");
        } else if seconds > MAX {
            let message = format!(
                "{seconds} s is above {MAX} s, by when a client has given up its handshake: a half-open flow kept longer only holds a slot for a SYN flood"
            );
            self.error_at(PATH, value, message);
        } else if established > 0 && seconds > established {
            // (An established limit of 0 is reported on its own.)
            let message = format!(
                "{seconds} s is above flows.tcp_established_timeout_s ({established} s): a half-open flow must not outlive an established one"
            );
            self.error_at(PATH, value, message);
        }
        seconds
    }

    pub(super) fn firewall(&mut self, part: Part<RawFirewall>) -> Firewall {
        let default = Firewall::default();
        let Part::Present(At { value: raw, .. }) = part else {
            return default;
        };
        let mut limit = RateLimit::default();
        if let Some(raw_limit) = raw.new_connections_per_source {
            const PATH: &str = "firewall.new_connections_per_source";
            limit.rate = raw_limit.rate.map_or(0, Spanned::into_inner);
            // A burst of one second's worth is the usual token-bucket default.
            limit.burst = raw_limit
                .burst
                .as_ref()
                .map_or(limit.rate, |b| *b.get_ref());
            match raw_limit.burst {
                Some(burst) if limit.rate > 0 && limit.burst == 0 => self.error_at(
                    format!("{PATH}.burst"),
                    &burst,
                    "must be at least 1 when rate is set: a burst of 0 refuses every new connection",
                ),
                Some(_) if limit.rate == 0 && limit.burst > 0 => self.warn(
                    format!("{PATH}.burst"),
                    "has no effect with rate = 0 (unlimited)",
                ),
                _ => {}
            }
        }
        let syn_cookies = raw.syn_cookies.unwrap_or_default();
        if syn_cookies != SynCookies::Auto {
            for (key, set) in [
                ("syn_flood_threshold", raw.syn_flood_threshold.is_some()),
                ("syn_flood_cooldown_s", raw.syn_flood_cooldown_s.is_some()),
            ] {
                if set {
                    self.warn(
                        format!("firewall.{key}"),
                        format!("has no effect with syn_cookies = \"{syn_cookies}\": only \"auto\" detects floods"),
                    );
                }
            }
        }
        Firewall {
            default: raw.default.unwrap_or_default(),
            allow: self.networks("firewall.allow", raw.allow),
            deny: self.networks("firewall.deny", raw.deny),
            new_connections_per_source: limit,
            syn_cookies,
            syn_flood_threshold: self.within(
                "firewall.syn_flood_threshold",
                raw.syn_flood_threshold,
                1..=Firewall::MAX_SYN_FLOOD_THRESHOLD,
                default.syn_flood_threshold,
                "half-open flows per second",
            ),
            syn_flood_cooldown_s: self.within(
                "firewall.syn_flood_cooldown_s",
                raw.syn_flood_cooldown_s,
                1..=Firewall::MAX_SYN_FLOOD_COOLDOWN_S,
                default.syn_flood_cooldown_s,
                "seconds",
            ),
        }
    }

    pub(super) fn ha(&mut self, part: Part<RawHa>, node: Option<&Node>) -> Ha {
        let default = Ha::default();
        let Part::Present(At {
            value: raw,
            line,
            refused,
        }) = part
        else {
            return default;
        };
        let enabled = raw.enabled.unwrap_or(default.enabled);
        let mode = raw.mode.unwrap_or(default.mode);
        let announce_table = match raw.announce_table {
            None => default.announce_table,
            Some(table) => {
                if mode != HaMode::ActiveActive {
                    self.warn(
                        "ha.announce_table",
                        format!(
                            "ignored with mode = \"{mode}\": only mode = \"{}\" announces VIPs by routing",
                            HaMode::ActiveActive
                        ),
                    );
                }
                self.announce_table(&table)
                    .unwrap_or(default.announce_table)
            }
        };
        let interface = raw.interface.map(|name| {
            if let Err(message) = interface_name(name.get_ref()) {
                self.error_at("ha.interface", &name, message);
            }
            name.into_inner()
        });
        let priority = match raw.priority {
            None => default.priority,
            Some(priority) => match u8::try_from(*priority.get_ref()) {
                Ok(value @ 1..=254) => value,
                _ => {
                    let message = format!(
                        "{} is out of range 1-254 (the highest healthy priority is active)",
                        priority.get_ref()
                    );
                    self.error_at("ha.priority", &priority, message);
                    default.priority
                }
            },
        };
        let peers = self.ips("ha.peers", raw.peers);
        let auth_key_file = raw
            .auth_key_file
            .map(|text| PathBuf::from(self.non_empty("ha.auth_key_file", text)));
        if enabled {
            if peers.is_empty() && !refused.iter().any(|k| k == "peers") {
                self.error(
                    "ha.peers",
                    line,
                    "ha.enabled = true needs at least one peer: the other balancer host's address",
                );
            }
            if interface.is_none() {
                self.missing(
                    &refused,
                    "ha.interface",
                    line,
                    "ha.enabled = true needs the interface that heartbeats are sent on",
                );
            }
            if auth_key_file.is_none() {
                self.missing(
                    &refused,
                    "ha.auth_key_file",
                    line,
                    "ha.enabled = true needs a key file: heartbeats are authenticated",
                );
            }
        }
        if enabled && mode == HaMode::ActiveActive {
            self.active_active_node(node, line);
            if raw.sync_flows == Some(false) {
                self.warn(
                    "ha.sync_flows",
                    "false in active-active: a connection that the routers move to another node (one joins, drains or dies) breaks there",
                );
            }
        }
        for (key, written) in [
            ("ha.withdraw_wait_ms", raw.withdraw_wait_ms.is_some()),
            ("ha.drain_timeout_s", raw.drain_timeout_s.is_some()),
        ] {
            if written && mode != HaMode::ActiveActive {
                self.warn(
                    key,
                    format!(
                        "ignored with mode = \"{mode}\": only mode = \"{}\" drains by withdrawing routes",
                        HaMode::ActiveActive
                    ),
                );
            }
        }
        let track_interfaces = raw.track_interfaces.unwrap_or_default();
        if let Some(node) = node {
            let foreign = interface
                .iter()
                .map(|name| ("ha.interface".to_owned(), name))
                .chain(
                    track_interfaces
                        .iter()
                        .enumerate()
                        .map(|(i, name)| (format!("ha.track_interfaces[{i}]"), name.get_ref())),
                )
                .filter(|(_, name)| !node.interfaces.contains(name))
                .map(|(path, name)| (path, format!("`{name}` is not among node.interfaces")))
                .collect::<Vec<_>>();
            for (path, message) in foreign {
                self.warn(path, message);
            }
        }
        let track_interfaces = self.interface_names("ha.track_interfaces", track_interfaces);
        Ha {
            enabled,
            mode,
            interface,
            peers,
            priority,
            advert_interval_ms: self.at_least_one(
                "ha.advert_interval_ms",
                raw.advert_interval_ms,
                default.advert_interval_ms,
            ),
            dead_after: self.at_least_one("ha.dead_after", raw.dead_after, default.dead_after),
            preempt: raw.preempt.unwrap_or(default.preempt),
            auth_key_file,
            sync_flows: raw.sync_flows.unwrap_or(default.sync_flows),
            track_interfaces,
            track_xdp: raw.track_xdp.unwrap_or(default.track_xdp),
            track_backends: raw.track_backends.unwrap_or(default.track_backends),
            watchdog_ms: raw
                .watchdog_ms
                .map_or(default.watchdog_ms, |v| *v.get_ref()),
            announce_table,
            bulk_sync_rate: self.within(
                "ha.bulk_sync_rate",
                raw.bulk_sync_rate,
                Ha::BULK_SYNC_RATES,
                default.bulk_sync_rate,
                "flows per second",
            ),
            preempt_sync_timeout_ms: raw
                .preempt_sync_timeout_ms
                .map_or(default.preempt_sync_timeout_ms, |v| *v.get_ref()),
            takeover_grace_ms: self.within(
                "ha.takeover_grace_ms",
                raw.takeover_grace_ms,
                0..=Ha::MAX_TAKEOVER_GRACE_MS,
                default.takeover_grace_ms,
                "milliseconds",
            ),
            withdraw_wait_ms: self.within(
                "ha.withdraw_wait_ms",
                raw.withdraw_wait_ms,
                0..=Ha::MAX_WITHDRAW_WAIT_MS,
                default.withdraw_wait_ms,
                "milliseconds",
            ),
            drain_timeout_s: self.within(
                "ha.drain_timeout_s",
                raw.drain_timeout_s,
                0..=Ha::MAX_DRAIN_TIMEOUT_S,
                default.drain_timeout_s,
                "seconds",
            ),
        }
    }

    /// Active-active nodes full-NAT with addresses of their own, which a peer
    /// adopts when the node dies: the backends' replies to its flows need
    /// somewhere to go. Neither DNAT (the backends answer the client through
    /// their gateway, one node) nor the egress interface's address (which no
    /// peer can take) allows that.
    fn active_active_node(&mut self, node: Option<&Node>, line: Option<usize>) {
        let Some(node) = node else {
            return;
        };
        if node.forwarding == Forwarding::Dnat {
            self.error(
                "ha.mode",
                line,
                "\"active-active\" needs node.forwarding = \"full-nat\": with DNAT a backend answers the client through its gateway, which cannot be every node",
            );
        } else if node.snat_addresses.is_empty() {
            self.error(
                "node.snat_addresses",
                line,
                "ha.mode = \"active-active\" needs addresses of this node's own for full NAT (not the interface's): a peer adopts them when this node dies, so that the backends' replies still arrive",
            );
        }
    }

    /// `value` if it lies in `range`, else an error naming the range.
    fn within(
        &mut self,
        path: &str,
        value: Option<Spanned<u32>>,
        range: std::ops::RangeInclusive<u32>,
        default: u32,
        unit: &str,
    ) -> u32 {
        match value {
            None => default,
            Some(v) if range.contains(v.get_ref()) => v.into_inner(),
            Some(v) => {
                let message = format!(
                    "{} is out of range {}-{} ({unit})",
                    v.get_ref(),
                    range.start(),
                    range.end()
                );
                self.error_at(path, &v, message);
                default
            }
        }
    }

    fn announce_table(&mut self, table: &Spanned<i64>) -> Option<u32> {
        const PATH: &str = "ha.announce_table";
        let number = *table.get_ref();
        let message = match u32::try_from(number) {
            Err(_) | Ok(0) => {
                format!("{number} is out of range 1-4294967295 (a kernel routing table's number)")
            }
            Ok(id) => match Ha::RESERVED_TABLES
                .iter()
                .find(|(reserved, _)| *reserved == id)
            {
                None => return Some(id),
                Some((_, name)) => format!(
                    "{id} is the kernel's `{name}` table, which holds the host's own routes; pick a table of the balancer's own, like {}",
                    Ha::DEFAULT_ANNOUNCE_TABLE
                ),
            },
        };
        self.error_at(PATH, table, message);
        None
    }
}

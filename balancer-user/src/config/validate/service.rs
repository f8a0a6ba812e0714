//! `[[service]]` tables: each service, its health check and its backends, and
//! the rules between services.

use std::net::IpAddr;

use toml::Spanned;

use super::{Checker, Seen};
use crate::config::{
    MAX_BACKENDS, MAX_BACKENDS_PER_SERVICE, MAX_SERVICES, MAX_WEIGHT, addr,
    raw::{At, Part, RawBackend, RawHealth, RawService, ServiceEntry},
    types::{BackendConfig, Forwarding, Health, HealthKind, Node, Protocol, Service},
};

impl Checker<'_> {
    /// `None` when some service could not be read at all.
    pub(super) fn services(
        &mut self,
        part: Part<Vec<Option<At<ServiceEntry>>>>,
        node: Option<&Node>,
    ) -> Option<Vec<Service>> {
        let entries = match part {
            Part::Refused => return None,
            Part::Absent => Vec::new(),
            Part::Present(At { value, line, .. }) => {
                if value.len() > MAX_SERVICES {
                    let message = format!(
                        "{} services; this version supports at most {MAX_SERVICES}",
                        value.len()
                    );
                    self.error("service", line, message);
                }
                value
            }
        };
        if entries.is_empty() {
            self.warn(
                "service",
                "no [[service]] tables: nothing will be forwarded",
            );
        }
        let mut names = Seen::new();
        let mut keys = Seen::new();
        // The names as far as valid, by index in the file, to name earlier services.
        let mut known_names: Vec<Option<String>> = Vec::new();
        let mut services = Some(Vec::new());
        for (i, entry) in entries.into_iter().enumerate() {
            let path = format!("service[{i}]");
            let (service, identity) = match entry {
                Some(entry) => self.service(&path, entry, node),
                None => (None, Identity::default()),
            };
            // Compared even for services refused for other reasons: every clash is reported.
            if let Some((name, line)) = &identity.name
                && let Some(j) = names.earlier(name.clone(), i)
            {
                let message = format!("name \"{name}\" is already used by service[{j}]");
                self.error(format!("{path}.name"), *line, message);
            }
            if let Some((key @ (vip, port, protocol), line)) = identity.key
                && let Some(j) = keys.earlier(key, i)
            {
                let earlier = known_names[j]
                    .as_ref()
                    .map_or(String::new(), |name| format!(" (\"{name}\")"));
                let message = format!(
                    "{vip} port {port}/{protocol} is already used by service[{j}]{earlier}"
                );
                self.error(format!("{path}.vip"), line, message);
            }
            known_names.push(identity.name.map(|(name, _)| name));
            match (service, services.as_mut()) {
                (Some(service), Some(services)) => services.push(service),
                _ => services = None,
            }
        }
        if let Some(all) = &services {
            let total: usize = all.iter().map(|s| s.backends.len()).sum();
            if total > MAX_BACKENDS {
                let message = format!(
                    "{total} backends in all; this version supports at most {MAX_BACKENDS}"
                );
                self.error("service", None, message);
                return None;
            }
        }
        services
    }

    /// The service if it is valid, and as much of what identifies it as is.
    fn service(
        &mut self,
        path: &str,
        entry: At<ServiceEntry>,
        node: Option<&Node>,
    ) -> (Option<Service>, Identity) {
        let At {
            value: entry,
            line,
            refused,
        } = entry;
        let health = self.health(&format!("{path}.health"), entry.health);
        let raw = entry.fields;
        let vip_text = raw.as_ref().and_then(|raw| raw.vip.as_ref());
        let vip = vip_text.and_then(|text| match addr::ip(text.get_ref()) {
            Ok(ip) if ip.is_unspecified() || ip.is_multicast() || ip == IpAddr::from([255; 4]) => {
                self.error_at(
                    format!("{path}.vip"),
                    text,
                    format!("{ip} cannot be a service address"),
                );
                None
            }
            Ok(ip) => Some(ip),
            Err(message) => {
                self.error_at(format!("{path}.vip"), text, message);
                None
            }
        });
        let backends = self.backends(&format!("{path}.backends"), entry.backends, vip, line);
        let Some(raw) = raw else {
            return (None, Identity::default());
        };
        let vip_line = raw.vip.as_ref().and_then(|v| self.line(v)).or(line);
        let RawService {
            name,
            vip: vip_text,
            port,
            protocol,
            scheduler,
            allow,
            deny,
            on_backend_down,
            drain_timeout_s,
            ..
        } = raw;
        let name = match name {
            None => {
                self.missing(
                    &refused,
                    &format!("{path}.name"),
                    line,
                    "every service needs a name",
                );
                None
            }
            Some(name) => match service_name(name.get_ref()) {
                Ok(()) => Some((name.get_ref().clone(), self.line(&name))),
                Err(message) => {
                    self.error_at(format!("{path}.name"), &name, message);
                    None
                }
            },
        };
        if vip_text.is_none() {
            self.missing(
                &refused,
                &format!("{path}.vip"),
                line,
                "the virtual address clients connect to, like vip = \"198.51.100.10\"",
            );
        }
        if let (Some(vip), Some(node), Some(text)) = (vip, node, &vip_text) {
            let family = addr::family(vip);
            if node.forwarding == Forwarding::FullNat
                && !node.snat_addresses.is_empty()
                && !node
                    .snat_addresses
                    .iter()
                    .any(|s| s.is_ipv4() == vip.is_ipv4())
            {
                self.error_at(
                    format!("{path}.vip"),
                    text,
                    format!(
                        "{family} service, but node.snat_addresses has no {family} address for full NAT to use (add one, or leave the list empty to use the egress interface's address)"
                    ),
                );
            }
        }
        let port = match &port {
            None => {
                self.missing(
                    &refused,
                    &format!("{path}.port"),
                    line,
                    "the port clients connect to",
                );
                None
            }
            Some(port) => self.port(&format!("{path}.port"), port),
        };
        let protocol = protocol.unwrap_or_default();
        let allow = self.networks(&format!("{path}.allow"), allow);
        let deny = self.networks(&format!("{path}.deny"), deny);
        let identity = Identity {
            name: name.clone(),
            key: vip
                .zip(port)
                .map(|(vip, port)| ((vip, port, protocol), vip_line)),
        };
        let service = match (name, vip, port, backends) {
            (Some((name, _)), Some(vip), Some(port), Some(backends)) => Some(Service {
                name,
                vip,
                port,
                protocol,
                scheduler: scheduler.unwrap_or_default(),
                allow,
                deny,
                health,
                on_backend_down: on_backend_down.unwrap_or_default(),
                drain_timeout_s: drain_timeout_s.unwrap_or(Service::DEFAULT_DRAIN_TIMEOUT_S),
                backends,
            }),
            _ => None,
        };
        (service, identity)
    }

    fn backends(
        &mut self,
        path: &str,
        part: Part<Vec<Option<At<RawBackend>>>>,
        vip: Option<IpAddr>,
        service_line: Option<usize>,
    ) -> Option<Vec<BackendConfig>> {
        let (entries, line) = match part {
            Part::Refused => return None,
            Part::Absent => {
                self.error(
                    path,
                    service_line,
                    "missing: a service needs at least one backend, like backends = [{ address = \"203.0.113.11:8080\" }]",
                );
                return None;
            }
            Part::Present(At { value, line, .. }) => (value, line),
        };
        if entries.is_empty() {
            self.error(path, line, "is empty: a service needs at least one backend");
            return None;
        }
        if entries.len() > MAX_BACKENDS_PER_SERVICE {
            let message = format!(
                "{} backends; this version supports at most {MAX_BACKENDS_PER_SERVICE} per service",
                entries.len()
            );
            self.error(path, line, message);
        }
        let mut seen = Seen::new();
        let mut backends = Vec::new();
        let mut complete = true;
        for (i, entry) in entries.into_iter().enumerate() {
            let backend = entry.and_then(|entry| self.backend(&format!("{path}[{i}]"), entry, vip));
            let Some(backend) = backend else {
                complete = false;
                continue;
            };
            if let Some(j) = seen.earlier(backend.address, i) {
                self.error(
                    format!("{path}[{i}].address"),
                    line,
                    format!("{} is listed twice (also {path}[{j}])", backend.address),
                );
                complete = false;
            }
            backends.push(backend);
        }
        if complete && backends.iter().all(|b| b.weight == 0) {
            self.error(
                path,
                line,
                "every backend has weight 0, and a weight of 0 with no other backend leaves new connections nowhere to go; give at least one backend a weight above 0",
            );
        }
        complete.then_some(backends)
    }

    fn backend(
        &mut self,
        path: &str,
        entry: At<RawBackend>,
        vip: Option<IpAddr>,
    ) -> Option<BackendConfig> {
        let At {
            value: raw,
            line,
            refused,
        } = entry;
        let weight = match raw.weight {
            None => Some(BackendConfig::DEFAULT_WEIGHT),
            Some(weight) => match u32::try_from(*weight.get_ref()) {
                Ok(w) if w <= MAX_WEIGHT => Some(w),
                Ok(w) => {
                    let message = format!(
                        "{w} is above {MAX_WEIGHT}, the largest weight this version supports"
                    );
                    self.error_at(format!("{path}.weight"), &weight, message);
                    None
                }
                Err(_) => {
                    let message = format!(
                        "{} is negative; weights are 0-{MAX_WEIGHT}",
                        weight.get_ref()
                    );
                    self.error_at(format!("{path}.weight"), &weight, message);
                    None
                }
            },
        };
        let Some(text) = raw.address else {
            self.missing(
                &refused,
                &format!("{path}.address"),
                line,
                "the backend's ADDRESS:PORT, like address = \"203.0.113.11:8080\"",
            );
            return None;
        };
        let path = format!("{path}.address");
        let address = match addr::socket(text.get_ref()) {
            Ok(address) => address,
            Err(message) => {
                self.error_at(path, &text, message);
                return None;
            }
        };
        let message = if address.port() == 0 {
            format!("port 0 in {address} is out of range 1-65535")
        } else if address.ip().is_unspecified() || address.ip().is_multicast() {
            format!("{} cannot be a backend address", address.ip())
        } else if let Some(vip) = vip.filter(|vip| vip.is_ipv4() != address.is_ipv4()) {
            format!(
                "{} backend for the {} VIP {vip}: a service's backends must be of its VIP's family",
                addr::family(address.ip()),
                addr::family(vip)
            )
        } else {
            return Some(BackendConfig {
                address,
                weight: weight?,
            });
        };
        self.error_at(path, &text, message);
        None
    }

    fn health(&mut self, path: &str, part: Part<RawHealth>) -> Health {
        let default = Health::default();
        let Part::Present(At {
            value: raw,
            line,
            refused,
        }) = part
        else {
            return default;
        };
        let kind = raw.kind.unwrap_or(default.kind);
        let kind_name = kind.as_str();
        // (key, present, kinds that use it); anything else is accepted but said to be ignored.
        use HealthKind::{Exec, Http, None as NoCheck, Tcp, Udp};
        let probing = [Tcp, Http, Udp, Exec];
        let uses: [(&str, bool, &[HealthKind]); 10] = [
            ("port", raw.port.is_some(), &[Tcp, Http, Udp]),
            ("path", raw.path.is_some(), &[Http]),
            ("expect_status", raw.expect_status.is_some(), &[Http]),
            ("expect_body", raw.expect_body.is_some(), &[Http]),
            ("payload", raw.payload.is_some(), &[Udp]),
            ("command", raw.command.is_some(), &[Exec]),
            ("interval_ms", raw.interval_ms.is_some(), &probing),
            ("timeout_ms", raw.timeout_ms.is_some(), &probing),
            ("rise", raw.rise.is_some(), &probing),
            ("fall", raw.fall.is_some(), &probing),
        ];
        for (key, present, used_by) in uses {
            if present && !used_by.contains(&kind) {
                let kinds = used_by
                    .iter()
                    .map(|k| format!("\"{k}\""))
                    .collect::<Vec<_>>()
                    .join(" or ");
                self.warn(
                    format!("{path}.{key}"),
                    format!("ignored with kind = \"{kind_name}\"; it is used with kind = {kinds}"),
                );
            }
        }
        let port = raw
            .port
            .and_then(|p| self.port(&format!("{path}.port"), &p));
        let agent_port = raw
            .agent_port
            .and_then(|p| self.port(&format!("{path}.agent_port"), &p));
        let path_value = match raw.path {
            Some(text) => {
                if !text.get_ref().starts_with('/') {
                    let message = format!("`{}` must start with /", text.get_ref());
                    self.error_at(format!("{path}.path"), &text, message);
                }
                Some(text.into_inner())
            }
            None => {
                if kind == Http {
                    self.missing(
                        &refused,
                        &format!("{path}.path"),
                        line,
                        "kind = \"http\" needs the path to request, like path = \"/health\"",
                    );
                }
                None
            }
        };
        let expect_status =
            raw.expect_status
                .and_then(|status| match u16::try_from(*status.get_ref()) {
                    Ok(code @ 100..=599) => Some(code),
                    _ => {
                        let message =
                            format!("{} is not an HTTP status (100-599)", status.get_ref());
                        self.error_at(format!("{path}.expect_status"), &status, message);
                        None
                    }
                });
        let command = match raw.command {
            Some(command) => {
                if command
                    .get_ref()
                    .first()
                    .is_none_or(|program| program.trim().is_empty())
                {
                    self.error_at(
                        format!("{path}.command"),
                        &command,
                        "must name a program to run, like command = [\"/usr/local/bin/check\", \"--quiet\"]",
                    );
                }
                Some(command.into_inner())
            }
            None => {
                if kind == Exec {
                    self.missing(
                        &refused,
                        &format!("{path}.command"),
                        line,
                        "kind = \"exec\" needs the command to run, like command = [\"/usr/local/bin/check\"]",
                    );
                }
                None
            }
        };
        let interval_ms = self.at_least_one(
            &format!("{path}.interval_ms"),
            raw.interval_ms,
            default.interval_ms,
        );
        let timeout_ms = self.at_least_one(
            &format!("{path}.timeout_ms"),
            raw.timeout_ms,
            default.timeout_ms,
        );
        if kind != NoCheck && timeout_ms >= interval_ms && interval_ms > 0 {
            self.warn(
                format!("{path}.timeout_ms"),
                format!(
                    "{timeout_ms} ms is not below interval_ms ({interval_ms} ms): a slow backend is probed again before the last probe has timed out"
                ),
            );
        }
        Health {
            kind,
            port,
            path: path_value,
            expect_status,
            expect_body: raw.expect_body.map(Spanned::into_inner),
            payload: raw.payload.map(Spanned::into_inner),
            command,
            agent_port,
            interval_ms,
            timeout_ms,
            rise: self.at_least_one(&format!("{path}.rise"), raw.rise, default.rise),
            fall: self.at_least_one(&format!("{path}.fall"), raw.fall, default.fall),
        }
    }
}

/// What must be unique among services, with the line to report a clash at.
#[derive(Default)]
struct Identity {
    name: Option<(String, Option<usize>)>,
    key: Option<((IpAddr, u16, Protocol), Option<usize>)>,
}

/// Names appear on the command line (`balancer backend add NAME ...`) and as
/// metric labels, so they are kept to characters that need no quoting.
fn service_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        Err("must not be empty".to_owned())
    } else if !name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    {
        Err(format!(
            "\"{name}\" may contain only letters, digits, '-', '_' and '.'"
        ))
    } else {
        Ok(())
    }
}

//! One test per rule of the configuration: each asserts the key path and that the
//! message says what is wrong.

use std::net::{IpAddr, SocketAddr};

use super::*;

/// The user contract (shared/spec/balancer.example.toml, outside the repository),
/// copied byte for byte: tests read only files inside the repository.
const CONTRACT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/contract.toml");
/// The project's commented reference: every key the reader accepts.
const REFERENCE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../config/balancer.example.toml"
);

fn read(path: &str) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|err| panic!("{path}: {err}"))
}

/// The paths of the warnings, sorted.
fn warned(loaded: &Loaded) -> Vec<&str> {
    let mut paths: Vec<&str> = loaded.warnings.iter().map(|w| w.path.as_str()).collect();
    paths.sort_unstable();
    paths
}

/// The warnings that the example files get: `announce_table`, which
/// active-standby does not use.
const PENDING_IN_THE_EXAMPLES: [&str; 1] = ["ha.announce_table"];

/// The smallest accepted file; tests change or append to it.
const BASE: &str = r#"
[node]
name = "lb-a"
interfaces = ["front", "back"]

[[service]]
name = "api"
vip = "198.51.100.10"
port = 8080
backends = [{ address = "203.0.113.11:8080" }, { address = "203.0.113.12:8080" }]
"#;

fn accepted(text: &str) -> Loaded {
    match parse(text) {
        Ok(loaded) => loaded,
        Err(err) => panic!("refused:\n{err}\n--- file:\n{text}"),
    }
}

fn refused(text: &str) -> Vec<Problem> {
    match parse(text) {
        Ok(loaded) => panic!("accepted: {loaded:#?}\n--- file:\n{text}"),
        Err(err) => err.problems,
    }
}

/// The problem at `path`, which must say `needle`.
fn problem(text: &str, path: &str, needle: &str) -> Problem {
    let problems = refused(text);
    let listing = problems
        .iter()
        .map(|p| format!("  {p}"))
        .collect::<Vec<_>>()
        .join("\n");
    problems
        .into_iter()
        .find(|p| p.path == path && p.message.contains(needle))
        .unwrap_or_else(|| panic!("no problem at {path} saying {needle:?}; got:\n{listing}"))
}

fn warning(loaded: &Loaded, path: &str, needle: &str) -> Warning {
    loaded
        .warnings
        .iter()
        .find(|w| w.path == path && w.message.contains(needle))
        .cloned()
        .unwrap_or_else(|| {
            panic!(
                "no warning at {path} saying {needle:?}; got {:#?}",
                loaded.warnings
            )
        })
}

fn base_with(from: &str, to: &str) -> String {
    assert!(BASE.contains(from), "BASE has no {from:?}");
    BASE.replacen(from, to, 1)
}

fn line_of(text: &str, needle: &str) -> usize {
    let offset = text.find(needle).expect("needle in text");
    text[..offset].matches('\n').count() + 1
}

fn service_with_backends(name: &str, port: u16, count: usize) -> String {
    let backends = (0..count)
        // Many instances per host: addresses cycle, ports tell them apart.
        .map(|i| {
            format!(
                "{{ address = \"203.0.113.{}:{}\" }}",
                i % 200 + 1,
                10000 + i
            )
        })
        .collect::<Vec<_>>()
        .join(", ");
    format!(
        "[[service]]\nname = \"{name}\"\nvip = \"198.51.100.10\"\nport = {port}\nbackends = [{backends}]\n"
    )
}

// --- files that must load -------------------------------------------------

#[test]
fn contract_loads_as_it_is() {
    let loaded = accepted(&read(CONTRACT));
    let config = &loaded.config;
    assert_eq!(config.node.name, "lb-a");
    assert_eq!(config.node.interfaces, ["front", "back"]);
    assert_eq!(config.node.forwarding, Forwarding::FullNat);
    assert_eq!(
        config.node.snat_addresses,
        ["203.0.113.9".parse::<IpAddr>().unwrap()]
    );
    assert_eq!(
        config.control.metrics,
        Some("127.0.0.1:9108".parse().unwrap())
    );
    assert_eq!(config.flows.capacity, 1_048_576);
    assert_eq!(
        config.firewall.deny,
        ["192.0.2.0/24".parse::<ipnet::IpNet>().unwrap()]
    );
    assert_eq!(
        config.firewall.new_connections_per_source,
        RateLimit {
            rate: 2000,
            burst: 4000
        }
    );
    assert!(config.ha.enabled);
    assert_eq!(config.ha.priority, 200);
    assert_eq!(config.ha.track_interfaces, ["front", "back"]);
    let names: Vec<_> = config.services.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["api", "app", "dns", "db-rw", "db-ro"]);
    let backends: usize = config.services.iter().map(|s| s.backends.len()).sum();
    assert_eq!(backends, 13);
    let api = &config.services[0];
    assert_eq!(api.health.kind, HealthKind::Http);
    assert_eq!(api.health.path.as_deref(), Some("/health"));
    assert_eq!(api.backends[2].weight, 50);
    assert_eq!(
        config.services[1].backends[0].weight,
        BackendConfig::DEFAULT_WEIGHT
    );
    assert_eq!(config.services[2].protocol, Protocol::Udp);
    assert_eq!(config.services[2].scheduler, Scheduler::Maglev);
    assert_eq!(config.services[3].health.port, Some(8008));
    assert_eq!(config.services[3].on_backend_down, OnBackendDown::Reset);
    // The keys of the SYN flood defences and of coming features, read as written.
    assert_eq!(config.flows.tcp_syn_timeout_s, 5);
    assert_eq!(config.firewall.syn_cookies, SynCookies::Auto);
    assert_eq!(config.ha.mode, HaMode::ActiveStandby);
    assert_eq!(config.ha.announce_table, 200);
    // Everything else it uses is enforced: said nothing about.
    assert_eq!(
        warned(&loaded),
        PENDING_IN_THE_EXAMPLES,
        "{:#?}",
        loaded.warnings
    );
}

#[test]
fn reference_loads_as_it_is() {
    let loaded = accepted(&read(REFERENCE));
    let config = &loaded.config;
    assert_eq!(config.node.name, "lb-a");
    assert_eq!(config.node.snat_port_range, Node::DEFAULT_SNAT_PORT_RANGE);
    let names: Vec<_> = config.services.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["api", "app", "dns", "smtp", "db-rw", "db-ro"]);
    let kinds: Vec<_> = config.services.iter().map(|s| s.health.kind).collect();
    use HealthKind::{Exec, Http, Tcp, Udp};
    assert_eq!(kinds, [Http, Tcp, Udp, Exec, Http, Http]);
    // A DNS query for the root's NS records: header, root name, type NS, class IN.
    let dns = config.services[2].health.payload.as_deref().unwrap();
    assert_eq!(
        dns.as_bytes(),
        [0x12, 0x34, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 2, 0, 1]
    );
    // No health key of another kind, no other remark; the reference, in
    // active-standby, also documents active-active's drain.
    let mut expected = PENDING_IN_THE_EXAMPLES.to_vec();
    expected.extend(["ha.drain_timeout_s", "ha.withdraw_wait_ms"]);
    expected.sort_unstable();
    assert_eq!(warned(&loaded), expected, "{:#?}", loaded.warnings);
}

/// Key paths of a TOML document, tables of lists flattened (`service.health.kind`),
/// each with whether its value is a table or a list of tables.
fn key_paths(text: &str) -> std::collections::BTreeMap<String, bool> {
    fn walk(prefix: &str, table: &toml::Table, out: &mut std::collections::BTreeMap<String, bool>) {
        for (key, value) in table {
            let path = if prefix.is_empty() {
                key.clone()
            } else {
                format!("{prefix}.{key}")
            };
            let tables: Vec<&toml::Table> = match value {
                toml::Value::Table(t) => vec![t],
                toml::Value::Array(items) => items.iter().filter_map(|v| v.as_table()).collect(),
                _ => Vec::new(),
            };
            for t in &tables {
                walk(&path, t, out);
            }
            *out.entry(path).or_default() |= !tables.is_empty();
        }
    }
    let mut out = std::collections::BTreeMap::new();
    walk("", &text.parse().expect("TOML"), &mut out);
    out
}

#[test]
fn reference_has_every_key_of_the_contract() {
    let reference = key_paths(&read(REFERENCE));
    let missing: Vec<_> = key_paths(&read(CONTRACT))
        .into_keys()
        .filter(|path| !reference.contains_key(path))
        .collect();
    assert_eq!(
        missing,
        Vec::<String>::new(),
        "in the contract, not in the reference"
    );
}

/// The keys a raw shape accepts, as serde's derive lists them for its
/// `deserialize_struct` (renamed keys under their file names).
fn keys_of<T: serde::de::DeserializeOwned>() -> &'static [&'static str] {
    use serde::de::{Error, Visitor, value};
    struct Names<'a>(&'a mut &'static [&'static str]);
    impl<'de> serde::Deserializer<'de> for Names<'_> {
        type Error = value::Error;
        fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, value::Error> {
            Err(value::Error::custom("not a struct"))
        }
        fn deserialize_struct<V: Visitor<'de>>(
            self,
            _: &'static str,
            fields: &'static [&'static str],
            _: V,
        ) -> Result<V::Value, value::Error> {
            *self.0 = fields;
            Err(value::Error::custom("only the names were wanted"))
        }
        serde::forward_to_deserialize_any! {
            bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes
            byte_buf option unit unit_struct newtype_struct seq tuple tuple_struct map enum
            identifier ignored_any
        }
    }
    let mut names: &'static [&'static str] = &[];
    assert!(T::deserialize(Names(&mut names)).is_err());
    assert!(
        !names.is_empty(),
        "{} is not a struct",
        std::any::type_name::<T>()
    );
    names
}

#[test]
fn reference_has_every_key_the_reader_accepts() {
    use super::raw::{
        RawBackend, RawControl, RawFirewall, RawFlows, RawHa, RawHealth, RawNode, RawRateLimit,
        RawService,
    };
    // Every table the reader reads as a raw shape. A key added to a shape is
    // found here by itself; a table added needs its line.
    let tables: [(&str, &[&str]); 9] = [
        ("node", keys_of::<RawNode>()),
        ("control", keys_of::<RawControl>()),
        ("flows", keys_of::<RawFlows>()),
        ("firewall", keys_of::<RawFirewall>()),
        (
            "firewall.new_connections_per_source",
            keys_of::<RawRateLimit>(),
        ),
        ("ha", keys_of::<RawHa>()),
        ("service", keys_of::<RawService>()),
        ("service.health", keys_of::<RawHealth>()),
        ("service.backends", keys_of::<RawBackend>()),
    ];
    let mut accepted: Vec<String> = super::read::SECTIONS.map(str::to_owned).to_vec();
    for (table, keys) in tables {
        accepted.extend(keys.iter().map(|key| format!("{table}.{key}")));
    }
    let reference = key_paths(&read(REFERENCE));
    let missing: Vec<_> = accepted
        .iter()
        .filter(|path| !reference.contains_key(*path))
        .collect();
    assert_eq!(
        missing,
        Vec::<&String>::new(),
        "accepted by the reader, missing from config/balancer.example.toml"
    );
    // And every table in the reference is one of the shapes above, so that the
    // keys of a table added to the reader are asked for too.
    let unmapped: Vec<_> = reference
        .iter()
        .filter(|(path, is_table)| **is_table && !tables.iter().any(|(t, _)| t == path))
        .map(|(path, _)| path)
        .collect();
    assert_eq!(
        unmapped,
        Vec::<&String>::new(),
        "tables without their shape here"
    );
}

#[test]
fn minimal_file_gets_the_documented_defaults() {
    let config = accepted(BASE).config;
    assert_eq!(config.node.xdp_mode, XdpMode::Auto);
    assert_eq!(config.node.forwarding, Forwarding::FullNat);
    assert!(config.node.snat_addresses.is_empty());
    assert_eq!(config.node.snat_port_range, (40_000, 59_999));
    assert_eq!(config.control, Control::default());
    assert_eq!(
        config.control.socket.to_str(),
        Some("/run/balancer/balancer.sock")
    );
    assert_eq!(config.flows, Flows::default());
    assert_eq!(config.flows.udp_timeout_s, 60);
    assert_eq!(config.firewall, Firewall::default());
    assert_eq!(config.firewall.default, FirewallAction::Allow);
    assert!(config.firewall.new_connections_per_source.is_unlimited());
    assert_eq!(config.ha, Ha::default());
    assert!(!config.ha.enabled);
    let service = &config.services[0];
    assert_eq!(service.protocol, Protocol::Tcp);
    assert_eq!(service.scheduler, Scheduler::LeastConn);
    assert_eq!(service.on_backend_down, OnBackendDown::Keep);
    assert_eq!(service.drain_timeout_s, 300);
    assert_eq!(service.health, Health::default());
    assert_eq!(service.health.kind, HealthKind::Tcp);
    assert_eq!(
        (
            service.health.interval_ms,
            service.health.timeout_ms,
            service.health.rise,
            service.health.fall
        ),
        (1000, 500, 2, 3)
    );
    assert_eq!(
        service.backends[0],
        BackendConfig {
            address: "203.0.113.11:8080".parse().unwrap(),
            weight: 100
        }
    );
}

#[test]
fn new_keys_are_read() {
    let text = BASE.replace(
        "interfaces = [\"front\", \"back\"]",
        "interfaces = [\"front\", \"back\"]\nsnat_port_range = \"30000-39999\"",
    ) + "drain_timeout_s = 30\n";
    let config = accepted(&text).config;
    assert_eq!(config.node.snat_port_range, (30_000, 39_999));
    assert_eq!(config.services[0].drain_timeout_s, 30);
}

#[test]
fn ipv6_services_and_tables_written_out_load() {
    let text = r#"
[node]
name = "lb-6"
interfaces = ["eth0"]
snat_addresses = ["203.0.113.9", "2001:db8::9"]

[control]
metrics = "off"

[[service]]
name = "web6"
vip = "2001:db8::10"
port = 443

[service.health]
kind = "none"

[[service.backends]]
address = "[2001:db8::11]:443"
weight = 3
"#;
    let config = accepted(text).config;
    assert_eq!(config.control.metrics, None);
    let service = &config.services[0];
    assert_eq!(service.health.kind, HealthKind::None);
    assert_eq!(
        service.backends[0].address,
        "[2001:db8::11]:443".parse::<SocketAddr>().unwrap()
    );
    assert_eq!(service.backends[0].weight, 3);
}

#[test]
fn config_serializes_with_the_file_spelling() {
    let json = serde_json::to_value(&accepted(&read(CONTRACT)).config).unwrap();
    assert_eq!(json["node"]["forwarding"], "full-nat");
    assert_eq!(json["services"][0]["scheduler"], "least-conn");
    assert_eq!(
        json["services"][0]["backends"][0]["address"],
        "203.0.113.11:8080"
    );
    assert_eq!(json["firewall"]["deny"][0], "192.0.2.0/24");
    assert_eq!(json["flows"]["tcp_syn_timeout_s"], 5);
    assert_eq!(json["firewall"]["syn_cookies"], "auto");
    assert_eq!(json["ha"]["mode"], "active-standby");
    assert_eq!(json["ha"]["announce_table"], 200);
    // Every key of the reference under its own name; the list of services is
    // the one key named otherwise (`services`, where the file has [[service]]).
    let json = serde_json::to_value(&accepted(&read(REFERENCE)).config).unwrap();
    for path in key_paths(&read(REFERENCE)).into_keys() {
        let mut value = &json;
        for key in path.split('.') {
            let key = if key == "service" { "services" } else { key };
            // A list of tables: its first element stands for all.
            value = value.get(0).unwrap_or(value);
            value = value
                .get(key)
                .unwrap_or_else(|| panic!("{path}: no `{key}` in {value}"));
        }
    }
}

// --- syntax, keys, types ------------------------------------------------------

#[test]
fn syntax_error_has_its_line() {
    let problems = refused("[node]\nname = \"lb-a\ninterfaces = [\"eth0\"]\n");
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert_eq!(problems[0].line, Some(2));
    assert!(problems[0].message.contains("syntax error"), "{problems:?}");
    assert!(!problems[0].message.contains('\n'));
}

#[test]
fn duplicate_table_is_a_syntax_error() {
    let text = format!("{BASE}\n[node]\nname = \"again\"\n");
    let problems = refused(&text);
    assert_eq!(
        problems[0].line,
        Some(line_of(&text, "[node]\nname = \"again\""))
    );
    assert!(
        problems[0].message.contains("duplicate key `node`"),
        "{problems:?}"
    );
}

#[test]
fn unknown_key_names_it_and_the_valid_ones() {
    let text = base_with("name = \"lb-a\"", "name = \"lb-a\"\nxdp = \"native\"");
    let p = problem(&text, "node.xdp", "unknown key `xdp`");
    assert!(
        p.message.contains("`xdp_mode`") && p.message.contains("`interfaces`"),
        "{p}"
    );
    assert_eq!(p.line, Some(line_of(&text, "xdp =")));
}

#[test]
fn unknown_key_in_a_backend() {
    let text = base_with(
        "{ address = \"203.0.113.12:8080\" }",
        "{ address = \"203.0.113.12:8080\", wieght = 3 }",
    );
    let p = problem(
        &text,
        "service[0].backends[1].wieght",
        "unknown key `wieght`",
    );
    assert!(p.message.contains("`weight`"), "{p}");
    assert!(p.line.is_some());
}

#[test]
fn unknown_top_level_key() {
    let text = format!("{BASE}\n[services]\nx = 1\n");
    let p = problem(&text, "services", "unknown key `services`");
    assert!(p.message.contains("[[service]]"), "{p}");
    assert_eq!(p.line, Some(line_of(&text, "[services]")));
}

#[test]
fn wrong_types_are_refused_with_their_path() {
    let text = base_with("port = 8080", "port = \"8080\"");
    let p = problem(&text, "service[0].port", "invalid type: string");
    assert_eq!(p.line, Some(line_of(&text, "port = \"8080\"")));

    let text = base_with(
        "interfaces = [\"front\", \"back\"]",
        "interfaces = \"front\"",
    );
    problem(&text, "node.interfaces", "expected a sequence");

    let text = format!("{BASE}\n[flows]\ncapacity = -1\n");
    problem(&text, "flows.capacity", "expected a whole number");

    let text = format!("{BASE}\n[ha]\nenabled = \"yes\"\n");
    problem(&text, "ha.enabled", "expected a boolean");
}

#[test]
fn section_of_the_wrong_shape() {
    problem("node = 5\n", "node", "must be a table");
    let text = format!("{BASE}\nservice = 3\n");
    // TOML itself refuses a key defined twice.
    assert_eq!(refused(&text).len(), 1);
    let text = base_with(
        "backends = [{ address = \"203.0.113.11:8080\" }, { address = \"203.0.113.12:8080\" }]",
        "backends = \"203.0.113.11:8080\"",
    );
    problem(&text, "service[0].backends", "must be a list of tables");
    let text = base_with(
        "{ address = \"203.0.113.12:8080\" }",
        "\"203.0.113.12:8080\"",
    );
    problem(&text, "service[0].backends[1]", "must be a table");
}

#[test]
fn unknown_keywords_list_the_allowed_values() {
    let cases = [
        (
            "interfaces = [\"front\", \"back\"]",
            "interfaces = [\"front\", \"back\"]\nxdp_mode = \"fast\"",
            "node.xdp_mode",
            "`auto`, `native`, `generic`",
        ),
        (
            "interfaces = [\"front\", \"back\"]",
            "interfaces = [\"front\", \"back\"]\nforwarding = \"nat\"",
            "node.forwarding",
            "`full-nat` or `dnat`",
        ),
        (
            "port = 8080",
            "port = 8080\nscheduler = \"lc\"",
            "service[0].scheduler",
            "`least-conn`, `p2c`, `maglev`, `round-robin`",
        ),
        (
            "port = 8080",
            "port = 8080\nprotocol = \"sctp\"",
            "service[0].protocol",
            "`tcp` or `udp`",
        ),
        (
            "port = 8080",
            "port = 8080\nhealth = { kind = \"ping\" }",
            "service[0].health.kind",
            "`tcp`, `http`, `udp`, `exec`, `none`",
        ),
        (
            "port = 8080",
            "port = 8080\non_backend_down = \"drop\"",
            "service[0].on_backend_down",
            "`keep` or `reset`",
        ),
    ];
    for (from, to, path, allowed) in cases {
        let text = base_with(from, to);
        let p = problem(&text, path, "unknown variant");
        assert!(p.message.contains(allowed), "{p}");
        assert!(p.line.is_some(), "{p}");
    }
    let text = format!("{BASE}\n[firewall]\ndefault = \"drop\"\n");
    problem(&text, "firewall.default", "`allow` or `deny`");
}

// --- addresses and ports ---------------------------------------------------

#[test]
fn malformed_addresses() {
    let text = base_with("vip = \"198.51.100.10\"", "vip = \"198.51.100.300\"");
    let p = problem(
        &text,
        "service[0].vip",
        "`198.51.100.300` is not an IP address",
    );
    assert_eq!(p.line, Some(line_of(&text, "vip =")));

    let text = base_with(
        "interfaces = [\"front\", \"back\"]",
        "interfaces = [\"front\", \"back\"]\nsnat_addresses = [\"203.0.113.9\", \"203.0.113\"]",
    );
    problem(&text, "node.snat_addresses[1]", "not an IP address");

    let text = base_with("vip = \"198.51.100.10\"", "vip = \"0.0.0.0\"");
    problem(&text, "service[0].vip", "cannot be a service address");

    let text = format!(
        "{BASE}\n[ha]\nenabled = true\ninterface = \"front\"\nauth_key_file = \"/k\"\npeers = [\"198.51.100.3:9\"]\n"
    );
    problem(&text, "ha.peers[0]", "without a port");
}

#[test]
fn malformed_backend_addresses() {
    for (address, needle) in [
        ("203.0.113.11", "has no port"),
        ("203.0.113.311:80", "not an IP address"),
        ("backend-1:80", "not an IP address"),
        ("2001:db8::11:80", "[2001:db8::1]:80"),
        ("203.0.113.11:http", "not a port number"),
    ] {
        let text = base_with("203.0.113.12:8080", address);
        let p = problem(&text, "service[0].backends[1].address", needle);
        assert_eq!(p.line, Some(line_of(&text, address)), "{p}");
    }
}

#[test]
fn cidr_with_host_bits_suggests_the_network() {
    let text = format!("{BASE}\n[firewall]\ndeny = [\"192.0.2.0/24\", \"10.0.0.1/8\"]\n");
    let p = problem(&text, "firewall.deny[1]", "host bits");
    assert!(p.message.contains("10.0.0.0/8"), "{p}");
    assert_eq!(p.line, Some(line_of(&text, "deny =")));
}

#[test]
fn malformed_cidrs() {
    let text = base_with(
        "port = 8080",
        "port = 8080\nallow = [\"198.51.100.0/33\", \"everyone\"]",
    );
    problem(&text, "service[0].allow[0]", "at most /32");
    problem(&text, "service[0].allow[1]", "CIDR");
    // A bare address is that one address.
    let text = base_with(
        "port = 8080",
        "port = 8080\ndeny = [\"198.51.100.7\", \"2001:db8::/32\"]",
    );
    let deny = &accepted(&text).config.services[0].deny;
    assert_eq!(deny[0].to_string(), "198.51.100.7/32");
}

#[test]
fn service_port_out_of_range() {
    for port in ["0", "65536", "-1"] {
        let text = base_with("port = 8080", &format!("port = {port}"));
        let p = problem(&text, "service[0].port", "out of range 1-65535");
        assert!(p.message.contains(port), "{p}");
    }
}

#[test]
fn backend_port_out_of_range() {
    let text = base_with("203.0.113.12:8080", "203.0.113.12:70000");
    problem(&text, "service[0].backends[1].address", "port 70000");
    let text = base_with("203.0.113.12:8080", "203.0.113.12:0");
    problem(&text, "service[0].backends[1].address", "port 0");
}

#[test]
fn snat_port_range_rules() {
    for (range, needle) in [
        ("1000-60000", "within 1024-65535"),
        ("40000-70000", "within 1024-65535"),
        ("50000-40000", "lower port first"),
        ("40000", "not a port range"),
        ("a-b", "not a port range"),
    ] {
        let text = base_with(
            "interfaces = [\"front\", \"back\"]",
            &format!("interfaces = [\"front\", \"back\"]\nsnat_port_range = \"{range}\""),
        );
        let p = problem(&text, "node.snat_port_range", needle);
        assert_eq!(p.line, Some(line_of(&text, "snat_port_range")));
    }
    // A small range is allowed (tests, few clients) but its cap on flows is said.
    let text = base_with(
        "interfaces = [\"front\", \"back\"]",
        "interfaces = [\"front\", \"back\"]\nsnat_port_range = \"40000-40100\"",
    );
    warning(&accepted(&text), "node.snat_port_range", "101 ports");
    // The top of the port space is fine.
    let text = base_with(
        "interfaces = [\"front\", \"back\"]",
        "interfaces = [\"front\", \"back\"]\nsnat_port_range = \"64512-65535\"",
    );
    assert_eq!(accepted(&text).config.node.snat_port_range, (64512, 65535));
}

#[test]
fn metrics_address() {
    let text = format!("{BASE}\n[control]\nmetrics = \"localhost:9108\"\n");
    let p = problem(&text, "control.metrics", "not an IP address");
    assert!(p.message.contains("\"off\""), "{p}");
}

// --- services ----------------------------------------------------------------

#[test]
fn duplicate_vip_port_protocol_names_the_first_service() {
    let text = format!("{BASE}\n{}", service_with_backends("api2", 8080, 1));
    let p = problem(
        &text,
        "service[1].vip",
        "already used by service[0] (\"api\")",
    );
    assert!(p.message.contains("198.51.100.10 port 8080/tcp"), "{p}");
    assert_eq!(p.line, Some(line_of(&text, "name = \"api2\"") + 1));
    // The same port over UDP is another service.
    let udp = service_with_backends("api-udp", 8080, 1)
        .replace("port = 8080", "port = 8080\nprotocol = \"udp\"");
    accepted(&format!("{BASE}\n{udp}"));
}

#[test]
fn duplicate_service_name() {
    let text = format!("{BASE}\n{}", service_with_backends("api", 9090, 1));
    let p = problem(
        &text,
        "service[1].name",
        "\"api\" is already used by service[0]",
    );
    assert_eq!(
        p.line,
        Some(line_of(
            &text,
            "name = \"api\"\nvip = \"198.51.100.10\"\nport = 9090"
        ))
    );
}

#[test]
fn service_names_must_need_no_quoting() {
    let text = base_with("name = \"api\"", "name = \"my api\"");
    problem(&text, "service[0].name", "only letters, digits");
}

#[test]
fn duplicate_backend_address() {
    let text = base_with("203.0.113.12:8080", "203.0.113.11:8080");
    problem(
        &text,
        "service[0].backends[1].address",
        "203.0.113.11:8080 is listed twice (also service[0].backends[0])",
    );
}

#[test]
fn service_without_backends() {
    let text = base_with(
        "backends = [{ address = \"203.0.113.11:8080\" }, { address = \"203.0.113.12:8080\" }]",
        "",
    );
    let p = problem(&text, "service[0].backends", "missing");
    assert_eq!(p.line, Some(line_of(&text, "[[service]]")));
    let text = base_with(
        "backends = [{ address = \"203.0.113.11:8080\" }, { address = \"203.0.113.12:8080\" }]",
        "backends = []",
    );
    problem(&text, "service[0].backends", "at least one backend");
}

#[test]
fn all_backends_with_weight_zero() {
    let text = base_with(
        "{ address = \"203.0.113.11:8080\" }, { address = \"203.0.113.12:8080\" }",
        "{ address = \"203.0.113.11:8080\", weight = 0 }, { address = \"203.0.113.12:8080\", weight = 0 }",
    );
    let p = problem(
        &text,
        "service[0].backends",
        "a weight of 0 with no other backend",
    );
    assert!(p.line.is_some());
    // One backend at 0 beside another is how a backend is kept out of new flows.
    let text = base_with(
        "{ address = \"203.0.113.11:8080\" }",
        "{ address = \"203.0.113.11:8080\", weight = 0 }",
    );
    assert_eq!(accepted(&text).config.services[0].backends[0].weight, 0);
}

#[test]
fn weight_above_the_data_plane_limit() {
    let text = base_with(
        "{ address = \"203.0.113.12:8080\" }",
        "{ address = \"203.0.113.12:8080\", weight = 65536 }",
    );
    let p = problem(&text, "service[0].backends[1].weight", "above 65535");
    assert!(p.line.is_some());
    let text = base_with(
        "{ address = \"203.0.113.12:8080\" }",
        "{ address = \"203.0.113.12:8080\", weight = 65535 }",
    );
    accepted(&text);
}

#[test]
fn backend_family_must_match_the_vip() {
    let text = base_with("203.0.113.12:8080", "[2001:db8::12]:8080");
    problem(
        &text,
        "service[0].backends[1].address",
        "IPv6 backend for the IPv4 VIP 198.51.100.10",
    );
}

#[test]
fn snat_addresses_must_cover_the_vip_family() {
    let v6 = r#"
[[service]]
name = "web6"
vip = "2001:db8::10"
port = 443
backends = [{ address = "[2001:db8::11]:443" }]
"#;
    let with_snat = base_with(
        "interfaces = [\"front\", \"back\"]",
        "interfaces = [\"front\", \"back\"]\nsnat_addresses = [\"203.0.113.9\"]",
    );
    let text = format!("{with_snat}{v6}");
    let p = problem(&text, "service[1].vip", "no IPv6 address");
    assert_eq!(p.line, Some(line_of(&text, "vip = \"2001:db8::10\"")));
    // Empty: the egress interface's address is used, whatever the family.
    accepted(&format!("{BASE}{v6}"));
    // DNAT does not translate sources at all; the unused list is said.
    let dnat = with_snat.replace("snat_addresses", "forwarding = \"dnat\"\nsnat_addresses");
    let loaded = accepted(&format!("{dnat}{v6}"));
    warning(
        &loaded,
        "node.snat_addresses",
        "not used with forwarding = \"dnat\"",
    );
}

#[test]
fn limits_of_this_version() {
    let services: String = (0..=MAX_SERVICES)
        .map(|i| service_with_backends(&format!("s{i}"), 1000 + i as u16, 1))
        .collect();
    let text = format!("[node]\nname = \"x\"\ninterfaces = [\"eth0\"]\n{services}");
    problem(&text, "service", "at most 256");

    let text = format!(
        "[node]\nname = \"x\"\ninterfaces = [\"eth0\"]\n{}",
        service_with_backends("big", 80, MAX_BACKENDS_PER_SERVICE + 1)
    );
    problem(&text, "service[0].backends", "at most 1024 per service");
    let text = format!(
        "[node]\nname = \"x\"\ninterfaces = [\"eth0\"]\n{}",
        service_with_backends("full", 80, MAX_BACKENDS_PER_SERVICE)
    );
    accepted(&text);
    // 17 SNAT addresses of one family are more than the data plane uses.
    let many: Vec<String> = (1..=17).map(|i| format!("\"192.0.2.{i}\"")).collect();
    let text = BASE.replacen(
        "[node]\n",
        &format!("[node]\nsnat_addresses = [{}]\n", many.join(", ")),
        1,
    );
    problem(&text, "node.snat_addresses", "at most 16 per family");
    // 17 services of 1,024 are more backends than the data plane holds.
    let services: String = (0..17)
        .map(|i| service_with_backends(&format!("s{i}"), 1000 + i, MAX_BACKENDS_PER_SERVICE))
        .collect();
    let text = format!("[node]\nname = \"x\"\ninterfaces = [\"eth0\"]\n{services}");
    problem(&text, "service", "at most 16384");
}

#[test]
fn no_service_at_all_is_said() {
    let loaded = accepted("[node]\nname = \"x\"\ninterfaces = [\"eth0\"]\n");
    warning(&loaded, "service", "nothing will be forwarded");
}

// --- node --------------------------------------------------------------------

#[test]
fn node_is_required() {
    let text = BASE.replace(
        "[node]\nname = \"lb-a\"\ninterfaces = [\"front\", \"back\"]\n",
        "",
    );
    problem(&text, "node", "missing");
    let text = base_with("interfaces = [\"front\", \"back\"]", "");
    problem(&text, "node.interfaces", "missing");
    let text = base_with("name = \"lb-a\"", "");
    problem(&text, "node.name", "missing");
}

#[test]
fn node_interfaces_empty_or_invalid() {
    let text = base_with("[\"front\", \"back\"]", "[]");
    let p = problem(&text, "node.interfaces", "is empty");
    assert_eq!(p.line, Some(line_of(&text, "interfaces")));
    let text = base_with("[\"front\", \"back\"]", "[\"front\", \"front\"]");
    problem(&text, "node.interfaces[1]", "listed twice");
    let text = base_with(
        "[\"front\", \"back\"]",
        "[\"front\", \"a-very-long-interface\"]",
    );
    problem(&text, "node.interfaces[1]", "15 bytes");
}

// --- ha ------------------------------------------------------------------------

#[test]
fn ha_enabled_needs_peers_interface_and_key() {
    let text = format!("{BASE}\n[ha]\nenabled = true\n");
    let problems = refused(&text);
    for path in ["ha.peers", "ha.interface", "ha.auth_key_file"] {
        let p = problems
            .iter()
            .find(|p| p.path == path)
            .unwrap_or_else(|| panic!("{path}: {problems:?}"));
        assert!(p.message.contains("ha.enabled = true needs"), "{p}");
        assert_eq!(p.line, Some(line_of(&text, "[ha]")));
    }
    // Disabled, none of them is needed.
    accepted(&format!("{BASE}\n[ha]\nenabled = false\n"));
}

#[test]
fn ha_interfaces_outside_node_interfaces_warn() {
    let text = format!(
        "{BASE}\n[ha]\nenabled = true\ninterface = \"eth9\"\npeers = [\"198.51.100.3\"]\nauth_key_file = \"/etc/balancer/ha.key\"\ntrack_interfaces = [\"front\", \"eth8\"]\n"
    );
    let loaded = accepted(&text);
    warning(
        &loaded,
        "ha.interface",
        "`eth9` is not among node.interfaces",
    );
    warning(
        &loaded,
        "ha.track_interfaces[1]",
        "`eth8` is not among node.interfaces",
    );
    assert!(
        !loaded
            .warnings
            .iter()
            .any(|w| w.path == "ha.track_interfaces[0]")
    );
}

#[test]
fn ha_numbers() {
    for (key, value, needle) in [
        ("advert_interval_ms", "0", "at least 1"),
        ("dead_after", "0", "at least 1"),
        ("priority", "0", "out of range 1-254"),
        ("priority", "255", "out of range 1-254"),
    ] {
        let text = format!("{BASE}\n[ha]\n{key} = {value}\n");
        let p = problem(&text, &format!("ha.{key}"), needle);
        assert_eq!(p.line, Some(line_of(&text, &format!("{key} ="))));
    }
    let text = format!("{BASE}\n[ha]\npriority = 254\n");
    assert_eq!(accepted(&text).config.ha.priority, 254);
}

#[test]
fn ha_tracked_conditions_are_on_by_default_and_each_can_be_turned_off() {
    let on = accepted(&format!("{BASE}\n[ha]\npriority = 100\n"))
        .config
        .ha;
    assert!(on.track_xdp && on.track_backends);
    assert_eq!(on.watchdog_ms, 3000);
    let text =
        format!("{BASE}\n[ha]\ntrack_xdp = false\ntrack_backends = false\nwatchdog_ms = 0\n");
    let off = accepted(&text).config.ha;
    assert!(!off.track_xdp && !off.track_backends);
    assert_eq!(off.watchdog_ms, 0);
    problem(
        &format!("{BASE}\n[ha]\ntrack_xdp = \"yes\"\n"),
        "ha.track_xdp",
        "",
    );
}

#[test]
fn ha_mode_and_announce_table() {
    let text = format!("{BASE}\n[ha]\nmode = \"active-passive\"\n");
    let p = problem(&text, "ha.mode", "unknown variant `active-passive`");
    assert!(
        p.message.contains("`active-standby` or `active-active`"),
        "{p}"
    );
    assert_eq!(p.line, Some(line_of(&text, "mode =")));

    for (table, needle) in [
        ("0", "0 is out of range 1-4294967295"),
        ("-1", "-1 is out of range 1-4294967295"),
        ("4294967296", "4294967296 is out of range 1-4294967295"),
        ("253", "253 is the kernel's `default` table"),
        ("254", "254 is the kernel's `main` table"),
        ("255", "255 is the kernel's `local` table"),
        ("\"main\"", "invalid type: string"),
    ] {
        let text = format!("{BASE}\n[ha]\nmode = \"active-active\"\nannounce_table = {table}\n");
        let p = problem(&text, "ha.announce_table", needle);
        assert_eq!(p.line, Some(line_of(&text, "announce_table =")), "{p}");
    }
    for table in [1, 200, 252, 256, u32::MAX] {
        let text = format!("{BASE}\n[ha]\nmode = \"active-active\"\nannounce_table = {table}\n");
        assert_eq!(accepted(&text).config.ha.announce_table, table);
    }
}

#[test]
fn tcp_syn_timeout() {
    for (value, needle) in [
        ("0", "must be at least 1"),
        ("121", "121 s is above 120 s"),
        ("-5", "expected a whole number"),
    ] {
        let text = format!("{BASE}\n[flows]\ntcp_syn_timeout_s = {value}\n");
        let p = problem(&text, "flows.tcp_syn_timeout_s", needle);
        assert_eq!(p.line, Some(line_of(&text, "tcp_syn_timeout_s =")), "{p}");
    }
    let text = format!("{BASE}\n[flows]\ntcp_syn_timeout_s = 120\n");
    assert_eq!(accepted(&text).config.flows.tcp_syn_timeout_s, 120);
    // Never longer than an established flow's limit: refused when written so,
    // and the default shortened to it when not written.
    let text = format!("{BASE}\n[flows]\ntcp_established_timeout_s = 10\ntcp_syn_timeout_s = 11\n");
    problem(
        &text,
        "flows.tcp_syn_timeout_s",
        "11 s is above flows.tcp_established_timeout_s (10 s)",
    );
    let text = format!("{BASE}\n[flows]\ntcp_established_timeout_s = 2\n");
    let loaded = accepted(&text);
    assert_eq!(loaded.config.flows.tcp_syn_timeout_s, 2);
    assert_eq!(loaded.warnings, []);
}

#[test]
fn syn_cookies_keywords() {
    let text = format!("{BASE}\n[firewall]\nsyn_cookies = \"on\"\n");
    let p = problem(&text, "firewall.syn_cookies", "unknown variant `on`");
    assert!(p.message.contains("`off`, `auto`, `always`"), "{p}");
    assert_eq!(p.line, Some(line_of(&text, "syn_cookies =")));
}

// --- health ------------------------------------------------------------------------

fn with_health(health: &str) -> String {
    base_with("port = 8080", &format!("port = 8080\nhealth = {health}"))
}

#[test]
fn health_numbers() {
    for key in ["interval_ms", "timeout_ms", "rise", "fall"] {
        let text = with_health(&format!("{{ kind = \"tcp\", {key} = 0 }}"));
        problem(&text, &format!("service[0].health.{key}"), "at least 1");
    }
    let loaded = accepted(&with_health(
        "{ kind = \"tcp\", interval_ms = 500, timeout_ms = 500 }",
    ));
    warning(
        &loaded,
        "service[0].health.timeout_ms",
        "not below interval_ms",
    );
}

#[test]
fn health_kind_needs_its_keys() {
    let p = problem(
        &with_health("{ kind = \"http\" }"),
        "service[0].health.path",
        "kind = \"http\" needs the path",
    );
    assert!(p.line.is_some());
    problem(
        &with_health("{ kind = \"http\", path = \"health\" }"),
        "service[0].health.path",
        "must start with /",
    );
    problem(
        &with_health("{ kind = \"exec\" }"),
        "service[0].health.command",
        "kind = \"exec\" needs the command",
    );
    problem(
        &with_health("{ kind = \"exec\", command = [] }"),
        "service[0].health.command",
        "must name a program",
    );
    problem(
        &with_health("{ kind = \"http\", path = \"/\", expect_status = 42 }"),
        "service[0].health.expect_status",
        "not an HTTP status",
    );
    problem(
        &with_health("{ port = 0 }"),
        "service[0].health.port",
        "out of range",
    );
    // UDP without a payload sends the checker's default one.
    let config = accepted(&with_health("{ kind = \"udp\" }")).config;
    assert_eq!(config.services[0].health.payload, None);
}

#[test]
fn health_keys_of_another_kind_warn() {
    let loaded = accepted(&with_health("{ kind = \"tcp\", path = \"/health\" }"));
    warning(
        &loaded,
        "service[0].health.path",
        "ignored with kind = \"tcp\"",
    );
    let loaded = accepted(&with_health("{ kind = \"none\", interval_ms = 100 }"));
    warning(
        &loaded,
        "service[0].health.interval_ms",
        "ignored with kind = \"none\"",
    );
}

// --- firewall ------------------------------------------------------------------------

#[test]
fn rate_limit() {
    let text = format!("{BASE}\n[firewall]\nnew_connections_per_source = {{ rate = 100 }}\n");
    let limit = accepted(&text).config.firewall.new_connections_per_source;
    assert_eq!(
        limit,
        RateLimit {
            rate: 100,
            burst: 100
        }
    );
    let text =
        format!("{BASE}\n[firewall]\nnew_connections_per_source = {{ rate = 100, burst = 0 }}\n");
    problem(
        &text,
        "firewall.new_connections_per_source.burst",
        "at least 1",
    );
}

// --- everything at once -------------------------------------------------------------

#[test]
fn every_mistake_is_reported_in_file_order() {
    let text = r#"
[node]
name = "lb-a"
interfaces = []
colour = "blue"
snat_addresses = ["203.0.113.999"]

[firewall]
deny = ["10.0.0.1/8"]

[ha]
priority = 0

[[service]]
name = "api"
vip = "198.51.100.10"
port = 70000
scheduler = "fastest"
backends = [
  { address = "203.0.113.11" },
  { address = "203.0.113.12:8080", weight = 100000 },
]

[[service]]
name = "api"
vip = "198.51.100.10"
port = 8080
backends = []
"#;
    let problems = refused(text);
    let paths: Vec<_> = problems.iter().map(|p| p.path.as_str()).collect();
    assert_eq!(
        paths,
        [
            "node.interfaces",
            "node.colour",
            "node.snat_addresses[0]",
            "firewall.deny[0]",
            "ha.priority",
            "service[0].port",
            "service[0].scheduler",
            "service[0].backends[0].address",
            "service[0].backends[1].weight",
            "service[1].name",
            "service[1].backends",
        ],
        "{problems:#?}"
    );
    assert!(problems.iter().all(|p| p.line.is_some()), "{problems:#?}");
    let err = parse(text).unwrap_err();
    assert_eq!(err.to_string().lines().count(), problems.len());
}

// --- pending features ----------------------------------------------------------------

#[test]
fn features_not_enforced_yet_are_each_said() {
    let text = read(CONTRACT)
        + "\n[[service]]\nname = \"extra\"\nvip = \"198.51.100.30\"\nport = 1\nscheduler = \"p2c\"\ndeny = [\"192.0.2.0/24\", \"2001:db8::/48\"]\nhealth = { kind = \"none\" }\nbackends = [{ address = \"203.0.113.50:1\" }]\n";
    let text = text.replace(
        "default = \"allow\"",
        "default = \"deny\"\nallow = [\"198.51.100.0/24\", \"2001:db8::/32\"]",
    );
    let loaded = accepted(&text);
    // Enforced now: said nothing about.
    for enforced in [
        "ha.enabled",
        "ha.sync_flows",
        "control.metrics",
        "service[0].health",
        "service[3].on_backend_down",
        "service[5].health",
        "firewall.allow",
        "service[5].deny",
        "firewall.default",
        "firewall.new_connections_per_source",
        "service[0].allow",
        "service[2].scheduler",
        "service[5].scheduler",
        "control.metrics",
        "ha.mode",
    ] {
        assert!(
            !loaded.warnings.iter().any(|w| w.path == enforced),
            "{enforced}: {:#?}",
            loaded.warnings
        );
    }
    // Enforced now: said nothing about.
    for enforced in ["flows.tcp_syn_timeout_s", "firewall.syn_cookies"] {
        assert!(
            !loaded.warnings.iter().any(|w| w.path == enforced),
            "{enforced}: {:#?}",
            loaded.warnings
        );
    }
    // Not enforced yet, or not used: each said, with what happens instead.
    warning(
        &loaded,
        "ha.announce_table",
        "ignored with mode = \"active-standby\"",
    );
    assert_eq!(
        warned(&loaded),
        PENDING_IN_THE_EXAMPLES,
        "{:#?}",
        loaded.warnings
    );

    // Active-active: the mode and its table are enforced; nothing is said.
    let text = text.replace("mode = \"active-standby\"", "mode = \"active-active\"");
    let loaded = accepted(&text);
    assert!(
        loaded
            .warnings
            .iter()
            .all(|w| w.path != "ha.mode" && w.path != "ha.announce_table"),
        "{:#?}",
        loaded.warnings
    );
    assert_eq!(loaded.config.ha.mode, HaMode::ActiveActive);
}

#[test]
fn coming_features_are_said_only_when_asked_for() {
    // Absent, the keys ask for nothing: their defaults are documented, and a file
    // without them gets what it got before they existed.
    let loaded = accepted(&with_health("{ kind = \"none\" }"));
    assert_eq!(loaded.warnings, []);
    let config = loaded.config;
    assert_eq!(
        config.flows.tcp_syn_timeout_s,
        Flows::DEFAULT_TCP_SYN_TIMEOUT_S
    );
    assert_eq!(config.firewall.syn_cookies, SynCookies::Auto);
    assert_eq!(config.ha.mode, HaMode::ActiveStandby);
    assert_eq!(config.ha.announce_table, Ha::DEFAULT_ANNOUNCE_TABLE);
    // "off" is what this version does; "active-standby" is what it runs.
    let text = format!(
        "{}\n[firewall]\nsyn_cookies = \"off\"\n\n[ha]\nmode = \"active-standby\"\n",
        with_health("{ kind = \"none\" }")
    );
    let loaded = accepted(&text);
    assert_eq!(loaded.warnings, []);
    assert_eq!(loaded.config.firewall.syn_cookies, SynCookies::Off);
    // "always" is done, and said nothing about.
    let loaded = accepted(&format!("{BASE}\n[firewall]\nsyn_cookies = \"always\"\n"));
    assert_eq!(loaded.warnings, []);
    assert_eq!(loaded.config.firewall.syn_cookies, SynCookies::Always);
}

const ACTIVE_ACTIVE: &str = "\n[ha]\nenabled = true\nmode = \"active-active\"\ninterface = \"front\"\npeers = [\"198.51.100.3\", \"198.51.100.4\"]\nauth_key_file = \"/etc/balancer/ha.key\"\n";

#[test]
fn active_active_needs_snat_addresses_of_its_own() {
    let text = format!("{BASE}{ACTIVE_ACTIVE}");
    let p = problem(&text, "node.snat_addresses", "a peer adopts them");
    assert!(p.message.contains("active-active"), "{p}");
    let own = base_with(
        "interfaces = [\"front\", \"back\"]",
        "interfaces = [\"front\", \"back\"]\nsnat_addresses = [\"203.0.113.5\"]",
    );
    let loaded = accepted(&format!("{own}{ACTIVE_ACTIVE}"));
    assert_eq!(loaded.warnings, []);
    assert_eq!(loaded.config.ha.mode, HaMode::ActiveActive);
    assert_eq!(loaded.config.ha.withdraw_wait_ms, 2000);
    assert_eq!(loaded.config.ha.drain_timeout_s, 30);
    let dnat = base_with(
        "interfaces = [\"front\", \"back\"]",
        "interfaces = [\"front\", \"back\"]\nforwarding = \"dnat\"",
    );
    problem(
        &format!("{dnat}{ACTIVE_ACTIVE}"),
        "ha.mode",
        "needs node.forwarding = \"full-nat\"",
    );
}

#[test]
fn drain_settings_are_bounded_and_belong_to_active_active() {
    let own = base_with(
        "interfaces = [\"front\", \"back\"]",
        "interfaces = [\"front\", \"back\"]\nsnat_addresses = [\"203.0.113.5\"]",
    );
    let loaded = accepted(&format!(
        "{own}{ACTIVE_ACTIVE}withdraw_wait_ms = 500\ndrain_timeout_s = 0\n"
    ));
    assert_eq!(loaded.config.ha.withdraw_wait_ms, 500);
    assert_eq!(loaded.config.ha.drain_timeout_s, 0);
    problem(
        &format!("{own}{ACTIVE_ACTIVE}withdraw_wait_ms = 60001\n"),
        "ha.withdraw_wait_ms",
        "out of range 0-60000",
    );
    problem(
        &format!("{own}{ACTIVE_ACTIVE}drain_timeout_s = 86401\n"),
        "ha.drain_timeout_s",
        "out of range 0-86400",
    );
    warning(
        &accepted(&format!("{own}{ACTIVE_ACTIVE}sync_flows = false\n")),
        "ha.sync_flows",
        "move to another node",
    );
    let standby = format!("{own}\n[ha]\ndrain_timeout_s = 10\n");
    warning(
        &accepted(&standby),
        "ha.drain_timeout_s",
        "ignored with mode = \"active-standby\"",
    );
}

#[test]
fn syn_flood_threshold_and_cooldown() {
    let config = accepted(&with_health("{ kind = \"none\" }")).config;
    assert_eq!(
        config.firewall.syn_flood_threshold,
        Firewall::DEFAULT_SYN_FLOOD_THRESHOLD
    );
    assert_eq!(
        config.firewall.syn_flood_cooldown_s,
        Firewall::DEFAULT_SYN_FLOOD_COOLDOWN_S
    );
    let text =
        format!("{BASE}\n[firewall]\nsyn_flood_threshold = 5000\nsyn_flood_cooldown_s = 30\n");
    let config = accepted(&text).config;
    assert_eq!(config.firewall.syn_flood_threshold, 5000);
    assert_eq!(config.firewall.syn_flood_cooldown_s, 30);
    for (key, value) in [
        ("syn_flood_threshold", "0"),
        ("syn_flood_threshold", "100000001"),
        ("syn_flood_cooldown_s", "0"),
        ("syn_flood_cooldown_s", "3601"),
    ] {
        let text = format!("{BASE}\n[firewall]\n{key} = {value}\n");
        let p = problem(&text, &format!("firewall.{key}"), "is out of range");
        assert_eq!(p.line, Some(line_of(&text, &format!("{key} ="))), "{p}");
    }
    // Only auto mode detects floods: set with another, they are said to do nothing.
    let text = format!("{BASE}\n[firewall]\nsyn_cookies = \"always\"\nsyn_flood_threshold = 10\n");
    warning(
        &accepted(&text),
        "firewall.syn_flood_threshold",
        "has no effect with syn_cookies = \"always\"",
    );
}

#[test]
fn a_plain_file_has_no_warnings() {
    // The metrics endpoint is on by default, and says nothing.
    let loaded = accepted(&with_health("{ kind = \"none\" }"));
    assert_eq!(loaded.warnings, []);
    let text = format!(
        "{}\n[control]\nmetrics = \"198.51.100.1:9108\"\n",
        with_health("{ kind = \"none\" }")
    );
    assert_eq!(accepted(&text).warnings, []);
}

// --- files ---------------------------------------------------------------------------

#[test]
fn unreadable_file_is_one_problem_naming_it() {
    let err = load(std::path::Path::new("/nonexistent/balancer.toml")).unwrap_err();
    assert_eq!(err.problems.len(), 1);
    assert_eq!(err.problems[0].path, "/nonexistent/balancer.toml");
    assert!(err.problems[0].message.contains("cannot read"), "{err}");
}

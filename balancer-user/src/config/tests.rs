use super::*;

#[test]
fn scratch() {
    if false {
        let ex = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../shared/spec/balancer.example.toml"
        ))
        .unwrap();
        match parse(&ex) {
            Ok(l) => {
                for w in &l.warnings {
                    println!("{w}");
                }
            }
            Err(e) => println!("{e}"),
        }
    }
    let bad = r#"
[node]
name = "x"
interfaces = ["eth0"]
bogus = 1

[flows]
capacity = "big"

[[service]]
name = "a"
vip = "198.51.100.1"
port = 70000
protocol = "sctp"
health = { kind = "httpx" }
backends = [
  { address = "203.0.113.1:80", wieght = 3 },
  { address = "203.0.113.1:80", weight = -1 },
  { address = "203.0.113.300:80" },
  { address = 5 },
]

[[service]]
name = "b"
vip = "198.51.100.1"
port = 80
scheduler = "lc"
allow = ["10.0.0.1/8"]
backends = [
  { address = "[2001:db8::1]:80", weight = 0 },
]

[[service]]
name = "c"
vip = "2001:db8::1"
port = 81
[[service.backends]]
address = "x"
[[service.backends]]
address = "203.0.113.1:80"
[service.health]
kind = "exec"
path = "/x"
"#;
    match parse(bad) {
        Ok(_) => println!("OK?"),
        Err(e) => println!("{e}"),
    }
    match parse("[node]\nname = \"x\nfoo") {
        Ok(_) => println!("OK?"),
        Err(e) => println!("{e}"),
    }
    match parse("[node]\nname = 'x'\ninterfaces=['a']\n[node]\n") {
        Ok(_) => println!("OK?"),
        Err(e) => println!("{e}"),
    }
    match parse(
        "[node]\nname = 'x'\ninterfaces=['a']\n[ha]\nenabled=true\npriority=300\n[[service]]\nname='a'\nvip='192.0.2.1'\nport=1\nbackends=[{address='192.0.2.2:1'}]\n[firewall.new_connections_per_source]\nrate=5\nburst='x'\n",
    ) {
        Ok(_) => println!("OK?"),
        Err(e) => println!("{e}"),
    }
    panic!();
}

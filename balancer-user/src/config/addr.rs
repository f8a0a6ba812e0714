//! Parsing of address-like strings with messages that say what is wrong and
//! how to write it instead (the standard library's errors do not).

use std::net::{IpAddr, SocketAddr};

use ipnet::IpNet;

pub(super) fn ip(text: &str) -> Result<IpAddr, String> {
    let text = text.trim();
    if let Ok(ip) = text.parse() {
        return Ok(ip);
    }
    let hint = if text.contains('/') {
        " (a single address is expected here, not a network)"
    } else if text.parse::<SocketAddr>().is_ok() {
        " (an address without a port is expected here)"
    } else {
        ""
    };
    Err(format!("`{text}` is not an IP address{hint}"))
}

/// `ADDRESS:PORT` or `[IPV6]:PORT`; port 0 is the caller's to refuse, so that
/// it can say what the port is for.
pub(super) fn socket(text: &str) -> Result<SocketAddr, String> {
    let text = text.trim();
    if let Ok(addr) = text.parse() {
        return Ok(addr);
    }
    let (host, port) = if let Some(rest) = text.strip_prefix('[') {
        match rest.split_once("]:") {
            Some(parts) => parts,
            None => {
                return Err(format!(
                    "`{text}` is not ADDRESS:PORT (like [2001:db8::1]:80)"
                ));
            }
        }
    } else {
        match text.rsplit_once(':') {
            // More than one colon without brackets is an IPv6 address: where its port is
            // would be ambiguous.
            Some((host, _)) if host.contains(':') => {
                return Err(format!(
                    "`{text}` is not ADDRESS:PORT; write an IPv6 address with a port as [2001:db8::1]:80"
                ));
            }
            Some(parts) => parts,
            None if ip(text).is_ok() => {
                return Err(format!("`{text}` has no port; write it as ADDRESS:PORT"));
            }
            None => {
                return Err(format!(
                    "`{text}` is not ADDRESS:PORT (like 203.0.113.11:8080)"
                ));
            }
        }
    };
    let ip = ip(host)?;
    match port.parse::<u64>() {
        Ok(port) => match u16::try_from(port) {
            Ok(port) => Ok(SocketAddr::new(ip, port)),
            Err(_) => Err(format!("port {port} in `{text}` is out of range 1-65535")),
        },
        Err(_) => Err(format!("`{port}` in `{text}` is not a port number")),
    }
}

/// A network in CIDR form; a bare address is taken as that one address (/32, /128).
pub(super) fn network(text: &str) -> Result<IpNet, String> {
    let text = text.trim();
    match text.parse::<IpNet>() {
        Ok(net) if net.trunc() == net => Ok(net),
        Ok(net) => Err(format!(
            "`{text}` has host bits set; write the network as `{}`",
            net.trunc()
        )),
        Err(_) => {
            if let Ok(ip) = text.parse::<IpAddr>() {
                return Ok(IpNet::from(ip));
            }
            let Some((addr, prefix)) = text.split_once('/') else {
                return Err(format!(
                    "`{text}` is not an address or a network in CIDR form (like 192.0.2.0/24)"
                ));
            };
            let ip = ip(addr)?;
            let max = if ip.is_ipv4() { 32 } else { 128 };
            match prefix.parse::<u32>() {
                Ok(len) => Err(format!(
                    "prefix length /{len} in `{text}` is too long for an {} network (at most /{max})",
                    family(ip)
                )),
                Err(_) => Err(format!("`/{prefix}` in `{text}` is not a prefix length")),
            }
        }
    }
}

/// `FIRST-LAST`, inclusive.
pub(super) fn port_range(text: &str) -> Result<(u64, u64), String> {
    let bad = || format!("`{text}` is not a port range like \"40000-59999\"");
    let (first, last) = text.split_once('-').ok_or_else(bad)?;
    let first = first.trim().parse().map_err(|_| bad())?;
    let last = last.trim().parse().map_err(|_| bad())?;
    Ok((first, last))
}

pub(super) fn family(ip: IpAddr) -> &'static str {
    match ip {
        IpAddr::V4(_) => "IPv4",
        IpAddr::V6(_) => "IPv6",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ip_messages() {
        assert!(ip("203.0.113.1").is_ok());
        assert!(ip("2001:db8::1").is_ok());
        assert!(
            ip("203.0.113.300")
                .unwrap_err()
                .contains("not an IP address")
        );
        assert!(ip("192.0.2.0/24").unwrap_err().contains("not a network"));
        assert!(ip("192.0.2.1:80").unwrap_err().contains("without a port"));
    }

    #[test]
    fn socket_messages() {
        assert_eq!(
            socket("[2001:db8::1]:80").unwrap(),
            "[2001:db8::1]:80".parse().unwrap()
        );
        assert!(
            socket("203.0.113.1:70000")
                .unwrap_err()
                .contains("out of range")
        );
        assert!(socket("203.0.113.1").unwrap_err().contains("has no port"));
        assert!(
            socket("2001:db8::1:80")
                .unwrap_err()
                .contains("[2001:db8::1]:80")
        );
        assert!(
            socket("203.0.113.1:http")
                .unwrap_err()
                .contains("not a port number")
        );
        assert!(
            socket("backend-1:80")
                .unwrap_err()
                .contains("not an IP address")
        );
        assert!(
            socket("[2001:db8::1]")
                .unwrap_err()
                .contains("ADDRESS:PORT")
        );
    }

    #[test]
    fn network_messages() {
        assert_eq!(network("10.0.0.0/8").unwrap().to_string(), "10.0.0.0/8");
        assert_eq!(network("192.0.2.7").unwrap().to_string(), "192.0.2.7/32");
        assert_eq!(
            network("2001:db8::/32").unwrap().to_string(),
            "2001:db8::/32"
        );
        let err = network("10.0.0.1/8").unwrap_err();
        assert!(
            err.contains("host bits") && err.contains("10.0.0.0/8"),
            "{err}"
        );
        assert!(network("10.0.0.0/33").unwrap_err().contains("at most /32"));
        assert!(
            network("10.0.0.0/x")
                .unwrap_err()
                .contains("not a prefix length")
        );
        assert!(
            network("10.0.0.300/8")
                .unwrap_err()
                .contains("not an IP address")
        );
        assert!(network("everyone").unwrap_err().contains("CIDR"));
    }

    #[test]
    fn port_ranges() {
        assert_eq!(port_range("40000-59999"), Ok((40000, 59999)));
        assert_eq!(port_range(" 1 - 2 "), Ok((1, 2)));
        assert!(port_range("40000").is_err());
        assert!(port_range("a-b").is_err());
    }
}

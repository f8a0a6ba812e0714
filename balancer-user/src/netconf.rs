//! The host network settings the data plane relies on: floating addresses on
//! their interfaces, forwarding on the XDP interfaces, and SNAT ports kept out
//! of the host's ephemeral range. Every change is recorded so that it can be
//! undone on exit ([`NetChanges::undo`]).

use std::{
    ffi::CString,
    fs,
    net::IpAddr,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context, Result, anyhow, bail};
use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use tracing::{info, warn};

pub fn ifindex(name: &str) -> Result<u32> {
    let c = CString::new(name).with_context(|| format!("interface name {name:?}"))?;
    // SAFETY: c is a valid NUL-terminated string.
    let idx = unsafe { libc::if_nametoindex(c.as_ptr()) };
    if idx == 0 {
        bail!("interface {name} does not exist");
    }
    Ok(idx)
}

/// The MTU of the interface with index `ifindex`, in this network namespace
/// (asked of the kernel through a socket: /sys may show another namespace).
pub fn mtu(ifindex: u32) -> Result<u32> {
    // SAFETY: a zeroed ifreq is valid; if_indextoname writes at most
    // IF_NAMESIZE bytes into ifr_name, which has that room.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    if unsafe { libc::if_indextoname(ifindex, req.ifr_name.as_mut_ptr()) }.is_null() {
        bail!("no interface with index {ifindex}");
    }
    // SAFETY: plain socket(2); the descriptor is closed below.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error()).context("socket for SIOCGIFMTU");
    }
    // SAFETY: SIOCGIFMTU reads ifr_name and writes ifr_ifru.ifru_mtu of req.
    let rc = unsafe { libc::ioctl(fd, libc::SIOCGIFMTU, &mut req) };
    let err = std::io::Error::last_os_error();
    // SAFETY: fd is ours and open.
    unsafe { libc::close(fd) };
    if rc < 0 {
        return Err(err).with_context(|| format!("SIOCGIFMTU of ifindex {ifindex}"));
    }
    // SAFETY: the kernel filled the mtu member of the union.
    Ok(unsafe { req.ifr_ifru.ifru_mtu } as u32)
}

#[derive(Deserialize)]
struct IpAddrInfo {
    ifname: String,
    #[serde(default)]
    addr_info: Vec<AddrInfo>,
}

#[derive(Deserialize)]
struct AddrInfo {
    local: IpAddr,
    prefixlen: u8,
}

/// Addresses configured on the host (this network namespace), by interface.
pub fn host_addresses() -> Result<Vec<(String, IpNet)>> {
    let out = run_ip(&["-j", "addr", "show"])?;
    let links: Vec<IpAddrInfo> = serde_json::from_str(&out).context("parsing `ip -j addr show`")?;
    let mut all = Vec::new();
    for link in links {
        for a in link.addr_info {
            if let Ok(net) = IpNet::new(a.local, a.prefixlen) {
                all.push((link.ifname.clone(), net));
            }
        }
    }
    Ok(all)
}

/// The source address the host would use towards `dst`.
/// Removes whichever of `addresses` the host has (not recorded: these are
/// floating addresses a stopped node left behind).
pub fn remove_addresses(addresses: &[IpAddr]) -> Result<()> {
    for (dev, net) in host_addresses()? {
        if addresses.contains(&net.addr()) {
            run_ip(&["addr", "del", &net.to_string(), "dev", &dev])?;
            info!(address = %net, interface = %dev, "removed a floating address left behind");
        }
    }
    Ok(())
}

/// The interface that holds `ip`, if any.
pub fn interface_of(ip: IpAddr) -> Result<Option<String>> {
    Ok(host_addresses()?
        .into_iter()
        .find(|(_, net)| net.addr() == ip)
        .map(|(dev, _)| dev))
}

/// Whether `interface` is up with a carrier (`operstate` up; a veth whose
/// peer is down says `lowerlayerdown`).
pub fn interface_up(interface: &str) -> bool {
    fs::read_to_string(format!("/sys/class/net/{interface}/operstate"))
        .is_ok_and(|s| matches!(s.trim(), "up" | "unknown"))
}

/// Whether an XDP program is attached to `interface`.
pub fn xdp_attached(interface: &str) -> Result<bool> {
    let out = run_ip(&["-j", "-d", "link", "show", "dev", interface])?;
    let links: Vec<serde_json::Value> =
        serde_json::from_str(&out).context("parsing `ip -j link show`")?;
    Ok(links.iter().any(|l| l.get("xdp").is_some()))
}

pub fn route_source(dst: IpAddr) -> Result<IpAddr> {
    #[derive(Deserialize)]
    struct Route {
        prefsrc: Option<IpAddr>,
    }
    let out = run_ip(&["-j", "route", "get", &dst.to_string()])?;
    let routes: Vec<Route> = serde_json::from_str(&out).context("parsing `ip -j route get`")?;
    routes
        .into_iter()
        .find_map(|r| r.prefsrc)
        .ok_or_else(|| anyhow!("no route with a source address towards {dst}"))
}

fn run_ip(args: &[&str]) -> Result<String> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .context("running `ip` (iproute2)")?;
    if !out.status.success() {
        bail!(
            "`ip {}` failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Changes made to the host, undone in reverse order. With a `record` file
/// they survive the daemon: a daemon that takes over pinned state adopts the
/// previous one's changes, so that its clean stop undoes them all.
#[derive(Default, Serialize, Deserialize)]
pub struct NetChanges {
    added: Vec<(IpNet, String)>,
    sysctls: Vec<(String, String)>,
    #[serde(skip)]
    record: Option<PathBuf>,
}

impl NetChanges {
    /// Changes recorded in `path`, adopted when `adopt` (a previous daemon's
    /// state is being taken over) and discarded otherwise.
    pub fn recorded(path: &Path, adopt: bool) -> Self {
        let mut changes = if adopt {
            fs::read_to_string(path)
                .ok()
                .and_then(|text| serde_json::from_str::<NetChanges>(&text).ok())
                .unwrap_or_default()
        } else {
            NetChanges::default()
        };
        changes.record = Some(path.to_path_buf());
        changes.save();
        changes
    }

    fn save(&self) {
        if let Some(path) = &self.record
            && let Err(e) = serde_json::to_string(self)
                .map_err(std::io::Error::other)
                .and_then(|text| fs::write(path, text))
        {
            warn!(path = %path.display(), "cannot record host changes: {e}");
        }
    }

    /// Leaves the changes in place for the next daemon (which adopts them).
    pub fn hand_over(&mut self) {
        self.added.clear();
        self.sysctls.clear();
        self.record = None;
    }

    /// Makes `ip` a local address unless it already is: on the interface among
    /// `interfaces` whose subnet holds it (so that the host answers ARP for it
    /// there), else as a /32 or /128 on the first of them.
    pub fn ensure_local(&mut self, addresses: &[IpAddr], interfaces: &[String]) -> Result<()> {
        let existing = host_addresses()?;
        for &ip in addresses {
            if !existing.iter().any(|(_, net)| net.addr() == ip) {
                self.add_address(ip, &existing, interfaces)?;
            }
        }
        Ok(())
    }

    fn add_address(
        &mut self,
        ip: IpAddr,
        existing: &[(String, IpNet)],
        interfaces: &[String],
    ) -> Result<()> {
        let (dev, net) = match existing
            .iter()
            .find(|(dev, net)| interfaces.contains(dev) && net.contains(&ip))
        {
            Some((dev, net)) => (dev.clone(), IpNet::new(ip, net.prefix_len())?),
            None => {
                let dev = interfaces
                    .first()
                    .ok_or_else(|| anyhow!("no interface to put {ip} on"))?
                    .clone();
                (dev, IpNet::new(ip, if ip.is_ipv4() { 32 } else { 128 })?)
            }
        };
        let mut args = vec!["addr", "add"];
        let net_s = net.to_string();
        args.extend([net_s.as_str(), "dev", dev.as_str()]);
        if ip.is_ipv6() {
            args.push("nodad");
        }
        run_ip(&args)?;
        info!(address = %net, interface = %dev, "added address");
        self.added.push((net, dev));
        self.save();
        Ok(())
    }

    /// Writes a sysctl under /proc/sys, remembering the old value.
    pub fn sysctl(&mut self, key: &str, value: &str) -> Result<()> {
        let path = format!("/proc/sys/{}", key.replace('.', "/"));
        let old = fs::read_to_string(&path)
            .with_context(|| format!("reading sysctl {key}"))?
            .trim()
            .to_string();
        if old == value {
            return Ok(());
        }
        fs::write(&path, value).with_context(|| format!("setting sysctl {key}={value}"))?;
        info!(%key, %value, %old, "set sysctl");
        self.sysctls.push((path, old));
        self.save();
        Ok(())
    }

    /// Keeps `min..=max` out of the host's ephemeral ports, so that its own
    /// connections from an SNAT address never collide with translated flows.
    pub fn reserve_ports(&mut self, min: u16, max: u16) -> Result<()> {
        let key = "net.ipv4.ip_local_reserved_ports";
        let current = fs::read_to_string("/proc/sys/net/ipv4/ip_local_reserved_ports")
            .context("reading net.ipv4.ip_local_reserved_ports")?;
        let current = current.trim();
        let range = format!("{min}-{max}");
        if current.split(',').any(|r| r == range) {
            return Ok(());
        }
        let value = if current.is_empty() {
            range
        } else {
            format!("{current},{range}")
        };
        self.sysctl(key, &value)
    }

    pub fn undo(&mut self) {
        for (net, dev) in self.added.drain(..).rev() {
            match run_ip(&["addr", "del", &net.to_string(), "dev", &dev]) {
                Ok(_) => info!(address = %net, interface = %dev, "removed address"),
                Err(e) => warn!(address = %net, interface = %dev, "cannot remove address: {e:#}"),
            }
        }
        for (path, old) in self.sysctls.drain(..).rev() {
            // An empty write is ignored by the kernel; a newline clears a list.
            if let Err(e) = fs::write(&path, format!("{old}\n")) {
                warn!(%path, "cannot restore sysctl to {old}: {e}");
            }
        }
        if let Some(path) = self.record.take() {
            let _ = fs::remove_file(path);
        }
    }
}

impl Drop for NetChanges {
    fn drop(&mut self) {
        self.undo();
    }
}

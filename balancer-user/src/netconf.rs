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

use crate::netlink::{self, Netlink};

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

/// The name of the interface with index `ifindex`.
pub fn ifname(ifindex: u32) -> Result<String> {
    let mut buf = [0 as libc::c_char; libc::IF_NAMESIZE];
    // SAFETY: buf has IF_NAMESIZE bytes, all if_indextoname writes.
    if unsafe { libc::if_indextoname(ifindex, buf.as_mut_ptr()) }.is_null() {
        bail!("no interface with index {ifindex}");
    }
    // SAFETY: if_indextoname wrote a NUL-terminated name into buf.
    let name = unsafe { std::ffi::CStr::from_ptr(buf.as_ptr()) };
    Ok(name.to_string_lossy().into_owned())
}

/// Removes whichever of `addresses` the host has (not recorded: these are
/// floating addresses a stopped node left behind).
pub async fn remove_addresses(netlink: &Netlink, addresses: &[IpAddr]) -> Result<()> {
    for a in netlink.addresses().await? {
        if addresses.contains(&a.net.addr()) {
            netlink.del_address(a.ifindex, a.net).await?;
            info!(address = %a.net, interface = %ifname(a.ifindex).unwrap_or_default(), "removed a floating address left behind");
        }
    }
    Ok(())
}

/// Whether `interface` is up with a carrier (`operstate` up; a veth whose
/// peer is down says `lowerlayerdown`).
pub fn interface_up(interface: &str) -> bool {
    fs::read_to_string(format!("/sys/class/net/{interface}/operstate"))
        .is_ok_and(|s| matches!(s.trim(), "up" | "unknown"))
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
/// previous one's changes, so that its clean stop undoes them all. Addresses
/// are recorded with the interface's name (an index does not survive the
/// interface).
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

    /// Makes each of `addresses` a local address unless it already is: on the
    /// interface among `interfaces` whose subnet holds it (so that the host
    /// answers ARP for it there), else as a /32 or /128 on the first of them.
    pub async fn ensure_local(
        &mut self,
        netlink: &Netlink,
        addresses: &[IpAddr],
        interfaces: &[String],
    ) -> Result<()> {
        let existing: Vec<(String, IpNet)> = netlink
            .addresses()
            .await?
            .into_iter()
            .filter_map(|a| Some((ifname(a.ifindex).ok()?, a.net)))
            .collect();
        for &ip in addresses {
            if existing.iter().any(|(_, net)| net.addr() == ip) {
                continue;
            }
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
            netlink.add_address(ifindex(&dev)?, net).await?;
            info!(address = %net, interface = %dev, "added address");
            self.added.push((net, dev));
            self.save();
        }
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

    /// Undoes every change, from code that can wait.
    pub async fn undo(&mut self, netlink: &Netlink) {
        for (net, dev) in self.added.drain(..).rev() {
            remove_added(netlink, net, &dev).await;
        }
        self.undo_sysctls();
    }

    /// Removes those of `addresses` that this added (an active-active node
    /// handing a peer's SNAT addresses back).
    pub async fn release(&mut self, netlink: &Netlink, addresses: &[IpAddr]) {
        let (going, staying) = std::mem::take(&mut self.added)
            .into_iter()
            .partition(|(net, _)| addresses.contains(&net.addr()));
        self.added = staying;
        self.save();
        for (net, dev) in going {
            remove_added(netlink, net, &dev).await;
        }
    }

    fn undo_sysctls(&mut self) {
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

async fn remove_added(netlink: &Netlink, net: IpNet, dev: &str) {
    let removed = match ifindex(dev) {
        Ok(index) => netlink.del_address(index, net).await,
        Err(e) => Err(e),
    };
    match removed {
        Ok(()) => info!(address = %net, interface = %dev, "removed address"),
        Err(e) => warn!(address = %net, interface = %dev, "cannot remove address: {e:#}"),
    }
}

impl Drop for NetChanges {
    fn drop(&mut self) {
        if self.added.is_empty() {
            self.undo_sysctls();
            return;
        }
        let mut changes = std::mem::take(self);
        if let Err(e) = netlink::blocking(|netlink| async move {
            changes.undo(&netlink).await;
            Ok(())
        }) {
            warn!("undoing the host changes: {e:#}");
        }
    }
}

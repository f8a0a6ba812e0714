//! Writing the maps: a whole [`Plan`], and the single changes the daemon makes
//! between plans (a backend's flags or load, a freed backend, the HA lease).

use std::net::IpAddr;

use anyhow::{Context, Result};
use aya::maps::{
    Array, HashMap, MapData, PerCpuArray,
    lpm_trie::{Key as LpmKey, LpmTrie},
};
use balancer_common::{
    RawAddr,
    cookie::COOKIE_KEY_SLOTS,
    firewall::{RuleKeyV4, RuleKeyV6, Scope, rule_prefix_len},
    global::{Global, syn_flood_window_limit},
    ha::Lease,
    maps::{
        ActiveConns, AddrFilter, BackendLoad, BackendStatsMap, Backends, FirewallV4, FirewallV6,
        Globals, HaLease, LocalAddrs, MaglevTable, MapDef, RrTable, ServiceSlots, Services,
        SnatPool, SynCookieKeys, kind,
    },
    service::{
        ADDR_FILTER_WORDS, AddrKey, Backend, BackendIndex, MAX_SNAT_ADDRS, ServiceKey,
        addr_filter_bit,
    },
    stats::BackendStats,
};
use ipnet::{Ipv4Net, Ipv6Net};

use super::Dataplane;
use crate::{
    plan::{Plan, addr_key},
    syncookie::{Secret, periods_around},
};

impl Dataplane {
    /// Writes services, backends and local addresses of `plan`.
    pub fn apply(&mut self, plan: &Plan) -> Result<()> {
        {
            let mut addrs = self.map_mut::<LocalAddrs, HashMap<_, _, _>>()?;
            for (ip, flags) in &plan.local_addrs {
                addrs.insert(addr_key(*ip), *flags, 0)?;
            }
        }
        // Bits only added here: the addresses are in LOCAL_ADDRS before the
        // filter lets packets look. `remove_stale` clears what is left over.
        self.write_addr_filter(plan, true)?;
        {
            let mut global = self.map_mut::<Globals, Array<_, _>>()?;
            for (index, value) in [
                (Global::Flags, plan.global_flags),
                (Global::Rate, plan.rate),
                (Global::Burst, plan.burst),
                (Global::SnatV4, plan.snat_v4.len() as u32),
                (Global::SnatV6, plan.snat_v6.len() as u32),
                (Global::SynCookies, plan.syn_cookies),
                (
                    Global::SynFloodLimit,
                    syn_flood_window_limit(plan.syn_flood_threshold),
                ),
                (Global::SynFloodCooldownMs, plan.syn_flood_cooldown_ms),
            ] {
                global.set(index.index(), value, 0)?;
            }
        }
        {
            let mut pool = self.map_mut::<SnatPool, Array<_, RawAddr>>()?;
            for (base, addrs) in [(0, &plan.snat_v4), (MAX_SNAT_ADDRS, &plan.snat_v6)] {
                for (i, ip) in addrs.iter().enumerate() {
                    pool.set(base + i as u32, crate::addr::raw(*ip).0, 0)?;
                }
            }
        }
        self.write_rules::<FirewallV4, _, _>(&plan.firewall_v4, rule_v4)?;
        self.write_rules::<FirewallV6, _, _>(&plan.firewall_v6, rule_v6)?;
        {
            let mut slots = self.map_mut::<ServiceSlots, Array<_, _>>()?;
            for svc in &plan.services {
                for (slot, b) in svc.backends.iter().enumerate() {
                    slots.set(svc.value.id.slot(slot as u32), b.index, 0)?;
                }
            }
        }
        {
            let mut backends = self.map_mut::<Backends, Array<_, _>>()?;
            for svc in &plan.services {
                for b in &svc.backends {
                    backends.set(b.index.0, b.entry, 0)?;
                }
            }
        }
        {
            let mut rr = self.map_mut::<RrTable, Array<_, _>>()?;
            for svc in &plan.services {
                for (i, slot) in svc.rr_sequence.iter().enumerate() {
                    rr.set(svc.value.id.rr_entry(i as u32), slot, 0)?;
                }
            }
        }
        {
            let mut maglev = self.map_mut::<MaglevTable, Array<_, _>>()?;
            for svc in &plan.services {
                for (i, slot) in svc.maglev_table.iter().enumerate() {
                    maglev.set(svc.value.id.maglev_entry(i as u32), slot, 0)?;
                }
            }
        }
        let mut services = self.map_mut::<Services, HashMap<_, _, _>>()?;
        for svc in &plan.services {
            services
                .insert(svc.key, svc.value, 0)
                .with_context(|| format!("writing service {}", svc.name))?;
        }
        Ok(())
    }

    /// Removes what `plan` no longer has: services, addresses, firewall
    /// rules. Run after [`Dataplane::apply`] so that nothing is missing in
    /// between.
    pub fn remove_stale(&mut self, plan: &Plan) -> Result<()> {
        {
            let keep: Vec<ServiceKey> = plan.services.iter().map(|s| s.key).collect();
            let mut services = self.map_mut::<Services, HashMap<_, _, _>>()?;
            remove_keys(&mut services, |k| !keep.contains(k))?;
        }
        {
            let keep: Vec<AddrKey> = plan
                .local_addrs
                .iter()
                .map(|(ip, _)| addr_key(*ip))
                .collect();
            let mut addrs = self.map_mut::<LocalAddrs, HashMap<_, _, _>>()?;
            remove_keys(&mut addrs, |k| !keep.contains(k))?;
        }
        self.write_addr_filter(plan, false)?;
        self.remove_stale_rules::<FirewallV4, _, _>(&plan.firewall_v4, rule_v4)?;
        self.remove_stale_rules::<FirewallV6, _, _>(&plan.firewall_v6, rule_v6)?;
        Ok(())
    }

    /// Writes one family's firewall rules (scope, network, action) to `M`,
    /// keyed by `key`.
    fn write_rules<M, N, K>(
        &mut self,
        rules: &[(Scope, N, u32)],
        key: fn(Scope, &N) -> (u32, K),
    ) -> Result<()>
    where
        M: MapDef<Kind = kind::LpmTrie, Key = K, Value = u32>,
        N: std::fmt::Display,
        K: aya::Pod,
    {
        let mut trie = self.map_mut::<M, LpmTrie<_, _, _>>()?;
        for (scope, net, action) in rules {
            let (prefix_len, k) = key(*scope, net);
            trie.insert(&LpmKey::new(prefix_len, k), action, 0)
                .with_context(|| format!("writing firewall rule {net}"))?;
        }
        Ok(())
    }

    /// Removes from `M` the rules that are not among `rules`.
    fn remove_stale_rules<M, N, K>(
        &mut self,
        rules: &[(Scope, N, u32)],
        key: fn(Scope, &N) -> (u32, K),
    ) -> Result<()>
    where
        M: MapDef<Kind = kind::LpmTrie, Key = K, Value = u32>,
        K: aya::Pod + PartialEq,
    {
        let keep: Vec<(u32, K)> = rules
            .iter()
            .map(|(scope, net, _)| key(*scope, net))
            .collect();
        let mut trie = self.map_mut::<M, LpmTrie<_, _, _>>()?;
        let stale: Vec<LpmKey<K>> = trie
            .keys()
            .filter_map(Result::ok)
            .filter(|k| !keep.contains(&(k.prefix_len(), k.data())))
            .collect();
        for k in stale {
            trie.remove(&k)?;
        }
        Ok(())
    }

    /// `ADDR_FILTER` for the addresses of `plan`: with `keep`, bits already
    /// set stay (a stale bit only costs a lookup); without, exactly the plan's.
    fn write_addr_filter(&mut self, plan: &Plan, keep: bool) -> Result<()> {
        let mut words = vec![0u64; ADDR_FILTER_WORDS as usize];
        for (ip, _) in &plan.local_addrs {
            let bit = addr_filter_bit(&addr_key(*ip).addr);
            words[(bit / 64) as usize] |= 1 << (bit % 64);
        }
        let mut filter = self.map_mut::<AddrFilter, Array<_, _>>()?;
        for (i, want) in words.into_iter().enumerate() {
            let now = filter.get(&(i as u32), 0)?;
            let next = if keep { now | want } else { want };
            if next != now {
                filter.set(i as u32, next, 0)?;
            }
        }
        Ok(())
    }

    /// Puts the SYN cookie keys of the periods around `period` in place (see
    /// `crate::syncookie`), then makes `period` the program's current one.
    pub fn rotate_cookie_keys(&mut self, secret: &Secret, period: u32) -> Result<()> {
        {
            let mut keys = self.map_mut::<SynCookieKeys, Array<_, _>>()?;
            for p in periods_around(period) {
                let slot = p % COOKIE_KEY_SLOTS;
                let now = keys.get(&slot, 0)?;
                if let Some(key) = secret.key_for(p, now).context("drawing a SYN cookie key")? {
                    keys.set(slot, key, 0)?;
                }
            }
        }
        let mut global = self.map_mut::<Globals, Array<_, _>>()?;
        if global.get(&Global::SynCookiePeriod.index(), 0)? != period {
            global.set(Global::SynCookiePeriod.index(), period, 0)?;
        }
        Ok(())
    }

    /// The MSS the SYN proxy announces to clients of each family (the
    /// program lowers it to what backends announce).
    pub fn set_syn_mss(&mut self, v4: u16, v6: u16) -> Result<()> {
        let mut global = self.map_mut::<Globals, Array<_, _>>()?;
        global.set(Global::SynMssV4.index(), u32::from(v4), 0)?;
        global.set(Global::SynMssV6.index(), u32::from(v6), 0)?;
        Ok(())
    }

    /// Sets `HA_LEASE` (the HA thread writes it through its pin; the packet
    /// tests through here).
    pub fn set_ha_lease(&mut self, lease: Lease) -> Result<()> {
        let mut map = self.map_mut::<HaLease, Array<_, _>>()?;
        map.set(0, lease, 0)?;
        Ok(())
    }

    /// Rewrites the flags of a backend, keeping the rest of its entry.
    pub fn set_backend_flags(&mut self, index: BackendIndex, flags: u32) -> Result<()> {
        let mut backends = self.map_mut::<Backends, Array<_, _>>()?;
        let mut entry = backends.get(&index.0, 0)?;
        entry.flags = flags;
        backends.set(index.0, entry, 0)?;
        Ok(())
    }

    /// The load a backend's agent reported (percent busy).
    pub fn set_load(&mut self, index: BackendIndex, load_pct: u32) -> Result<()> {
        let mut load = self.map_mut::<BackendLoad, Array<_, _>>()?;
        load.set(index.0, load_pct, 0)?;
        Ok(())
    }

    /// A backend index that nothing refers to any more: entry, counts, load
    /// and traffic counters back to zero for whoever gets it next.
    pub fn clear_backend(&mut self, index: BackendIndex) -> Result<()> {
        {
            let mut backends = self.map_mut::<Backends, Array<_, _>>()?;
            backends.set(index.0, Backend::default(), 0)?;
        }
        {
            let mut active = self.map_mut::<ActiveConns, Array<_, _>>()?;
            active.set(index.0, 0, 0)?;
        }
        self.set_load(index, 0)?;
        let cpus = aya::util::nr_cpus().map_err(|(_, e)| e)?;
        let mut stats = self.map_mut::<BackendStatsMap, PerCpuArray<_, _>>()?;
        let zero = aya::maps::PerCpuValues::try_from(vec![BackendStats::default(); cpus])?;
        stats.set(index.0, zero, 0)?;
        Ok(())
    }
}

/// Removes every key of `map` that `stale` picks.
fn remove_keys<K: aya::Pod, V: aya::Pod>(
    map: &mut HashMap<&mut MapData, K, V>,
    stale: impl Fn(&K) -> bool,
) -> Result<()> {
    let gone: Vec<K> = map
        .keys()
        .filter_map(Result::ok)
        .filter(|k| stale(k))
        .collect();
    for k in gone {
        map.remove(&k)?;
    }
    Ok(())
}

/// The `FIREWALL_V4` key (prefix length, data) of a rule.
fn rule_v4(scope: Scope, net: &Ipv4Net) -> (u32, RuleKeyV4) {
    (
        rule_prefix_len(net.prefix_len().into()),
        RuleKeyV4 {
            scope_be: scope.key(),
            addr: u32::from_ne_bytes(net.network().octets()),
        },
    )
}

/// The `FIREWALL_V6` key (prefix length, data) of a rule.
fn rule_v6(scope: Scope, net: &Ipv6Net) -> (u32, RuleKeyV6) {
    (
        rule_prefix_len(net.prefix_len().into()),
        RuleKeyV6 {
            scope_be: scope.key(),
            addr: crate::addr::raw(IpAddr::V6(net.network())).0,
        },
    )
}

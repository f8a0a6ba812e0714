//! ARP and IPv6 neighbour solicitations about a floating address (a VIP or an
//! SNAT address): this host's to answer only while its HA lease runs, so that
//! a node whose daemon died stops claiming the addresses it still holds.

use balancer_common::{
    FAMILY_V6,
    service::{ADDR_F_SNAT, ADDR_F_VIP},
    stats::Counter,
};

use crate::{addr, lease, parse::Neighbour};

/// What happens to a neighbour request: the host answers it, unless it is
/// about a floating address after this node's lease ran out.
#[inline(always)]
pub fn admit(n: &Neighbour) -> Result<Counter, Counter> {
    // An IPv6 solicitation is multicast to the target's solicited-node group:
    // only the lease tells, so look at it first; ARP is rarer still.
    if n.family == FAMILY_V6 && !lease::expired() {
        return Ok(Counter::PassNotForUs);
    }
    let floating = addr::flags_of(n.target, n.family) & (ADDR_F_VIP | ADDR_F_SNAT) != 0;
    if floating && lease::expired() {
        return Err(Counter::DropArpNotActive);
    }
    Ok(Counter::PassNotForUs)
}

//! The balancer daemon: configuration, loading the XDP program, writing its maps.
pub mod addr;
pub mod api;
pub mod cli;
pub mod config;
pub mod daemon;
pub mod dataplane;
pub mod events;
pub mod expiry;
pub mod ha;
pub mod health;
pub mod ktime;
pub mod metrics;
pub mod netconf;
pub mod netlink;
pub mod plan;
pub mod runtime;
pub mod sched;

//! Settings that this version reads and validates but does not act on yet.
//!
//! Kept in one place so that a user is never silently ignored, and so that a
//! line here is deleted when its feature lands.

use super::{
    problem::Warning,
    types::{Config, HealthKind, OnBackendDown},
};

pub fn not_yet_enforced(config: &Config) -> Vec<Warning> {
    let mut warnings = Vec::new();
    let mut warn = |path: String, message: &str| warnings.push(Warning::new(path, message));

    if config.ha.enabled {
        warn(
            "ha.enabled".into(),
            "high availability comes later: this node runs standalone, owns no floating address and sends no heartbeats",
        );
    }

    if config.control.metrics.is_some() {
        warn(
            "control.metrics".into(),
            "the metrics endpoint comes later: nothing listens there yet",
        );
    }

    for (i, service) in config.services.iter().enumerate() {
        let path = |key: &str| format!("service[{i}].{key}");
        if service.health.kind != HealthKind::None {
            warn(
                path("health"),
                &format!(
                    "kind = \"{}\": health checks come later; all backends are treated as healthy",
                    service.health.kind
                ),
            );
        }
        if service.on_backend_down == OnBackendDown::Reset {
            warn(
                path("on_backend_down"),
                "\"reset\" comes later (with health checks): a failed backend's flows are kept",
            );
        }
    }
    warnings
}

//! Task labels that mean something to Agora itself.

/// Seconds a killed task keeps running after TASK_KILLING before it is
/// signalled (Nomad's `shutdown_delay`), so load balancers and DNS stop
/// sending it work first; `0` signals at once. The executor honours it on
/// a framework's kill; marathon-rs sets it for tasks behind agora lb
/// unless the app does.
pub const SHUTDOWN_DELAY: &str = "AGORA_SHUTDOWN_DELAY";

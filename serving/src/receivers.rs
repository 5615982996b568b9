//! From the `[[stream.receiver]]` tables of the config to the speed layer's
//! receiver specs.

use lamina_speed::receivers::ReceiverSpec;

use crate::config::ReceiverConfig;

/// The runtime spec of a configured receiver.
///
/// # Errors
///
/// A message when an address does not parse (validation already checked it,
/// so this means a config built by hand).
pub fn spec_of(config: &ReceiverConfig) -> Result<ReceiverSpec, String> {
    Ok(match config {
        ReceiverConfig::TcpListen(c) => ReceiverSpec::TcpListen {
            listen: c
                .listen
                .parse()
                .map_err(|e| format!("listen `{}`: {e}", c.listen))?,
            max_connections: c.max_connections,
            idle_timeout_ms: c.idle_timeout_ms,
        },
        ReceiverConfig::TcpConnect(c) => ReceiverSpec::TcpConnect {
            address: c.address.clone(),
            reconnect_min_ms: c.reconnect_min_ms,
            reconnect_max_ms: c.reconnect_max_ms,
        },
    })
}

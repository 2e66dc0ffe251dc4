//! Errors of the DNS subsystem.

use std::net::SocketAddr;

/// Why the DNS server could not start or keep running.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DnsError {
    /// The DNS listener (UDP or TCP) could not be bound.
    #[error("binding the DNS listener on {addr} (UDP and TCP): {source}")]
    Bind {
        /// The address asked for.
        addr: SocketAddr,
        /// The socket error.
        source: std::io::Error,
    },
    /// The TLS settings of a DoT/DoH listener cannot be used.
    #[error("TLS of the DNS listener on {addr}: {message}")]
    Tls {
        /// The listener's address.
        addr: SocketAddr,
        /// What is wrong.
        message: String,
    },
    /// An HTTP endpoint (health, ready, metrics) could not be bound.
    #[error("binding the {what} endpoint on {addr}: {source}")]
    HttpBind {
        /// `health`, `ready` or `metrics`.
        what: &'static str,
        /// The address asked for.
        addr: SocketAddr,
        /// The socket error.
        source: std::io::Error,
    },
    /// An option has a value that cannot work.
    #[error("invalid DNS option {option}: {reason}")]
    InvalidOption {
        /// The option (`--ttl`, `zones`).
        option: &'static str,
        /// What is wrong with it.
        reason: String,
    },
}

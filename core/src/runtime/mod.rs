//! The runtime layer shared by every program and subsystem: one HTTP route server
//! ([`http`]), one stop-signal and lameduck helper ([`signal`]) and one configuration-file
//! watcher ([`watch`]). `dns/` and `ipvs/` build on these; `agent/` composes them.

pub mod http;
pub mod signal;
pub mod watch;

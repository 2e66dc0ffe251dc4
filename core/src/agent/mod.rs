//! The one-binary node agent (`agentctl run`) and the operator tools around it.
//!
//! - [`inspect`]: kubectl-like tables of the shared cache (`agentctl get`).
pub mod inspect;

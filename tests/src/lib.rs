//! Support code of svcnet's end-to-end tests: binary lookup, the fake Kubernetes API server
//! (a test double), and the user-mode-linux harness.
pub mod bins;
pub mod fake_apiserver;
pub mod vm;

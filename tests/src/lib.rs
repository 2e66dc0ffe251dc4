//! x
pub mod fake_apiserver;
pub mod vm;

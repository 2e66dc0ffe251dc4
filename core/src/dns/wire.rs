//! DNS wire format: parsing requests into [`Request`](super::handler::Request)s and encoding
//! [`Response`](super::handler::Response)s with name compression, EDNS(0) and truncation.

/// Pre-encoded answer/authority/additional sections of a prepared zone answer.
#[derive(Debug)]
pub struct PreparedSections {
    /// The encoded records.
    pub bytes: Vec<u8>,
}

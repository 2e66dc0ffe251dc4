//! `loadbalance`: round-robin order of the A/AAAA records of each answer.

use std::sync::atomic::{AtomicUsize, Ordering};

use hickory_proto::rr::{Record, RecordType};

use crate::dns::handler::{Next, Plugin, Reply, Request, Response};

/// The loadbalance plugin (policy `round_robin`).
#[derive(Debug, Default)]
pub(crate) struct LoadBalance {
    turn: AtomicUsize,
}

impl LoadBalance {
    /// A new round-robin balancer.
    pub fn new() -> Self {
        Self::default()
    }
}

fn is_address(r: &Record) -> bool {
    matches!(r.record_type(), RecordType::A | RecordType::AAAA)
}

/// Rotates the address records of `resp` by `turn`, keeping other records (CNAMEs) first.
pub fn rotate(resp: Response, turn: usize) -> Response {
    let n = resp.answers.iter().filter(|r| is_address(r)).count();
    if n < 2 {
        return resp; // unchanged
    }
    let mut others: Vec<Record> = Vec::with_capacity(resp.answers.len());
    let mut addrs: Vec<Record> = Vec::with_capacity(n);
    for r in resp.answers.iter() {
        if is_address(r) {
            addrs.push(r.clone());
        } else {
            others.push(r.clone());
        }
    }
    addrs.rotate_left(turn % n);
    others.extend(addrs);
    Response {
        answers: others.into(),
        ..resp
    }
}

impl Plugin for LoadBalance {
    fn name(&self) -> &'static str {
        "loadbalance"
    }

    fn handle(&self, req: &Request, next: Next) -> Reply {
        let turn = self.turn.fetch_add(1, Ordering::Relaxed);
        next.run(req).map(move |resp| rotate(resp, turn))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dns::handler::empty_records;
    use hickory_proto::op::ResponseCode;
    use hickory_proto::rr::rdata::{A, CNAME};
    use hickory_proto::rr::{Name, RData};

    #[test]
    fn rotates_addresses_after_cnames() {
        let n = Name::from_ascii("a.example.").unwrap();
        let cname = Record::from_rdata(n.clone(), 5, RData::CNAME(CNAME(n.clone())));
        let recs: Vec<Record> = std::iter::once(cname)
            .chain((1..=3).map(|i| Record::from_rdata(n.clone(), 5, RData::A(A::new(10, 0, 0, i)))))
            .collect();
        let resp = Response::with_records(
            ResponseCode::NoError,
            recs.into(),
            empty_records(),
            empty_records(),
        );
        let order = |r: &Response| -> Vec<String> {
            r.answers.iter().map(|r| r.data.to_string()).collect()
        };
        assert_eq!(
            order(&rotate(resp.clone(), 1)),
            vec!["a.example.", "10.0.0.2", "10.0.0.3", "10.0.0.1"]
        );
        assert_eq!(
            order(&rotate(resp.clone(), 5)),
            vec!["a.example.", "10.0.0.3", "10.0.0.1", "10.0.0.2"]
        );
    }
}

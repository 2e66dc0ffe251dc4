//! `errors` and `log`: report answers (CoreDNS's formats).

use std::time::Instant;

use hickory_proto::op::ResponseCode;

use crate::dns::corefile::names::in_zone;
use crate::dns::corefile::{ErrorsConfig, LogConfig};
use crate::dns::handler::{Next, Plugin, Reply, Request, Response, Transport};

/// The errors plugin: logs SERVFAIL answers produced further down the chain.
#[derive(Debug, Clone)]
pub struct Errors {
    _cfg: ErrorsConfig,
}

impl Errors {
    /// A new errors plugin.
    pub fn new(cfg: ErrorsConfig) -> Self {
        Self { _cfg: cfg }
    }
}

impl Plugin for Errors {
    fn name(&self) -> &'static str {
        "errors"
    }

    fn handle(&self, req: &Request, next: Next) -> Reply {
        let name = req.lower_name().to_string();
        let qtype = req.record_type();
        next.run(req).map(move |resp| {
            if resp.rcode == ResponseCode::ServFail {
                tracing::error!(target: "plugin/errors", "2 {name} {qtype}: no answer (SERVFAIL)");
            }
            resp
        })
    }
}

/// The log plugin: one line per query in the configured format.
#[derive(Debug, Clone)]
pub struct Log {
    cfg: LogConfig,
}

impl Log {
    /// A new log plugin.
    pub fn new(cfg: LogConfig) -> Self {
        Self { cfg }
    }
}

fn class_of(resp: &Response) -> u8 {
    match resp.rcode {
        ResponseCode::NoError if !resp.answers.is_empty() => 0,
        ResponseCode::NoError | ResponseCode::NXDomain => 1,
        _ => 2,
    }
}

/// Fills CoreDNS log placeholders for one exchange.
pub fn format_line(format: &str, req: &Request, resp: &Response, took_secs: f64) -> String {
    let mut out = String::with_capacity(format.len() + 64);
    let mut rest = format;
    while let Some(open) = rest.find('{') {
        out.push_str(&rest[..open]);
        let Some(close) = rest[open..].find('}') else {
            out.push_str(&rest[open..]);
            return out;
        };
        let key = &rest[open + 1..open + close];
        let value = match key {
            "remote" => req.client.ip().to_string(),
            "port" => req.client.port().to_string(),
            "type" => req.record_type().to_string(),
            "class" => req.class().to_string(),
            "name" => req.lower_name().to_string(),
            "proto" => match req.transport {
                Transport::Udp => "udp".into(),
                Transport::Tcp => "tcp".into(),
            },
            "size" => "-".into(),
            ">do" => req.dnssec_ok().to_string(),
            ">bufsize" => req.client_payload().to_string(),
            ">id" => req.id.to_string(),
            ">opcode" => "QUERY".into(),
            "rcode" => crate::dns::metrics::rcode_label(resp.rcode).to_string(),
            "rsize" => "-".into(),
            ">rflags" => {
                let mut f = vec!["qr"];
                if resp.authoritative {
                    f.push("aa");
                }
                if req.recursion_desired {
                    f.push("rd");
                }
                if resp.recursion_available {
                    f.push("ra");
                }
                f.join(",")
            }
            "duration" => format!("{took_secs:.9}s"),
            other => format!("{{{other}}}"),
        };
        out.push_str(&value);
        rest = &rest[open + close + 1..];
    }
    out.push_str(rest);
    out
}

impl Plugin for Log {
    fn name(&self) -> &'static str {
        "log"
    }

    fn handle(&self, req: &Request, next: Next) -> Reply {
        if !self.cfg.names.iter().any(|z| in_zone(req.lower_name(), z)) {
            return next.run(req);
        }
        let started = Instant::now();
        let cfg = self.cfg.clone();
        let req2 = req.clone();
        next.run(req).map(move |resp| {
            let wanted = match class_of(&resp) {
                0 => cfg.classes.success,
                1 => cfg.classes.denial,
                _ => cfg.classes.error,
            };
            if wanted {
                let line = format_line(&cfg.format, &req2, &resp, started.elapsed().as_secs_f64());
                tracing::info!(target: "plugin/log", "{line}");
            }
            resp
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dns::corefile::directives::observe::COMMON_LOG_FORMAT;
    use hickory_proto::rr::{Name, RecordType};

    #[test]
    fn common_format() {
        let req = Request::new(Name::from_ascii("A.example.").unwrap(), RecordType::A);
        let resp = Response::new(ResponseCode::NXDomain);
        let line = format_line(COMMON_LOG_FORMAT, &req, &resp, 0.000_1);
        assert!(
            line.starts_with(
                "127.0.0.1:0 - 0 \"A IN a.example. udp - false 512\" NXDOMAIN qr,rd - 0.000100000s"
            ),
            "{line}"
        );
    }
}

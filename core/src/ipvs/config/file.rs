//! Reading a `KubeProxyConfiguration` (`kubeproxy.config.k8s.io/v1alpha1`) as found in
//! kube-proxy's ConfigMap, into a validated [`ProxyConfig`].
//!
//! Fields the proxy implements are parsed and validated; other documented
//! `KubeProxyConfiguration` fields are accepted and listed as ignored; anything else is an
//! error naming the field, so a typo never passes silently.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use ipnetwork::IpNetwork;
use serde_json::Value;

use super::ProxyConfig;
use crate::ipvs::table::Scheduler;

/// The API group/version accepted.
pub const API_VERSION: &str = "kubeproxy.config.k8s.io/v1alpha1";

/// Why a configuration file was rejected.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The file could not be read. The IO error is part of the message and deliberately not
    /// the error's `source()`, so a caller printing the chain (`{:#}`) says it once.
    #[error("reading {path}: {error}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The IO error.
        error: std::io::Error,
    },
    /// The file is not valid YAML/JSON.
    #[error("{path}: not valid YAML: {reason}")]
    Syntax {
        /// The file.
        path: String,
        /// The parser's message.
        reason: String,
    },
    /// A field has a bad value.
    #[error("{path}: field {field}: {reason}")]
    Invalid {
        /// The file.
        path: String,
        /// Dotted field path, e.g. `ipvs.scheduler`.
        field: String,
        /// What is wrong.
        reason: String,
    },
    /// Fields that `KubeProxyConfiguration` does not have.
    #[error("{path}: unknown field(s): {}", fields.join(", "))]
    Unknown {
        /// The file.
        path: String,
        /// Dotted paths of the unknown fields.
        fields: Vec<String>,
    },
}

/// A parsed file: the config plus the documented fields it sets that the proxy ignores.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadedConfig {
    /// The validated configuration.
    pub config: ProxyConfig,
    /// Documented `KubeProxyConfiguration` fields present but not used by this proxy.
    pub ignored: Vec<String>,
}

/// Fields read into [`ProxyConfig`].
const SUPPORTED: &[&str] = &[
    "apiVersion",
    "kind",
    "mode",
    "ipvs",
    "ipvs.scheduler",
    "ipvs.syncPeriod",
    "ipvs.minSyncPeriod",
    "ipvs.excludeCIDRs",
    "ipvs.strictARP",
    "ipvs.tcpTimeout",
    "ipvs.tcpFinTimeout",
    "ipvs.udpTimeout",
    "clusterCIDR",
    "nodePortAddresses",
    "bindAddress",
    "iptables",
    "iptables.masqueradeAll",
    "iptables.masqueradeBit",
    "healthzBindAddress",
    "metricsBindAddress",
    "hostnameOverride",
    "conntrack",
    "conntrack.maxPerCore",
    "conntrack.min",
    "conntrack.tcpEstablishedTimeout",
    "conntrack.tcpCloseWaitTimeout",
    "conntrack.tcpBeLiberal",
    "conntrack.udpTimeout",
    "conntrack.udpStreamTimeout",
];

/// Documented fields with no effect here (other modes, client settings, logging...).
const KNOWN_IGNORED: &[&str] = &[
    "featureGates",
    "clientConnection",
    "bindAddressHardFail",
    "enableProfiling",
    "showHiddenMetricsForVersion",
    "iptables.localhostNodePorts",
    "iptables.syncPeriod",
    "iptables.minSyncPeriod",
    "nftables",
    "winkernel",
    "detectLocalMode",
    "detectLocal",
    "oomScoreAdj",
    "configSyncPeriod",
    "portRange",
    "logging",
    "windowsRunAsService",
    "syncPeriod",
    "minSyncPeriod",
    "udpIdleTimeout",
    "resourceContainer",
];

/// Parses a Go duration (`30s`, `1m0s`, `1h30m`, `500ms`, `1.5s`, `0`).
pub(crate) fn parse_go_duration(s: &str) -> Result<Duration, String> {
    use crate::duration::GoDurationError as E;
    let s = s.trim();
    if s.is_empty() {
        return Ok(Duration::ZERO);
    }
    crate::duration::parse_go_duration(s).map_err(|e| match e {
        E::Negative => format!("{s:?}: a negative duration is not allowed"),
        E::MissingUnit => format!("{s:?}: missing unit (e.g. 30s)"),
        E::MissingNumber(c) => {
            format!("{s:?}: expected a number before {c:?} (e.g. 30s, 1m30s, 500ms)")
        }
        E::BadNumber(num) => format!("{s:?}: bad number {num:?}"),
        E::UnknownUnit(unit) => format!("{s:?}: unknown unit {unit:?} (ns, us, ms, s, m, h)"),
        other => format!("{s:?}: {other}"),
    })
}

struct Reader<'a> {
    path: &'a str,
}

impl Reader<'_> {
    fn invalid(&self, field: &str, reason: impl Into<String>) -> ConfigError {
        ConfigError::Invalid {
            path: self.path.to_string(),
            field: field.to_string(),
            reason: reason.into(),
        }
    }

    fn string<'v>(&self, v: &'v Value, field: &str) -> Result<Option<&'v str>, ConfigError> {
        match lookup(v, field) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(other) => Err(self.invalid(field, format!("expected a string, got {other}"))),
        }
    }

    fn bool(&self, v: &Value, field: &str) -> Result<Option<bool>, ConfigError> {
        match lookup(v, field) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(other) => Err(self.invalid(field, format!("expected true or false, got {other}"))),
        }
    }

    fn duration(&self, v: &Value, field: &str) -> Result<Option<Duration>, ConfigError> {
        match self.string(v, field)? {
            None => Ok(None),
            Some(s) => parse_go_duration(s)
                .map(Some)
                .map_err(|e| self.invalid(field, e)),
        }
    }

    fn cidrs(&self, v: &Value, field: &str) -> Result<Vec<IpNetwork>, ConfigError> {
        let items: Vec<String> = match lookup(v, field) {
            None | Some(Value::Null) => return Ok(Vec::new()),
            Some(Value::Array(a)) => a
                .iter()
                .map(|x| match x {
                    Value::String(s) => Ok(s.clone()),
                    other => {
                        Err(self.invalid(field, format!("expected CIDR strings, got {other}")))
                    }
                })
                .collect::<Result<_, _>>()?,
            // clusterCIDR is one string, comma separated for dual-stack.
            Some(Value::String(s)) => s
                .split(',')
                .map(str::trim)
                .filter(|x| !x.is_empty())
                .map(String::from)
                .collect(),
            Some(other) => return Err(self.invalid(field, format!("expected CIDRs, got {other}"))),
        };
        items
            .iter()
            .map(|s| {
                s.parse::<IpNetwork>()
                    .map_err(|e| self.invalid(field, format!("{s:?} is not a CIDR: {e}")))
            })
            .collect()
    }

    fn bind_address(
        &self,
        v: &Value,
        field: &str,
        default_port: u16,
    ) -> Result<Option<Option<SocketAddr>>, ConfigError> {
        let Some(s) = self.string(v, field)? else {
            return Ok(None);
        };
        if s.is_empty() {
            return Ok(Some(None)); // "" disables the server, as in kube-proxy
        }
        if let Ok(sa) = s.parse::<SocketAddr>() {
            return Ok(Some(Some(sa)));
        }
        if let Ok(ip) = s.parse::<IpAddr>() {
            return Ok(Some(Some(SocketAddr::new(ip, default_port))));
        }
        // ":10256" means all addresses.
        if let Some(port) = s.strip_prefix(':')
            && let Ok(p) = port.parse::<u16>()
        {
            return Ok(Some(Some(SocketAddr::from(([0, 0, 0, 0], p)))));
        }
        Err(self.invalid(field, format!("{s:?} is not IP:port, IP or :port")))
    }
}

fn lookup<'v>(v: &'v Value, dotted: &str) -> Option<&'v Value> {
    dotted.split('.').try_fold(v, |cur, k| cur.get(k))
}

fn collect_unknown(v: &Value, prefix: &str, unknown: &mut Vec<String>, ignored: &mut Vec<String>) {
    let Value::Object(map) = v else { return };
    for (k, child) in map {
        let path = if prefix.is_empty() {
            k.clone()
        } else {
            format!("{prefix}.{k}")
        };
        if KNOWN_IGNORED.contains(&path.as_str()) {
            ignored.push(path);
        } else if SUPPORTED.contains(&path.as_str()) {
            if child.is_object() {
                collect_unknown(child, &path, unknown, ignored);
            }
        } else {
            unknown.push(path);
        }
    }
}

/// Parses and validates configuration text; `path` names it in errors.
pub fn parse(text: &str, path: &str) -> Result<LoadedConfig, ConfigError> {
    let v: Value = serde_saphyr::from_str(text).map_err(|e| ConfigError::Syntax {
        path: path.to_string(),
        reason: e.to_string(),
    })?;
    if !v.is_object() {
        return Err(ConfigError::Syntax {
            path: path.to_string(),
            reason: "expected a mapping (a KubeProxyConfiguration)".into(),
        });
    }
    let r = Reader { path };
    let mut unknown = Vec::new();
    let mut ignored = Vec::new();
    collect_unknown(&v, "", &mut unknown, &mut ignored);
    if !unknown.is_empty() {
        return Err(ConfigError::Unknown {
            path: path.to_string(),
            fields: unknown,
        });
    }
    match r.string(&v, "kind")? {
        None | Some("KubeProxyConfiguration") => {}
        Some(other) => {
            return Err(r.invalid(
                "kind",
                format!("expected KubeProxyConfiguration, got {other:?}"),
            ));
        }
    }
    match r.string(&v, "apiVersion")? {
        None | Some(API_VERSION) => {}
        Some(other) => {
            return Err(r.invalid(
                "apiVersion",
                format!("expected {API_VERSION}, got {other:?}"),
            ));
        }
    }
    match r.string(&v, "mode")? {
        None | Some("") | Some("ipvs") => {}
        Some(other) => {
            return Err(r.invalid(
                "mode",
                format!("this proxy implements mode \"ipvs\", not {other:?}"),
            ));
        }
    }
    let mut c = ProxyConfig::default();
    if let Some(s) = r.string(&v, "ipvs.scheduler")? {
        c.scheduler = s
            .parse::<Scheduler>()
            .map_err(|e| r.invalid("ipvs.scheduler", e.to_string()))?;
    }
    if let Some(d) = r.duration(&v, "ipvs.syncPeriod")? {
        if d.is_zero() {
            return Err(r.invalid("ipvs.syncPeriod", "must be greater than 0"));
        }
        c.sync_period = d;
    }
    if let Some(d) = r.duration(&v, "ipvs.minSyncPeriod")? {
        c.min_sync_period = d;
    }
    if c.min_sync_period > c.sync_period {
        return Err(r.invalid(
            "ipvs.minSyncPeriod",
            format!(
                "{:?} is longer than ipvs.syncPeriod {:?}",
                c.min_sync_period, c.sync_period
            ),
        ));
    }
    c.exclude_cidrs = r.cidrs(&v, "ipvs.excludeCIDRs")?;
    c.strict_arp = r.bool(&v, "ipvs.strictARP")?.unwrap_or(false);
    c.tcp_timeout = r.duration(&v, "ipvs.tcpTimeout")?.unwrap_or_default();
    c.tcp_fin_timeout = r.duration(&v, "ipvs.tcpFinTimeout")?.unwrap_or_default();
    c.udp_timeout = r.duration(&v, "ipvs.udpTimeout")?.unwrap_or_default();
    c.cluster_cidrs = r.cidrs(&v, "clusterCIDR")?;
    c.node_port_addresses = match lookup(&v, "nodePortAddresses") {
        // "primary" (kube-proxy 1.29+) means the node's primary IPs (see `node_port_cidrs`).
        Some(Value::Array(a)) if a.iter().any(|x| x == "primary") => {
            if a.len() > 1 {
                return Err(r.invalid(
                    "nodePortAddresses",
                    "\"primary\" cannot be combined with CIDRs",
                ));
            }
            c.node_port_addresses_primary = true;
            Vec::new()
        }
        _ => r.cidrs(&v, "nodePortAddresses")?,
    };
    c.bind_address = match r.string(&v, "bindAddress")? {
        None => None,
        Some("") => None,
        Some(s) => Some(
            s.parse::<std::net::IpAddr>()
                .map_err(|_| r.invalid("bindAddress", format!("{s:?} is not an IP address")))?,
        ),
    };
    c.masquerade_all = r.bool(&v, "iptables.masqueradeAll")?.unwrap_or(false);
    match lookup(&v, "iptables.masqueradeBit") {
        None | Some(Value::Null) => {}
        Some(Value::Number(n)) => match n.as_u64() {
            Some(b) if b <= 31 => c.masquerade_bit = b as u8,
            _ => return Err(r.invalid("iptables.masqueradeBit", format!("{n} is not in 0..=31"))),
        },
        Some(other) => {
            return Err(r.invalid(
                "iptables.masqueradeBit",
                format!("expected a number, got {other}"),
            ));
        }
    }
    if let Some(a) = r.bind_address(&v, "healthzBindAddress", 10256)? {
        c.healthz_bind_address = a;
    }
    if let Some(a) = r.bind_address(&v, "metricsBindAddress", 10249)? {
        c.metrics_bind_address = a;
    }
    read_conntrack(&r, &v, &mut c.conntrack)?;
    c.hostname_override = r
        .string(&v, "hostnameOverride")?
        .filter(|s| !s.is_empty())
        .map(str::to_string);
    Ok(LoadedConfig { config: c, ignored })
}

/// The `conntrack` section: absent or `null` fields keep kube-proxy's defaults (see
/// [`ConntrackConfig`](crate::ipvs::config::ConntrackConfig)).
fn read_conntrack(
    r: &Reader<'_>,
    v: &Value,
    c: &mut crate::ipvs::config::ConntrackConfig,
) -> Result<(), ConfigError> {
    for (field, slot) in [
        ("conntrack.maxPerCore", &mut c.max_per_core),
        ("conntrack.min", &mut c.min),
    ] {
        match lookup(v, field) {
            None | Some(Value::Null) => {}
            Some(Value::Number(n)) => match n.as_u64().and_then(|n| u32::try_from(n).ok()) {
                Some(n) => *slot = n,
                None => {
                    return Err(r.invalid(field, format!("{n} is not a count in 0..=4294967295")));
                }
            },
            Some(other) => {
                return Err(r.invalid(field, format!("expected a number, got {other}")));
            }
        }
    }
    for (field, slot) in [
        (
            "conntrack.tcpEstablishedTimeout",
            &mut c.tcp_established_timeout,
        ),
        (
            "conntrack.tcpCloseWaitTimeout",
            &mut c.tcp_close_wait_timeout,
        ),
        ("conntrack.udpTimeout", &mut c.udp_timeout),
        ("conntrack.udpStreamTimeout", &mut c.udp_stream_timeout),
    ] {
        if let Some(d) = r.duration(v, field)? {
            *slot = d;
        }
    }
    if let Some(b) = r.bool(v, "conntrack.tcpBeLiberal")? {
        c.tcp_be_liberal = b;
    }
    Ok(())
}

/// Reads and validates a configuration file.
pub fn load(path: &Path) -> Result<LoadedConfig, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|error| ConfigError::Read {
        path: path.to_path_buf(),
        error,
    })?;
    parse(&text, &path.display().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    const CONFIGMAP: &str = r#"
apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
bindAddress: 0.0.0.0
clientConnection:
  kubeconfig: /var/lib/kube-proxy/kubeconfig.conf
clusterCIDR: 10.244.0.0/16,fd00:10:244::/56
conntrack:
  maxPerCore: null
healthzBindAddress: ""
hostnameOverride: ""
iptables:
  masqueradeAll: true
  masqueradeBit: null
  minSyncPeriod: 0s
  syncPeriod: 0s
ipvs:
  excludeCIDRs:
  - 10.200.0.0/16
  minSyncPeriod: 1s
  scheduler: "wrr"
  strictARP: true
  syncPeriod: 1m0s
  tcpFinTimeout: 30s
  tcpTimeout: 15m
  udpTimeout: 300ms
metricsBindAddress: 127.0.0.1:10249
mode: "ipvs"
nodePortAddresses: ["192.168.0.0/16"]
"#;

    #[test]
    fn reads_a_kube_proxy_configmap() {
        let l = parse(CONFIGMAP, "cm").unwrap();
        let c = l.config;
        assert_eq!(c.scheduler, Scheduler::Wrr);
        assert_eq!(c.sync_period, Duration::from_secs(60));
        assert_eq!(c.min_sync_period, Duration::from_secs(1));
        assert!(c.strict_arp);
        assert_eq!(c.tcp_timeout, Duration::from_secs(900));
        assert_eq!(c.tcp_fin_timeout, Duration::from_secs(30));
        assert_eq!(c.udp_timeout, Duration::from_millis(300));
        assert_eq!(c.cluster_cidrs.len(), 2);
        assert_eq!(
            c.exclude_cidrs,
            vec!["10.200.0.0/16".parse::<IpNetwork>().unwrap()]
        );
        assert_eq!(c.node_port_addresses.len(), 1);
        assert!(c.masquerade_all);
        assert_eq!(c.masquerade_bit, 14);
        assert_eq!(c.healthz_bind_address, None);
        assert_eq!(
            c.metrics_bind_address,
            Some("127.0.0.1:10249".parse().unwrap())
        );
        assert_eq!(c.hostname_override, None);
        // `maxPerCore: null` keeps kube-proxy's default; the section is applied, not ignored.
        assert!(!l.ignored.contains(&"conntrack".to_string()));
        assert_eq!(c.conntrack, Default::default());
        assert!(l.ignored.contains(&"iptables.syncPeriod".to_string()));
    }

    #[test]
    fn node_port_addresses_primary_resolves_to_a_concrete_bind_address() {
        let c = parse(
            "nodePortAddresses: [primary]\nbindAddress: 192.168.1.5\n",
            "f",
        )
        .unwrap()
        .config;
        assert!(c.node_port_addresses_primary);
        assert_eq!(
            c.node_port_cidrs(&[]),
            vec!["192.168.1.5/32".parse::<IpNetwork>().unwrap()]
        );
        // An unspecified bindAddress gives no primary IP: every family falls back to all.
        let c = parse("nodePortAddresses: [primary]\nbindAddress: 0.0.0.0\n", "f")
            .unwrap()
            .config;
        assert!(c.node_port_cidrs(&[]).is_empty());
        let e = parse("nodePortAddresses: [primary, 10.0.0.0/8]\n", "f").unwrap_err();
        assert!(e.to_string().contains("nodePortAddresses"), "{e}");
        let e = parse("bindAddress: not-an-ip\n", "f").unwrap_err();
        assert!(e.to_string().contains("bindAddress"), "{e}");
    }

    #[test]
    fn empty_scheduler_means_round_robin_and_defaults_apply() {
        let c = parse(
            "kind: KubeProxyConfiguration\nipvs:\n  scheduler: \"\"\n",
            "f",
        )
        .unwrap()
        .config;
        assert_eq!(c, ProxyConfig::default());
    }

    #[test]
    fn unknown_fields_are_errors_naming_them() {
        let e = parse("ipvs:\n  schedular: rr\nfoo: 1\n", "cfg.yaml").unwrap_err();
        let msg = e.to_string();
        assert!(
            msg.contains("ipvs.schedular") && msg.contains("foo"),
            "{msg}"
        );
        assert!(msg.contains("cfg.yaml"), "{msg}");
    }

    #[test]
    fn bad_values_name_the_field() {
        for (text, field) in [
            ("ipvs:\n  scheduler: fastest\n", "ipvs.scheduler"),
            ("ipvs:\n  syncPeriod: 10 parsecs\n", "ipvs.syncPeriod"),
            ("ipvs:\n  syncPeriod: 0s\n", "ipvs.syncPeriod"),
            (
                "ipvs:\n  syncPeriod: 1s\n  minSyncPeriod: 5s\n",
                "ipvs.minSyncPeriod",
            ),
            ("clusterCIDR: 10.244.0.0/33\n", "clusterCIDR"),
            ("mode: iptables\n", "mode"),
            ("iptables:\n  masqueradeBit: 40\n", "iptables.masqueradeBit"),
            ("ipvs:\n  strictARP: yes please\n", "ipvs.strictARP"),
            ("metricsBindAddress: nowhere\n", "metricsBindAddress"),
            ("apiVersion: v1\n", "apiVersion"),
        ] {
            let e = parse(text, "f").unwrap_err();
            assert!(e.to_string().contains(field), "{text:?}: {e}");
        }
        assert!(matches!(
            parse("ipvs: [", "f"),
            Err(ConfigError::Syntax { .. })
        ));
    }

    #[test]
    fn conntrack_section_is_read_with_kube_proxy_defaults() {
        let c = parse(
            "conntrack:\n  maxPerCore: 0\n  min: 1000\n  tcpEstablishedTimeout: 2h\n  \
             tcpCloseWaitTimeout: 30m\n  tcpBeLiberal: true\n  udpTimeout: 45s\n  \
             udpStreamTimeout: 3m\n",
            "f",
        )
        .unwrap()
        .config
        .conntrack;
        assert_eq!(c.max_per_core, 0);
        assert_eq!(c.min, 1000);
        assert_eq!(c.tcp_established_timeout, Duration::from_secs(7200));
        assert_eq!(c.tcp_close_wait_timeout, Duration::from_secs(1800));
        assert!(c.tcp_be_liberal);
        assert_eq!(c.udp_timeout, Duration::from_secs(45));
        assert_eq!(c.udp_stream_timeout, Duration::from_secs(180));
        let d = parse("conntrack: {}\n", "f").unwrap().config.conntrack;
        assert_eq!((d.max_per_core, d.min), (32768, 131072));
        assert_eq!(d.tcp_established_timeout, Duration::from_secs(86400));
        assert_eq!(d.tcp_close_wait_timeout, Duration::from_secs(3600));
        assert!(!d.tcp_be_liberal);
        for (text, field) in [
            ("conntrack:\n  maxPerCore: -1\n", "conntrack.maxPerCore"),
            ("conntrack:\n  min: lots\n", "conntrack.min"),
            ("conntrack:\n  udpTimeout: 5\n", "conntrack.udpTimeout"),
            ("conntrack:\n  tcpBeLiberal: 1\n", "conntrack.tcpBeLiberal"),
            ("conntrack:\n  maxPerCorr: 1\n", "conntrack.maxPerCorr"),
        ] {
            let e = parse(text, "f").unwrap_err();
            assert!(e.to_string().contains(field), "{text:?}: {e}");
        }
    }

    #[test]
    fn go_durations() {
        assert_eq!(
            parse_go_duration("1h30m").unwrap(),
            Duration::from_secs(5400)
        );
        assert_eq!(
            parse_go_duration("1.5s").unwrap(),
            Duration::from_millis(1500)
        );
        assert_eq!(parse_go_duration("0").unwrap(), Duration::ZERO);
        assert!(parse_go_duration("5").is_err());
        assert!(parse_go_duration("5d").is_err());
        assert_eq!(
            parse_go_duration("-5s").unwrap_err(),
            "\"-5s\": a negative duration is not allowed"
        );
        assert_eq!(
            parse_go_duration("+5s").unwrap_err(),
            "\"+5s\": expected a number before '+' (e.g. 30s, 1m30s, 500ms)"
        );
    }

    #[test]
    fn bind_address_forms() {
        let c = parse(
            "healthzBindAddress: 0.0.0.0:10256\nmetricsBindAddress: \":9999\"\n",
            "f",
        )
        .unwrap()
        .config;
        assert_eq!(
            c.healthz_bind_address,
            Some("0.0.0.0:10256".parse().unwrap())
        );
        assert_eq!(
            c.metrics_bind_address,
            Some("0.0.0.0:9999".parse().unwrap())
        );
    }
}

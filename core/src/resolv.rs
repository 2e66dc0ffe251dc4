//! Pod `resolv.conf` exactly as kubelet writes it.
//!
//! kubelet (`pkg/kubelet/network/dns/dns.go`, `GetPodDNS`) builds nameservers, search domains
//! and options from its own flags (`--cluster-dns`, `--cluster-domain`, `--resolv-conf`) and the
//! pod's `dnsPolicy`, `hostNetwork` and `dnsConfig`; the container runtime then writes the file
//! (containerd's `parseDNSOptions`: a `search` line, one `nameserver` line each, an `options`
//! line, each only when non-empty). This module does both, without IO except
//! [`load_host_resolv_conf`].
//!
//! Rules reproduced:
//! - `ClusterFirst` (not host network) and `ClusterFirstWithHostNet`: nameservers are the cluster
//!   DNS IPs only; search is `<ns>.svc.<zone> svc.<zone> <zone>` followed by the host's search
//!   domains, duplicates removed; options are `ndots:5` (host options dropped). Without cluster
//!   DNS IPs kubelet warns and falls back to `Default`.
//! - `ClusterFirst` with `hostNetwork` falls back to `Default`.
//! - `Default`: the host's resolv.conf as parsed (nameservers accumulate, the last `search` and
//!   `options` lines win, trailing dots of search domains are trimmed). With kubelet's
//!   `--resolv-conf=""` ([`KubeletDns::host`] = `None`): `127.0.0.1` (or `::1` per IPv6 node IP)
//!   and search `.`.
//! - `None`: empty base.
//! - Then `dnsConfig` is appended: nameservers and searches with duplicates removed; options
//!   merged by name, the pod's value overriding.
//! - Limits: 3 nameservers; 32 search domains; search domains longer than 253 characters
//!   dropped; the search line cut from the end to at most 2048 characters. Each trim adds a
//!   warning with kubelet's wording.
//!
//! Where kubelet's result depends on Go map order (merged options), the order here is
//! deterministic: first appearance, an override keeping the original position.

use std::fmt;
use std::io::Read;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// kubelet's default options for cluster DNS pods.
pub(crate) const DEFAULT_DNS_OPTIONS: &[&str] = &["ndots:5"];
/// At most this many nameservers (`validation.MaxDNSNameservers`).
pub(crate) const MAX_NAMESERVERS: usize = 3;
/// At most this many search domains (`validation.MaxDNSSearchPaths`).
pub(crate) const MAX_SEARCH_PATHS: usize = 32;
/// At most this many characters in the joined search line (`validation.MaxDNSSearchListChars`).
pub(crate) const MAX_SEARCH_LIST_CHARS: usize = 2048;
/// Longer search domains are dropped (`DNS1123SubdomainMaxLength`).
pub(crate) const MAX_SEARCH_DOMAIN_CHARS: usize = 253;
/// kubelet reads at most this much of the host's resolv.conf.
pub(crate) const MAX_RESOLV_CONF_BYTES: u64 = 10 << 20;

/// `spec.dnsPolicy` of a pod.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
pub enum DnsPolicy {
    /// Cluster DNS, unless the pod uses the host network (the API default).
    #[default]
    ClusterFirst,
    /// Cluster DNS even on the host network.
    ClusterFirstWithHostNet,
    /// The node's resolv.conf.
    Default,
    /// Only what `dnsConfig` says.
    None,
}

impl DnsPolicy {
    /// The API spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            DnsPolicy::ClusterFirst => "ClusterFirst",
            DnsPolicy::ClusterFirstWithHostNet => "ClusterFirstWithHostNet",
            DnsPolicy::Default => "Default",
            DnsPolicy::None => "None",
        }
    }
}

impl fmt::Display for DnsPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for DnsPolicy {
    type Err = ResolvError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "ClusterFirst" => Ok(DnsPolicy::ClusterFirst),
            "ClusterFirstWithHostNet" => Ok(DnsPolicy::ClusterFirstWithHostNet),
            "Default" => Ok(DnsPolicy::Default),
            "None" => Ok(DnsPolicy::None),
            other => Err(ResolvError::UnknownPolicy(other.to_string())),
        }
    }
}

/// Errors of this module.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ResolvError {
    /// Not one of the four policies.
    #[error(
        "unknown DNS policy {0:?} (expected ClusterFirst, ClusterFirstWithHostNet, Default or None)"
    )]
    UnknownPolicy(String),
    /// The host resolv.conf cannot be read.
    #[error("host resolv.conf {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The IO error.
        source: std::io::Error,
    },
    /// The host resolv.conf is larger than kubelet accepts.
    #[error("host resolv.conf {path}: larger than {MAX_RESOLV_CONF_BYTES} bytes")]
    TooLarge {
        /// The file.
        path: PathBuf,
    },
    /// A `nameserver` line without an address (kubelet fails the pod with this).
    #[error("{origin} line {line}: nameserver list is empty")]
    EmptyNameserver {
        /// Where the text came from.
        origin: String,
        /// 1-based line number.
        line: usize,
    },
    /// The `dnsConfig` YAML does not parse.
    #[error("dnsConfig {origin}: {reason}")]
    DnsConfig {
        /// Where the YAML came from.
        origin: String,
        /// What is wrong.
        reason: String,
    },
    /// `dnsPolicy: None` needs a `dnsConfig` (the API server rejects such pods).
    #[error("dnsPolicy None requires a dnsConfig")]
    NoneWithoutDnsConfig,
}

/// The parsed host resolv.conf (kubelet's `parseResolvConf`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct HostResolvConf {
    /// `nameserver` lines, accumulated.
    pub nameservers: Vec<String>,
    /// The last `search` line, trailing dots trimmed.
    pub searches: Vec<String>,
    /// The last `options` line, one element per option.
    pub options: Vec<String>,
}

impl HostResolvConf {
    /// Parses resolv.conf text as kubelet does; `origin` names it in errors.
    pub fn parse(text: &str, origin: &str) -> Result<Self, ResolvError> {
        let mut conf = HostResolvConf::default();
        for (i, line) in text.split('\n').enumerate() {
            let trimmed = line.trim();
            if trimmed.starts_with('#') {
                continue;
            }
            let fields: Vec<&str> = trimmed.split_whitespace().collect();
            match fields.first().copied() {
                Some("nameserver") => match fields.get(1) {
                    Some(ns) => conf.nameservers.push((*ns).to_string()),
                    None => {
                        return Err(ResolvError::EmptyNameserver {
                            origin: origin.to_string(),
                            line: i + 1,
                        });
                    }
                },
                Some("search") => {
                    conf.searches = fields[1..]
                        .iter()
                        .map(|s| s.strip_suffix('.').unwrap_or(s).to_string())
                        .collect();
                }
                Some("options") => {
                    conf.options = fields[1..].iter().map(|s| s.to_string()).collect();
                }
                _ => {}
            }
        }
        Ok(conf)
    }
}

/// Reads and parses the host resolv.conf at `path` (at most 10 MiB, as kubelet).
pub fn load_host_resolv_conf(path: &Path) -> Result<HostResolvConf, ResolvError> {
    let read_err = |source| ResolvError::Read {
        path: path.to_path_buf(),
        source,
    };
    let file = std::fs::File::open(path).map_err(read_err)?;
    let mut text = String::new();
    file.take(MAX_RESOLV_CONF_BYTES + 1)
        .read_to_string(&mut text)
        .map_err(read_err)?;
    if text.len() as u64 > MAX_RESOLV_CONF_BYTES {
        return Err(ResolvError::TooLarge {
            path: path.to_path_buf(),
        });
    }
    HostResolvConf::parse(&text, &path.display().to_string())
}

/// One `dnsConfig.options` entry.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
pub struct PodDnsOption {
    /// Option name, e.g. `ndots`.
    pub name: String,
    /// Optional value, e.g. `2`.
    #[serde(default)]
    pub value: Option<String>,
}

/// A pod's `spec.dnsConfig`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PodDnsConfig {
    /// Extra nameservers.
    #[serde(default)]
    pub nameservers: Vec<String>,
    /// Extra search domains.
    #[serde(default)]
    pub searches: Vec<String>,
    /// Options merged by name.
    #[serde(default)]
    pub options: Vec<PodDnsOption>,
}

impl PodDnsConfig {
    /// Parses YAML (or JSON) holding a `dnsConfig` object, optionally wrapped as
    /// `dnsConfig: {...}`. `origin` names the text in errors.
    pub fn from_yaml(text: &str, origin: &str) -> Result<Self, ResolvError> {
        let err = |reason: String| ResolvError::DnsConfig {
            origin: origin.to_string(),
            reason,
        };
        let value: serde_json::Value =
            serde_saphyr::from_str(text).map_err(|e| err(e.to_string()))?;
        let value = match value {
            serde_json::Value::Object(mut map) if map.contains_key("dnsConfig") => {
                map.remove("dnsConfig").unwrap_or_default()
            }
            serde_json::Value::Null => serde_json::Value::Object(Default::default()),
            other => other,
        };
        let config: PodDnsConfig = serde_json::from_value(value).map_err(|e| err(e.to_string()))?;
        for ns in &config.nameservers {
            if ns.parse::<IpAddr>().is_err() {
                return Err(err(format!("nameserver {ns:?} is not an IP address")));
            }
        }
        Ok(config)
    }
}

/// kubelet's own DNS settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KubeletDns {
    /// `--cluster-dns` (may be empty: ClusterFirst pods then fall back to Default).
    pub cluster_dns: Vec<IpAddr>,
    /// `--cluster-domain`, e.g. `cluster.local` (empty: no cluster search domains).
    pub cluster_domain: String,
    /// The parsed `--resolv-conf` file; `None` for `--resolv-conf=""`.
    pub host: Option<HostResolvConf>,
    /// The node's IPs (only used with `--resolv-conf=""`).
    pub node_ips: Vec<IpAddr>,
}

impl Default for KubeletDns {
    fn default() -> Self {
        Self {
            cluster_dns: Vec::new(),
            cluster_domain: "cluster.local".into(),
            host: Some(HostResolvConf::default()),
            node_ips: Vec::new(),
        }
    }
}

/// The DNS-related fields of a pod.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PodDnsSpec {
    /// `metadata.namespace`.
    pub namespace: String,
    /// `spec.dnsPolicy`.
    pub policy: DnsPolicy,
    /// `spec.hostNetwork`.
    pub host_network: bool,
    /// `spec.dnsConfig`.
    pub dns_config: Option<PodDnsConfig>,
}

/// The result: what goes into the pod's resolv.conf, and kubelet's warnings.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct PodResolvConf {
    /// Nameservers.
    pub nameservers: Vec<String>,
    /// Search domains.
    pub searches: Vec<String>,
    /// Options (`name` or `name:value`).
    pub options: Vec<String>,
    /// Warnings kubelet would record as events (`MissingClusterDNS`, `DNSConfigForming`).
    pub warnings: Vec<String>,
}

impl PodResolvConf {
    /// The file as the container runtime writes it.
    pub fn render(&self) -> String {
        let mut out = String::new();
        if !self.searches.is_empty() {
            out.push_str(&format!("search {}\n", self.searches.join(" ")));
        }
        for ns in &self.nameservers {
            out.push_str(&format!("nameserver {ns}\n"));
        }
        if !self.options.is_empty() {
            out.push_str(&format!("options {}\n", self.options.join(" ")));
        }
        out
    }
}

enum PodDnsType {
    Cluster,
    Host,
    None,
}

/// Computes the pod's DNS settings as kubelet's `GetPodDNS` does.
pub fn pod_resolv_conf(
    kubelet: &KubeletDns,
    pod: &PodDnsSpec,
) -> Result<PodResolvConf, ResolvError> {
    if pod.policy == DnsPolicy::None && pod.dns_config.is_none() {
        return Err(ResolvError::NoneWithoutDnsConfig);
    }
    let mut out = PodResolvConf::default();
    if let Some(host) = &kubelet.host {
        out.nameservers = host.nameservers.clone();
        out.searches = host.searches.clone();
        out.options = host.options.clone();
    }
    let dns_type = match pod.policy {
        DnsPolicy::None => PodDnsType::None,
        DnsPolicy::ClusterFirstWithHostNet => PodDnsType::Cluster,
        DnsPolicy::ClusterFirst if !pod.host_network => PodDnsType::Cluster,
        DnsPolicy::ClusterFirst | DnsPolicy::Default => PodDnsType::Host,
    };
    let mut host_fallback = false;
    match dns_type {
        PodDnsType::None => {
            out.nameservers.clear();
            out.searches.clear();
            out.options.clear();
        }
        PodDnsType::Cluster if !kubelet.cluster_dns.is_empty() => {
            out.nameservers = kubelet
                .cluster_dns
                .iter()
                .map(|ip| ip.to_string())
                .collect();
            out.searches = cluster_searches(kubelet, &pod.namespace, &out.searches);
            out.options = DEFAULT_DNS_OPTIONS.iter().map(|s| s.to_string()).collect();
        }
        PodDnsType::Cluster => {
            out.warnings.push(format!(
                "kubelet does not have ClusterDNS IP configured and cannot create Pod using \
                 {:?} policy. Falling back to {:?} policy.",
                "ClusterFirst", "Default"
            ));
            host_fallback = true;
        }
        PodDnsType::Host => host_fallback = true,
    }
    if host_fallback && kubelet.host.is_none() {
        for ip in &kubelet.node_ips {
            out.nameservers
                .push(if ip.is_ipv6() { "::1" } else { "127.0.0.1" }.into());
        }
        if out.nameservers.is_empty() {
            out.nameservers.push("127.0.0.1".into());
        }
        out.searches = vec![".".into()];
    }
    if let Some(cfg) = &pod.dns_config {
        out.nameservers.extend(cfg.nameservers.iter().cloned());
        out.nameservers = omit_duplicates(std::mem::take(&mut out.nameservers));
        out.searches.extend(cfg.searches.iter().cloned());
        out.searches = omit_duplicates(std::mem::take(&mut out.searches));
        out.options = merge_options(&out.options, &cfg.options);
    }
    fit_limits(&mut out);
    Ok(out)
}

fn cluster_searches(kubelet: &KubeletDns, namespace: &str, host: &[String]) -> Vec<String> {
    let zone = &kubelet.cluster_domain;
    if zone.is_empty() {
        return host.to_vec();
    }
    let mut all = vec![
        format!("{namespace}.svc.{zone}"),
        format!("svc.{zone}"),
        zone.clone(),
    ];
    all.extend(host.iter().cloned());
    omit_duplicates(all)
}

fn omit_duplicates(list: Vec<String>) -> Vec<String> {
    let mut seen = std::collections::HashSet::new();
    list.into_iter()
        .filter(|s| seen.insert(s.clone()))
        .collect()
}

fn merge_options(existing: &[String], pod: &[PodDnsOption]) -> Vec<String> {
    let mut merged: Vec<(String, String)> = Vec::new();
    let mut set = |name: &str, value: &str| {
        match merged.iter_mut().find(|(n, _)| n == name) {
            Some(entry) => entry.1 = value.to_string(),
            None => merged.push((name.to_string(), value.to_string())),
        };
    };
    for op in existing {
        match op.split_once(':') {
            Some((name, value)) => set(name, value),
            None => set(op, ""),
        }
    }
    for op in pod {
        set(&op.name, op.value.as_deref().unwrap_or(""));
    }
    merged
        .into_iter()
        .map(|(n, v)| if v.is_empty() { n } else { format!("{n}:{v}") })
        .collect()
}

fn fit_limits(out: &mut PodResolvConf) {
    if out.nameservers.len() > MAX_NAMESERVERS {
        out.nameservers.truncate(MAX_NAMESERVERS);
        out.warnings.push(format!(
            "Nameserver limits were exceeded, some nameservers have been omitted, the applied \
             nameserver line is: {}",
            out.nameservers.join(" ")
        ));
    }
    let mut exceeded = false;
    if out.searches.len() > MAX_SEARCH_PATHS {
        out.searches.truncate(MAX_SEARCH_PATHS);
        exceeded = true;
    }
    let before = out.searches.len();
    out.searches.retain(|s| s.len() <= MAX_SEARCH_DOMAIN_CHARS);
    exceeded |= out.searches.len() != before;
    let line_len = out.searches.join(" ").len();
    if line_len > MAX_SEARCH_LIST_CHARS {
        let mut cut_len = 0;
        let mut cut = 0;
        for s in out.searches.iter().rev() {
            cut_len += s.len() + 1;
            cut += 1;
            if line_len - cut_len.min(line_len) <= MAX_SEARCH_LIST_CHARS {
                break;
            }
        }
        let keep = out.searches.len() - cut;
        out.searches.truncate(keep);
        exceeded = true;
    }
    if exceeded {
        out.warnings.push(format!(
            "Search Line limits were exceeded, some search paths have been omitted, the applied \
             search line is: {}",
            out.searches.join(" ")
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kubelet(host: &str) -> KubeletDns {
        KubeletDns {
            cluster_dns: vec!["10.96.0.10".parse().unwrap()],
            cluster_domain: "cluster.local".into(),
            host: Some(HostResolvConf::parse(host, "host").unwrap()),
            node_ips: vec![],
        }
    }

    fn pod(policy: DnsPolicy, host_network: bool) -> PodDnsSpec {
        PodDnsSpec {
            namespace: "default".into(),
            policy,
            host_network,
            dns_config: None,
        }
    }

    const HOST: &str = "# host\nnameserver 192.0.2.53\nnameserver 192.0.2.54\n\
                        search corp.example. lab.example\noptions edns0 timeout:2\n";

    #[test]
    fn parse_host_file() {
        let h = HostResolvConf::parse(HOST, "h").unwrap();
        assert_eq!(h.nameservers, ["192.0.2.53", "192.0.2.54"]);
        assert_eq!(h.searches, ["corp.example", "lab.example"]);
        assert_eq!(h.options, ["edns0", "timeout:2"]);
        let e = HostResolvConf::parse("nameserver 1.1.1.1\nnameserver\n", "f").unwrap_err();
        assert_eq!(e.to_string(), "f line 2: nameserver list is empty");
        // The last search line wins.
        let h = HostResolvConf::parse("search a b\nsearch c\n", "h").unwrap();
        assert_eq!(h.searches, ["c"]);
    }

    #[test]
    fn cluster_first() {
        let r = pod_resolv_conf(&kubelet(HOST), &pod(DnsPolicy::ClusterFirst, false)).unwrap();
        assert_eq!(
            r.render(),
            "search default.svc.cluster.local svc.cluster.local cluster.local corp.example \
             lab.example\nnameserver 10.96.0.10\noptions ndots:5\n"
        );
        assert!(r.warnings.is_empty());
    }

    #[test]
    fn host_network_falls_back_to_default_unless_with_host_net() {
        let r = pod_resolv_conf(&kubelet(HOST), &pod(DnsPolicy::ClusterFirst, true)).unwrap();
        assert_eq!(
            r.render(),
            "search corp.example lab.example\nnameserver 192.0.2.53\nnameserver 192.0.2.54\n\
             options edns0 timeout:2\n"
        );
        let r = pod_resolv_conf(
            &kubelet(HOST),
            &pod(DnsPolicy::ClusterFirstWithHostNet, true),
        )
        .unwrap();
        assert_eq!(r.nameservers, ["10.96.0.10"]);
    }

    #[test]
    fn missing_cluster_dns_warns_and_falls_back() {
        let mut k = kubelet(HOST);
        k.cluster_dns.clear();
        let r = pod_resolv_conf(&k, &pod(DnsPolicy::ClusterFirst, false)).unwrap();
        assert_eq!(r.nameservers, ["192.0.2.53", "192.0.2.54"]);
        assert_eq!(r.warnings.len(), 1);
        assert!(r.warnings[0].contains("Falling back to \"Default\" policy"));
    }

    #[test]
    fn empty_resolv_conf_flag_means_localhost() {
        let mut k = kubelet(HOST);
        k.host = None;
        k.node_ips = vec!["fd00::1".parse().unwrap()];
        let r = pod_resolv_conf(&k, &pod(DnsPolicy::Default, false)).unwrap();
        assert_eq!(r.render(), "search .\nnameserver ::1\n");
    }

    #[test]
    fn none_with_dns_config_and_option_merge() {
        let cfg = PodDnsConfig::from_yaml(
            "nameservers: [1.2.3.4]\nsearches: [ns1.svc.cluster-domain.example, my.dns.search.suffix]\noptions:\n- name: ndots\n  value: \"2\"\n- name: edns0\n",
            "t",
        )
        .unwrap();
        let mut p = pod(DnsPolicy::None, false);
        p.dns_config = Some(cfg.clone());
        let r = pod_resolv_conf(&kubelet(HOST), &p).unwrap();
        assert_eq!(
            r.render(),
            "search ns1.svc.cluster-domain.example my.dns.search.suffix\nnameserver 1.2.3.4\noptions ndots:2 edns0\n"
        );
        let mut p = pod(DnsPolicy::ClusterFirst, false);
        p.dns_config = Some(cfg);
        let r = pod_resolv_conf(&kubelet(""), &p).unwrap();
        assert_eq!(r.nameservers, ["10.96.0.10", "1.2.3.4"]);
        assert_eq!(r.options, ["ndots:2", "edns0"]);
        assert!(matches!(
            pod_resolv_conf(&kubelet(""), &pod(DnsPolicy::None, false)),
            Err(ResolvError::NoneWithoutDnsConfig)
        ));
    }

    #[test]
    fn dns_config_errors_name_the_problem() {
        let e = PodDnsConfig::from_yaml("nameservers: [not-an-ip]", "f.yaml").unwrap_err();
        assert!(e.to_string().contains("f.yaml") && e.to_string().contains("not-an-ip"));
        let e = PodDnsConfig::from_yaml("nameserver: [1.1.1.1]", "f.yaml").unwrap_err();
        assert!(e.to_string().contains("nameserver"), "{e}");
        let wrapped = PodDnsConfig::from_yaml("dnsConfig:\n  searches: [a.b]\n", "f").unwrap();
        assert_eq!(wrapped.searches, ["a.b"]);
    }

    #[test]
    fn limits_trim_with_warnings() {
        let mut p = pod(DnsPolicy::ClusterFirst, false);
        p.dns_config = Some(PodDnsConfig {
            nameservers: vec!["1.1.1.1".into(), "1.1.1.2".into(), "1.1.1.3".into()],
            searches: (0..40).map(|i| format!("d{i}.example")).collect(),
            options: vec![],
        });
        let r = pod_resolv_conf(&kubelet(""), &p).unwrap();
        assert_eq!(r.nameservers.len(), 3);
        assert_eq!(r.searches.len(), 32);
        assert_eq!(r.warnings.len(), 2);
        // Character limit: 10 domains of 250 characters cut from the end to fit 2048.
        let long: Vec<String> = (0..10).map(|i| format!("{i}{}", "x".repeat(249))).collect();
        p.dns_config = Some(PodDnsConfig {
            searches: long,
            ..Default::default()
        });
        let r = pod_resolv_conf(&kubelet(""), &p).unwrap();
        assert!(r.searches.join(" ").len() <= MAX_SEARCH_LIST_CHARS);
        assert_eq!(r.searches.len(), 3 + 7);
        // A domain longer than 253 characters is dropped.
        p.dns_config = Some(PodDnsConfig {
            searches: vec!["y".repeat(254)],
            ..Default::default()
        });
        let r = pod_resolv_conf(&kubelet(""), &p).unwrap();
        assert_eq!(r.searches.len(), 3);
        assert_eq!(r.warnings.len(), 1);
    }
}

//! `kubernetes [ZONES...] { ... }`: the cluster zone.

use std::path::PathBuf;

use super::{
    Fallthrough, SetupContext, arg_count, no_block, number, options, plugin_error, zones_or_server,
};
use crate::dns::corefile::error::CorefileError;
use crate::dns::corefile::syntax::Directive;
use crate::model::selector::LabelSelector;

const PLUGIN: &str = "kubernetes";

/// Which pod records `a-b-c-d.<ns>.pod.<zone>` are answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PodsMode {
    /// No pod records (CoreDNS's default).
    #[default]
    Disabled,
    /// Any well-formed pod name answers its IP.
    Insecure,
    /// Only IPs of pods that exist in that namespace.
    Verified,
}

/// The kubernetes plugin's settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KubernetesConfig {
    /// The zones served (`cluster.local.`, reverse zones).
    pub zones: Vec<String>,
    /// Pod records.
    pub pods: PodsMode,
    /// TTL of answers, 0..=3600 (default 5).
    pub ttl: u32,
    /// Name endpoints after their pod when they have no hostname.
    pub endpoint_pod_names: bool,
    /// No endpoint records at all (headless services answer nothing).
    pub noendpoints: bool,
    /// `ignore empty_service`: NXDOMAIN for services without ready endpoints.
    pub ignore_empty_service: bool,
    /// Only these namespaces are exposed (empty: all).
    pub namespaces: Vec<String>,
    /// `labels EXPRESSION`: only services matching this label selector are exposed.
    pub labels: Option<LabelSelector>,
    /// Queries it cannot answer in these zones go to the next plugin.
    pub fallthrough: Option<Fallthrough>,
    /// `kubeconfig FILE [CONTEXT]` as written (the data source is chosen by command-line flags).
    pub kubeconfig: Option<(PathBuf, Option<String>)>,
    /// `endpoint URL...` as written (ignored, see `kubeconfig`).
    pub endpoint: Vec<String>,
    /// Not written in the Corefile: set by the loader for node-local autopath
    /// ([`LoadOptions::autopath_node`](crate::dns::corefile::LoadOptions)).
    pub autopath_node: Option<String>,
}

impl KubernetesConfig {
    /// The defaults for `zones`.
    pub fn new(zones: Vec<String>) -> Self {
        Self {
            zones,
            pods: PodsMode::Disabled,
            ttl: 5,
            endpoint_pod_names: false,
            noendpoints: false,
            ignore_empty_service: false,
            namespaces: Vec::new(),
            labels: None,
            fallthrough: None,
            kubeconfig: None,
            endpoint: Vec::new(),
            autopath_node: None,
        }
    }
}

/// Parses a `kubernetes` directive.
pub(crate) fn parse(
    d: &Directive,
    ctx: &mut SetupContext<'_>,
) -> Result<KubernetesConfig, CorefileError> {
    let mut cfg = KubernetesConfig::new(zones_or_server(PLUGIN, &d.args, ctx)?);
    for opt in options(d) {
        match opt.name.text.as_str() {
            "pods" => {
                arg_count(PLUGIN, opt, 1, 1)?;
                no_block(PLUGIN, opt)?;
                cfg.pods = match opt.args[0].text.as_str() {
                    "disabled" => PodsMode::Disabled,
                    "insecure" => PodsMode::Insecure,
                    "verified" => PodsMode::Verified,
                    other => {
                        return Err(plugin_error(
                            PLUGIN,
                            &opt.args[0].at,
                            format!("pods must be disabled, insecure or verified, not {other:?}"),
                        ));
                    }
                };
            }
            "ttl" => {
                arg_count(PLUGIN, opt, 1, 1)?;
                no_block(PLUGIN, opt)?;
                cfg.ttl = number(PLUGIN, &opt.args[0], 0, 3600)?;
            }
            "endpoint_pod_names" => {
                arg_count(PLUGIN, opt, 0, 0)?;
                cfg.endpoint_pod_names = true;
            }
            "noendpoints" => {
                arg_count(PLUGIN, opt, 0, 0)?;
                cfg.noendpoints = true;
            }
            "ignore" => {
                arg_count(PLUGIN, opt, 1, 1)?;
                if opt.args[0].text != "empty_service" {
                    return Err(plugin_error(
                        PLUGIN,
                        &opt.args[0].at,
                        format!("ignore takes only empty_service, not {:?}", opt.args[0].text),
                    ));
                }
                cfg.ignore_empty_service = true;
            }
            "namespaces" => {
                arg_count(PLUGIN, opt, 1, usize::MAX)?;
                cfg.namespaces = opt.args.iter().map(|t| t.text.clone()).collect();
            }
            "fallthrough" => cfg.fallthrough = Some(Fallthrough::parse(PLUGIN, opt)?),
            "kubeconfig" => {
                arg_count(PLUGIN, opt, 1, 2)?;
                cfg.kubeconfig = Some((
                    PathBuf::from(&opt.args[0].text),
                    opt.args.get(1).map(|t| t.text.clone()),
                ));
                ctx.warn(
                    &opt.name.at,
                    "plugin/kubernetes: kubeconfig is ignored: the cluster is read as set by --kubeconfig/--manifests",
                );
            }
            "endpoint" => {
                arg_count(PLUGIN, opt, 1, usize::MAX)?;
                cfg.endpoint = opt.args.iter().map(|t| t.text.clone()).collect();
                ctx.warn(
                    &opt.name.at,
                    "plugin/kubernetes: endpoint is ignored: the cluster is read as set by --kubeconfig/--manifests",
                );
            }
            "tls" => ctx.warn(
                &opt.name.at,
                "plugin/kubernetes: tls is ignored: the cluster is read as set by --kubeconfig/--manifests",
            ),
            "apiserver_qps" | "apiserver_burst" | "apiserver_max_inflight" => ctx.warn(
                &opt.name.at,
                format!("plugin/kubernetes: {} is ignored (API client tuning)", opt.name.text),
            ),
            "labels" => {
                arg_count(PLUGIN, opt, 1, usize::MAX)?;
                no_block(PLUGIN, opt)?;
                // CoreDNS joins the arguments with spaces: `labels env in (a, b),app=x`.
                let text: Vec<&str> = opt.args.iter().map(|t| t.text.as_str()).collect();
                let selector = text
                    .join(" ")
                    .parse::<LabelSelector>()
                    .map_err(|e| plugin_error(PLUGIN, &opt.args[0].at, e.to_string()))?;
                cfg.labels = Some(selector);
            }
            "namespace_labels" | "multicluster" => {
                ctx.unsupported(PLUGIN, &opt.name.at, &format!("option {:?}", opt.name.text))?;
            }
            _ => ctx.unknown_option(PLUGIN, opt)?,
        }
    }
    Ok(cfg)
}

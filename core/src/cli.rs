//! Command-line flags shared by `svcnet-dns`, `svcnet-proxy` and `agentctl`
//! (`#[command(flatten)]`), and their one logging setup ([`LogFlags::init`] over
//! [`crate::telemetry`]).

use std::path::PathBuf;

use crate::source::SourceConfig;
use crate::telemetry::{LogFormat, TelemetryError};

/// Where cluster state comes from: `--manifests DIR` or `--kubeconfig FILE` (default: the
/// Kubernetes API with the in-cluster configuration).
#[derive(Debug, Clone, Default, clap::Args)]
pub struct SourceFlags {
    /// Read cluster state from a directory of manifests (every *.yaml, *.yml, *.json, watched
    /// live) instead of the Kubernetes API.
    #[arg(long, value_name = "DIR", conflicts_with = "kubeconfig")]
    pub manifests: Option<PathBuf>,
    /// Kubeconfig for the Kubernetes API (default: in-cluster configuration, then
    /// $KUBECONFIG / ~/.kube/config).
    #[arg(long, value_name = "FILE")]
    pub kubeconfig: Option<PathBuf>,
}

impl SourceFlags {
    /// The source these flags select.
    pub fn config(&self) -> SourceConfig {
        match &self.manifests {
            Some(dir) => SourceConfig::Manifests(dir.clone()),
            None => SourceConfig::Kubernetes {
                kubeconfig: self.kubeconfig.clone(),
            },
        }
    }

    /// Whether either flag was given.
    pub fn given(&self) -> bool {
        self.manifests.is_some() || self.kubeconfig.is_some()
    }
}

/// `--log-format` (also `SVCNET_LOG_FORMAT`; global: accepted after a subcommand too).
#[derive(Debug, Clone, Copy, Default, clap::Args)]
pub struct LogFlags {
    /// Log format: `text` (coloured only on a terminal) or `json` (one object per line).
    #[arg(
        long,
        global = true,
        value_name = "FORMAT",
        default_value = "text",
        env = "SVCNET_LOG_FORMAT"
    )]
    pub log_format: LogFormat,
}

impl LogFlags {
    /// Installs the process's log subscriber: `RUST_LOG` when set, else `default_level`.
    pub fn init(&self, default_level: &str) -> Result<(), TelemetryError> {
        crate::telemetry::init(self.log_format, default_level)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        source: SourceFlags,
        #[command(flatten)]
        log: LogFlags,
    }

    #[test]
    fn flattened_flags_parse_and_conflict() {
        let cli = Cli::try_parse_from(["x", "--manifests", "/m", "--log-format", "json"]).unwrap();
        assert_eq!(cli.source.config(), SourceConfig::Manifests("/m".into()));
        assert!(cli.source.given());
        assert_eq!(cli.log.log_format, LogFormat::Json);
        let none = Cli::try_parse_from(["x"]).unwrap();
        assert!(!none.source.given());
        assert!(matches!(
            none.source.config(),
            SourceConfig::Kubernetes { kubeconfig: None }
        ));
        assert!(Cli::try_parse_from(["x", "--manifests", "/m", "--kubeconfig", "/k"]).is_err());
        assert!(Cli::try_parse_from(["x", "--log-format", "xml"]).is_err());
    }
}

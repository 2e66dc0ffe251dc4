//! Which iptables variant (legacy or nft) the host uses: kube-proxy's preference from the
//! `*-save` outputs, confirmed by a probe that changes rules.

use super::command::CommandRunner;
use crate::ipvs::backend::BackendError;
use crate::ipvs::table::Family;

/// Which iptables backend the host uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IptablesMode {
    /// `iptables-legacy`.
    Legacy,
    /// `iptables-nft`.
    Nft,
}

impl IptablesMode {
    /// The command name for `family` (`iptables-legacy`, `ip6tables-nft`, ...).
    pub fn command(self, family: Family, suffix: &str) -> String {
        let base = match family {
            Family::V4 => "iptables",
            Family::V6 => "ip6tables",
        };
        let mode = match self {
            IptablesMode::Legacy => "legacy",
            IptablesMode::Nft => "nft",
        };
        format!("{base}-{mode}{suffix}")
    }
}

impl IptablesMode {
    /// The other variant.
    pub fn other(self) -> Self {
        match self {
            IptablesMode::Legacy => IptablesMode::Nft,
            IptablesMode::Nft => IptablesMode::Legacy,
        }
    }
}

/// Whether an `iptables-save` output holds kubelet's marker chains (`KUBE-IPTABLES-HINT`, or
/// `KUBE-KUBELET-CANARY` before Kubernetes 1.24), which kubelet creates in the variant the node uses.
fn has_kubelet_chains(save: &str) -> bool {
    save.lines()
        .any(|l| l.starts_with(":KUBE-IPTABLES-HINT ") || l.starts_with(":KUBE-KUBELET-CANARY "))
}

/// Picks legacy or nft from the two variants' `*-save` outputs (`None`: the command failed) like
/// kube-proxy's iptables wrapper: the variant holding kubelet's marker chains wins (nft checked
/// first); otherwise the one with more rules, nft on a tie. This is only a preference: whether
/// the variant can actually change rules is probed by [`detect_mode`].
pub fn choose_mode(legacy_save: Option<&str>, nft_save: Option<&str>) -> IptablesMode {
    if nft_save.is_some_and(has_kubelet_chains) {
        return IptablesMode::Nft;
    }
    if legacy_save.is_some_and(has_kubelet_chains) {
        return IptablesMode::Legacy;
    }
    let count = |s: &str| s.lines().filter(|l| l.starts_with("-A ")).count();
    match (legacy_save, nft_save) {
        (Some(_), None) => IptablesMode::Legacy,
        (None, Some(_)) => IptablesMode::Nft,
        (Some(l), Some(n)) if count(l) > count(n) => IptablesMode::Legacy,
        (None, None) => IptablesMode::Legacy,
        _ => IptablesMode::Nft,
    }
}

/// Chain created and deleted again in one `iptables-restore --noflush` transaction to find out
/// whether a variant can change rules in this kernel. Reading is no test: `iptables-nft-save`
/// succeeds (with empty tables) on a kernel without nf_tables, where every change then fails.
pub const PROBE_CHAIN: &str = "KUBE-SVCNET-PROBE";

/// Whether `mode` can change rules here: a [`PROBE_CHAIN`] is created and deleted in the filter
/// table, leaving nothing behind.
pub fn probe_mode(runner: &mut dyn CommandRunner, mode: IptablesMode) -> Result<(), BackendError> {
    let script = format!("*filter\n:{PROBE_CHAIN} - [0:0]\n-X {PROBE_CHAIN}\nCOMMIT\n");
    runner
        .run(
            &mode.command(Family::V4, "-restore"),
            // Wait for the xtables lock: the probe may run while another part of the agent
            // (node-local DNS setup) restores rules.
            &["-w", "5", "--noflush"],
            Some(&script),
        )
        .map(drop)
}

/// The outcome of [`detect`]: the variant to use, and what its `iptables-save` (IPv4) printed
/// while deciding, so that the first update needs no save of its own.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Detected {
    /// The variant to use.
    pub mode: IptablesMode,
    /// The IPv4 `*-save` output of `mode`, read before the probe (`None`: that save failed).
    pub saved: Option<String>,
}

/// Detects the iptables variant to use: the preference of [`choose_mode`] if [`probe_mode`] shows
/// it works, else the other variant if that one works (e.g. iptables-nft preferred on a tie, but
/// the kernel has no nf_tables), else the preference (whose errors then show up when rules are
/// applied).
pub fn detect_mode(runner: &mut dyn CommandRunner) -> IptablesMode {
    detect(runner).mode
}

/// [`detect_mode`], keeping the chosen variant's `*-save` output.
pub fn detect(runner: &mut dyn CommandRunner) -> Detected {
    let legacy = runner.run("iptables-legacy-save", &[], None).ok();
    let nft = runner.run("iptables-nft-save", &[], None).ok();
    let preferred = choose_mode(legacy.as_deref(), nft.as_deref());
    let mode = match probe_mode(runner, preferred) {
        Ok(()) => preferred,
        Err(preferred_error) => {
            let other = preferred.other();
            match probe_mode(runner, other) {
                Ok(()) => {
                    tracing::info!(
                        preferred = ?preferred,
                        error = %preferred_error,
                        "preferred iptables variant cannot change rules; using the other one"
                    );
                    other
                }
                Err(other_error) => {
                    tracing::warn!(
                        preferred = ?preferred,
                        error = %preferred_error,
                        other_error = %other_error,
                        "neither iptables variant can change rules"
                    );
                    preferred
                }
            }
        }
    };
    let saved = match mode {
        IptablesMode::Legacy => legacy,
        IptablesMode::Nft => nft,
    };
    Detected { mode, saved }
}

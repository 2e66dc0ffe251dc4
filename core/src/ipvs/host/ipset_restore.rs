//! `ipset restore` scripts: a whole swap of each set's contents, or an entry-by-entry diff.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use super::ipset::IpSet;
use super::ipset_size::restore_sizes;

/// Temporary set used to swap new contents in atomically.
const TMP_SET: &str = "KUBE-SVCNET-TMP";

/// An `ipset restore` script that replaces each set's contents atomically (fill a temporary
/// set, `swap`, destroy), for sets that are absent or have ipset's default `maxelem`.
pub fn ipset_restore(sets: &[IpSet]) -> String {
    ipset_restore_sized(sets, &BTreeMap::new())
}

/// [`ipset_restore`] for a kernel whose existing sets have the `maxelem`s in `existing` (from
/// [`parse_maxelems`]; sets not named there are absent or default-sized). A set is declared
/// with its current size, which `create -exist` requires, and filled through a temporary set
/// sized for its entries ([`maxelem_for`]); the swap hands the set the new size.
pub fn ipset_restore_sized(sets: &[IpSet], existing: &BTreeMap<String, usize>) -> String {
    let mut out = String::new();
    for s in sets {
        let spec = |maxelem: usize| match s.family {
            Some(f) => format!("{} family {f} hashsize 1024 maxelem {maxelem}", s.kind),
            None => format!("{} range 0-65535", s.kind),
        };
        let (current, needed) = restore_sizes(s, existing);
        let _ = writeln!(out, "create {} {} -exist", s.name, spec(current));
        let _ = writeln!(out, "create {TMP_SET} {}", spec(needed));
        for e in &s.entries {
            let _ = writeln!(out, "add {TMP_SET} {e}");
        }
        let _ = writeln!(out, "swap {TMP_SET} {}", s.name);
        let _ = writeln!(out, "destroy {TMP_SET}");
    }
    out
}

/// An `ipset restore` script that turns `old` into `new` entry by entry (`add`/`del` with
/// `-exist`), for updates after the first full swap: cost proportional to what changed.
/// Sets missing from `old` are created and filled.
pub fn ipset_diff(old: &[IpSet], new: &[IpSet]) -> String {
    let mut out = String::new();
    for set in new {
        match old.iter().find(|o| o.name == set.name) {
            None => out.push_str(&ipset_restore(std::slice::from_ref(set))),
            Some(prev) => {
                for e in prev.entries.difference(&set.entries) {
                    let _ = writeln!(out, "del {} {e} -exist", set.name);
                }
                for e in set.entries.difference(&prev.entries) {
                    let _ = writeln!(out, "add {} {e} -exist", set.name);
                }
            }
        }
    }
    out
}

//! The ipset changes of a sync as [`IpsetOp`]s: a whole swap of each set's contents, or an
//! entry-by-entry diff; and the same as `ipset restore` scripts ([`render_text`]).

use std::collections::BTreeMap;

use super::ipset::IpSet;
use super::ipset_size::restore_sizes;
use crate::ipvs::ipset_ops::{EntryError, IpsetOp, SetName, entry_of, render_text, set_type};
use crate::ipvs::table::Family;

/// Temporary set used to swap new contents in atomically.
pub(crate) const TMP_SET: &str = "KUBE-SVCNET-TMP";

/// Hash size every hash set is created with (kube-proxy's).
const HASHSIZE: u32 = 1024;

fn family_of(set: &IpSet) -> Option<Family> {
    match set.family {
        Some("inet6") => Some(Family::V6),
        Some(_) => Some(Family::V4),
        None => None,
    }
}

fn clamp(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

/// The operations that replace each set's contents atomically (fill a temporary set, `swap`,
/// destroy), for a kernel whose existing sets have the `maxelem`s in `existing` (sets not named
/// there are absent or default-sized). A set is declared with its current size, which
/// `create -exist` requires, and filled through a temporary set sized for its entries
/// ([`maxelem_for`](super::maxelem_for)); the swap hands the set the new size.
pub fn restore_ops(
    sets: &[IpSet],
    existing: &BTreeMap<String, usize>,
) -> Result<Vec<IpsetOp>, EntryError> {
    let tmp: SetName = TMP_SET.into();
    let mut ops = Vec::with_capacity(sets.iter().map(|s| s.entries.len() + 4).sum());
    for s in sets {
        let kind = set_type(&s.name, s.kind)?;
        let name: SetName = s.name.as_str().into();
        let (current, needed) = restore_sizes(s, existing);
        let create = |name: &SetName, maxelem: usize, exist: bool| IpsetOp::Create {
            name: name.clone(),
            kind,
            family: family_of(s),
            hashsize: HASHSIZE,
            maxelem: clamp(maxelem),
            exist,
        };
        ops.push(create(&name, current, true));
        ops.push(create(&tmp, needed, false));
        for e in &s.entries {
            ops.push(IpsetOp::Add {
                set: tmp.clone(),
                entry: entry_of(&s.name, s.kind, e)?,
                exist: false,
            });
        }
        ops.push(IpsetOp::Swap {
            from: tmp.clone(),
            to: name,
        });
        ops.push(IpsetOp::Destroy { set: tmp.clone() });
    }
    Ok(ops)
}

/// The operations that turn `old` into `new` entry by entry (`del`/`add` with `-exist`, per
/// set deletions then additions), for updates after the first full swap: cost proportional to
/// what changed. Sets missing from `old` are created and filled ([`restore_ops`]).
pub fn diff_ops(old: &[IpSet], new: &[IpSet]) -> Result<Vec<IpsetOp>, EntryError> {
    let mut ops = Vec::new();
    for set in new {
        match old.iter().find(|o| o.name == set.name) {
            None => ops.extend(restore_ops(std::slice::from_ref(set), &BTreeMap::new())?),
            Some(prev) => {
                let name: SetName = set.name.as_str().into();
                for e in prev.entries.difference(&set.entries) {
                    ops.push(IpsetOp::Del {
                        set: name.clone(),
                        entry: entry_of(&set.name, set.kind, e)?,
                        exist: true,
                    });
                }
                for e in set.entries.difference(&prev.entries) {
                    ops.push(IpsetOp::Add {
                        set: name.clone(),
                        entry: entry_of(&set.name, set.kind, e)?,
                        exist: true,
                    });
                }
            }
        }
    }
    Ok(ops)
}

/// An `ipset restore` script that replaces each set's contents atomically, for sets that are
/// absent or have ipset's default `maxelem` ([`restore_ops`] as text).
pub fn ipset_restore(sets: &[IpSet]) -> Result<String, EntryError> {
    ipset_restore_sized(sets, &BTreeMap::new())
}

/// [`ipset_restore`] for a kernel whose existing sets have the `maxelem`s in `existing` (from
/// [`parse_maxelems`](super::parse_maxelems)).
pub fn ipset_restore_sized(
    sets: &[IpSet],
    existing: &BTreeMap<String, usize>,
) -> Result<String, EntryError> {
    Ok(render_text(&restore_ops(sets, existing)?))
}

/// An `ipset restore` script that turns `old` into `new` entry by entry ([`diff_ops`] as text).
pub fn ipset_diff(old: &[IpSet], new: &[IpSet]) -> Result<String, EntryError> {
    Ok(render_text(&diff_ops(old, new)?))
}

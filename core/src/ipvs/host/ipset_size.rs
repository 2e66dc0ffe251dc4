//! ipset sizes (`maxelem`): ipset's default, the size a set needs, and the sizes the kernel has.

use std::collections::BTreeMap;

use super::ipset::IpSet;

/// ipset's default `maxelem`, which kube-proxy gives every set.
pub const DEFAULT_MAXELEM: usize = 65536;

/// The `maxelem` a hash set of `entries` entries needs: ipset's default, or the next power of
/// two that holds them all. kube-proxy keeps the default, so its restore fails once a cluster
/// has more than 65,536 service ports or local endpoints; here the set grows instead.
pub fn maxelem_for(entries: usize) -> usize {
    entries.next_power_of_two().max(DEFAULT_MAXELEM)
}

/// The `maxelem` of `set` as it is in the kernel (`existing`, else ipset's default) and after
/// [`ipset_restore_sized`] has filled it (grown for its entries, never shrunk).
pub(crate) fn restore_sizes(set: &IpSet, existing: &BTreeMap<String, usize>) -> (usize, usize) {
    let current = existing.get(&set.name).copied().unwrap_or(DEFAULT_MAXELEM);
    (current, maxelem_for(set.entries.len()).max(current))
}

/// The `maxelem` of each hash set in `ipset list -t` output, by set name (bitmap sets have
/// none and are left out).
pub fn parse_maxelems(listing: &str) -> BTreeMap<String, usize> {
    let mut sizes = BTreeMap::new();
    let mut name = None;
    for line in listing.lines() {
        if let Some(n) = line.strip_prefix("Name: ") {
            name = Some(n.trim().to_owned());
        } else if let Some(header) = line.strip_prefix("Header: ") {
            let mut words = header.split_whitespace();
            let maxelem = words
                .by_ref()
                .find(|w| *w == "maxelem")
                .and(words.next())
                .and_then(|v| v.parse().ok());
            if let (Some(n), Some(m)) = (name.take(), maxelem) {
                sizes.insert(n, m);
            }
        }
    }
    sizes
}

/// The `maxelem` each of `sets` has after [`ipset_restore_sized`] with `existing`.
pub fn maxelems_after_restore(
    sets: &[IpSet],
    existing: &BTreeMap<String, usize>,
) -> BTreeMap<String, usize> {
    sets.iter()
        .filter(|s| s.family.is_some())
        .map(|s| (s.name.clone(), restore_sizes(s, existing).1))
        .collect()
}

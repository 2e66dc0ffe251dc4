//! A process-wide interner for strings that repeat across many objects (namespaces, node
//! names, zones, port names, label keys and values), so 100,000 endpoints on 50 nodes hold 50
//! node-name strings, not 100,000.
//!
//! Entries no object uses any more are pruned whenever the table has doubled since the last
//! pruning, so the table stays proportional to the distinct strings in use.

use std::collections::HashSet;
use std::sync::{Arc, Mutex, OnceLock};

struct Table {
    strings: HashSet<Arc<str>>,
    prune_at: usize,
}

fn table() -> &'static Mutex<Table> {
    static TABLE: OnceLock<Mutex<Table>> = OnceLock::new();
    TABLE.get_or_init(|| {
        Mutex::new(Table {
            strings: HashSet::new(),
            prune_at: 1024,
        })
    })
}

/// Returns the shared `Arc<str>` equal to `s`, creating it on first use.
pub(crate) fn intern(s: &str) -> Arc<str> {
    let Ok(mut t) = table().lock() else {
        return Arc::from(s);
    };
    if let Some(found) = t.strings.get(s) {
        return found.clone();
    }
    if t.strings.len() >= t.prune_at {
        // Only the table holds these: nobody uses them any more.
        t.strings.retain(|e| Arc::strong_count(e) > 1);
        t.prune_at = (t.strings.len() * 2).max(1024);
    }
    let new: Arc<str> = Arc::from(s);
    t.strings.insert(new.clone());
    new
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_string_same_allocation() {
        let a = intern("node-a-interned");
        let b = intern(&String::from("node-a-interned"));
        assert!(Arc::ptr_eq(&a, &b));
        assert!(!Arc::ptr_eq(&a, &intern("node-b-interned")));
    }
}

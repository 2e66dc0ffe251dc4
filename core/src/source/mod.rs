//! Sources of cluster state that drive the [`CacheWriter`](crate::CacheWriter).

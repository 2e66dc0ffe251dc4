//! Cluster DNS: the `cluster.local` zone built from snapshots, and its server.

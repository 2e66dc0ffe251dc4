//! IPVS service proxy: desired state from snapshots, kernel reconciler, netlink backend.

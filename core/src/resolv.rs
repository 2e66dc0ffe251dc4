//! Pod `resolv.conf` exactly as kubelet writes it.

//! Pod environment variables exactly as kubelet injects them.

//! Reading a `KubeProxyConfiguration` file.

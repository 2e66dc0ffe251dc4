//! Access to files for `import` and to other files named by plugins (and to the host's
//! interface addresses for `bind IFACE`), behind a small trait so the parser can be tested on
//! in-memory files.

use std::collections::BTreeMap;
use std::io;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

/// Reads files and expands glob patterns: what loading a Corefile reads from the host.
pub trait FileSource: Send + Sync {
    /// The whole content of a file.
    fn read(&self, path: &Path) -> io::Result<String>;
    /// Paths matching a glob pattern, sorted.
    fn glob(&self, pattern: &str) -> Result<Vec<PathBuf>, String>;
    /// The IP addresses of the network interface `name` (`None`: no such interface), for
    /// `bind IFACE`. The default knows no interfaces.
    fn interface_addrs(&self, name: &str) -> Option<Vec<IpAddr>> {
        let _ = name;
        None
    }
}

/// The real file system.
#[derive(Debug, Default, Clone, Copy)]
pub struct RealFiles;

impl FileSource for RealFiles {
    fn read(&self, path: &Path) -> io::Result<String> {
        std::fs::read_to_string(path)
    }

    fn glob(&self, pattern: &str) -> Result<Vec<PathBuf>, String> {
        let paths = glob::glob(pattern).map_err(|e| e.to_string())?;
        let mut out = Vec::new();
        for p in paths {
            out.push(p.map_err(|e| e.to_string())?);
        }
        out.sort();
        Ok(out)
    }

    fn interface_addrs(&self, name: &str) -> Option<Vec<IpAddr>> {
        let addrs = nix::ifaddrs::getifaddrs().ok()?;
        let mut found = false;
        let mut out = Vec::new();
        for a in addrs.filter(|a| a.interface_name == name) {
            found = true;
            let Some(sa) = a.address else { continue };
            let ip = if let Some(v4) = sa.as_sockaddr_in() {
                IpAddr::V4(v4.ip())
            } else if let Some(v6) = sa.as_sockaddr_in6() {
                IpAddr::V6(v6.ip())
            } else {
                continue; // the link-layer entry
            };
            if !out.contains(&ip) {
                out.push(ip);
            }
        }
        found.then_some(out)
    }
}

/// Files held in memory (for tests and for checking a Corefile against given content).
#[derive(Debug, Default, Clone)]
pub struct MemoryFiles {
    files: BTreeMap<PathBuf, String>,
    interfaces: BTreeMap<String, Vec<IpAddr>>,
}

impl MemoryFiles {
    /// No files.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds or replaces a file.
    pub fn insert(&mut self, path: impl Into<PathBuf>, content: impl Into<String>) -> &mut Self {
        self.files.insert(path.into(), content.into());
        self
    }

    #[cfg(test)]
    /// Adds or replaces a network interface and its addresses (for `bind IFACE`).
    pub(crate) fn insert_interface(&mut self, name: &str, addrs: &[IpAddr]) -> &mut Self {
        self.interfaces.insert(name.to_string(), addrs.to_vec());
        self
    }
}

impl FileSource for MemoryFiles {
    fn read(&self, path: &Path) -> io::Result<String> {
        self.files
            .get(path)
            .cloned()
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "no such file"))
    }

    fn glob(&self, pattern: &str) -> Result<Vec<PathBuf>, String> {
        let pattern = glob::Pattern::new(pattern).map_err(|e| e.to_string())?;
        Ok(self
            .files
            .keys()
            .filter(|p| pattern.matches_path(p))
            .cloned()
            .collect())
    }

    fn interface_addrs(&self, name: &str) -> Option<Vec<IpAddr>> {
        self.interfaces.get(name).cloned()
    }
}

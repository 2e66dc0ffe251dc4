//! Locating the workspace root and its built binaries from an end-to-end test.

use std::path::{Path, PathBuf};

/// The repository (workspace) root.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

/// `target/<profile>/<name>`, next to the running test's `deps/` directory. Panics with the
/// command to run when the binary has not been built (`cargo test` does not build other
/// packages' binaries).
pub fn binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("path of the test executable");
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("test executable lives in target/<profile>/deps");
    let bin = dir.join(format!("{name}{}", std::env::consts::EXE_SUFFIX));
    assert!(
        bin.exists(),
        "{} is missing: run `cargo build --workspace --bins` before `cargo test`",
        bin.display()
    );
    bin
}

//! The repository the testbed lives in, for tests that check files against each other (docs
//! against code, alert rules against the agent's metrics).

use std::path::{Path, PathBuf};

/// The repository root (the workspace directory).
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map_or_else(|| PathBuf::from("."), Path::to_path_buf)
}

/// Every Rust source file of the agent (`agent/src` and its pure core, `core/src`),
/// concatenated (unreadable files are skipped).
pub fn agent_source() -> String {
    let mut text = String::new();
    let mut dirs = vec![root().join("agent/src"), root().join("core/src")];
    while let Some(dir) = dirs.pop() {
        let Ok(entries) = std::fs::read_dir(dir) else {
            continue;
        };
        for path in entries.flatten().map(|e| e.path()) {
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                text.push_str(&std::fs::read_to_string(path).unwrap_or_default());
            }
        }
    }
    text
}

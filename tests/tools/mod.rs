//! The programs some tests drive (Java and Maven for the broker, Prometheus,
//! Chromium, PyYAML), installed by `deploy/test-tools.sh` when missing, so
//! that `cargo test` needs nothing installed by hand beyond what builds the
//! crate.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, PoisonError};

/// Makes sure every tool is installed (names as `deploy/test-tools.sh` takes
/// them), or panics with the script's message naming the package. The
/// script runs once per tool and test binary; concurrent tests wait for it
/// here, and concurrent test binaries wait on its file lock.
pub fn require(tools: &[&str]) {
    // A failed install is remembered too, so the other tests of the binary
    // fail at once with the same message instead of running apt-get again.
    static DONE: Mutex<BTreeMap<String, Result<(), String>>> = Mutex::new(BTreeMap::new());
    let mut done = DONE.lock().unwrap_or_else(PoisonError::into_inner);
    let todo: Vec<&str> = tools
        .iter()
        .copied()
        .filter(|t| !done.contains_key(*t))
        .collect();
    if !todo.is_empty() {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/test-tools.sh");
        let result = match Command::new("bash").arg(&script).args(&todo).output() {
            Ok(out) if out.status.success() => Ok(()),
            Ok(out) => Err(String::from_utf8_lossy(&out.stderr).trim().to_string()),
            Err(e) => Err(format!("cannot run {}: {e}", script.display())),
        };
        for t in todo {
            done.insert(t.to_string(), result.clone());
        }
    }
    for t in tools {
        if let Err(e) = &done[*t] {
            panic!("this test needs `{t}`, which is missing and could not be installed:\n{e}");
        }
    }
}

/// The first of `names` found on PATH.
pub fn find(names: &[&str]) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    names.iter().find_map(|name| {
        std::env::split_paths(&path)
            .map(|d| d.join(name))
            .find(|p| p.is_file())
    })
}

/// The executable of `tool`, installed first if missing.
pub fn program(tool: &str) -> PathBuf {
    require(&[tool]);
    let names: &[&str] = match tool {
        "chromium" => &["chromium", "chromium-browser", "google-chrome"],
        other => &[other],
    };
    find(names).unwrap_or_else(|| panic!("`{tool}` installed but not on PATH"))
}

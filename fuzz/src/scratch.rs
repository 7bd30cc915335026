//! Scratch folders for the targets that write (apply to a root, unpack an
//! archive, write an image to inspect).
//!
//! The apply-to-root targets run code that writes wherever a bug lets it.
//! `bench/fuzz.sh` runs every target in a private mount namespace where
//! everything but a small tmpfs on `/tmp` (and the corpus folders) is
//! read-only, and says so with `BUILD_IMAGE_FUZZ_SANDBOX=1`; those targets
//! refuse to run as root without it ([`require_sandbox`]). Each input gets
//! a fresh `jail/` with the root at `jail/root`: anything that appears in
//! `jail/` beside `root` was written outside the root, and
//! [`Jail::check`] panics on it (a crash for libFuzzer to keep).

use std::path::{Path, PathBuf};

/// Panic unless `bench/fuzz.sh`'s sandbox is on, or the process is not root
/// (then the permissions limit what a confinement bug can reach), or
/// `BUILD_IMAGE_FUZZ_UNSANDBOXED=1` says the caller accepts the risk.
pub fn require_sandbox(target: &str) {
    let on = |v: &str| std::env::var(v).is_ok_and(|x| x == "1");
    // SAFETY: geteuid has no arguments and cannot fail.
    let root = unsafe { libc::geteuid() } == 0;
    if root && !on("BUILD_IMAGE_FUZZ_SANDBOX") && !on("BUILD_IMAGE_FUZZ_UNSANDBOXED") {
        panic!(
            "{target} applies fuzzed configurations to a folder as root: run it through bench/fuzz.sh (a read-only mount namespace), \
             or set BUILD_IMAGE_FUZZ_UNSANDBOXED=1 to accept the risk"
        );
    }
}

/// A fresh folder with an empty `root/` inside.
pub struct Jail {
    dir: tempfile::TempDir,
}

impl Jail {
    pub fn new() -> Jail {
        let dir = tempfile::Builder::new().prefix("fuzz-jail").tempdir().expect("a scratch folder in $TMPDIR");
        std::fs::create_dir(dir.path().join("root")).expect("jail/root");
        Jail { dir }
    }

    pub fn root(&self) -> PathBuf {
        self.dir.path().join("root")
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Panic if anything but `root` is in the jail: written outside the root.
    pub fn check(&self, what: &str) {
        let mut names: Vec<String> = std::fs::read_dir(self.dir.path())
            .map(|rd| rd.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect())
            .unwrap_or_default();
        names.retain(|n| n != "root");
        assert!(names.is_empty(), "{what} wrote outside its root: {names:?}");
    }
}

impl Default for Jail {
    fn default() -> Self {
        Jail::new()
    }
}

impl Drop for Jail {
    fn drop(&mut self) {
        // Whatever the apply left: make it removable (a 0o000 folder as
        // root is removable anyway; chattr is not something apply does).
        let _ = std::fs::remove_dir_all(self.dir.path());
    }
}

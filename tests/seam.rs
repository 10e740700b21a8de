//! The seam is enforced, not hoped for: the tools are built the way they
//! ship, without the test-only `layout` feature of q-queue, so a tool that
//! reaches past the `Backend` trait into the directory's layout (`fsx`,
//! `names`, `Queue`) does not compile, and this test fails.

use std::path::Path;
use std::process::Command;

#[test]
fn serial_the_tools_build_without_the_directory_layout() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let out = Command::new(cargo)
        .args(["check", "--package", "q", "--lib", "--bins", "--locked", "--offline", "--message-format", "short"])
        .current_dir(root)
        // Its own target directory: the suite's build (with the feature) is not disturbed.
        .env("CARGO_TARGET_DIR", root.join("target").join("seam"))
        .env_remove("RUSTFLAGS")
        .output()
        .expect("run cargo");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "the tools reach past the Backend trait into the directory's layout (or do not build):\n{stderr}"
    );
    // The feature really was off: q-queue was checked without it.
    let tree = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
        .args(["tree", "--package", "q", "--edges", "normal,features", "--invert", "q-queue", "--locked", "--offline"])
        .current_dir(root)
        .output()
        .expect("run cargo tree");
    let tree = String::from_utf8_lossy(&tree.stdout);
    assert!(tree.contains("q-queue"), "cargo tree shows q-queue:\n{tree}");
    assert!(!tree.contains("\"layout\""), "the tools' build enables the layout feature:\n{tree}");
}

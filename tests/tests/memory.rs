//! Memory stays flat: building from a tree with a 4 GiB sparse file and
//! 2 GiB of regular files keeps peak RSS under 100 MiB (file content is
//! streamed by reference, never held in memory).

mod common;

use std::fs;
use std::io::Write;

use common::*;

#[test]
fn peak_rss_stays_under_100_mib_for_6_gib_of_input() {
    let t = tempfile::tempdir().unwrap();
    let w = t.path();
    let tree = w.join("tree");
    fs::create_dir_all(tree.join("data")).unwrap();
    let sparse = fs::File::create(tree.join("sparse.img")).unwrap();
    sparse.set_len(4 << 30).unwrap();
    use std::os::unix::fs::FileExt;
    sparse.write_all_at(b"tail", (4 << 30) - 4).unwrap();
    let chunk = bytes(42, 8 << 20);
    for i in 0..4 {
        let mut f = fs::File::create(tree.join(format!("data/f{i}"))).unwrap();
        for j in 0..64u64 {
            // 64 × 8 MiB = 512 MiB per file, each block made distinct.
            let mut c = chunk.clone();
            c[..8].copy_from_slice(&(i * 64 + j).to_le_bytes());
            f.write_all(&c).unwrap();
        }
    }
    let recipe = serde_json::json!({
        "name": "mem",
        "trees": {"root": [{"dir": "tree"}]},
        "disk": {"partitions": [{"label": "root", "type": "root-x86-64", "size": "auto", "filesystem": "ext4", "tree": "root"}]},
        "outputs": ["raw"]
    });
    fs::write(w.join("r.json"), recipe.to_string()).unwrap();
    let o = std::process::Command::new("/usr/bin/time")
        .args(["-f", "MAXRSS_KB=%M"])
        .arg(bin())
        .args(["-q", "r.json", "--out", "out"])
        .current_dir(w)
        .output()
        .expect("GNU time (package `time`)");
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    let kb: u64 = err.lines().find_map(|l| l.strip_prefix("MAXRSS_KB=")).and_then(|v| v.trim().parse().ok()).expect("time output");
    eprintln!("peak RSS {} MiB", kb / 1024);
    assert!(kb < 100 * 1024, "peak RSS {kb} KiB");
    // And the content made it: the image holds the 2 GiB of data, not the holes.
    use std::os::unix::fs::MetadataExt;
    let md = fs::metadata(w.join("out/mem.raw")).unwrap();
    assert!(md.blocks() * 512 < (2u64 << 30) + (400 << 20), "allocated {}", md.blocks() * 512);
    let (ok, out) = tool("e2fsck", &["-fn", &format!("{}?offset=1048576", w.join("out/mem.raw").display())]);
    assert!(ok || out.contains("clean"), "e2fsck: {out}");
}

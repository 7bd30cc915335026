//! qcow2 and VHD outputs, checked with `qemu-img check` and `qemu-img compare`.

mod common;

use std::fs;

use common::*;

#[test]
fn qcow2_and_vhd_match_the_raw_image() {
    let t = tempfile::tempdir().unwrap();
    let w = t.path();
    fs::create_dir_all(w.join("esp/EFI/BOOT")).unwrap();
    fs::write(w.join("esp/EFI/BOOT/BOOTX64.EFI"), bytes(9, 5 << 20)).unwrap();
    let recipe = serde_json::json!({
        "name": "fmt",
        "trees": {"esp": [{"dir": "esp"}]},
        "disk": {"size": "1100MiB", "partitions": [
            {"label": "ESP", "type": "esp", "size": "64MiB", "filesystem": "vfat", "tree": "esp"},
            {"label": "data", "type": "linux", "size": "fill"}
        ]},
        "outputs": ["raw", "qcow2", "vhd"]
    });
    fs::write(w.join("r.json"), recipe.to_string()).unwrap();
    let mut first = Vec::new();
    for round in 0..2 {
        let out = format!("out{round}");
        run_ok(w, &["-q", "r.json", "--out", &out]);
        let raw = w.join(&out).join("fmt.raw");
        let qcow = w.join(&out).join("fmt.qcow2");
        let vhd = w.join(&out).join("fmt.vhd");
        let (ok, o) = tool("qemu-img", &["check", "-f", "qcow2", qcow.to_str().unwrap()]);
        assert!(ok && o.contains("No errors"), "qemu-img check: {o}");
        let (ok, o) = tool("qemu-img", &["compare", "-f", "raw", "-F", "qcow2", raw.to_str().unwrap(), qcow.to_str().unwrap()]);
        assert!(ok && o.contains("identical"), "qcow2 compare: {o}");
        let (ok, o) = tool("qemu-img", &["compare", "-f", "raw", "-F", "vpc", raw.to_str().unwrap(), vhd.to_str().unwrap()]);
        assert!(ok && o.contains("identical"), "vhd compare: {o}");
        // The qcow2 skips holes: far smaller than the 1.1 GiB disk.
        assert!(fs::metadata(&qcow).unwrap().len() < 16 << 20);
        first.push([sha256(&raw), sha256(&qcow), sha256(&vhd)]);
    }
    assert_eq!(first[0], first[1], "two builds give identical files");
}

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

#[test]
fn vmdk_stream_optimized_and_compressed_qcow2_match_the_raw_image() {
    let t = tempfile::tempdir().unwrap();
    let w = t.path();
    fs::create_dir_all(w.join("esp/EFI/BOOT")).unwrap();
    // Incompressible and compressible content, so both cluster kinds appear.
    fs::write(w.join("esp/EFI/BOOT/BOOTX64.EFI"), bytes(3, 3 << 20)).unwrap();
    fs::write(w.join("esp/text.txt"), "build-image ".repeat(400_000)).unwrap();
    let recipe = serde_json::json!({
        "name": "cmp",
        "trees": {"esp": [{"dir": "esp"}]},
        "disk": {"size": "300MiB", "partitions": [
            {"label": "ESP", "type": "esp", "size": "64MiB", "filesystem": "vfat", "tree": "esp"},
            {"label": "data", "type": "linux", "size": "fill"}
        ]},
        "qcow2": {"compress": true},
        "vmdk": {"adapter": "ide"},
        "outputs": ["raw", "qcow2", "vmdk"]
    });
    fs::write(w.join("r.json"), recipe.to_string()).unwrap();
    let mut sums = Vec::new();
    for round in 0..2 {
        let out = format!("out{round}");
        run_ok(w, &["-q", "r.json", "--out", &out]);
        let raw = w.join(&out).join("cmp.raw");
        let qcow = w.join(&out).join("cmp.qcow2");
        let vmdk = w.join(&out).join("cmp.vmdk");
        let (ok, o) = tool("qemu-img", &["info", vmdk.to_str().unwrap()]);
        assert!(ok && o.contains("create type: streamOptimized") && o.contains("compressed: true"), "qemu-img info: {o}");
        let (ok, o) = tool("qemu-img", &["compare", "-f", "raw", "-F", "vmdk", raw.to_str().unwrap(), vmdk.to_str().unwrap()]);
        assert!(ok && o.contains("identical"), "vmdk compare: {o}");
        let (ok, o) = tool("qemu-img", &["check", "-f", "qcow2", qcow.to_str().unwrap()]);
        assert!(ok && o.contains("No errors") && o.contains("compressed clusters"), "qemu-img check: {o}");
        let (ok, o) = tool("qemu-img", &["compare", "-f", "raw", "-F", "qcow2", raw.to_str().unwrap(), qcow.to_str().unwrap()]);
        assert!(ok && o.contains("identical"), "qcow2 compare: {o}");
        // The text compresses: both are well under the data they hold (~8 MiB).
        assert!(fs::metadata(&qcow).unwrap().len() < 5 << 20, "compressed qcow2 too big");
        assert!(fs::metadata(&vmdk).unwrap().len() < 5 << 20, "vmdk too big");
        // Descriptor: the adapter asked for, and a CID that is not random.
        let head = fs::read(&vmdk).unwrap();
        let desc = String::from_utf8_lossy(&head[512..512 * 21]);
        assert!(desc.contains("ddb.adapterType = \"ide\"") && desc.contains("ddb.virtualHWVersion"), "{desc}");
        sums.push([sha256(&qcow), sha256(&vmdk)]);
    }
    assert_eq!(sums[0], sums[1], "two builds give identical files");
}

#[test]
fn convert_verb_writes_each_format() {
    let t = tempfile::tempdir().unwrap();
    let w = t.path();
    let raw = w.join("d.raw");
    {
        use std::os::unix::fs::FileExt;
        let f = fs::File::create(&raw).unwrap();
        f.set_len(64 << 20).unwrap();
        f.write_all_at(&bytes(1, 1 << 20), 5 << 20).unwrap();
        f.write_all_at(b"tail", (64 << 20) - 4).unwrap();
    }
    for (to, fmt, extra) in [("qcow2", "qcow2", None), ("qcow2", "qcow2", Some("--compress")), ("vmdk", "vmdk", None), ("vhd", "vpc", None)]
    {
        let dest = w.join(format!("d-{to}-{}.img", extra.is_some()));
        let mut args = vec!["-q", "convert", "d.raw", "--to", to, "-o", dest.to_str().unwrap()];
        args.extend(extra);
        run_ok(w, &args);
        let (ok, o) = tool("qemu-img", &["compare", "-f", "raw", "-F", fmt, raw.to_str().unwrap(), dest.to_str().unwrap()]);
        assert!(ok && o.contains("identical"), "{to} {extra:?}: {o}");
    }
}

/// The plain qcow2 writer's edge cases, on a raw file made here: data in
/// three L2 tables (512 MiB each), clusters that are allocated but all
/// zeros (left out), a 4 MiB read chunk that is all zeros between data,
/// runs that cross chunk boundaries, and a partial last cluster. The
/// number of data clusters `qemu-img check` reports is the number of
/// non-zero clusters this test wrote, and conversions with 1, 2 and 4
/// workers, synced or with `--no-sync`, give the same bytes. The VHD
/// writer gets the same file, synced and not.
#[test]
fn plain_qcow2_stores_exactly_the_non_zero_clusters() {
    use std::collections::BTreeSet;
    use std::os::unix::fs::FileExt;
    const C: u64 = 64 << 10;
    let t = tempfile::tempdir().unwrap();
    let w = t.path();
    let raw = w.join("edge.raw");
    let len = (1300 << 20) + 12345; // not a whole cluster
    let f = fs::File::create(&raw).unwrap();
    f.set_len(len).unwrap();
    let mut nonzero = BTreeSet::new();
    let mut put = |off: u64, data: &[u8]| {
        f.write_all_at(data, off).unwrap();
        for (i, b) in data.iter().enumerate() {
            if *b != 0 {
                nonzero.insert((off + i as u64) / C);
            }
        }
    };
    // A run of 100 clusters crossing two 4 MiB chunks, with zero clusters
    // written (allocated) inside it.
    let mut run = bytes(11, 100 * C as usize);
    for z in [0usize, 7, 63, 64, 99] {
        run[z * C as usize..(z + 1) * C as usize].fill(0);
    }
    put(3 * C + 100 * C, &run);
    // 8 MiB of written zeros: a chunk with nothing to store.
    put(200 << 20, &vec![0u8; 8 << 20]);
    // One byte at the end of a cluster, in the second L2 table.
    put((600 << 20) + C - 1, &[1]);
    // Data straddling the 1 GiB L2 boundary.
    put((1 << 30) - 1000, &bytes(12, 3000));
    // The partial last cluster.
    put(len - 10, b"last bytes");
    drop(f);

    let mut sums = Vec::new();
    for (round, (threads, no_sync)) in [("2", false), ("1", true), ("4", false), ("2", true)].into_iter().enumerate() {
        let q = w.join(format!("edge{round}.qcow2"));
        let mut args = vec!["-q", "convert", "edge.raw", "--to", "qcow2", "-o", q.to_str().unwrap()];
        if no_sync {
            args.push("--no-sync");
        }
        run_ok_env(w, &args, &[("BUILD_IMAGE_THREADS", threads)]);
        let (ok, o) = tool("qemu-img", &["check", "-f", "qcow2", q.to_str().unwrap()]);
        assert!(ok && o.contains("No errors"), "qemu-img check: {o}");
        let total = len.div_ceil(C);
        assert!(o.contains(&format!("{}/{total} = ", nonzero.len())), "expected {} of {total} clusters allocated: {o}", nonzero.len());
        let (ok, o) = tool("qemu-img", &["compare", "-f", "raw", "-F", "qcow2", raw.to_str().unwrap(), q.to_str().unwrap()]);
        assert!(ok && o.contains("identical"), "qcow2 compare: {o}");
        sums.push(sha256(&q));
    }
    assert!(sums.iter().all(|s| *s == sums[0]), "every conversion gives the same file: {sums:?}");
    // The fixed VHD of the same file (its length too is not whole sectors).
    run_ok(w, &["-q", "convert", "edge.raw", "--to", "vhd", "-o", "edge.vhd"]);
    run_ok(w, &["-q", "convert", "edge.raw", "--to", "vhd", "--no-sync", "-o", "edge-nosync.vhd"]);
    let (ok, o) = tool("qemu-img", &["compare", "-f", "raw", "-F", "vpc", raw.to_str().unwrap(), w.join("edge.vhd").to_str().unwrap()]);
    assert!(ok && o.contains("identical"), "vhd compare: {o}");
    assert_eq!(sha256(&w.join("edge.vhd")), sha256(&w.join("edge-nosync.vhd")), "--no-sync writes the same VHD");
}

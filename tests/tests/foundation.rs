//! Foundation: GPT, FAT ESP, reproducibility and bad input, checked with the
//! real tools (`sgdisk`, `sfdisk`, `fsck.fat`, `mcopy`).

mod common;

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use common::*;

/// Write a host tree for the ESP: nested folders, long and non-ASCII names,
/// sizes around cluster boundaries.
fn esp_tree(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut files = BTreeMap::new();
    let specs: [(&str, usize); 8] = [
        ("EFI/BOOT/BOOTX64.EFI", 300_000),
        ("EFI/Linux/a-rather-long-file-name-for-lfn-entries.conf", 511),
        ("loader/loader.conf", 0),
        ("loader/entries/äöü-unicode.conf", 512),
        ("deep/a/b/c/d/e/f/g.bin", 513),
        ("big.bin", 3 << 20),
        ("MixedCase.TXT", 4096),
        ("x", 1),
    ];
    for (i, (p, n)) in specs.iter().enumerate() {
        let path = dir.join(p);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        let data = bytes(i as u64 + 1, *n);
        fs::write(&path, &data).unwrap();
        files.insert(PathBuf::from(p), data);
    }
    files
}

fn write_recipe(dir: &Path, name: &str, body: &serde_json::Value) -> PathBuf {
    let p = dir.join(name);
    fs::write(&p, serde_json::to_string_pretty(body).unwrap()).unwrap();
    p
}

fn demo_recipe() -> serde_json::Value {
    serde_json::json!({
        "name": "demo",
        "source_date_epoch": 1_700_000_000,
        "trees": {
            "esp": [{"dir": "esp"}, {"file": "/loader/entries/inline.conf", "content": "title inline\n"}]
        },
        "disk": {
            "size": "200MiB",
            "partitions": [
                {"label": "ESP", "type": "esp", "size": "64MiB", "filesystem": "vfat", "tree": "esp"},
                {"label": "swap", "type": "swap", "size": "8MiB"},
                {"label": "data", "type": "0fc63daf-8483-4772-8e79-3d69d8477de4", "size": "fill"}
            ]
        },
        "outputs": ["raw"]
    })
}

#[test]
fn gpt_and_esp_pass_the_real_tools() {
    let t = tempfile::tempdir().unwrap();
    let files = esp_tree(&t.path().join("esp"));
    let recipe = write_recipe(t.path(), "r.json", &demo_recipe());
    run_ok(t.path(), &["-q", recipe.to_str().unwrap(), "--out", "out"]);
    let img = t.path().join("out/demo.raw");

    let (ok, out) = tool("sgdisk", &["-v", img.to_str().unwrap()]);
    assert!(ok && out.contains("No problems found"), "sgdisk -v: {out}");

    let parts = sfdisk(&img);
    let names: Vec<&str> = parts.iter().map(|p| p.0.as_str()).collect();
    assert_eq!(names, ["ESP", "swap", "data"]);
    assert_eq!(parts[0].1, "c12a7328-f81f-11d2-ba4b-00a0c93ec93b");
    assert_eq!(parts[1].1, "0657fd6d-a4ab-43c4-84e5-0933c84b4f4f");
    assert_eq!(parts[2].1, "0fc63daf-8483-4772-8e79-3d69d8477de4");
    assert_eq!((parts[0].2, parts[0].3), (1 << 20, 64 << 20));
    assert_eq!(parts[1].3, 8 << 20);
    assert!(parts.iter().all(|p| p.2 % (1 << 20) == 0), "1 MiB alignment: {parts:?}");
    // The fill partition reaches the end of the usable area.
    let disk = 200u64 << 20;
    assert!(parts[2].2 + parts[2].3 <= disk - 33 * 512 && parts[2].2 + parts[2].3 > disk - (1 << 20), "{parts:?}");

    let esp = t.path().join("esp.img");
    extract(&img, parts[0].2, parts[0].3, &esp);
    let (ok, out) = tool("fsck.fat", &["-n", "-V", esp.to_str().unwrap()]);
    assert!(ok, "fsck.fat -n: {out}");
    assert!(!out.contains("FSCK"), "fsck.fat complained: {out}");
    let (ok, out) = tool("file", &["-s", esp.to_str().unwrap()]);
    assert!(!ok || out.contains("FAT (32 bit)") || out.contains("FAT"), "{out}");

    // Read everything back with mtools and compare byte for byte.
    let back = t.path().join("back");
    let (ok, out) = tool("mcopy", &["-s", "-n", "-m", "-i", esp.to_str().unwrap(), "::/", back.to_str().unwrap()]);
    assert!(ok, "mcopy: {out}");
    for (p, data) in &files {
        let got = fs::read(back.join(p)).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
        assert!(got == *data, "{} differs after mcopy", p.display());
    }
    assert_eq!(fs::read(back.join("loader/entries/inline.conf")).unwrap(), b"title inline\n");

    // inspect reads the image itself.
    let o = run(t.path(), &["inspect", "--json", img.to_str().unwrap()]);
    assert!(o.status.success());
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["partitions"][0]["filesystem"]["kind"], "vfat");
    assert_eq!(v["partitions"][0]["filesystem"]["label"], "ESP");
    assert_eq!(v["partitions"][0]["type_name"], "esp");
    let (_, blkid) = tool("blkid", &["-p", "-o", "export", esp.to_str().unwrap()]);
    let uuid = blkid.lines().find_map(|l| l.strip_prefix("UUID=")).unwrap_or("").to_string();
    assert_eq!(v["partitions"][0]["filesystem"]["uuid"], uuid, "inspect UUID vs blkid");

    // The manifest lists the artifact with its real hash.
    let m: serde_json::Value = serde_json::from_slice(&fs::read(t.path().join("out/demo.manifest.json")).unwrap()).unwrap();
    assert_eq!(m["artifacts"][0]["sha256"], sha256(&img));
    assert_eq!(m["disk"]["partitions"].as_array().unwrap().len(), 3);
    assert!(m["inputs"][0]["sha256"].as_str().unwrap().len() == 64);
}

#[test]
fn the_raw_image_is_sparse() {
    let t = tempfile::tempdir().unwrap();
    esp_tree(&t.path().join("esp"));
    let mut r = demo_recipe();
    r["disk"]["size"] = serde_json::json!("2GiB");
    let recipe = write_recipe(t.path(), "r.json", &r);
    run_ok(t.path(), &["-q", recipe.to_str().unwrap(), "--out", "out"]);
    use std::os::unix::fs::MetadataExt;
    let md = fs::metadata(t.path().join("out/demo.raw")).unwrap();
    assert_eq!(md.len(), 2 << 30);
    assert!(md.blocks() * 512 < 64 << 20, "2 GiB image allocates {} bytes", md.blocks() * 512);
}

#[test]
fn builds_are_reproducible_across_dirs_tz_and_umask() {
    let a = tempfile::tempdir().unwrap();
    let b = tempfile::tempdir().unwrap();
    let mut hashes = Vec::new();
    for (i, (dir, tz, umask)) in [(a.path(), "UTC", "022"), (b.path(), "Asia/Tokyo", "077")].iter().enumerate() {
        let work = dir.join(format!("work-{i}"));
        fs::create_dir_all(&work).unwrap();
        esp_tree(&work.join("esp"));
        let recipe = write_recipe(&work, "r.json", &demo_recipe());
        let out = dir.join(format!("output-{i}"));
        let o = std::process::Command::new("sh")
            .arg("-c")
            .arg(format!("umask {umask} && exec \"$0\" -q build \"$1\" --out \"$2\""))
            .arg(bin())
            .arg(&recipe)
            .arg(&out)
            .current_dir(if i == 0 { work.as_path() } else { *dir })
            .env("TZ", tz)
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let mut h = BTreeMap::new();
        for e in fs::read_dir(&out).unwrap() {
            let p = e.unwrap().path();
            h.insert(p.file_name().unwrap().to_string_lossy().into_owned(), sha256(&p));
        }
        hashes.push(h);
    }
    assert_eq!(hashes[0].len(), 2, "{:?}", hashes[0]);
    assert_eq!(hashes[0], hashes[1]);
}

/// Every bad input fails with a message naming the place, writes nothing,
/// and leaves the previous good output alone.
#[test]
fn bad_input_fails_cleanly_and_keeps_the_last_good_image() {
    let t = tempfile::tempdir().unwrap();
    let w = t.path();
    esp_tree(&w.join("esp"));
    let good = write_recipe(w, "good.json", &demo_recipe());
    run_ok(w, &["-q", good.to_str().unwrap(), "--out", "out"]);
    let listing = || {
        let mut v: Vec<String> =
            fs::read_dir(w.join("out")).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
        v.sort();
        v
    };
    let before = listing();
    let raw_sha = sha256(&w.join("out/demo.raw"));

    // Archives for the escape cases, written with raw header names.
    make_tar(&w.join("dotdot.tar"), &[("../x", TarKind::File(b"evil"))]);
    make_tar(&w.join("abs-symlink.tar"), &[("etc", TarKind::Symlink("/etc")), ("etc/passwd", TarKind::File(b"evil"))]);
    fs::create_dir_all(w.join("badname")).unwrap();
    fs::write(w.join("badname/a:b"), b"x").unwrap();

    let with = |f: &dyn Fn(&mut serde_json::Value)| {
        let mut r = demo_recipe();
        f(&mut r);
        r
    };
    let cases: Vec<(&str, String, &str)> = vec![
        ("malformed JSON", "{\"name\": \"demo\",\n  \"trees\": {,}\n}".into(), "line 2"),
        ("unknown field", with(&|r| r["colour"] = "red".into()).to_string(), "colour"),
        ("wrong type", with(&|r| r["disk"]["partitions"][0]["label"] = 7.into()).to_string(), "disk.partitions[0].label"),
        ("unknown layer kind", with(&|r| r["trees"]["esp"][1] = serde_json::json!({"copy": "x"})).to_string(), "trees.esp[1]"),
        ("missing host file", with(&|r| r["trees"]["esp"][0] = serde_json::json!({"tar": "nope.tar"})).to_string(), "nope.tar"),
        ("partitions larger than the disk", with(&|r| r["disk"]["size"] = "32MiB".into()).to_string(), "disk.size"),
        ("two fill partitions", with(&|r| r["disk"]["partitions"][1]["size"] = "fill".into()).to_string(), "disk.partitions[2].size"),
        ("tar entry with ..", with(&|r| r["trees"]["esp"][0] = serde_json::json!({"tar": "dotdot.tar"})).to_string(), "escapes"),
        (
            "absolute symlink traversal",
            with(&|r| r["trees"]["esp"][0] = serde_json::json!({"tar": "abs-symlink.tar"})).to_string(),
            "escapes",
        ),
        ("name FAT cannot hold", with(&|r| r["trees"]["esp"][0] = serde_json::json!({"dir": "badname"})).to_string(), "a:b"),
    ];
    for (what, text, needle) in cases {
        let p = w.join("bad.json");
        fs::write(&p, &text).unwrap();
        let o = run(w, &["-q", p.to_str().unwrap(), "--out", "out"]);
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success(), "{what}: the build succeeded");
        assert!(err.contains(needle), "{what}: the message does not name `{needle}`:\n{err}");
        assert!(
            err.contains("bad.json")
                || what.contains("FAT")
                || what.contains("file")
                || what.contains("tar")
                || what.contains("symlink")
                || what.contains("disk"),
            "{what}: no file named:\n{err}"
        );
        assert_eq!(listing(), before, "{what}: the output folder changed");
        assert_eq!(sha256(&w.join("out/demo.raw")), raw_sha, "{what}: the last good image changed");
    }
}

enum TarKind<'a> {
    File(&'a [u8]),
    Symlink(&'a str),
}

/// A tar whose entry names are written raw (the `tar` crate's builder
/// refuses `..`, which is exactly what we need to feed in).
fn make_tar(path: &Path, entries: &[(&str, TarKind<'_>)]) {
    let mut b = tar::Builder::new(fs::File::create(path).unwrap());
    for (name, kind) in entries {
        let mut h = tar::Header::new_ustar();
        h.as_old_mut().name[..name.len()].copy_from_slice(name.as_bytes());
        h.set_mode(0o644);
        h.set_mtime(0);
        match kind {
            TarKind::File(data) => {
                h.set_entry_type(tar::EntryType::Regular);
                h.set_size(data.len() as u64);
                h.set_cksum();
                b.append(&h, *data).unwrap();
            }
            TarKind::Symlink(t) => {
                h.set_entry_type(tar::EntryType::Symlink);
                h.set_size(0);
                h.set_link_name(t).unwrap();
                h.set_cksum();
                b.append(&h, &[][..]).unwrap();
            }
        }
    }
    b.finish().unwrap();
}

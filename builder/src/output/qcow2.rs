//! qcow2 (version 3) from the sparse raw image, written directly.
//!
//! Why our own: the format is small and fixed, and what we need from it is
//! narrow — a one-shot, deterministic writer that streams from a sparse file
//! and skips its holes. The crates on crates.io either only read qcow2 or pull
//! in a whole block layer; neither gives byte-for-byte reproducible output.
//!
//! Layout (64 KiB clusters, 16-bit refcounts):
//! `[header][L1 table][data…][L2 tables][refcount table][refcount blocks]`.
//! The tables go after the data, whose size is only known once it has been
//! read (both writers make one pass over the raw image). Only clusters that
//! hold non-zero data are stored; plain clusters have refcount 1, so their
//! L1/L2 entries carry the COPIED flag.

use std::fs::File;
use std::os::unix::fs::FileExt;

const CLUSTER_BITS: u32 = 16;
const CLUSTER: u64 = 1 << CLUSTER_BITS;
const L2_ENTRIES: u64 = CLUSTER / 8;
const REFS_PER_BLOCK: u64 = CLUSTER / 2;
const COPIED: u64 = 1 << 63;

/// The qcow2 v3 header cluster: 64 KiB clusters, 16-bit refcounts, no
/// header extensions (bytes 104..112 stay zero: the end-of-extensions
/// marker). The virtual size is `len` rounded up to whole 512-byte sectors,
/// as qemu reads a raw file of that length (qemu drops a partial last
/// sector of a qcow2's size).
fn header(len: u64, l1_size: u64, l1_off: u64, rt_off: u64, rt_clusters: u64) -> Vec<u8> {
    let len = len.div_ceil(512) * 512;
    let mut h = vec![0u8; CLUSTER as usize];
    h[0..4].copy_from_slice(b"QFI\xfb");
    h[4..8].copy_from_slice(&3u32.to_be_bytes());
    h[20..24].copy_from_slice(&CLUSTER_BITS.to_be_bytes());
    h[24..32].copy_from_slice(&len.to_be_bytes());
    h[36..40].copy_from_slice(&(l1_size as u32).to_be_bytes());
    h[40..48].copy_from_slice(&l1_off.to_be_bytes());
    h[48..56].copy_from_slice(&rt_off.to_be_bytes());
    h[56..60].copy_from_slice(&(rt_clusters as u32).to_be_bytes());
    h[96..100].copy_from_slice(&4u32.to_be_bytes()); // refcount_order: 16 bits
    h[100..104].copy_from_slice(&104u32.to_be_bytes()); // header_length
    h
}

/// Write the refcount table (pointing at `rb_count` blocks from `rb_off`)
/// and the 16-bit refcount blocks holding `refs[cluster]`.
fn write_refcounts(out: &File, refs: &[u32], rt_off: u64, rt_clusters: u64, rb_off: u64, rb_count: u64) -> std::io::Result<()> {
    let mut rt = vec![0u8; (rt_clusters * CLUSTER) as usize];
    for b in 0..rb_count {
        rt[b as usize * 8..b as usize * 8 + 8].copy_from_slice(&(rb_off + b * CLUSTER).to_be_bytes());
    }
    out.write_all_at(&rt, rt_off)?;
    for b in 0..rb_count {
        let mut blk = vec![0u8; CLUSTER as usize];
        for i in 0..REFS_PER_BLOCK {
            if let Some(r) = refs.get((b * REFS_PER_BLOCK + i) as usize) {
                blk[i as usize * 2..i as usize * 2 + 2].copy_from_slice(&(*r as u16).to_be_bytes());
            }
        }
        out.write_all_at(&blk, rb_off + b * CLUSTER)?;
    }
    Ok(())
}

/// Clusters read (and written) per call by the plain writer: 4 MiB, large
/// enough that the syscalls cost nothing next to the copying.
const CHUNK_CLUSTERS: u64 = 64;

/// Write `raw` (of length `len`) as a plain qcow2 into `out`, in one pass
/// over the raw image's data.
///
/// `threads` workers each take the next 4 MiB chunk of candidate clusters,
/// read it, drop its all-zero clusters and pack the rest, then wait for
/// their turn (chunk order) to be given the output offset, and write. The
/// reads, zero tests and writes of different chunks overlap, and the
/// offsets, hence the bytes, are the same whatever the thread count.
///
/// `direct`: write with O_DIRECT where the file system takes it (see
/// [`crate::disk::direct`]), for an output that is fsynced next: the data
/// goes from our buffers to the disk and the fsync has only the tables
/// left. Without it the data goes to the page cache (`convert --no-sync`).
pub fn write(raw: &File, len: u64, out: &File, direct: bool, threads: usize) -> std::io::Result<()> {
    use std::collections::BTreeMap;
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    use std::sync::{Condvar, Mutex};

    let l1_size = len.div_ceil(CLUSTER * L2_ENTRIES);
    let l1_clusters = (l1_size * 8).div_ceil(CLUSTER).max(1);
    let data_start = CLUSTER + l1_clusters * CLUSTER;
    super::empty(out)?;

    let mut chunks: Vec<(u64, u64)> = Vec::new();
    for range in super::grains::candidate_grains(raw, len, CLUSTER)? {
        let mut c0 = range.start;
        while c0 < range.end {
            let c1 = range.end.min(c0 + CHUNK_CLUSTERS);
            chunks.push((c0, c1));
            c0 = c1;
        }
    }
    let c = CLUSTER as usize;
    let taken = AtomicUsize::new(0);
    let failed = AtomicBool::new(false);
    // (the chunk whose turn it is to be placed, the next free offset)
    let turn = Mutex::new((0usize, data_start));
    let turned = Condvar::new();
    let direct = direct && crate::disk::direct::set_direct(out, true);
    // Held while writing; whether O_DIRECT is still on.
    let writing = Mutex::new(direct);

    let work = || -> std::io::Result<Vec<(u64, u64)>> {
        let mut placed = Vec::new();
        let mut b = crate::disk::direct::Buf::new((CHUNK_CLUSTERS * CLUSTER) as usize);
        loop {
            let i = taken.fetch_add(1, Ordering::Relaxed);
            if i >= chunks.len() || failed.load(Ordering::Relaxed) {
                return Ok(placed);
            }
            let (c0, c1) = chunks[i];
            let buf = b.get_mut();
            let start = c0 * CLUSTER;
            let n = ((c1 * CLUSTER).min(len) - start) as usize;
            let whole = ((c1 - c0) * CLUSTER) as usize;
            raw.read_exact_at(&mut buf[..n], start)?;
            buf[n..whole].fill(0);
            let mut kept = Vec::new();
            for k in 0..(c1 - c0) as usize {
                if super::grains::is_zero(&buf[k * c..(k + 1) * c]) {
                    continue;
                }
                if kept.len() != k {
                    buf.copy_within(k * c..(k + 1) * c, kept.len() * c);
                }
                kept.push(c0 + k as u64);
            }
            let at = {
                let mut t = turn.lock().expect("a worker panicked");
                while t.0 != i {
                    if failed.load(Ordering::Relaxed) {
                        return Ok(placed);
                    }
                    t = turned.wait(t).expect("a worker panicked");
                }
                let at = t.1;
                t.0 += 1;
                t.1 += (kept.len() * c) as u64;
                turned.notify_all();
                at
            };
            for (j, idx) in kept.iter().enumerate() {
                placed.push((*idx, at + (j * c) as u64));
            }
            let data = &buf[..kept.len() * c];
            if data.is_empty() {
                continue;
            }
            // One write at a time: ext4 serialises writes that extend a
            // file on the inode's lock, and a second writer spins on that
            // lock in the kernel (`perf`: 37% of a two-writer run's samples
            // in rwsem_spin_on_owner) where here it sleeps.
            let mut direct_now = writing.lock().expect("a worker panicked");
            crate::disk::direct::write(out, data, at, &mut direct_now)?;
        }
    };
    let results: Vec<std::io::Result<Vec<(u64, u64)>>> = std::thread::scope(|s| {
        let run = || {
            let r = work();
            if r.is_err() {
                failed.store(true, Ordering::Relaxed);
                // Wake the workers waiting for a turn this one will not take.
                let _guard = turn.lock();
                turned.notify_all();
            }
            r
        };
        let others: Vec<_> = (1..threads.max(1)).map(|_| s.spawn(run)).collect();
        let mut all = vec![run()];
        all.extend(others.into_iter().map(|h| h.join().expect("qcow2 worker panicked")));
        all
    });
    if *writing.lock().expect("a worker panicked") {
        crate::disk::direct::set_direct(out, false);
    }
    let mut l2: BTreeMap<u64, Vec<u64>> = BTreeMap::new();
    for r in results {
        for (idx, at) in r? {
            let t = l2.entry(idx / L2_ENTRIES).or_insert_with(|| vec![0; L2_ENTRIES as usize]);
            t[(idx % L2_ENTRIES) as usize] = at | COPIED;
        }
    }
    let next = turn.into_inner().expect("a worker panicked").1;
    let refs = vec![1u32; (next / CLUSTER) as usize];
    write_tables(out, len, l1_size, l1_clusters, &l2, next, refs)
}

/// Everything after the data, which ends (cluster-aligned) at `data_end`:
/// the L2 tables, the refcount table and blocks (covering every cluster,
/// themselves included; `refs` holds the counts of the clusters before
/// `data_end`), then L1 and, last, the header.
fn write_tables(
    out: &File,
    len: u64,
    l1_size: u64,
    l1_clusters: u64,
    l2: &std::collections::BTreeMap<u64, Vec<u64>>,
    data_end: u64,
    mut refs: Vec<u32>,
) -> std::io::Result<()> {
    let l1_off = CLUSTER;
    let l2_off = data_end;
    let l2_count = l2.len() as u64;
    let mut l1 = vec![0u8; (l1_clusters * CLUSTER) as usize];
    let mut tables = vec![0u8; (l2_count * CLUSTER) as usize];
    for (t, (idx, entries)) in l2.iter().enumerate() {
        let at = l2_off + t as u64 * CLUSTER;
        l1[*idx as usize * 8..*idx as usize * 8 + 8].copy_from_slice(&(at | COPIED).to_be_bytes());
        let table = &mut tables[t * CLUSTER as usize..(t + 1) * CLUSTER as usize];
        for (i, e) in entries.iter().enumerate() {
            table[i * 8..i * 8 + 8].copy_from_slice(&e.to_be_bytes());
        }
    }
    out.write_all_at(&tables, l2_off)?;
    out.write_all_at(&l1, l1_off)?;

    let data_end_cluster = data_end / CLUSTER;
    let (mut rt_clusters, mut rb_count) = (1u64, 1u64);
    let total = loop {
        let total = data_end_cluster + l2_count + rt_clusters + rb_count;
        let need_rb = total.div_ceil(REFS_PER_BLOCK);
        let need_rt = (need_rb * 8).div_ceil(CLUSTER);
        if need_rb == rb_count && need_rt == rt_clusters {
            break total;
        }
        rb_count = need_rb;
        rt_clusters = need_rt;
    };
    refs.resize(data_end_cluster as usize, 0);
    refs.resize(total as usize, 1);
    let rt_off = l2_off + l2_count * CLUSTER;
    let rb_off = rt_off + rt_clusters * CLUSTER;
    write_refcounts(out, &refs, rt_off, rt_clusters, rb_off, rb_count)?;
    out.set_len(total * CLUSTER)?;

    out.write_all_at(&header(len, l1_size, l1_off, rt_off, rt_clusters), 0)
}

/// qcow2 compressed clusters: bit 62 of the L2 entry.
const COMPRESSED: u64 = 1 << 62;
/// With 64 KiB clusters the host offset has 62 − (16 − 8) = 54 bits; the
/// count of additional 512-byte sectors sits above it.
const CSIZE_SHIFT: u32 = 62 - (CLUSTER_BITS - 8);

/// One cluster as written: compressed (raw deflate, 4 KiB window, as qemu
/// reads it) or, when that does not save a sector, as is.
enum Stored {
    Deflate(Vec<u8>),
    Plain,
}

fn deflate_cluster(data: &[u8], level: u32) -> Stored {
    let mut c = flate2::Compress::new_with_window_bits(flate2::Compression::new(level), false, 12);
    let mut out = Vec::with_capacity(CLUSTER as usize - 512);
    match c.compress_vec(data, &mut out, flate2::FlushCompress::Finish) {
        Ok(flate2::Status::StreamEnd) => Stored::Deflate(out),
        _ => Stored::Plain,
    }
}

/// Write `raw` (of `len` bytes) as qcow2 with compressed clusters into `out`.
///
/// Layout: `[header][L1][data: compressed clusters packed byte by byte,
/// plain clusters cluster-aligned][L2 tables][refcount table][refcount
/// blocks]`. Tables go after the data so that what is stored depends only
/// on the content (not on where the raw file happens to have holes).
/// Refcounts follow qemu's rule: a host cluster counts once for every
/// compressed cluster whose sector range touches it.
pub fn write_compressed(raw: &File, len: u64, out: &File, level: u32, threads: usize) -> std::io::Result<()> {
    use std::collections::BTreeMap;
    use std::io::Write;

    let l1_size = len.div_ceil(CLUSTER * L2_ENTRIES);
    let l1_clusters = (l1_size * 8).div_ceil(CLUSTER).max(1);
    let l1_off = CLUSTER;
    let data_start = l1_off + l1_clusters * CLUSTER;
    super::empty(out)?;

    // refs[i]: refcount of host cluster i.
    let mut refs: Vec<u32> = vec![1; (1 + l1_clusters) as usize];
    let bump = |refs: &mut Vec<u32>, from: u64, to: u64| {
        for c in from / CLUSTER..to.div_ceil(CLUSTER) {
            if refs.len() <= c as usize {
                refs.resize(c as usize + 1, 0);
            }
            refs[c as usize] += 1;
        }
    };
    let mut l2: BTreeMap<u64, Vec<u64>> = BTreeMap::new();
    let mut cursor = data_start;
    let mut w = std::io::BufWriter::with_capacity(4 << 20, super::WriteAt::new(out, data_start));
    super::grains::for_each_grain::<Stored, _, _, std::io::Error>(
        raw,
        len,
        CLUSTER,
        threads,
        |data| deflate_cluster(data, level),
        |c, data, stored| {
            let entry = match stored {
                Stored::Deflate(z) => {
                    let off = cursor;
                    let end = off + z.len() as u64;
                    let extra = ((end - 1) >> 9) - (off >> 9);
                    w.write_all(&z)?;
                    cursor = end;
                    bump(&mut refs, off, ((end - 1) | 511) + 1);
                    COMPRESSED | (extra << CSIZE_SHIFT) | off
                }
                Stored::Plain => {
                    let off = cursor.div_ceil(CLUSTER) * CLUSTER;
                    w.write_all(&vec![0u8; (off - cursor) as usize])?;
                    w.write_all(data)?;
                    cursor = off + CLUSTER;
                    bump(&mut refs, off, off + CLUSTER);
                    off | COPIED
                }
            };
            let t = l2.entry(c / L2_ENTRIES).or_insert_with(|| vec![0; L2_ENTRIES as usize]);
            t[(c % L2_ENTRIES) as usize] = entry;
            Ok(())
        },
    )?;
    let data_end = cursor.div_ceil(CLUSTER) * CLUSTER;
    w.write_all(&vec![0u8; (data_end - cursor) as usize])?;
    w.flush()?;
    drop(w);
    let data_end_cluster = data_end / CLUSTER;
    refs.resize(data_end_cluster as usize, 0);
    if let Some(bad) = refs.iter().position(|r| *r > u16::MAX as u32) {
        return Err(std::io::Error::other(format!("qcow2: refcount of host cluster {bad} overflows 16 bits")));
    }

    write_tables(out, len, l1_size, l1_clusters, &l2, data_end, refs)
}

//! Reading a sparse raw image grain by grain (64 KiB), skipping holes and
//! all-zero grains, with an optional transform (compression) run on a few
//! threads. Results come back in ascending grain order, so the writers that
//! use this stay deterministic whatever the thread count.

use std::fs::File;
use std::ops::Range;
use std::os::unix::fs::FileExt;

use crate::tree::content::data_ranges_or_whole;

/// Grains read and transformed per batch: bounds memory to
/// `BATCH × grain size` of input plus the transformed output.
const BATCH: usize = 256;

/// Grain indices that may hold data: every grain touched by a data range of
/// the sparse file (the whole file when holes cannot be found).
pub fn candidate_grains(raw: &File, len: u64, grain: u64) -> std::io::Result<Vec<Range<u64>>> {
    let ranges = data_ranges_or_whole(raw, len)?;
    let mut out: Vec<Range<u64>> = Vec::new();
    for r in ranges {
        if r.start >= r.end {
            continue;
        }
        let (a, b) = (r.start / grain, r.end.div_ceil(grain));
        match out.last_mut() {
            Some(last) if last.end >= a => last.end = last.end.max(b),
            _ => out.push(a..b),
        }
    }
    Ok(out)
}

/// Whether `b` is all zeros. Ors 256-byte blocks without an early exit
/// inside a block (the compiler vectorises that), stopping at the first
/// block that holds data: several times faster than `iter().all(..)`.
pub fn is_zero(b: &[u8]) -> bool {
    let mut blocks = b.chunks_exact(256);
    for blk in &mut blocks {
        if blk.iter().fold(0u8, |a, x| a | x) != 0 {
            return false;
        }
    }
    blocks.remainder().iter().all(|x| *x == 0)
}

/// For every non-zero grain of `raw`, in ascending order, call
/// `sink(index, data, transformed)` where `data` is the grain (zero-padded
/// to a whole grain at the end of the image) and `transformed` is
/// `transform(data)`. Transforms run on `threads` threads.
pub fn for_each_grain<T, F, S, E>(raw: &File, len: u64, grain: u64, threads: usize, transform: F, mut sink: S) -> Result<(), E>
where
    T: Send,
    F: Fn(&[u8]) -> T + Sync,
    S: FnMut(u64, &[u8], T) -> Result<(), E>,
    E: From<std::io::Error>,
{
    let g = grain as usize;
    let mut batch: Vec<u64> = Vec::with_capacity(BATCH);
    let mut bufs = vec![0u8; BATCH * g];
    let mut flush = |batch: &mut Vec<u64>, bufs: &mut Vec<u8>| -> Result<(), E> {
        if batch.is_empty() {
            return Ok(());
        }
        // Read the batch (sequential reads are what the disk likes).
        for (i, c) in batch.iter().enumerate() {
            let start = c * grain;
            let n = grain.min(len - start) as usize;
            let b = &mut bufs[i * g..(i + 1) * g];
            raw.read_exact_at(&mut b[..n], start)?;
            b[n..].fill(0);
        }
        let n = batch.len();
        let nonzero: Vec<bool> = (0..n).map(|i| !is_zero(&bufs[i * g..(i + 1) * g])).collect();
        let bufs_ref = &bufs[..];
        let results = crate::parallel::map_ordered(n, threads, |i| nonzero[i].then(|| transform(&bufs_ref[i * g..(i + 1) * g])));
        for (i, r) in results.into_iter().enumerate() {
            if let Some(t) = r {
                sink(batch[i], &bufs[i * g..(i + 1) * g], t)?;
            }
        }
        batch.clear();
        Ok(())
    };
    for r in candidate_grains(raw, len, grain)? {
        for c in r {
            batch.push(c);
            if batch.len() == BATCH {
                flush(&mut batch, &mut bufs)?;
            }
        }
    }
    flush(&mut batch, &mut bufs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn is_zero_sees_any_byte() {
        for len in [0usize, 1, 255, 256, 257, 65536, 65536 + 3] {
            let mut b = vec![0u8; len];
            assert!(is_zero(&b));
            for at in [0, len / 2, len.saturating_sub(1)] {
                if len > 0 {
                    b[at] = 0x80;
                    assert!(!is_zero(&b), "len {len}, byte {at}");
                    b[at] = 0;
                }
            }
        }
    }

    #[test]
    fn skips_holes_and_zero_grains_in_order() {
        let f = tempfile::tempfile().unwrap();
        let g = 65536u64;
        f.set_len(40 * g + 100).unwrap();
        f.write_all_at(&[1], 3 * g + 5).unwrap();
        f.write_all_at(&vec![0u8; 2 * g as usize], 10 * g).unwrap(); // data, but zeros
        f.write_all_at(&[7; 10], 40 * g + 10).unwrap(); // partial last grain
        for threads in [1, 2, 3] {
            let mut seen = Vec::new();
            for_each_grain::<usize, _, _, std::io::Error>(
                &f,
                40 * g + 100,
                g,
                threads,
                |d| d.len(),
                |c, d, t| {
                    assert_eq!(t, g as usize);
                    assert!(d.iter().any(|b| *b != 0));
                    seen.push(c);
                    Ok(())
                },
            )
            .unwrap();
            assert_eq!(seen, vec![3, 40]);
        }
    }
}

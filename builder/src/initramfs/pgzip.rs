//! Parallel, reproducible gzip (pigz-style).
//!
//! The uncompressed stream is cut into fixed blocks of [`BLOCK`] bytes. Each
//! block is compressed on its own as raw deflate, primed with the last 32 KiB
//! of the data before it as the dictionary, and ended with a sync flush (the
//! last block is finished instead), so the compressed blocks concatenate into
//! one valid deflate stream. The output depends only on the input and the
//! level: block boundaries are fixed, so any number of threads gives the same
//! bytes.
//!
//! Inside a block, 64 KiB segments whose byte entropy shows they are already
//! compressed (`.deb`, `.xz`, `.zst`, firmware blobs …) are emitted as stored
//! blocks instead of being run through the match finder, which would spend
//! the most time on them for nothing (see [`looks_incompressible`]). This too
//! depends only on the data.
//!
//! Memory is bounded: at most about `2 × threads + 4` blocks (and their
//! compressed forms) are in flight between the producer, the compressing
//! workers and the in-order writer, whatever the size of the stream.
//!
//! The gzip header is fixed (no name, mtime 0, XFL 0, OS 3 = Unix); the
//! trailer holds the CRC-32 (combined from per-block CRCs) and the size
//! modulo 2³².

use std::io::{self, Write};
use std::sync::Arc;

use crossbeam_channel::{bounded, Receiver, Sender};
use flate2::{Compress, Compression, FlushCompress, Status};

/// Uncompressed bytes per parallel block.
pub const BLOCK: usize = 1 << 20;
/// Deflate's window: the dictionary each block is primed with.
const WINDOW: usize = 32 << 10;
/// Granularity of the incompressible-data test inside a block.
const SEGMENT: usize = 64 << 10;
/// The largest stored block deflate allows.
const STORED_MAX: usize = 65535;

/// The fixed gzip header: magic, deflate, no flags, mtime 0, XFL 0, OS Unix.
pub const HEADER: [u8; 10] = [0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 3];

/// Sizes of one compression run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// Uncompressed bytes.
    pub input: u64,
    /// Bytes written to the output (header and trailer included).
    pub output: u64,
}

/// Why a parallel gzip run failed.
#[derive(Debug)]
pub enum Failure<E> {
    /// The producer of the uncompressed stream failed.
    Produce(E),
    /// Writing the compressed output failed.
    Output(io::Error),
    /// The deflate engine refused (should not happen).
    Deflate(String),
}

/// A block of uncompressed data to compress, with what precedes it.
struct Job {
    prev: Option<Arc<Vec<u8>>>,
    data: Arc<Vec<u8>>,
    last: bool,
    done: Sender<Result<Done, String>>,
}

/// A compressed block.
struct Done {
    bytes: Vec<u8>,
    crc: crc32fast::Hasher,
}

/// The number of compressing threads to use by default: the available CPUs,
/// at most 16 (memory grows with the thread count; the output does not
/// change with it).
pub fn default_threads() -> usize {
    std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1).min(16)
}

/// Compress the stream that `produce` writes, with `threads` workers, to
/// `out`. `produce` runs on its own thread; `out` is written only from the
/// calling thread, in order.
pub fn compress<E, F>(level: u32, threads: usize, out: &mut dyn Write, produce: F) -> Result<Stats, Failure<E>>
where
    E: Send,
    F: FnOnce(&mut dyn Write) -> Result<(), E> + Send,
{
    let threads = threads.max(1);
    let depth = 2 * threads + 2;
    let (job_tx, job_rx) = bounded::<Job>(depth);
    let (order_tx, order_rx) = bounded::<Receiver<Result<Done, String>>>(depth);

    std::thread::scope(|s| {
        for _ in 0..threads {
            let job_rx = job_rx.clone();
            s.spawn(move || worker(level, job_rx));
        }
        drop(job_rx);
        let producer = s.spawn(move || {
            let mut w = BlockWriter { cur: Vec::with_capacity(BLOCK), pending: None, prev: None, jobs: job_tx, order: order_tx, total: 0 };
            // Outer error: the producer's; inner: the hand-off to the writer
            // broke, which happens only when the writer stopped (and says why).
            produce(&mut w).map(|()| w.finish())
        });

        let written = write_in_order(out, &order_rx);
        // Stop the producer early if the output failed.
        drop(order_rx);
        let produced = producer.join().expect("the initramfs producer thread panicked");
        let (bytes, crc) = written?;
        let total = produced.map_err(Failure::Produce)?.map_err(Failure::Output)?;
        let mut trailer = [0u8; 8];
        trailer[..4].copy_from_slice(&crc.finalize().to_le_bytes());
        trailer[4..].copy_from_slice(&(total as u32).to_le_bytes());
        out.write_all(&trailer).map_err(Failure::Output)?;
        Ok(Stats { input: total, output: bytes + 8 })
    })
}

/// Header, then each block as it completes, in order. Returns the bytes
/// written and the combined CRC.
fn write_in_order<E>(
    out: &mut dyn Write,
    order: &Receiver<Receiver<Result<Done, String>>>,
) -> Result<(u64, crc32fast::Hasher), Failure<E>> {
    out.write_all(&HEADER).map_err(Failure::Output)?;
    let mut n = HEADER.len() as u64;
    let mut crc = crc32fast::Hasher::new();
    for rx in order.iter() {
        // A closed slot means its worker died; the producer side reports it.
        let Ok(done) = rx.recv() else { break };
        let done = done.map_err(Failure::Deflate)?;
        out.write_all(&done.bytes).map_err(Failure::Output)?;
        n += done.bytes.len() as u64;
        crc.combine(&done.crc);
    }
    Ok((n, crc))
}

fn worker(level: u32, jobs: Receiver<Job>) {
    for job in jobs.iter() {
        let prev = job.prev.as_deref().map(|p| &p[p.len().saturating_sub(WINDOW)..]);
        let r = deflate_block(level, prev.unwrap_or(&[]), &job.data, job.last).map(|bytes| {
            let mut crc = crc32fast::Hasher::new();
            crc.update(&job.data);
            Done { bytes, crc }
        });
        // The writer may have gone away after an output error.
        let _ = job.done.send(r);
    }
}

/// Raw deflate of one block: `prev` is the data before it (at most 32 KiB
/// used), the result ends byte-aligned with a sync flush, or with the final
/// block when `last`.
///
/// Every compressed run gets a *fresh* deflate state: a state reused after
/// `reset()` gives different (valid) output depending on what it compressed
/// before (zlib-rs issue #459, also zlib-ng #2100), which would make the
/// output depend on which worker took which block.
pub fn deflate_block(level: u32, prev: &[u8], data: &[u8], last: bool) -> Result<Vec<u8>, String> {
    let mut out = Vec::with_capacity(data.len() / 2 + 1024);
    // Runs of segments of one kind: (start, end, stored).
    let mut runs: Vec<(usize, usize, bool)> = Vec::new();
    for (i, seg) in data.chunks(SEGMENT).enumerate() {
        let start = i * SEGMENT;
        let stored = looks_incompressible(seg);
        match runs.last_mut() {
            Some(r) if r.2 == stored => r.1 = start + seg.len(),
            _ => runs.push((start, start + seg.len(), stored)),
        }
    }
    if runs.is_empty() {
        runs.push((0, 0, false));
    }
    let nruns = runs.len();
    for (k, &(start, end, stored)) in runs.iter().enumerate() {
        let fin = last && k + 1 == nruns;
        if stored {
            let mut chunks = data[start..end].chunks(STORED_MAX).peekable();
            while let Some(chunk) = chunks.next() {
                let bfinal = fin && chunks.peek().is_none();
                out.push(u8::from(bfinal));
                out.extend_from_slice(&(chunk.len() as u16).to_le_bytes());
                out.extend_from_slice(&(!(chunk.len() as u16)).to_le_bytes());
                out.extend_from_slice(chunk);
            }
        } else {
            let mut c = Compress::new(Compression::new(level), false);
            let window = window_before(prev, &data[..start]);
            if !window.is_empty() {
                c.set_dictionary(&window).map_err(|e| format!("setting the deflate dictionary: {e}"))?;
            }
            let flush = if fin { FlushCompress::Finish } else { FlushCompress::Sync };
            deflate_all(&mut c, &data[start..end], &mut out, flush)?;
        }
    }
    Ok(out)
}

/// The last 32 KiB of `prev ++ head`.
fn window_before(prev: &[u8], head: &[u8]) -> Vec<u8> {
    if head.len() >= WINDOW {
        return head[head.len() - WINDOW..].to_vec();
    }
    let from_prev = (WINDOW - head.len()).min(prev.len());
    let mut w = Vec::with_capacity(from_prev + head.len());
    w.extend_from_slice(&prev[prev.len() - from_prev..]);
    w.extend_from_slice(head);
    w
}

fn deflate_all(c: &mut Compress, mut input: &[u8], out: &mut Vec<u8>, flush: FlushCompress) -> Result<(), String> {
    loop {
        if out.capacity() - out.len() < 4096 {
            out.reserve(input.len() / 2 + 8192);
        }
        let before_in = c.total_in();
        let before_out = out.len();
        let status = c.compress_vec(input, out, flush).map_err(|e| format!("deflate: {e}"))?;
        input = &input[(c.total_in() - before_in) as usize..];
        let full = out.len() == out.capacity();
        match status {
            Status::StreamEnd => return Ok(()),
            // A flush is complete when input is used up and output was not cut short.
            _ if input.is_empty() && !full && !matches!(flush, FlushCompress::Finish) => return Ok(()),
            Status::BufError if !full && out.len() == before_out => {
                return Err("deflate made no progress".into());
            }
            _ => {}
        }
    }
}

/// Whether a segment is already compressed: its byte distribution is so flat
/// that its order-0 entropy is within about 0.01 bit of 8 bits per byte, where
/// deflate cannot gain anything worth the time (at most 0.125 %).
///
/// Integer arithmetic only, so the decision (and the output) is the same on
/// every platform: the entropy deficit is about χ² / (2 n ln 2) bits, with
/// χ² = Σ (256·cᵢ − n)² / (256 n); deficit < 0.01 ⇔ Σ (256·cᵢ − n)² <
/// 256 n² · 0.01386.
pub fn looks_incompressible(seg: &[u8]) -> bool {
    if seg.len() < 4096 {
        return false;
    }
    let mut hist = [0u32; 256];
    for &b in seg {
        hist[b as usize] += 1;
    }
    let n = seg.len() as i128;
    let sum: i128 = hist.iter().map(|&c| (256 * c as i128 - n).pow(2)).sum();
    sum * 10_000 < 256 * n * n * 139
}

/// Splits what the producer writes into blocks and dispatches them.
struct BlockWriter {
    cur: Vec<u8>,
    /// A full block not sent yet: whether it is the last one is known only
    /// when more data arrives or the stream ends.
    pending: Option<Arc<Vec<u8>>>,
    prev: Option<Arc<Vec<u8>>>,
    jobs: Sender<Job>,
    order: Sender<Receiver<Result<Done, String>>>,
    total: u64,
}

impl BlockWriter {
    fn send(&mut self, data: Arc<Vec<u8>>, last: bool) -> io::Result<()> {
        let (done, slot) = bounded(1);
        let closed = || io::Error::new(io::ErrorKind::BrokenPipe, "the gzip writer stopped");
        // The slot first: the writer waits on slots in order, which bounds
        // how far the producer runs ahead.
        self.order.send(slot).map_err(|_| closed())?;
        let prev = self.prev.replace(data.clone());
        self.jobs.send(Job { prev, data, last, done }).map_err(|_| closed())
    }

    fn finish(mut self) -> io::Result<u64> {
        let cur = std::mem::take(&mut self.cur);
        if !cur.is_empty() {
            if let Some(p) = self.pending.take() {
                self.send(p, false)?;
            }
            self.pending = Some(Arc::new(cur));
        }
        let last = self.pending.take().unwrap_or_default();
        self.send(last, true)?;
        Ok(self.total)
    }
}

impl Write for BlockWriter {
    fn write(&mut self, mut buf: &[u8]) -> io::Result<usize> {
        let n = buf.len();
        while !buf.is_empty() {
            if self.cur.len() == BLOCK {
                let full = std::mem::replace(&mut self.cur, Vec::with_capacity(BLOCK));
                if let Some(p) = self.pending.replace(Arc::new(full)) {
                    self.send(p, false)?;
                }
            }
            let take = (BLOCK - self.cur.len()).min(buf.len());
            self.cur.extend_from_slice(&buf[..take]);
            buf = &buf[take..];
        }
        self.total += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Compress a byte slice (tests and small inputs).
pub fn compress_bytes(data: &[u8], level: u32, threads: usize) -> Vec<u8> {
    let mut out = Vec::new();
    let r: Result<Stats, Failure<io::Error>> = compress(level, threads, &mut out, |w| w.write_all(data));
    match r {
        Ok(_) => out,
        Err(Failure::Produce(e) | Failure::Output(e)) => panic!("compressing in memory: {e}"),
        Err(Failure::Deflate(e)) => panic!("compressing in memory: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    /// Deterministic test data: compressible text, pseudo-random runs
    /// (incompressible), zeros, and repeats across block boundaries.
    fn sample(len: usize) -> Vec<u8> {
        let mut v = Vec::with_capacity(len);
        let mut x: u64 = 0x9e3779b97f4a7c15;
        let mut i = 0usize;
        while v.len() < len {
            match (i / 3) % 4 {
                0 => v.extend_from_slice(format!("line {i}: the quick brown fox {} jumps\n", i % 97).as_bytes()),
                1 => {
                    for _ in 0..(40_000 + i % 5000) {
                        x ^= x << 13;
                        x ^= x >> 7;
                        x ^= x << 17;
                        v.push(x as u8);
                    }
                }
                2 => v.extend(std::iter::repeat_n(0u8, 3000 + i)),
                _ => {
                    let start = v.len().saturating_sub(50_000);
                    let copy: Vec<u8> = v[start..start + (v.len() - start).min(20_000)].to_vec();
                    v.extend_from_slice(&copy);
                }
            }
            i += 1;
        }
        v.truncate(len);
        v
    }

    fn gunzip(gz: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(gz).read_to_end(&mut out).expect("flate2 decodes our gzip");
        out
    }

    fn system_gunzip(gz: &[u8]) -> Option<Vec<u8>> {
        let mut child = match std::process::Command::new("gzip")
            .arg("-dc")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
        {
            Ok(c) => c,
            Err(e) => {
                eprintln!("NOTICE: system gzip not runnable ({e}); skipping that oracle");
                return None;
            }
        };
        let mut stdin = child.stdin.take().expect("piped");
        let data = gz.to_vec();
        let feeder = std::thread::spawn(move || stdin.write_all(&data));
        let out = child.wait_with_output().expect("gzip runs");
        feeder.join().expect("feeder").expect("feeding gzip");
        assert!(out.status.success(), "gzip -dc failed: {}", out.status);
        Some(out.stdout)
    }

    #[test]
    fn round_trips_with_flate2_and_system_gzip() {
        for len in [0, 1, 100, WINDOW - 1, WINDOW + 1, BLOCK - 1, BLOCK, BLOCK + 1, 3 * BLOCK + 12345] {
            let data = sample(len);
            for level in [1, 6, 9] {
                let gz = compress_bytes(&data, level, 2);
                assert_eq!(&gz[..10], &HEADER);
                assert!(gunzip(&gz) == data, "flate2 round trip, len {len} level {level}");
                if let Some(d) = system_gunzip(&gz) {
                    assert!(d == data, "gzip -dc round trip, len {len} level {level}");
                }
            }
        }
    }

    #[test]
    fn identical_for_any_thread_count_and_run() {
        let data = sample(5 * BLOCK + 777);
        let one = compress_bytes(&data, 6, 1);
        for threads in [1, 2, 3, 8] {
            assert!(compress_bytes(&data, 6, threads) == one, "{threads} threads differ");
        }
        assert!(compress_bytes(&data, 6, 2) == compress_bytes(&data, 6, 2));
    }

    #[test]
    fn incompressible_segments_are_stored_and_still_decode() {
        let data = sample(2 * BLOCK);
        let random = data.chunks(SEGMENT).filter(|s| looks_incompressible(s)).count();
        let text = vec![b'a'; SEGMENT];
        assert!(!looks_incompressible(&text));
        assert!(random > 0, "the sample has incompressible segments");
        let gz = compress_bytes(&data, 6, 2);
        assert!(gunzip(&gz) == data);
        // Within 1 % of plain single-stream deflate at the same level.
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::new(6));
        e.write_all(&data).unwrap();
        let plain = e.finish().unwrap();
        assert!(gz.len() * 100 <= plain.len() * 101, "{} vs plain {}", gz.len(), plain.len());
    }

    #[test]
    fn empty_input_is_a_valid_gzip() {
        let gz = compress_bytes(&[], 6, 2);
        assert_eq!(gunzip(&gz), Vec::<u8>::new());
        assert_eq!(&gz[gz.len() - 8..], &[0u8; 8]);
    }

    #[test]
    fn producer_error_is_reported() {
        let mut out = Vec::new();
        let r = compress(6, 2, &mut out, |w| {
            w.write_all(&sample(3 * BLOCK))?;
            Err::<(), io::Error>(io::Error::other("boom"))
        });
        assert!(matches!(r, Err(Failure::Produce(e)) if e.to_string() == "boom"));
    }

    #[test]
    fn output_error_is_reported() {
        struct Full;
        impl Write for Full {
            fn write(&mut self, _: &[u8]) -> io::Result<usize> {
                Err(io::Error::other("disk full"))
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
        let r = compress(6, 2, &mut Full, |w| w.write_all(&sample(4 * BLOCK)));
        assert!(matches!(r, Err(Failure::Output(e)) if e.to_string() == "disk full"));
    }
}

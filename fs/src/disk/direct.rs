//! Bulk data written on a second thread with O_DIRECT while this thread
//! reads (and checksums) the next chunk: the VHD's data read from the raw
//! image, and the btrfs writer's data extents read from the tree's files.
//! The plain qcow2 writer has its own workers (reads in parallel, writes in
//! chunk order) but the same pieces: [`set_direct`], [`Buf`],
//! [`write_cached`].
//!
//! Why: reading the raw image (from the page cache, where the build just
//! left it) and writing the output through the page cache cost about the
//! same, and the final fsync of an atomic output then has to write all of
//! it back. With O_DIRECT the data goes from our buffer to the disk, on the
//! writer thread, overlapping the reads, and the fsync has only the tables
//! left. On the bench input (bench/qcow2.sh: 2 GiB raw, 258 MiB of data,
//! medians of 11 interleaved runs) the plain qcow2 took 1.27× `qemu-img
//! convert`'s time with buffered writes on one thread, 0.95× with O_DIRECT
//! on one thread, and 0.70× with O_DIRECT on the writer thread (the figures
//! of that time; the README's table has the current ones);
//! `copy_file_range` of the non-zero runs was slower than buffered writes
//! (the read for the zero test is needed anyway).
//!
//! Where the file system refuses O_DIRECT (the flag, or a write with it),
//! the writes go through the page cache instead; writes that are not
//! 4 KiB-aligned always do. The bytes written are the same either way.

use std::fs::File;
use std::os::unix::fs::FileExt;

use crossbeam_channel::{Receiver, Sender};

/// Alignment of buffers, offsets and lengths for O_DIRECT.
const ALIGN: usize = 4096;
/// Buffers in flight between the two threads.
const BUFFERS: usize = 3;

/// Largest single write through the page cache.
const CACHED_PIECE: usize = 1 << 20;

/// Write `data` at `at` through the page cache, in pieces of at most 1 MiB.
///
/// Why: the kernel sizes the page-cache folios it allocates for a write by
/// the write's length, and writes of 2 MiB or more get 2 MiB folios, taken
/// from the free blocks that a virtual machine's balloon reports to the
/// host as unused; touching them again makes the host fault them in. On
/// this project's build machines (Firecracker guests), `dd bs=2M` or `4M`
/// of 256 MiB into a new file took 86–964 ms, `bs=1M` or less 84–113 ms
/// every time. Elsewhere the pieces cost a few µs of syscalls each.
pub fn write_cached(out: &File, data: &[u8], at: u64) -> std::io::Result<()> {
    let mut done = 0;
    for piece in data.chunks(CACHED_PIECE) {
        out.write_all_at(piece, at + done)?;
        done += piece.len() as u64;
    }
    Ok(())
}

/// Write `data` at `at` into `out`, whose O_DIRECT flag is on while
/// `*direct`: with O_DIRECT when the write is 4 KiB-aligned, else through
/// the page cache ([`write_cached`]). A file system that took the flag but
/// refuses the write (EINVAL) gets this write and every later one through
/// the page cache: the flag goes off and `*direct` becomes false.
pub fn write(out: &File, data: &[u8], at: u64, direct: &mut bool) -> std::io::Result<()> {
    if !*direct {
        return write_cached(out, data, at);
    }
    if at % ALIGN as u64 != 0 || data.len() % ALIGN != 0 {
        set_direct(out, false);
        let r = write_cached(out, data, at);
        set_direct(out, true);
        return r;
    }
    match out.write_all_at(data, at) {
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
            *direct = false;
            set_direct(out, false);
            write_cached(out, data, at)
        }
        r => r,
    }
}

/// Turn O_DIRECT on or off for `out`; false when the file system refuses it.
pub fn set_direct(out: &File, on: bool) -> bool {
    use std::os::fd::AsRawFd;
    let fd = out.as_raw_fd();
    // SAFETY: fcntl on an open fd, with flag arguments only.
    let fl = unsafe { libc::fcntl(fd, libc::F_GETFL) };
    if fl < 0 {
        return false;
    }
    let fl = if on { fl | libc::O_DIRECT } else { fl & !libc::O_DIRECT };
    // SAFETY: as above.
    unsafe { libc::fcntl(fd, libc::F_SETFL, fl) == 0 }
}

/// A zeroed buffer whose data starts on a 4 KiB boundary, as O_DIRECT
/// wants: a Vec over-allocated by 4 KiB and an offset into it (no unsafe
/// allocation code).
pub struct Buf {
    v: Vec<u8>,
    off: usize,
    len: usize,
}

impl Buf {
    pub fn new(len: usize) -> Self {
        let v = vec![0u8; len + ALIGN];
        let off = (ALIGN - v.as_ptr() as usize % ALIGN) % ALIGN;
        Buf { v, off, len }
    }
    pub fn get(&self) -> &[u8] {
        &self.v[self.off..self.off + self.len]
    }
    pub fn get_mut(&mut self) -> &mut [u8] {
        &mut self.v[self.off..self.off + self.len]
    }
}

/// The reading side: takes empty buffers, hands filled ones to the writer.
pub struct Pipe {
    tx: Sender<(Buf, usize, u64)>,
    back: Receiver<Buf>,
    spare: Option<Buf>,
}

impl Pipe {
    /// A buffer to fill; None when the writer has stopped on an error
    /// (which [`with_writer`] returns): stop reading then.
    pub fn buffer(&mut self) -> Option<Buf> {
        self.spare.take().or_else(|| self.back.recv().ok())
    }
    /// Write the first `n` bytes of `buf` at `at` (nothing when `n` is 0:
    /// the buffer is kept for the next chunk). False when the writer has
    /// stopped on an error: stop reading then.
    pub fn write(&mut self, buf: Buf, n: usize, at: u64) -> bool {
        if n == 0 {
            self.spare = Some(buf);
            return true;
        }
        self.tx.send((buf, n, at)).is_ok()
    }
}

/// Run `read` on this thread with a [`Pipe`] of `chunk`-byte buffers whose
/// writes a second thread makes into `out`, with O_DIRECT where it can if
/// `direct` (else through the page cache). Returns the writer's error
/// first, else `read`'s. O_DIRECT is off again when this returns.
pub fn with_writer(out: &File, chunk: usize, direct: bool, read: impl FnOnce(&mut Pipe) -> std::io::Result<()>) -> std::io::Result<()> {
    let direct = direct && set_direct(out, true);
    let result = std::thread::scope(|s| {
        let (tx, rx) = crossbeam_channel::bounded::<(Buf, usize, u64)>(BUFFERS);
        let (back_tx, back_rx) = crossbeam_channel::bounded::<Buf>(BUFFERS);
        for _ in 0..BUFFERS {
            back_tx.send(Buf::new(chunk)).expect("a fresh channel has room");
        }
        let writer = s.spawn(move || -> std::io::Result<()> {
            let mut direct = direct;
            for (buf, n, at) in rx {
                write(out, &buf.get()[..n], at, &mut direct)?;
                let _ = back_tx.send(buf);
            }
            Ok(())
        });
        let mut pipe = Pipe { tx, back: back_rx, spare: None };
        let read = read(&mut pipe);
        drop(pipe);
        let written = writer.join().expect("output writer thread panicked");
        written.and(read)
    });
    if direct {
        set_direct(out, false);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aligned_unaligned_and_empty_writes_land_where_asked() {
        let f = tempfile::tempfile().unwrap();
        with_writer(&f, 8192, true, |p| {
            let mut b = p.buffer().unwrap();
            b.get_mut().fill(1);
            assert!(p.write(b, 8192, 4096));
            let mut b = p.buffer().unwrap();
            b.get_mut().fill(2);
            assert!(p.write(b, 0, 0)); // kept, nothing written
            let mut b = p.buffer().unwrap();
            assert!(b.get().iter().all(|x| *x == 2), "the kept buffer comes back first");
            b.get_mut().fill(3);
            assert!(p.write(b, 100, 20000)); // unaligned
            Ok(())
        })
        .unwrap();
        let mut got = vec![0u8; 20100];
        f.read_exact_at(&mut got, 0).unwrap();
        assert!(got[..4096].iter().all(|x| *x == 0));
        assert!(got[4096..12288].iter().all(|x| *x == 1));
        assert!(got[12288..20000].iter().all(|x| *x == 0));
        assert!(got[20000..].iter().all(|x| *x == 3));
        assert_eq!(f.metadata().unwrap().len(), 20100);
    }

    #[test]
    fn a_read_error_is_returned_after_the_writes() {
        let f = tempfile::tempfile().unwrap();
        let e = with_writer(&f, 4096, true, |p| {
            let b = p.buffer().unwrap();
            p.write(b, 4096, 0);
            Err(std::io::Error::other("read failed"))
        })
        .unwrap_err();
        assert_eq!(e.to_string(), "read failed");
        assert_eq!(f.metadata().unwrap().len(), 4096);
    }
}

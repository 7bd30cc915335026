//! Work spread over a few threads with results in a fixed order, so that
//! what is written does not depend on the thread count.

/// Number of worker threads for compression and conversion: at most 2 by
/// default (this is a build tool sharing the machine),
/// `BUILD_IMAGE_THREADS` overrides.
pub fn threads() -> usize {
    std::env::var("BUILD_IMAGE_THREADS")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
        .filter(|n| *n > 0)
        .unwrap_or_else(|| std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1).min(2))
}

/// `[f(0), f(1), …, f(n - 1)]`, computed on up to `threads` threads
/// (worker w takes w, w + threads, …; one thread: right here).
pub fn map_ordered<T: Send>(n: usize, threads: usize, f: impl Fn(usize) -> T + Sync) -> Vec<T> {
    let workers = threads.clamp(1, n.max(1));
    if workers == 1 {
        return (0..n).map(f).collect();
    }
    let f = &f;
    let parts: Vec<Vec<(usize, T)>> = std::thread::scope(|s| {
        let hs: Vec<_> = (0..workers).map(|w| s.spawn(move || (w..n).step_by(workers).map(|i| (i, f(i))).collect::<Vec<_>>())).collect();
        hs.into_iter().map(|h| h.join().expect("worker thread panicked")).collect()
    });
    let mut out: Vec<Option<T>> = (0..n).map(|_| None).collect();
    for (i, t) in parts.into_iter().flatten() {
        out[i] = Some(t);
    }
    out.into_iter().map(|t| t.expect("every index has a result")).collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn results_come_back_in_order_for_any_thread_count() {
        for threads in [1, 2, 3, 8] {
            for n in [0, 1, 5, 17] {
                assert_eq!(
                    super::map_ordered(n, threads, |i| i * i),
                    (0..n).map(|i| i * i).collect::<Vec<_>>(),
                    "{threads} threads, {n} items"
                );
            }
        }
    }
}

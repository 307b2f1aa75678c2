//! When a pass is worth the thread pool.
//!
//! Why: handing a pass to rayon's pool from the caller's thread costs a wake-up and a wait on a
//! latch (tens of microseconds on a busy 2-core VM). At batch 1 a small network's layers are
//! smaller than that: EENet-8 at width 8 spent 63 % of a batch-1 forward pass in the kernel's
//! scheduler (`sched_yield`, futex wake-ups) with every pass split across threads. Below these
//! sizes a pass runs on the calling thread.

use rayon::prelude::*;

/// Multiply-adds below which a convolution runs on the calling thread (EENet-8's layers at batch 1
/// are under it, ResNet-20's 3×3 layers at batch 1 over it).
pub(crate) const SERIAL_MACS: usize = 1 << 20;

/// Values below which an elementwise or pooling pass runs on the calling thread.
pub(crate) const SERIAL_VALUES: usize = 1 << 16;

/// `f(i, chunk)` for every `chunk`-long piece of `data`, on the pool when `work` reaches
/// `serial_below`, else on this thread.
pub(crate) fn for_each_chunk<T, F>(data: &mut [T], chunk: usize, work: usize, serial_below: usize, f: F)
where
    T: Send,
    F: Fn((usize, &mut [T])) + Sync + Send,
{
    if chunk == 0 {
        return;
    }
    if work < serial_below {
        data.chunks_mut(chunk).enumerate().for_each(f);
    } else {
        data.par_chunks_mut(chunk).enumerate().for_each(f);
    }
}

//! Activation buffers recycled from one training step to the next.

use std::sync::Mutex;

use crate::Act;

/// Buffers below this many values are not worth keeping.
const MIN_KEPT: usize = 1 << 12;

/// A pool of `f32` buffers shared by the threads of a training pass.
///
/// Why: a step allocates and frees tens of megabyte-sized buffers; fresh ones cost a zeroing
/// pass (and, from the kernel, page faults), recycled ones are overwritten by their next user.
#[derive(Debug, Default)]
pub struct BufferPool(Mutex<Vec<Vec<f32>>>);

impl BufferPool {
    /// A buffer of `len` values whose contents are unspecified (every user overwrites them): the
    /// smallest kept buffer that fits, or a new one.
    pub fn take(&self, len: usize) -> Vec<f32> {
        let mut free = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let best = free
            .iter()
            .enumerate()
            .filter(|(_, v)| v.capacity() >= len)
            .min_by_key(|(_, v)| v.capacity())
            .map(|(i, _)| i);
        let mut v = match best {
            Some(i) => free.swap_remove(i),
            None => Vec::new(),
        };
        drop(free);
        v.resize(len, 0.0);
        v
    }

    /// Keeps `v` for a later [`BufferPool::take`].
    pub fn give(&self, v: Vec<f32>) {
        if v.capacity() >= MIN_KEPT {
            self.0.lock().unwrap_or_else(|e| e.into_inner()).push(v);
        }
    }

    /// Keeps the buffer of `a`, if any.
    pub fn give_act(&self, a: Option<Act>) {
        if let Some(a) = a {
            self.give(a.data);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reuses_the_smallest_buffer_that_fits() {
        let pool = BufferPool::default();
        pool.give(Vec::with_capacity(MIN_KEPT * 4));
        pool.give(Vec::with_capacity(MIN_KEPT * 2));
        pool.give(vec![0.0; 8]); // too small to keep
        let v = pool.take(MIN_KEPT + 1);
        assert_eq!(v.len(), MIN_KEPT + 1);
        assert!(v.capacity() >= MIN_KEPT * 2 && v.capacity() < MIN_KEPT * 4);
        let w = pool.take(MIN_KEPT * 3);
        assert!(w.capacity() >= MIN_KEPT * 4);
        assert_eq!(pool.0.lock().unwrap().len(), 0);
    }
}

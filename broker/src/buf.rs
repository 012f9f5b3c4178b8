//! Block-aligned I/O buffers and a pool that reuses them.
//!
//! O_DIRECT needs the memory address, the file offset and the length of every transfer to be
//! multiples of the logical block size. `AlignedBuf` guarantees the address; its length is
//! whatever the caller filled, and the device layer checks lengths and offsets.

use std::alloc::{alloc_zeroed, dealloc, Layout};
use std::ptr::NonNull;
use std::sync::{Arc, Mutex};

/// The logical block size of every zoned device: the unit of alignment for O_DIRECT.
pub const BLOCK_SIZE: usize = 4096;

/// A heap buffer whose start is aligned to `BLOCK_SIZE` and whose capacity is a whole number of
/// blocks. Every byte is initialised (a new buffer is zeroed), but bytes beyond `len` of a
/// reused buffer hold old data: writers zero what they pad (`pad_to_block`, `extend_zeros`).
pub struct AlignedBuf {
    ptr: NonNull<u8>,
    len: usize,
    capacity: usize,
}

// Safety: AlignedBuf owns its allocation exclusively, like Vec<u8>.
unsafe impl Send for AlignedBuf {}
unsafe impl Sync for AlignedBuf {}

impl AlignedBuf {
    /// A zeroed buffer of at least `capacity_bytes`, rounded up to whole blocks, with length 0.
    pub fn with_capacity(capacity_bytes: usize) -> AlignedBuf {
        let capacity = round_up(capacity_bytes.max(1), BLOCK_SIZE);
        let layout = Layout::from_size_align(capacity, BLOCK_SIZE).expect("aligned layout");
        // Safety: layout has a non-zero size.
        let raw = unsafe { alloc_zeroed(layout) };
        let ptr = NonNull::new(raw).unwrap_or_else(|| std::alloc::handle_alloc_error(layout));
        AlignedBuf {
            ptr,
            len: 0,
            capacity,
        }
    }

    /// A zeroed buffer of exactly `len_bytes` (which must be a multiple of `BLOCK_SIZE`).
    pub fn zeroed(len_bytes: usize) -> AlignedBuf {
        assert_eq!(len_bytes % BLOCK_SIZE, 0, "aligned length");
        let mut buf = AlignedBuf::with_capacity(len_bytes);
        buf.len = len_bytes;
        buf
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }

    pub fn remaining(&self) -> usize {
        self.capacity - self.len
    }

    /// Appends `bytes`; panics if they do not fit (callers check `remaining` first: an
    /// overflow here is a logic error, never input-dependent).
    pub fn extend_from_slice(&mut self, bytes: &[u8]) {
        assert!(bytes.len() <= self.remaining(), "AlignedBuf overflow");
        self.spare_mut()[..bytes.len()].copy_from_slice(bytes);
        self.len += bytes.len();
    }

    /// The writable tail after `len`.
    pub fn spare_mut(&mut self) -> &mut [u8] {
        // Safety: the allocation is `capacity` bytes long.
        unsafe {
            std::slice::from_raw_parts_mut(
                self.ptr.as_ptr().add(self.len),
                self.capacity - self.len,
            )
        }
    }

    /// Sets the length. Every byte of the allocation is initialised (zeroed when allocated), so
    /// this is safe; bytes exposed by growing hold whatever was there.
    pub fn set_len(&mut self, len: usize) {
        assert!(len <= self.capacity, "AlignedBuf::set_len beyond capacity");
        self.len = len;
    }

    /// Appends `count` zero bytes.
    pub fn extend_zeros(&mut self, count: usize) {
        assert!(count <= self.remaining(), "AlignedBuf overflow");
        self.spare_mut()[..count].fill(0);
        self.len += count;
    }

    /// Pads with zeros up to the next block boundary (a no-op when already aligned).
    pub fn pad_to_block(&mut self) {
        let padded = round_up(self.len, BLOCK_SIZE);
        assert!(padded <= self.capacity);
        let len = self.len;
        // Safety: within the allocation.
        unsafe { std::ptr::write_bytes(self.ptr.as_ptr().add(len), 0, padded - len) };
        self.len = padded;
    }

    /// Empties the buffer and zeroes what was used, so padding stays zero on reuse.
    pub fn clear(&mut self) {
        let len = self.len;
        // Safety: within the allocation.
        unsafe { std::ptr::write_bytes(self.ptr.as_ptr(), 0, len) };
        self.len = 0;
    }

    /// Drops the first `count` bytes, moving the rest to the front (used to keep a partially
    /// written block after its full predecessors were handed to the device).
    pub fn drain_front(&mut self, count: usize) {
        assert!(count <= self.len);
        let rest = self.len - count;
        // Safety: both ranges lie within the allocation; `copy` handles overlap.
        unsafe {
            std::ptr::copy(self.ptr.as_ptr().add(count), self.ptr.as_ptr(), rest);
            std::ptr::write_bytes(self.ptr.as_ptr().add(rest), 0, count);
        }
        self.len = rest;
    }

    pub fn as_ptr(&self) -> *const u8 {
        self.ptr.as_ptr()
    }

    pub fn as_mut_ptr(&mut self) -> *mut u8 {
        self.ptr.as_ptr()
    }
}

impl Drop for AlignedBuf {
    fn drop(&mut self) {
        let layout = Layout::from_size_align(self.capacity, BLOCK_SIZE).expect("aligned layout");
        // Safety: allocated in `with_capacity` with this layout.
        unsafe { dealloc(self.ptr.as_ptr(), layout) };
    }
}

impl std::ops::Deref for AlignedBuf {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        // Safety: `len <= capacity` and the bytes are initialised.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }
}

impl std::ops::DerefMut for AlignedBuf {
    fn deref_mut(&mut self) -> &mut [u8] {
        // Safety: as in Deref.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.len) }
    }
}

impl AsRef<[u8]> for AlignedBuf {
    fn as_ref(&self) -> &[u8] {
        self
    }
}

impl std::fmt::Debug for AlignedBuf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AlignedBuf")
            .field("len", &self.len)
            .field("capacity", &self.capacity)
            .finish()
    }
}

/// Rounds `value` up to a multiple of `multiple` (a power of two or any non-zero value).
pub fn round_up(value: usize, multiple: usize) -> usize {
    assert!(multiple > 0);
    value.div_ceil(multiple) * multiple
}

/// A bounded free list of equally sized buffers, so steady-state appends do not allocate.
#[derive(Clone)]
pub struct BufferPool {
    inner: Arc<PoolInner>,
}

struct PoolInner {
    buffer_bytes: usize,
    buffers_kept_max: usize,
    free: Mutex<Vec<AlignedBuf>>,
}

impl BufferPool {
    pub fn new(buffer_bytes: usize, buffers_kept_max: usize) -> BufferPool {
        BufferPool {
            inner: Arc::new(PoolInner {
                buffer_bytes: round_up(buffer_bytes, BLOCK_SIZE),
                buffers_kept_max,
                free: Mutex::new(Vec::new()),
            }),
        }
    }

    pub fn buffer_bytes(&self) -> usize {
        self.inner.buffer_bytes
    }

    /// An empty buffer of `buffer_bytes` capacity, reused when one is free.
    pub fn take(&self) -> AlignedBuf {
        let reused = self.inner.free.lock().expect("pool lock").pop();
        reused.unwrap_or_else(|| AlignedBuf::with_capacity(self.inner.buffer_bytes))
    }

    /// Returns a buffer; it is kept (emptied, not zeroed: zeroing a chunk per write costs more
    /// than the few bytes writers pad explicitly) if the pool is below its bound and it has the
    /// pool's size, dropped otherwise.
    pub fn give(&self, mut buf: AlignedBuf) {
        if buf.capacity() != self.inner.buffer_bytes {
            return;
        }
        let mut free = self.inner.free.lock().expect("pool lock");
        if free.len() < self.inner.buffers_kept_max {
            buf.set_len(0);
            free.push(buf);
        }
    }
}

/// A bounded free list of read buffers of assorted sizes, so steady scans neither allocate nor
/// fault in (and zero) fresh pages for every window. `take` hands out the smallest free buffer
/// large enough (best fit); buffers come back when their `PooledBuf` owner is dropped, i.e.
/// when the last `Bytes` slice of a window is gone. The pool keeps at most `buffers_kept_max`
/// buffers and `bytes_kept_max` bytes; anything beyond is freed as before.
#[derive(Clone)]
pub struct ReadBufferPool {
    inner: Arc<ReadPoolInner>,
}

struct ReadPoolInner {
    buffers_kept_max: usize,
    bytes_kept_max: usize,
    free: Mutex<ReadFree>,
}

#[derive(Default)]
struct ReadFree {
    buffers: Vec<AlignedBuf>,
    bytes: usize,
}

impl ReadBufferPool {
    pub fn new(buffers_kept_max: usize, bytes_kept_max: usize) -> ReadBufferPool {
        ReadBufferPool {
            inner: Arc::new(ReadPoolInner {
                buffers_kept_max,
                bytes_kept_max,
                free: Mutex::new(ReadFree::default()),
            }),
        }
    }

    /// An empty buffer of at least `capacity_bytes`: the smallest free one that fits, or a new
    /// one. A free buffer more than twice as large is left for larger reads.
    pub fn take(&self, capacity_bytes: usize) -> AlignedBuf {
        let wanted = round_up(capacity_bytes.max(1), BLOCK_SIZE);
        let mut free = self.inner.free.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let best = free
            .buffers
            .iter()
            .enumerate()
            .filter(|(_, buf)| buf.capacity() >= wanted && buf.capacity() / 2 <= wanted)
            .min_by_key(|(_, buf)| buf.capacity())
            .map(|(at, _)| at);
        match best {
            Some(at) => {
                let mut buf = free.buffers.swap_remove(at);
                free.bytes -= buf.capacity();
                buf.set_len(0);
                buf
            }
            None => {
                drop(free);
                AlignedBuf::with_capacity(wanted)
            }
        }
    }

    /// Returns a buffer: kept while the pool is within its bounds, freed otherwise. To make
    /// room, smaller free buffers are freed for a larger one (large windows cost the most to
    /// fault in). Its old contents stay (readers only look at what a read filled).
    pub fn give(&self, buf: AlignedBuf) {
        let capacity = buf.capacity();
        if capacity > self.inner.bytes_kept_max || self.inner.buffers_kept_max == 0 {
            return;
        }
        let mut free = self.inner.free.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        while free.buffers.len() >= self.inner.buffers_kept_max || free.bytes + capacity > self.inner.bytes_kept_max {
            let smallest = free.buffers.iter().enumerate().min_by_key(|(_, kept)| kept.capacity()).map(|(at, kept)| (at, kept.capacity()));
            match smallest {
                Some((at, kept)) if kept < capacity => {
                    free.buffers.swap_remove(at);
                    free.bytes -= kept;
                }
                _ => return,
            }
        }
        free.bytes += capacity;
        free.buffers.push(buf);
    }

    /// Wraps a buffer taken from this pool so that it comes back when dropped.
    pub fn owned(&self, buf: AlignedBuf) -> PooledBuf {
        PooledBuf {
            buf: Some(buf),
            pool: self.clone(),
        }
    }
}

/// An `AlignedBuf` that goes back to its `ReadBufferPool` when dropped: the owner given to
/// `Bytes::from_owner`, so zero-copy batch slices keep the window alive and the last one to go
/// returns it.
pub struct PooledBuf {
    buf: Option<AlignedBuf>,
    pool: ReadBufferPool,
}

impl AsRef<[u8]> for PooledBuf {
    fn as_ref(&self) -> &[u8] {
        self.buf.as_deref().unwrap_or(&[])
    }
}

impl Drop for PooledBuf {
    fn drop(&mut self) {
        if let Some(buf) = self.buf.take() {
            self.pool.give(buf);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aligned_and_zeroed() {
        let mut buf = AlignedBuf::with_capacity(5000);
        assert_eq!(buf.capacity(), 8192);
        assert_eq!(buf.as_ptr() as usize % BLOCK_SIZE, 0);
        buf.extend_from_slice(b"hello");
        buf.pad_to_block();
        assert_eq!(buf.len(), 4096);
        assert_eq!(&buf[..5], b"hello");
        assert!(buf[5..].iter().all(|&b| b == 0));
    }

    #[test]
    fn drain_front_keeps_tail_and_zeroes() {
        let mut buf = AlignedBuf::with_capacity(8192);
        buf.extend_from_slice(&[1u8; 4096]);
        buf.extend_from_slice(&[2u8; 100]);
        buf.drain_front(4096);
        assert_eq!(buf.len(), 100);
        assert!(buf.iter().all(|&b| b == 2));
        buf.set_len(8192);
        assert!(buf[100..].iter().all(|&b| b == 0));
    }

    #[test]
    fn pool_reuses_cleared_buffers() {
        let pool = BufferPool::new(4096, 2);
        let mut a = pool.take();
        a.extend_from_slice(b"x");
        let ptr = a.as_ptr();
        pool.give(a);
        let b = pool.take();
        assert_eq!(b.as_ptr(), ptr);
        assert!(b.is_empty());
        assert_eq!(b.spare_mut_len(), 4096);
    }


    #[test]
    fn read_pool_best_fit_and_return_on_drop() {
        let pool = ReadBufferPool::new(2, 1 << 20);
        let buf = pool.take(10_000);
        assert_eq!(buf.capacity(), 12288);
        let ptr = buf.as_ptr();
        let mut filled = buf;
        filled.set_len(8192);
        let bytes = bytes::Bytes::from_owner(pool.owned(filled));
        let slice = bytes.slice(10..20);
        drop(bytes);
        // Still referenced by the slice: not back yet, so a take allocates.
        let other = pool.take(8192);
        assert_ne!(other.as_ptr(), ptr);
        drop(slice);
        let again = pool.take(8192);
        assert_eq!(again.as_ptr(), ptr);
        assert!(again.is_empty());
        // Too large for the request (more than twice): left in the pool.
        pool.give(AlignedBuf::with_capacity(64 << 10));
        assert_eq!(pool.take(4096).capacity(), 4096);
        // Bounded by count and bytes.
        pool.give(again);
        pool.give(other);
        pool.give(AlignedBuf::with_capacity(4096));
        assert_eq!(pool.inner.free.lock().unwrap().buffers.len(), 2);
        // Full by count: a larger buffer replaces the smallest.
        pool.give(AlignedBuf::with_capacity(128 << 10));
        let mut kept: Vec<usize> = pool.inner.free.lock().unwrap().buffers.iter().map(|b| b.capacity()).collect();
        kept.sort();
        assert_eq!(kept, vec![64 << 10, 128 << 10]);
        assert_eq!(pool.inner.free.lock().unwrap().bytes, 192 << 10);
        let big = ReadBufferPool::new(8, 16384);
        big.give(AlignedBuf::with_capacity(32768));
        assert_eq!(big.inner.free.lock().unwrap().bytes, 0);
        // Full by bytes: smaller buffers (smallest first) are freed for a larger one, not for an
        // equal one.
        big.give(AlignedBuf::with_capacity(4096));
        big.give(AlignedBuf::with_capacity(4096));
        big.give(AlignedBuf::with_capacity(8192));
        big.give(AlignedBuf::with_capacity(4096));
        assert_eq!(big.inner.free.lock().unwrap().bytes, 16384);
        big.give(AlignedBuf::with_capacity(12288));
        let mut kept: Vec<usize> = big.inner.free.lock().unwrap().buffers.iter().map(|b| b.capacity()).collect();
        kept.sort();
        assert_eq!(kept, vec![12288]);
    }

    impl AlignedBuf {
        fn spare_mut_len(&self) -> usize {
            self.capacity - self.len
        }
    }
}

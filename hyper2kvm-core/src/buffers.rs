//! Reusable chunk buffers, aligned for `O_DIRECT`.
//!
//! A fresh 4 MiB `Vec` per chunk costs a page fault per 4 KiB page and the kernel's zeroing
//! of each: measurable system time at GiB/s. The pipeline takes buffers from a pool and the
//! writer gives them back once their bytes are in the file, so a conversion cycles through
//! about `concurrency + 5` buffers whatever the disk size (see the pipeline's module docs).
//!
//! The buffers are [`AlignedBuf`]s: their memory starts on a 4 KiB boundary, so the output
//! can write a chunk's clusters with `O_DIRECT` straight from it, without first copying them
//! into an aligned bounce buffer (see [`crate::output::PartFile::write_at`]).

use std::alloc::Layout;
use std::ops::{Deref, DerefMut};
use std::ptr::NonNull;
use std::sync::Mutex;

/// A byte buffer whose memory is aligned to [`AlignedBuf::ALIGN`] bytes.
///
/// Like a `Vec<u8>` that only holds bytes, with two differences: the data pointer is always
/// a multiple of [`ALIGN`](AlignedBuf::ALIGN) (also when empty), and every byte of the
/// capacity is initialised (zeroed when allocated), so the length can be moved anywhere
/// within the capacity without writing ([`set_len_within_capacity`]
/// (AlignedBuf::set_len_within_capacity)). The capacity is a multiple of `ALIGN`.
pub struct AlignedBuf {
    /// `capacity` initialised bytes owned by this buffer, allocated with
    /// [`AlignedBuf::layout`]; a dangling pointer aligned to `ALIGN` when `capacity` is 0.
    ptr: NonNull<u8>,
    capacity: usize,
    len: usize,
}

// SAFETY: the buffer owns its memory, and nothing else points into it; `&AlignedBuf` only
// gives out shared slices, `&mut AlignedBuf` mutable ones, as a `Vec<u8>` does.
unsafe impl Send for AlignedBuf {}
// SAFETY: as above.
unsafe impl Sync for AlignedBuf {}

impl AlignedBuf {
    /// The alignment of the data, and the granularity of the capacity: the page size, and
    /// the largest logical block size `O_DIRECT` asks memory to be aligned to.
    pub const ALIGN: usize = 4096;

    /// An empty buffer; allocates nothing.
    pub const fn new() -> AlignedBuf {
        AlignedBuf {
            // SAFETY: ALIGN is not zero. A pointer to no allocation, never dereferenced (no
            // slice of it is longer than 0), aligned so that `as_ptr` always is.
            ptr: unsafe { NonNull::new_unchecked(std::ptr::without_provenance_mut(Self::ALIGN)) },
            capacity: 0,
            len: 0,
        }
    }

    /// `len` zero bytes.
    ///
    /// # Panics
    /// If `len` rounded up to [`ALIGN`](AlignedBuf::ALIGN) overflows `isize`, like
    /// `vec![0; len]`; aborts if the allocation fails.
    pub fn zeroed(len: usize) -> AlignedBuf {
        let capacity = len
            .checked_next_multiple_of(Self::ALIGN)
            .expect("capacity overflow");
        if capacity == 0 {
            return AlignedBuf::new();
        }
        let layout = Self::layout(capacity);
        // Zeroed, so every byte is initialised before it is ever seen as a `u8`. At this
        // alignment the allocator cannot use calloc's fresh zero pages: it allocates and then
        // writes the zeros, touching every page once. The pool makes that a start-up cost.
        // SAFETY: a layout of non-zero size.
        let ptr = unsafe { std::alloc::alloc_zeroed(layout) };
        let Some(ptr) = NonNull::new(ptr) else {
            std::alloc::handle_alloc_error(layout)
        };
        AlignedBuf { ptr, capacity, len }
    }

    /// A copy of `bytes`.
    pub fn from_slice(bytes: &[u8]) -> AlignedBuf {
        let mut buf = AlignedBuf::zeroed(bytes.len());
        buf.copy_from_slice(bytes);
        buf
    }

    /// The bytes the buffer can hold without reallocating: a multiple of
    /// [`ALIGN`](AlignedBuf::ALIGN).
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Sets the length to `len`, as `Vec::resize(len, 0)` does: bytes beyond the old length
    /// are zero. Reallocates (keeping the first bytes) when `len` exceeds the capacity.
    pub fn resize(&mut self, len: usize) {
        if len > self.capacity {
            let mut bigger = AlignedBuf::zeroed(len);
            bigger[..self.len].copy_from_slice(self);
            *self = bigger;
            return;
        }
        if len > self.len {
            let old = self.len;
            self.len = len;
            self[old..].fill(0);
        } else {
            self.len = len;
        }
    }

    /// Sets the length to `len` without writing anything: bytes beyond the old length keep
    /// whatever they last held (zeros, or old data of a recycled buffer). Their content is
    /// unspecified, but always initialised, so this is safe. For callers that overwrite
    /// the whole buffer.
    ///
    /// # Panics
    /// If `len` exceeds the [`capacity`](AlignedBuf::capacity).
    pub fn set_len_within_capacity(&mut self, len: usize) {
        assert!(
            len <= self.capacity,
            "length {len} beyond the capacity {}",
            self.capacity
        );
        self.len = len;
    }

    fn layout(capacity: usize) -> Layout {
        Layout::from_size_align(capacity, Self::ALIGN).expect("capacity overflow")
    }
}

impl Drop for AlignedBuf {
    fn drop(&mut self) {
        if self.capacity != 0 {
            // SAFETY: allocated in `zeroed` with this layout; the capacity never changes
            // without the allocation changing with it.
            unsafe { std::alloc::dealloc(self.ptr.as_ptr(), Self::layout(self.capacity)) }
        }
    }
}

impl Deref for AlignedBuf {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        // SAFETY: `len <= capacity` initialised bytes owned by self (or an empty slice at an
        // aligned dangling pointer), borrowed for as long as self is.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }
}

impl DerefMut for AlignedBuf {
    fn deref_mut(&mut self) -> &mut [u8] {
        // SAFETY: as in `deref`, borrowed mutably for as long as self is.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.len) }
    }
}

impl AsRef<[u8]> for AlignedBuf {
    fn as_ref(&self) -> &[u8] {
        self
    }
}

impl AsMut<[u8]> for AlignedBuf {
    fn as_mut(&mut self) -> &mut [u8] {
        self
    }
}

impl Default for AlignedBuf {
    fn default() -> AlignedBuf {
        AlignedBuf::new()
    }
}

impl Clone for AlignedBuf {
    fn clone(&self) -> AlignedBuf {
        AlignedBuf::from_slice(self)
    }
}

impl std::fmt::Debug for AlignedBuf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Not the bytes: a chunk is megabytes of guest data.
        f.debug_struct("AlignedBuf")
            .field("len", &self.len)
            .field("capacity", &self.capacity)
            .finish()
    }
}

impl From<&[u8]> for AlignedBuf {
    fn from(bytes: &[u8]) -> AlignedBuf {
        AlignedBuf::from_slice(bytes)
    }
}

/// Copies the bytes: a `Vec`'s memory does not have the alignment.
impl From<Vec<u8>> for AlignedBuf {
    fn from(bytes: Vec<u8>) -> AlignedBuf {
        AlignedBuf::from_slice(&bytes)
    }
}

impl PartialEq for AlignedBuf {
    fn eq(&self, other: &AlignedBuf) -> bool {
        **self == **other
    }
}

impl Eq for AlignedBuf {}

impl PartialEq<[u8]> for AlignedBuf {
    fn eq(&self, other: &[u8]) -> bool {
        **self == *other
    }
}

impl PartialEq<&[u8]> for AlignedBuf {
    fn eq(&self, other: &&[u8]) -> bool {
        **self == **other
    }
}

impl<const N: usize> PartialEq<[u8; N]> for AlignedBuf {
    fn eq(&self, other: &[u8; N]) -> bool {
        **self == *other
    }
}

impl PartialEq<Vec<u8>> for AlignedBuf {
    fn eq(&self, other: &Vec<u8>) -> bool {
        **self == **other
    }
}

/// A pool of aligned byte buffers, and of vectors that hold a chunk's compressed clusters.
///
/// Recycling keeps the pages mapped: a fresh vector for every chunk's compressed bytes meant
/// a page fault for every 4 KiB written into it (140,000 for a 1 GiB zstd conversion), and
/// buffers sized to each chunk, of which the shorter could not take the next full-size
/// chunk and were replaced, about 20,000 more for an export of 660 MiB. So every buffer is
/// made as large as the largest chunk (docs/BENCHMARKS.md, "Recycled compression buffers"
/// and "Rechecked in session 9").
#[derive(Debug, Default)]
pub struct BufferPool {
    free: Mutex<Vec<AlignedBuf>>,
    spare: Mutex<Vec<Vec<u8>>>,
    keep: usize,
    size: usize,
}

impl BufferPool {
    /// A pool that keeps at most `keep` idle buffers and makes each with room for `size`
    /// bytes (the largest chunk), so that any of them can take any chunk.
    pub fn new(keep: usize, size: usize) -> Self {
        BufferPool {
            free: Mutex::new(Vec::new()),
            spare: Mutex::new(Vec::new()),
            keep,
            size,
        }
    }

    /// A buffer of exactly `len` bytes. Its content is unspecified (a recycled buffer keeps
    /// old bytes): callers overwrite all of it.
    pub fn take(&self, len: usize) -> AlignedBuf {
        let recycled = self.free.lock().unwrap().pop();
        match recycled {
            // No writing at all: not even zeroing the part beyond the old length.
            Some(mut buf) if len <= buf.capacity() => {
                buf.set_len_within_capacity(len);
                buf
            }
            // None idle, or one too small (a chunk larger than the pool's size): a fresh one
            // rather than copying old bytes.
            _ => {
                let mut buf = AlignedBuf::zeroed(len.max(self.size));
                buf.set_len_within_capacity(len);
                buf
            }
        }
    }

    /// Returns a buffer for reuse.
    pub fn give(&self, buf: AlignedBuf) {
        let mut free = self.free.lock().unwrap();
        if free.len() < self.keep {
            free.push(buf);
        }
    }

    /// An empty vector, with the capacity of one given back earlier if there is one.
    pub fn take_vec(&self) -> Vec<u8> {
        self.spare.lock().unwrap().pop().unwrap_or_default()
    }

    /// Returns a vector for reuse; its content is dropped, its capacity kept.
    pub fn give_vec(&self, mut v: Vec<u8>) {
        v.clear();
        let mut spare = self.spare.lock().unwrap();
        if spare.len() < self.keep && v.capacity() > 0 {
            spare.push(v);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn aligned(buf: &AlignedBuf) -> bool {
        buf.as_ptr() as usize % AlignedBuf::ALIGN == 0
    }

    #[test]
    fn recycles_up_to_keep() {
        let pool = BufferPool::new(1, 0);
        let mut a = pool.take(4096);
        a.fill(7);
        let ptr = a.as_ptr();
        pool.give(a);
        pool.give(AlignedBuf::zeroed(10)); // over the limit: dropped
        let b = pool.take(1000);
        assert_eq!((b.as_ptr(), b.len()), (ptr, 1000));
        // Nothing written: the old bytes are still there.
        assert!(b.iter().all(|&x| x == 7));
        pool.give(b);
        // Regrown within the capacity: the same memory, still not zero-filled.
        let c = pool.take(4096);
        assert_eq!((c.as_ptr(), c.len()), (ptr, 4096));
        assert!(c.iter().all(|&x| x == 7));
        pool.give(c);
        // Beyond the capacity: a new, aligned buffer.
        let d = pool.take(8192);
        assert_eq!(d.len(), 8192);
        assert!(aligned(&d));
        assert_eq!(pool.take(8).len(), 8); // pool empty: fresh
    }

    #[test]
    fn every_buffer_has_room_for_the_largest_chunk() {
        // A short chunk first (the end of a range): its buffer can still take a full one.
        let pool = BufferPool::new(2, 8192);
        let short = pool.take(100);
        assert_eq!((short.len(), short.capacity()), (100, 8192));
        let ptr = short.as_ptr();
        pool.give(short);
        let full = pool.take(8192);
        assert_eq!((full.as_ptr(), full.len()), (ptr, 8192));
        // Larger than the pool's size: made to measure (in whole pages).
        assert_eq!(pool.take(9000).capacity(), 3 * AlignedBuf::ALIGN);
    }

    #[test]
    fn memory_is_aligned_and_zeroed() {
        for len in [1, 511, 4096, 4097, 3 << 20] {
            let buf = AlignedBuf::zeroed(len);
            assert!(aligned(&buf), "{len}");
            assert_eq!(buf.len(), len);
            assert_eq!(buf.capacity() % AlignedBuf::ALIGN, 0);
            assert!(buf.capacity() >= len);
            assert!(buf.iter().all(|&b| b == 0));
        }
    }

    #[test]
    fn empty_buffers_allocate_nothing_and_stay_aligned() {
        for buf in [
            AlignedBuf::new(),
            AlignedBuf::zeroed(0),
            AlignedBuf::from_slice(&[]),
            AlignedBuf::default(),
        ] {
            assert!(buf.is_empty());
            assert_eq!(buf.capacity(), 0);
            assert!(aligned(&buf));
            assert_eq!(buf, []);
            let copy = buf.clone();
            assert!(copy.is_empty());
        }
        let mut grown = AlignedBuf::new();
        grown.resize(3);
        assert_eq!(grown, vec![0, 0, 0]);
        assert!(aligned(&grown));
        grown.resize(0);
        assert!(grown.is_empty());
        grown.set_len_within_capacity(0);
    }

    #[test]
    fn resize_has_vec_semantics() {
        let mut buf = AlignedBuf::from_slice(&[1, 2, 3, 4, 5]);
        let ptr = buf.as_ptr();
        buf.resize(2);
        assert_eq!(buf, vec![1, 2]);
        // Regrown within the capacity: the new bytes are zero, not the old 3, 4, 5.
        buf.resize(6);
        assert_eq!(buf, vec![1, 2, 0, 0, 0, 0]);
        assert_eq!(buf.as_ptr(), ptr);
        // Beyond the capacity: reallocated, the first bytes kept, the rest zero.
        let cap = buf.capacity();
        buf[5] = 9;
        buf.resize(cap + 10);
        assert!(aligned(&buf));
        assert_eq!(buf.len(), cap + 10);
        assert_eq!(&buf[..6], &[1, 2, 0, 0, 0, 9]);
        assert!(buf[6..].iter().all(|&b| b == 0));
    }

    #[test]
    fn set_len_within_capacity_keeps_old_bytes() {
        let mut buf = AlignedBuf::from_slice(&[1, 2, 3, 4]);
        buf.set_len_within_capacity(2);
        buf.set_len_within_capacity(4);
        assert_eq!(buf, vec![1, 2, 3, 4]);
        buf.set_len_within_capacity(buf.capacity());
        assert!(buf[4..].iter().all(|&b| b == 0));
    }

    #[test]
    #[should_panic(expected = "beyond the capacity")]
    fn set_len_beyond_capacity_panics() {
        AlignedBuf::zeroed(10).set_len_within_capacity(AlignedBuf::ALIGN + 1);
    }

    #[test]
    fn clones_are_independent() {
        let mut a = AlignedBuf::from(vec![1u8, 2, 3]);
        let b = a.clone();
        a[0] = 9;
        assert_eq!(a, vec![9, 2, 3]);
        assert_eq!(b, vec![1, 2, 3]);
        assert_ne!(a.as_ptr(), b.as_ptr());
        assert!(aligned(&b));
        assert_eq!(format!("{b:?}"), "AlignedBuf { len: 3, capacity: 4096 }");
    }

    #[test]
    fn is_send_and_sync() {
        fn check<T: Send + Sync>() {}
        check::<AlignedBuf>();
    }
}

//! MD5 of many buffers at once, for checking the `Content-MD5` of ranged reads.
//!
//! MD5 is a chain of dependent steps: one buffer cannot be hashed faster than about 5 cycles
//! per byte, and profiling an export showed it taking two thirds of the client's CPU. But a
//! download has many ranges in flight, so their digests are computed side by side: eight
//! buffers in the eight 32-bit lanes of AVX2 registers, each lane running the same steps on its
//! own buffer: about four times the throughput of one core hashing one buffer at a time
//! (`examples/md5_rate.rs`). [`digest_many`] takes the common length of a batch in lanes and
//! finishes each buffer's tail (and padding) one at a time; without AVX2, or for a lone
//! buffer, it hashes one buffer at a time.
//!
//! [`Md5Pool`] is the batching: one thread hashes the bodies of the reads in flight while
//! they arrive ([`BodyHasher`]), in lanes across the bodies (every pass advances up to eight
//! bodies that have data by up to 16 KiB), so the lanes fill from all the reads in flight,
//! not only from bodies that happen to complete together: against a server that finishes
//! one range at a time, whole-body batches ran mostly one lane wide. The pieces are the HTTP
//! client's reference-counted receive buffers, so the hash reads them while the reader copies
//! them into its own buffer, and a read that is cancelled frees nothing the thread uses.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use bytes::Bytes;

/// Lanes per AVX2 batch.
pub const LANES: usize = 8;

/// `floor(abs(sin(i + 1)) * 2^32)`.
const K: [u32; 64] = [
    0xd76aa478, 0xe8c7b756, 0x242070db, 0xc1bdceee, 0xf57c0faf, 0x4787c62a, 0xa8304613, 0xfd469501,
    0x698098d8, 0x8b44f7af, 0xffff5bb1, 0x895cd7be, 0x6b901122, 0xfd987193, 0xa679438e, 0x49b40821,
    0xf61e2562, 0xc040b340, 0x265e5a51, 0xe9b6c7aa, 0xd62f105d, 0x02441453, 0xd8a1e681, 0xe7d3fbc8,
    0x21e1cde6, 0xc33707d6, 0xf4d50d87, 0x455a14ed, 0xa9e3e905, 0xfcefa3f8, 0x676f02d9, 0x8d2a4c8a,
    0xfffa3942, 0x8771f681, 0x6d9d6122, 0xfde5380c, 0xa4beea44, 0x4bdecfa9, 0xf6bb4b60, 0xbebfbc70,
    0x289b7ec6, 0xeaa127fa, 0xd4ef3085, 0x04881d05, 0xd9d4d039, 0xe6db99e5, 0x1fa27cf8, 0xc4ac5665,
    0xf4292244, 0x432aff97, 0xab9423a7, 0xfc93a039, 0x655b59c3, 0x8f0ccc92, 0xffeff47d, 0x85845dd1,
    0x6fa87e4f, 0xfe2ce6e0, 0xa3014314, 0x4e0811a1, 0xf7537e82, 0xbd3af235, 0x2ad7d2bb, 0xeb86d391,
];

const INIT: [u32; 4] = [0x67452301, 0xefcdab89, 0x98badcfe, 0x10325476];

/// One buffer's MD5 (the `md-5` crate: faster than our portable loop for a lone buffer).
pub fn digest(data: &[u8]) -> [u8; 16] {
    use md5::Digest;
    md5::Md5::digest(data).into()
}

/// One buffer's MD5 with our own compression function (which finishes the lanes' tails).
#[cfg(test)]
fn digest_portable(data: &[u8]) -> [u8; 16] {
    let mut state = INIT;
    let full = data.len() / 64 * 64;
    compress(&mut state, &data[..full]);
    finish(state, &data[full..], data.len() as u64)
}

/// The MD5 of each buffer, in order: through the same lanes as the pool where AVX2 is there,
/// one at a time otherwise.
pub fn digest_many(inputs: &[&[u8]]) -> Vec<[u8; 16]> {
    #[cfg(target_arch = "x86_64")]
    if inputs.len() > 1 && std::arch::is_x86_feature_detected!("avx2") {
        let mut out = vec![[0u8; 16]; inputs.len()];
        let mut next = inputs.iter().copied().enumerate();
        let mut lanes = LaneSet::default();
        loop {
            while lanes.has_room() {
                match next.next() {
                    Some(item) => lanes.put(item),
                    None => break,
                }
            }
            for ((i, _), d) in lanes.take_finished() {
                out[i] = d;
            }
            if lanes.is_empty() {
                if next.len() == 0 {
                    return out;
                }
                continue;
            }
            lanes.pass();
        }
    }
    inputs.iter().map(|d| digest(d)).collect()
}

/// Whether the AVX-512 lanes can run (and are not turned off with `H2K_MD5_AVX512=0`, which
/// `examples/md5_rate.rs` uses to compare).
#[cfg(target_arch = "x86_64")]
fn avx512() -> bool {
    static ON: OnceLock<bool> = OnceLock::new();
    *ON.get_or_init(|| {
        std::arch::is_x86_feature_detected!("avx512f")
            && std::arch::is_x86_feature_detected!("avx512vl")
            && std::env::var_os("H2K_MD5_AVX512").is_none_or(|v| v != "0")
    })
}

/// The lanes over blocks `0..upto`: with AVX-512 where [`avx512`] says so, else with AVX2.
///
/// # Safety
/// AVX2 must have been detected on this CPU.
#[cfg(target_arch = "x86_64")]
unsafe fn run_lanes(
    states: &mut [[u32; 4]; LANES],
    slices: &[&[u8]; LANES],
    blocks: &[usize; LANES],
    upto: usize,
) {
    // SAFETY: the caller has AVX2; AVX-512 is used only where it was detected.
    unsafe {
        if avx512() {
            lanes::avx512(states, slices, blocks, upto)
        } else {
            lanes::avx2(states, slices, blocks, upto)
        }
    }
}

/// Pads the last partial block (`tail`, under 64 bytes) and returns the digest.
fn finish(mut state: [u32; 4], tail: &[u8], len: u64) -> [u8; 16] {
    let mut last = [0u8; 128];
    last[..tail.len()].copy_from_slice(tail);
    last[tail.len()] = 0x80;
    let blocks = if tail.len() < 56 { 64 } else { 128 };
    last[blocks - 8..blocks].copy_from_slice(&(len.wrapping_mul(8)).to_le_bytes());
    compress(&mut state, &last[..blocks]);
    let mut out = [0u8; 16];
    for (o, w) in out.chunks_mut(4).zip(state) {
        o.copy_from_slice(&w.to_le_bytes());
    }
    out
}

/// Runs the compression function over `data` (whole 64-byte blocks): RFC 1321's 64 steps
/// written out (message word, constant and rotation of each step as in its table).
fn compress(state: &mut [u32; 4], data: &[u8]) {
    macro_rules! f {
        ($b:expr, $c:expr, $d:expr) => {
            $d ^ ($b & ($c ^ $d))
        };
    }
    macro_rules! g {
        ($b:expr, $c:expr, $d:expr) => {
            $c ^ ($d & ($b ^ $c))
        };
    }
    macro_rules! h {
        ($b:expr, $c:expr, $d:expr) => {
            $b ^ $c ^ $d
        };
    }
    macro_rules! i {
        ($b:expr, $c:expr, $d:expr) => {
            $c ^ ($b | !$d)
        };
    }
    macro_rules! step {
        ($f:ident, $a:ident, $b:ident, $c:ident, $d:ident, $m:expr, $k:expr, $s:expr) => {
            $a = $b.wrapping_add(
                $a.wrapping_add($f!($b, $c, $d))
                    .wrapping_add($k)
                    .wrapping_add($m)
                    .rotate_left($s),
            );
        };
    }
    for block in data.chunks_exact(64) {
        let m: [u32; 16] = std::array::from_fn(|i| {
            u32::from_le_bytes(block[i * 4..i * 4 + 4].try_into().unwrap())
        });
        let [mut a, mut b, mut c, mut d] = *state;
        step!(f, a, b, c, d, m[0], K[0], 7);
        step!(f, d, a, b, c, m[1], K[1], 12);
        step!(f, c, d, a, b, m[2], K[2], 17);
        step!(f, b, c, d, a, m[3], K[3], 22);
        step!(f, a, b, c, d, m[4], K[4], 7);
        step!(f, d, a, b, c, m[5], K[5], 12);
        step!(f, c, d, a, b, m[6], K[6], 17);
        step!(f, b, c, d, a, m[7], K[7], 22);
        step!(f, a, b, c, d, m[8], K[8], 7);
        step!(f, d, a, b, c, m[9], K[9], 12);
        step!(f, c, d, a, b, m[10], K[10], 17);
        step!(f, b, c, d, a, m[11], K[11], 22);
        step!(f, a, b, c, d, m[12], K[12], 7);
        step!(f, d, a, b, c, m[13], K[13], 12);
        step!(f, c, d, a, b, m[14], K[14], 17);
        step!(f, b, c, d, a, m[15], K[15], 22);
        step!(g, a, b, c, d, m[1], K[16], 5);
        step!(g, d, a, b, c, m[6], K[17], 9);
        step!(g, c, d, a, b, m[11], K[18], 14);
        step!(g, b, c, d, a, m[0], K[19], 20);
        step!(g, a, b, c, d, m[5], K[20], 5);
        step!(g, d, a, b, c, m[10], K[21], 9);
        step!(g, c, d, a, b, m[15], K[22], 14);
        step!(g, b, c, d, a, m[4], K[23], 20);
        step!(g, a, b, c, d, m[9], K[24], 5);
        step!(g, d, a, b, c, m[14], K[25], 9);
        step!(g, c, d, a, b, m[3], K[26], 14);
        step!(g, b, c, d, a, m[8], K[27], 20);
        step!(g, a, b, c, d, m[13], K[28], 5);
        step!(g, d, a, b, c, m[2], K[29], 9);
        step!(g, c, d, a, b, m[7], K[30], 14);
        step!(g, b, c, d, a, m[12], K[31], 20);
        step!(h, a, b, c, d, m[5], K[32], 4);
        step!(h, d, a, b, c, m[8], K[33], 11);
        step!(h, c, d, a, b, m[11], K[34], 16);
        step!(h, b, c, d, a, m[14], K[35], 23);
        step!(h, a, b, c, d, m[1], K[36], 4);
        step!(h, d, a, b, c, m[4], K[37], 11);
        step!(h, c, d, a, b, m[7], K[38], 16);
        step!(h, b, c, d, a, m[10], K[39], 23);
        step!(h, a, b, c, d, m[13], K[40], 4);
        step!(h, d, a, b, c, m[0], K[41], 11);
        step!(h, c, d, a, b, m[3], K[42], 16);
        step!(h, b, c, d, a, m[6], K[43], 23);
        step!(h, a, b, c, d, m[9], K[44], 4);
        step!(h, d, a, b, c, m[12], K[45], 11);
        step!(h, c, d, a, b, m[15], K[46], 16);
        step!(h, b, c, d, a, m[2], K[47], 23);
        step!(i, a, b, c, d, m[0], K[48], 6);
        step!(i, d, a, b, c, m[7], K[49], 10);
        step!(i, c, d, a, b, m[14], K[50], 15);
        step!(i, b, c, d, a, m[5], K[51], 21);
        step!(i, a, b, c, d, m[12], K[52], 6);
        step!(i, d, a, b, c, m[3], K[53], 10);
        step!(i, c, d, a, b, m[10], K[54], 15);
        step!(i, b, c, d, a, m[1], K[55], 21);
        step!(i, a, b, c, d, m[8], K[56], 6);
        step!(i, d, a, b, c, m[15], K[57], 10);
        step!(i, c, d, a, b, m[6], K[58], 15);
        step!(i, b, c, d, a, m[13], K[59], 21);
        step!(i, a, b, c, d, m[4], K[60], 6);
        step!(i, d, a, b, c, m[11], K[61], 10);
        step!(i, c, d, a, b, m[2], K[62], 15);
        step!(i, b, c, d, a, m[9], K[63], 21);
        state[0] = state[0].wrapping_add(a);
        state[1] = state[1].wrapping_add(b);
        state[2] = state[2].wrapping_add(c);
        state[3] = state[3].wrapping_add(d);
    }
}

#[cfg(target_arch = "x86_64")]
mod lanes {
    //! The compression function in eight 32-bit lanes, twice: with AVX2 alone, and with
    //! AVX-512VL's rotate and three-input logic (one instruction each where AVX2 needs two
    //! or three). One body, written once as macros; the steps are RFC 1321's table.
    use super::{K, LANES};
    use std::arch::x86_64::*;

    // F, G, H and I of RFC 1321 on lanes (AVX2).
    macro_rules! f2 {
        ($b:expr, $c:expr, $d:expr) => {
            _mm256_xor_si256($d, _mm256_and_si256($b, _mm256_xor_si256($c, $d)))
        };
    }
    macro_rules! g2 {
        ($b:expr, $c:expr, $d:expr) => {
            _mm256_xor_si256($c, _mm256_and_si256($d, _mm256_xor_si256($b, $c)))
        };
    }
    macro_rules! h2 {
        ($b:expr, $c:expr, $d:expr) => {
            _mm256_xor_si256(_mm256_xor_si256($b, $c), $d)
        };
    }
    macro_rules! i2 {
        ($b:expr, $c:expr, $d:expr) => {
            _mm256_xor_si256(
                $c,
                _mm256_or_si256($b, _mm256_xor_si256($d, _mm256_set1_epi32(-1))),
            )
        };
    }
    macro_rules! rot2 {
        ($x:ident, $s:literal, $r:literal) => {
            _mm256_or_si256(_mm256_slli_epi32::<$s>($x), _mm256_srli_epi32::<$r>($x))
        };
    }
    // The same with one `vpternlogd` each: the immediate is the function's truth table over
    // (b, c, d) = (0xf0, 0xcc, 0xaa).
    macro_rules! f5 {
        ($b:expr, $c:expr, $d:expr) => {
            _mm256_ternarylogic_epi32::<0xca>($b, $c, $d)
        };
    }
    macro_rules! g5 {
        ($b:expr, $c:expr, $d:expr) => {
            _mm256_ternarylogic_epi32::<0xe4>($b, $c, $d)
        };
    }
    macro_rules! h5 {
        ($b:expr, $c:expr, $d:expr) => {
            _mm256_ternarylogic_epi32::<0x96>($b, $c, $d)
        };
    }
    macro_rules! i5 {
        ($b:expr, $c:expr, $d:expr) => {
            _mm256_ternarylogic_epi32::<0x39>($b, $c, $d)
        };
    }
    macro_rules! rot5 {
        ($x:ident, $s:literal, $r:literal) => {
            _mm256_rol_epi32::<$s>($x)
        };
    }

    /// One step: `a = b + ((a + fun(b, c, d) + k + m) <<< s)`.
    macro_rules! vstep {
        ($rot:ident, $fun:ident, $a:ident, $b:ident, $c:ident, $d:ident, $m:expr, $k:expr, $s:literal, $r:literal) => {
            let sum = _mm256_add_epi32(
                _mm256_add_epi32($a, $fun!($b, $c, $d)),
                _mm256_add_epi32(_mm256_set1_epi32($k as i32), $m),
            );
            $a = _mm256_add_epi32($b, $rot!(sum, $s, $r));
        };
    }

    /// The 64 steps of one block.
    macro_rules! rounds {
        ($rot:ident, $f:ident, $g:ident, $h:ident, $i:ident, $m:ident, $a:ident, $b:ident, $c:ident, $d:ident) => {
            vstep!($rot, $f, $a, $b, $c, $d, $m[0], K[0], 7, 25);
            vstep!($rot, $f, $d, $a, $b, $c, $m[1], K[1], 12, 20);
            vstep!($rot, $f, $c, $d, $a, $b, $m[2], K[2], 17, 15);
            vstep!($rot, $f, $b, $c, $d, $a, $m[3], K[3], 22, 10);
            vstep!($rot, $f, $a, $b, $c, $d, $m[4], K[4], 7, 25);
            vstep!($rot, $f, $d, $a, $b, $c, $m[5], K[5], 12, 20);
            vstep!($rot, $f, $c, $d, $a, $b, $m[6], K[6], 17, 15);
            vstep!($rot, $f, $b, $c, $d, $a, $m[7], K[7], 22, 10);
            vstep!($rot, $f, $a, $b, $c, $d, $m[8], K[8], 7, 25);
            vstep!($rot, $f, $d, $a, $b, $c, $m[9], K[9], 12, 20);
            vstep!($rot, $f, $c, $d, $a, $b, $m[10], K[10], 17, 15);
            vstep!($rot, $f, $b, $c, $d, $a, $m[11], K[11], 22, 10);
            vstep!($rot, $f, $a, $b, $c, $d, $m[12], K[12], 7, 25);
            vstep!($rot, $f, $d, $a, $b, $c, $m[13], K[13], 12, 20);
            vstep!($rot, $f, $c, $d, $a, $b, $m[14], K[14], 17, 15);
            vstep!($rot, $f, $b, $c, $d, $a, $m[15], K[15], 22, 10);
            vstep!($rot, $g, $a, $b, $c, $d, $m[1], K[16], 5, 27);
            vstep!($rot, $g, $d, $a, $b, $c, $m[6], K[17], 9, 23);
            vstep!($rot, $g, $c, $d, $a, $b, $m[11], K[18], 14, 18);
            vstep!($rot, $g, $b, $c, $d, $a, $m[0], K[19], 20, 12);
            vstep!($rot, $g, $a, $b, $c, $d, $m[5], K[20], 5, 27);
            vstep!($rot, $g, $d, $a, $b, $c, $m[10], K[21], 9, 23);
            vstep!($rot, $g, $c, $d, $a, $b, $m[15], K[22], 14, 18);
            vstep!($rot, $g, $b, $c, $d, $a, $m[4], K[23], 20, 12);
            vstep!($rot, $g, $a, $b, $c, $d, $m[9], K[24], 5, 27);
            vstep!($rot, $g, $d, $a, $b, $c, $m[14], K[25], 9, 23);
            vstep!($rot, $g, $c, $d, $a, $b, $m[3], K[26], 14, 18);
            vstep!($rot, $g, $b, $c, $d, $a, $m[8], K[27], 20, 12);
            vstep!($rot, $g, $a, $b, $c, $d, $m[13], K[28], 5, 27);
            vstep!($rot, $g, $d, $a, $b, $c, $m[2], K[29], 9, 23);
            vstep!($rot, $g, $c, $d, $a, $b, $m[7], K[30], 14, 18);
            vstep!($rot, $g, $b, $c, $d, $a, $m[12], K[31], 20, 12);
            vstep!($rot, $h, $a, $b, $c, $d, $m[5], K[32], 4, 28);
            vstep!($rot, $h, $d, $a, $b, $c, $m[8], K[33], 11, 21);
            vstep!($rot, $h, $c, $d, $a, $b, $m[11], K[34], 16, 16);
            vstep!($rot, $h, $b, $c, $d, $a, $m[14], K[35], 23, 9);
            vstep!($rot, $h, $a, $b, $c, $d, $m[1], K[36], 4, 28);
            vstep!($rot, $h, $d, $a, $b, $c, $m[4], K[37], 11, 21);
            vstep!($rot, $h, $c, $d, $a, $b, $m[7], K[38], 16, 16);
            vstep!($rot, $h, $b, $c, $d, $a, $m[10], K[39], 23, 9);
            vstep!($rot, $h, $a, $b, $c, $d, $m[13], K[40], 4, 28);
            vstep!($rot, $h, $d, $a, $b, $c, $m[0], K[41], 11, 21);
            vstep!($rot, $h, $c, $d, $a, $b, $m[3], K[42], 16, 16);
            vstep!($rot, $h, $b, $c, $d, $a, $m[6], K[43], 23, 9);
            vstep!($rot, $h, $a, $b, $c, $d, $m[9], K[44], 4, 28);
            vstep!($rot, $h, $d, $a, $b, $c, $m[12], K[45], 11, 21);
            vstep!($rot, $h, $c, $d, $a, $b, $m[15], K[46], 16, 16);
            vstep!($rot, $h, $b, $c, $d, $a, $m[2], K[47], 23, 9);
            vstep!($rot, $i, $a, $b, $c, $d, $m[0], K[48], 6, 26);
            vstep!($rot, $i, $d, $a, $b, $c, $m[7], K[49], 10, 22);
            vstep!($rot, $i, $c, $d, $a, $b, $m[14], K[50], 15, 17);
            vstep!($rot, $i, $b, $c, $d, $a, $m[5], K[51], 21, 11);
            vstep!($rot, $i, $a, $b, $c, $d, $m[12], K[52], 6, 26);
            vstep!($rot, $i, $d, $a, $b, $c, $m[3], K[53], 10, 22);
            vstep!($rot, $i, $c, $d, $a, $b, $m[10], K[54], 15, 17);
            vstep!($rot, $i, $b, $c, $d, $a, $m[1], K[55], 21, 11);
            vstep!($rot, $i, $a, $b, $c, $d, $m[8], K[56], 6, 26);
            vstep!($rot, $i, $d, $a, $b, $c, $m[15], K[57], 10, 22);
            vstep!($rot, $i, $c, $d, $a, $b, $m[6], K[58], 15, 17);
            vstep!($rot, $i, $b, $c, $d, $a, $m[13], K[59], 21, 11);
            vstep!($rot, $i, $a, $b, $c, $d, $m[4], K[60], 6, 26);
            vstep!($rot, $i, $d, $a, $b, $c, $m[11], K[61], 10, 22);
            vstep!($rot, $i, $c, $d, $a, $b, $m[2], K[62], 15, 17);
            vstep!($rot, $i, $b, $c, $d, $a, $m[9], K[63], 21, 11);
        };
    }

    /// Defines a lane function: runs the compression function over blocks `0..upto` of
    /// every lane; lane `i` stops after its `blocks[i]` blocks (its state is then left
    /// alone).
    macro_rules! lanes_fn {
        ($(#[$attr:meta])* $name:ident, $rot:ident, $f:ident, $g:ident, $h:ident, $i:ident) => {
            $(#[$attr])*
            pub unsafe fn $name(
                states: &mut [[u32; 4]; LANES],
                lanes: &[&[u8]; LANES],
                blocks: &[usize; LANES],
                upto: usize,
            ) {
                for (lane, &n) in lanes.iter().zip(blocks) {
                    assert!(lane.len() >= n * 64);
                }
                static IDLE: [u8; 64] = [0; 64];
                let (mut a, mut b, mut c, mut d) = (
                    column(states, 0),
                    column(states, 1),
                    column(states, 2),
                    column(states, 3),
                );
                let ends = _mm256_loadu_si256(
                    blocks.map(|n| n.min(i32::MAX as usize) as i32).as_ptr() as *const __m256i,
                );
                for n in 0..upto {
                    let block: [&[u8]; LANES] = std::array::from_fn(|l| {
                        if n < blocks[l] {
                            &lanes[l][n * 64..n * 64 + 64]
                        } else {
                            &IDLE[..]
                        }
                    });
                    // Word w of every lane in one register: two 8×8 transposes of the
                    // lanes' blocks.
                    let mut m = [_mm256_setzero_si256(); 16];
                    for half in 0..2 {
                        // SAFETY: every `block[l]` is 64 bytes; unaligned loads.
                        let rows: [__m256i; LANES] = std::array::from_fn(|l| unsafe {
                            _mm256_loadu_si256(block[l].as_ptr().add(half * 32) as *const __m256i)
                        });
                        m[half * 8..half * 8 + 8].copy_from_slice(&transpose8(rows));
                    }
                    let (a0, b0, c0, d0) = (a, b, c, d);
                    rounds!($rot, $f, $g, $h, $i, m, a, b, c, d);
                    // Lanes still in their buffer take the new state; the others keep theirs.
                    let active = _mm256_cmpgt_epi32(ends, _mm256_set1_epi32(n as i32));
                    a = _mm256_blendv_epi8(a0, _mm256_add_epi32(a, a0), active);
                    b = _mm256_blendv_epi8(b0, _mm256_add_epi32(b, b0), active);
                    c = _mm256_blendv_epi8(c0, _mm256_add_epi32(c, c0), active);
                    d = _mm256_blendv_epi8(d0, _mm256_add_epi32(d, d0), active);
                }
                let mut out = [[0u32; LANES]; 4];
                for (v, o) in [a, b, c, d].into_iter().zip(out.iter_mut()) {
                    _mm256_storeu_si256(o.as_mut_ptr() as *mut __m256i, v);
                }
                for (lane, state) in states.iter_mut().enumerate() {
                    for (i, word) in state.iter_mut().enumerate() {
                        *word = out[i][lane];
                    }
                }
            }
        };
    }

    lanes_fn!(
        /// With AVX2.
        ///
        /// # Safety
        /// The CPU must support AVX2, and lane `i` must hold at least `blocks[i] * 64` bytes.
        #[target_feature(enable = "avx2")]
        avx2,
        rot2,
        f2,
        g2,
        h2,
        i2
    );

    lanes_fn!(
        /// With AVX-512F and AVX-512VL on 256-bit registers.
        ///
        /// # Safety
        /// The CPU must support AVX2, AVX-512F and AVX-512VL, and lane `i` must hold at least
        /// `blocks[i] * 64` bytes.
        #[target_feature(enable = "avx2,avx512f,avx512vl")]
        avx512,
        rot5,
        f5,
        g5,
        h5,
        i5
    );

    /// Word `i` of every lane's state in one register.
    #[target_feature(enable = "avx2")]
    fn column(states: &[[u32; 4]; LANES], i: usize) -> __m256i {
        let words: [u32; LANES] = std::array::from_fn(|l| states[l][i]);
        // SAFETY: eight u32 are 32 bytes; unaligned load.
        unsafe { _mm256_loadu_si256(words.as_ptr() as *const __m256i) }
    }

    /// Transposes eight rows of eight 32-bit words: word `w` of row `l` ends up in element `l`
    /// of register `w`.
    #[target_feature(enable = "avx2")]
    fn transpose8(r: [__m256i; LANES]) -> [__m256i; LANES] {
        let t0 = _mm256_unpacklo_epi32(r[0], r[1]);
        let t1 = _mm256_unpackhi_epi32(r[0], r[1]);
        let t2 = _mm256_unpacklo_epi32(r[2], r[3]);
        let t3 = _mm256_unpackhi_epi32(r[2], r[3]);
        let t4 = _mm256_unpacklo_epi32(r[4], r[5]);
        let t5 = _mm256_unpackhi_epi32(r[4], r[5]);
        let t6 = _mm256_unpacklo_epi32(r[6], r[7]);
        let t7 = _mm256_unpackhi_epi32(r[6], r[7]);
        let u0 = _mm256_unpacklo_epi64(t0, t2);
        let u1 = _mm256_unpackhi_epi64(t0, t2);
        let u2 = _mm256_unpacklo_epi64(t1, t3);
        let u3 = _mm256_unpackhi_epi64(t1, t3);
        let u4 = _mm256_unpacklo_epi64(t4, t6);
        let u5 = _mm256_unpackhi_epi64(t4, t6);
        let u6 = _mm256_unpacklo_epi64(t5, t7);
        let u7 = _mm256_unpackhi_epi64(t5, t7);
        [
            _mm256_permute2x128_si256::<0x20>(u0, u4),
            _mm256_permute2x128_si256::<0x20>(u1, u5),
            _mm256_permute2x128_si256::<0x20>(u2, u6),
            _mm256_permute2x128_si256::<0x20>(u3, u7),
            _mm256_permute2x128_si256::<0x31>(u0, u4),
            _mm256_permute2x128_si256::<0x31>(u1, u5),
            _mm256_permute2x128_si256::<0x31>(u2, u6),
            _mm256_permute2x128_si256::<0x31>(u3, u7),
        ]
    }
}

/// What the MD5 thread is told about a body being hashed as it arrives.
enum Msg {
    /// Body `id` is coming: its request is about to be sent.
    Open(u64),
    /// More bytes of body `id`, in order.
    Data(u64, Vec<Bytes>),
    /// Body `id` is complete at this length: answer with its digest once hashed.
    Finish(u64, u64, tokio::sync::oneshot::Sender<[u8; 16]>),
    /// Body `id` was abandoned (a broken body, a cancelled read): forget it.
    Cancel(u64),
}

/// A thread that hashes the bodies of ranged reads while they arrive, in lanes across the
/// reads in flight (see [`serve`]).
pub struct Md5Pool {
    tx: mpsc::Sender<Msg>,
    next: AtomicU64,
}

impl Md5Pool {
    /// The process's pool, started on first use; `None` where lanes do not pay (no AVX2):
    /// then each read hashes its own body as it arrives.
    pub fn shared() -> Option<&'static Md5Pool> {
        static POOL: OnceLock<Option<Md5Pool>> = OnceLock::new();
        POOL.get_or_init(|| {
            #[cfg(target_arch = "x86_64")]
            if std::arch::is_x86_feature_detected!("avx2") {
                let (tx, rx) = mpsc::channel::<Msg>();
                let spawned = std::thread::Builder::new()
                    .name("hyper2kvm-md5".into())
                    .spawn(move || serve(rx));
                if spawned.is_ok() {
                    return Some(Md5Pool {
                        tx,
                        next: AtomicU64::new(0),
                    });
                }
            }
            None
        })
        .as_ref()
    }

    /// A new body to hash, fed piece by piece with [`Md5Stream::push`]. Made before its
    /// request is sent: the thread counts the bodies to come when it decides whether to wait
    /// for more of them to fill its lanes.
    pub fn stream(&'static self) -> Md5Stream {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let _ = self.tx.send(Msg::Open(id));
        Md5Stream {
            pool: self,
            id,
            len: 0,
            batch: Vec::new(),
            batched: 0,
            finished: false,
        }
    }
}

/// Pieces of a body are handed to the MD5 thread in batches of about this many bytes, so it
/// wakes up a few times per range rather than once per socket read.
const BATCH: usize = 256 << 10;

/// One body being hashed by the MD5 thread as it arrives. The pieces are shared, reference
/// counted [`Bytes`] (the HTTP client's receive buffers): the thread reads them while the
/// reader copies them into its own buffer, and drops them when hashed, so a read that is
/// cancelled frees nothing the thread still uses. Dropping an unfinished stream tells the
/// thread to forget it.
pub struct Md5Stream {
    pool: &'static Md5Pool,
    id: u64,
    len: u64,
    batch: Vec<Bytes>,
    batched: usize,
    finished: bool,
}

impl Md5Stream {
    /// The next piece of the body.
    pub fn push(&mut self, piece: Bytes) {
        self.len += piece.len() as u64;
        self.batched += piece.len();
        self.batch.push(piece);
        if self.batched >= BATCH {
            self.send_batch();
        }
    }

    fn send_batch(&mut self) {
        if !self.batch.is_empty() {
            let batch = std::mem::take(&mut self.batch);
            self.batched = 0;
            // The thread never exits while the process runs; if it did, finish() says so.
            let _ = self.pool.tx.send(Msg::Data(self.id, batch));
        }
    }

    /// The MD5 of everything pushed.
    pub async fn finish(mut self) -> [u8; 16] {
        self.send_batch();
        self.finished = true;
        let (reply, answer) = tokio::sync::oneshot::channel();
        self.pool
            .tx
            .send(Msg::Finish(self.id, self.len, reply))
            .expect("the MD5 thread runs as long as the process");
        answer.await.expect("the MD5 thread answers every body")
    }
}

impl Drop for Md5Stream {
    fn drop(&mut self) {
        if !self.finished {
            let _ = self.pool.tx.send(Msg::Cancel(self.id));
        }
    }
}

/// A body's MD5 computed as it arrives: in the MD5 thread's lanes where there is one, by the
/// `md-5` crate in the reading task otherwise.
pub enum BodyHasher {
    /// Hashed by the shared MD5 thread.
    Lanes(Md5Stream),
    /// Hashed here.
    Inline(md5::Md5),
}

impl BodyHasher {
    /// A hasher for one body.
    pub fn new() -> BodyHasher {
        match Md5Pool::shared() {
            Some(pool) => BodyHasher::Lanes(pool.stream()),
            None => BodyHasher::Inline(<md5::Md5 as md5::Digest>::new()),
        }
    }

    /// The next piece of the body.
    pub fn push(&mut self, piece: Bytes) {
        match self {
            BodyHasher::Lanes(s) => s.push(piece),
            BodyHasher::Inline(h) => md5::Digest::update(h, &piece),
        }
    }

    /// The MD5 of everything pushed.
    pub async fn finish(self) -> [u8; 16] {
        match self {
            BodyHasher::Lanes(s) => s.finish().await,
            BodyHasher::Inline(h) => md5::Digest::finalize(h).into(),
        }
    }
}

impl Default for BodyHasher {
    fn default() -> Self {
        BodyHasher::new()
    }
}

/// How long a body's data may wait for other bodies' data to fill the lanes. A server that
/// streams many bodies at once (Azure: every range from its own connection and disks) fills
/// them at once; one that sends one body after the other (Azurite, the simulator) fills them
/// only if complete bodies wait for the next ones, which holds their reads for a few bodies'
/// time while the others keep the server busy.
const MAX_HOLD: Duration = Duration::from_millis(200);

/// Blocks each lane advances between two looks at the queue (16 KiB): a buffer that arrives
/// while others are being hashed takes a free lane at the next pass.
const PASS_BLOCKS: usize = 256;

/// What a lane hashes: a buffer's bytes, and whatever identifies it to its owner.
trait LaneItem {
    fn data(&self) -> &[u8];
}

impl LaneItem for (usize, &[u8]) {
    fn data(&self) -> &[u8] {
        self.1
    }
}

/// A buffer being hashed in a lane: its running state and how many whole blocks are done.
struct Lane<T> {
    item: T,
    state: [u32; 4],
    done: usize,
}

impl<T: LaneItem> Lane<T> {
    fn blocks_left(&self) -> usize {
        self.item.data().len() / 64 - self.done
    }
}

/// Up to [`LANES`] buffers hashed side by side. Each [`pass`](LaneSet::pass) advances every
/// busy lane by up to [`PASS_BLOCKS`]; a finished buffer leaves at once and a new one can take
/// its lane, so lanes stay full while there is work, whatever the buffers' lengths. A buffer
/// alone runs on the portable loop.
#[cfg(target_arch = "x86_64")]
struct LaneSet<T> {
    lanes: [Option<Lane<T>>; LANES],
}

#[cfg(target_arch = "x86_64")]
impl<T> Default for LaneSet<T> {
    fn default() -> Self {
        LaneSet {
            lanes: std::array::from_fn(|_| None),
        }
    }
}

#[cfg(target_arch = "x86_64")]
impl<T: LaneItem> LaneSet<T> {
    fn has_room(&self) -> bool {
        self.lanes.iter().any(Option::is_none)
    }

    fn is_empty(&self) -> bool {
        self.lanes.iter().all(Option::is_none)
    }

    /// Puts `item` in a free lane; the caller checks [`has_room`](Self::has_room).
    fn put(&mut self, item: T) {
        let slot = self
            .lanes
            .iter_mut()
            .find(|l| l.is_none())
            .expect("a free lane");
        *slot = Some(Lane {
            item,
            state: INIT,
            done: 0,
        });
    }

    /// Advances every busy lane by up to [`PASS_BLOCKS`] whole blocks. Needs AVX2.
    fn pass(&mut self) {
        let blocks: [usize; LANES] = std::array::from_fn(|i| {
            self.lanes[i]
                .as_ref()
                .map_or(0, |l| l.blocks_left().min(PASS_BLOCKS))
        });
        match blocks.iter().filter(|&&n| n > 0).count() {
            0 => {}
            1 => {
                let (i, n) = blocks
                    .iter()
                    .copied()
                    .enumerate()
                    .find(|&(_, n)| n > 0)
                    .expect("one busy lane");
                let lane = self.lanes[i].as_mut().expect("busy");
                let at = lane.done * 64;
                compress(&mut lane.state, &lane.item.data()[at..at + n * 64]);
                lane.done += n;
            }
            _ => {
                let mut states: [[u32; 4]; LANES] =
                    std::array::from_fn(|i| self.lanes[i].as_ref().map_or(INIT, |l| l.state));
                let slices: [&[u8]; LANES] = std::array::from_fn(|i| {
                    self.lanes[i]
                        .as_ref()
                        .map_or(&[][..], |l| &l.item.data()[l.done * 64..])
                });
                let upto = blocks.iter().copied().max().unwrap_or(0);
                // SAFETY: lane sets run only where AVX2 was detected (and AVX-512 where
                // `avx512()` says so); lane `i` holds at least `blocks[i]` whole blocks.
                unsafe { run_lanes(&mut states, &slices, &blocks, upto) }
                for (i, lane) in self.lanes.iter_mut().enumerate() {
                    if let Some(lane) = lane {
                        lane.state = states[i];
                        lane.done += blocks[i];
                    }
                }
            }
        }
    }

    /// Takes out the buffers with no whole block left, hashing their tails and padding.
    fn take_finished(&mut self) -> Vec<(T, [u8; 16])> {
        let mut out = Vec::new();
        for slot in self.lanes.iter_mut() {
            if slot.as_ref().is_some_and(|l| l.blocks_left() == 0) {
                let lane = slot.take().expect("checked");
                let data = lane.item.data();
                let full = data.len() / 64 * 64;
                let digest = finish(lane.state, &data[full..], data.len() as u64);
                out.push((lane.item, digest));
            }
        }
        out
    }
}

/// A body in the MD5 thread: its running state, what has arrived and is not hashed yet, and
/// the bytes after the last whole block.
#[cfg(target_arch = "x86_64")]
struct Body {
    state: [u32; 4],
    /// Whole blocks to hash, in order.
    queue: VecDeque<Piece>,
    /// Bytes after the last whole block queued (under 64).
    carry: [u8; 64],
    carry_len: usize,
    /// Since when the oldest data not hashed yet has waited.
    waiting_since: Option<Instant>,
    /// Set by [`Msg::Finish`]: the body's length, and who waits for the digest.
    closing: Option<(u64, tokio::sync::oneshot::Sender<[u8; 16]>)>,
}

/// Whole blocks of a body.
#[cfg(target_arch = "x86_64")]
enum Piece {
    /// One block put together from the ends of two pieces.
    Block([u8; 64]),
    /// `bytes` (whole blocks), of which `done` blocks are hashed.
    Run { bytes: Bytes, done: usize },
}

#[cfg(target_arch = "x86_64")]
impl Body {
    fn new() -> Body {
        Body {
            state: INIT,
            queue: VecDeque::new(),
            carry: [0; 64],
            carry_len: 0,
            waiting_since: None,
            closing: None,
        }
    }

    /// Queues `piece`'s whole blocks, completing the carried block first.
    fn append(&mut self, mut piece: Bytes) {
        if self.carry_len > 0 {
            let take = (64 - self.carry_len).min(piece.len());
            self.carry[self.carry_len..self.carry_len + take].copy_from_slice(&piece[..take]);
            self.carry_len += take;
            piece = piece.slice(take..);
            if self.carry_len < 64 {
                return;
            }
            self.queue.push_back(Piece::Block(self.carry));
            self.carry_len = 0;
        }
        let whole = piece.len() / 64 * 64;
        let rest = piece.len() - whole;
        self.carry[..rest].copy_from_slice(&piece[whole..]);
        self.carry_len = rest;
        if whole > 0 {
            self.queue.push_back(Piece::Run {
                bytes: piece.slice(..whole),
                done: 0,
            });
        }
        if !self.queue.is_empty() && self.waiting_since.is_none() {
            self.waiting_since = Some(Instant::now());
        }
    }

    /// Hashes the single blocks at the front of the queue (they are rare: one per piece
    /// boundary that splits a block); true when a run is next.
    fn run_next(&mut self) -> bool {
        while let Some(Piece::Block(block)) = self.queue.front() {
            compress(&mut self.state, block);
            self.queue.pop_front();
        }
        if self.queue.is_empty() {
            self.waiting_since = None;
        }
        self.queue.front().is_some()
    }

    /// The blocks of the run at the front the next pass can take.
    fn run_slice(&self) -> &[u8] {
        match self.queue.front() {
            Some(Piece::Run { bytes, done }) => {
                let end = bytes.len().min((done + PASS_BLOCKS) * 64);
                &bytes[done * 64..end]
            }
            _ => &[],
        }
    }

    /// Records `blocks` more blocks of the front run as hashed.
    fn advance(&mut self, blocks: usize) {
        if let Some(Piece::Run { bytes, done }) = self.queue.front_mut() {
            *done += blocks;
            if *done * 64 >= bytes.len() {
                self.queue.pop_front();
            }
        }
    }
}

/// The MD5 thread: the bodies of the reads in flight are hashed as their pieces arrive, in
/// lanes: each pass advances up to [`LANES`] bodies by up to [`PASS_BLOCKS`] blocks. A pass
/// runs when as many bodies have data as lanes (or as bodies are open, if fewer), or when
/// some data has waited [`MAX_HOLD`]; until then the thread sleeps, since waiting costs no
/// CPU and the lanes hash eight bodies for little more than the price of one.
#[cfg(target_arch = "x86_64")]
fn serve(rx: mpsc::Receiver<Msg>) {
    let mut bodies: HashMap<u64, Body> = HashMap::new();
    let apply = |bodies: &mut HashMap<u64, Body>, msg: Msg| match msg {
        Msg::Open(id) => {
            bodies.insert(id, Body::new());
        }
        Msg::Data(id, pieces) => {
            // A body cancelled before its data arrived is not brought back.
            if let Some(body) = bodies.get_mut(&id) {
                for piece in pieces {
                    body.append(piece);
                }
            }
        }
        Msg::Finish(id, len, reply) => {
            if let Some(body) = bodies.get_mut(&id) {
                body.closing = Some((len, reply));
            }
        }
        Msg::Cancel(id) => {
            bodies.remove(&id);
        }
    };
    loop {
        answer_finished(&mut bodies);
        // (oldest waiting data first, id) of the bodies with a run to hash.
        let mut ready: Vec<(Instant, u64)> = bodies
            .iter_mut()
            .filter_map(|(&id, b)| {
                b.run_next()
                    .then(|| (b.waiting_since.unwrap_or_else(Instant::now), id))
            })
            .collect();
        answer_finished(&mut bodies);
        if ready.is_empty() {
            match rx.recv() {
                Ok(msg) => apply(&mut bodies, msg),
                Err(_) => return,
            }
            while let Ok(msg) = rx.try_recv() {
                apply(&mut bodies, msg);
            }
            continue;
        }
        ready.sort_unstable();
        let enough = ready.len() >= LANES.min(bodies.len());
        let wait = (ready[0].0 + MAX_HOLD).saturating_duration_since(Instant::now());
        if !enough && !wait.is_zero() {
            match rx.recv_timeout(wait) {
                Ok(msg) => {
                    apply(&mut bodies, msg);
                    while let Ok(msg) = rx.try_recv() {
                        apply(&mut bodies, msg);
                    }
                    continue;
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => return,
            }
        }
        // The data that waited longest first.
        ready.truncate(LANES);
        pass(&mut bodies, &ready);
        while let Ok(msg) = rx.try_recv() {
            apply(&mut bodies, msg);
        }
    }
}

/// Advances the bodies `ready` (each with a run at the front) by one pass.
#[cfg(target_arch = "x86_64")]
fn pass(bodies: &mut HashMap<u64, Body>, ready: &[(Instant, u64)]) {
    let mut states = [INIT; LANES];
    let mut blocks = [0usize; LANES];
    {
        let mut slices: [&[u8]; LANES] = [&[]; LANES];
        for (lane, (_, id)) in ready.iter().enumerate() {
            let body = &bodies[id];
            states[lane] = body.state;
            slices[lane] = body.run_slice();
            blocks[lane] = slices[lane].len() / 64;
        }
        if ready.len() == 1 {
            compress(&mut states[0], slices[0]);
        } else {
            let upto = blocks.iter().copied().max().unwrap_or(0);
            // SAFETY: the MD5 thread runs only where AVX2 was detected (AVX-512 where
            // `avx512()` says so); lane `i` holds `blocks[i]` whole blocks.
            unsafe { run_lanes(&mut states, &slices, &blocks, upto) }
        }
    }
    for (lane, (_, id)) in ready.iter().enumerate() {
        let body = bodies.get_mut(id).expect("ready bodies are present");
        body.state = states[lane];
        body.advance(blocks[lane]);
    }
}

/// Answers the bodies that are complete and fully hashed.
#[cfg(target_arch = "x86_64")]
fn answer_finished(bodies: &mut HashMap<u64, Body>) {
    let done: Vec<u64> = bodies
        .iter()
        .filter(|(_, b)| b.closing.is_some() && b.queue.is_empty())
        .map(|(&id, _)| id)
        .collect();
    for id in done {
        let body = bodies.remove(&id).expect("present");
        let (len, reply) = body.closing.expect("closing");
        let digest = finish(body.state, &body.carry[..body.carry_len], len);
        // A read that was cancelled meanwhile dropped its receiver.
        let _ = reply.send(digest);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use md5::{Digest, Md5};

    fn reference(data: &[u8]) -> [u8; 16] {
        Md5::digest(data).into()
    }

    fn bytes(len: usize, seed: u64) -> Vec<u8> {
        let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
        (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect()
    }

    #[test]
    fn rfc1321_test_suite() {
        let hex = |d: [u8; 16]| d.iter().map(|b| format!("{b:02x}")).collect::<String>();
        assert_eq!(
            hex(digest_portable(b"")),
            "d41d8cd98f00b204e9800998ecf8427e"
        );
        assert_eq!(
            hex(digest_portable(b"abc")),
            "900150983cd24fb0d6963f7d28e17f72"
        );
        assert_eq!(
            hex(digest_portable(
                b"12345678901234567890123456789012345678901234567890123456789012345678901234567890"
            )),
            "57edf4a22be3c955ac49da2e2107b67a"
        );
    }

    #[test]
    fn every_length_around_block_edges_matches_the_md5_crate() {
        for len in (0..200).chain([4095, 4096, 4097, 65536 + 55, 65536 + 56]) {
            let data = bytes(len, len as u64);
            assert_eq!(digest_portable(&data), reference(&data), "length {len}");
        }
    }

    #[test]
    fn lanes_of_equal_and_unequal_lengths_match() {
        // Equal lengths (the common case), unequal ones, a batch larger than the lanes, and
        // one of a single buffer.
        let lens: Vec<usize> = vec![4096; 8]
            .into_iter()
            .chain([0, 1, 63, 64, 65, 1000, 70_000, 4096, 130, 4096, 5])
            .collect();
        // Lengths in blocks that end at different points (lanes going idle one by one).
        let lens: Vec<usize> = lens
            .into_iter()
            .chain([64 * 10, 64 * 3 + 7, 64 * 7, 64 * 40 + 63])
            .collect();
        let buffers: Vec<Vec<u8>> = lens
            .iter()
            .enumerate()
            .map(|(i, &n)| bytes(n, i as u64 + 1))
            .collect();
        for take in [1, 2, 8, 9, buffers.len()] {
            let take = take.min(buffers.len());
            let inputs: Vec<&[u8]> = buffers[..take].iter().map(|b| b.as_slice()).collect();
            let got = digest_many(&inputs);
            for (b, d) in inputs.iter().zip(got) {
                assert_eq!(d, reference(b), "batch of {take}, length {}", b.len());
            }
        }
    }

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn avx2_and_avx512_lanes_agree_with_the_portable_loop() {
        if !std::arch::is_x86_feature_detected!("avx2") {
            return;
        }
        let buffers: Vec<Vec<u8>> = (0..LANES)
            .map(|i| bytes(64 * (3 + 5 * i), i as u64))
            .collect();
        let lanes: [&[u8]; LANES] = std::array::from_fn(|i| buffers[i].as_slice());
        let blocks: [usize; LANES] = std::array::from_fn(|i| buffers[i].len() / 64);
        let upto = blocks[LANES - 2];
        let mut want = [INIT; LANES];
        for (state, (data, &n)) in want.iter_mut().zip(buffers.iter().zip(&blocks)) {
            compress(state, &data[..n.min(upto) * 64]);
        }
        let mut got = [INIT; LANES];
        // SAFETY: AVX2 detected; each lane holds its blocks.
        unsafe { lanes::avx2(&mut got, &lanes, &blocks, upto) };
        assert_eq!(got, want, "avx2");
        if std::arch::is_x86_feature_detected!("avx512f")
            && std::arch::is_x86_feature_detected!("avx512vl")
        {
            let mut got = [INIT; LANES];
            // SAFETY: AVX-512F and VL detected; each lane holds its blocks.
            unsafe { lanes::avx512(&mut got, &lanes, &blocks, upto) };
            assert_eq!(got, want, "avx512");
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn bodies_hashed_as_they_arrive_match() {
        let mut tasks = tokio::task::JoinSet::new();
        // Lengths and piece sizes differ, so pieces split blocks anywhere, bodies leave their
        // lanes at different passes and others take them; some bodies are abandoned halfway.
        for i in 0..40u64 {
            tasks.spawn(async move {
                let len = 1_000 + (i as usize * 37_813) % 600_000;
                let data = Bytes::from(bytes(len, i));
                let piece = [1, 63, 64, 65, 4096, 16_411, 70_000, 300_000][i as usize % 8];
                let mut hasher = BodyHasher::new();
                let mut at = 0;
                while at < len {
                    let end = (at + piece).min(len);
                    hasher.push(data.slice(at..end));
                    at = end;
                    if i % 7 == 3 && at > len / 2 {
                        return; // dropped unfinished
                    }
                    if at % 5 == 0 {
                        tokio::task::yield_now().await;
                    }
                }
                assert_eq!(hasher.finish().await, reference(&data), "body {i}");
            });
        }
        while let Some(r) = tasks.join_next().await {
            r.unwrap();
        }
        // An empty body.
        assert_eq!(BodyHasher::new().finish().await, reference(b""));
    }
}

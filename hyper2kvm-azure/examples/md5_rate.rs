//! How fast Content-MD5 checking runs on this machine: one buffer at a time (the `md-5`
//! crate), and eight side by side in SIMD lanes (`blob::md5x`: AVX-512VL where the CPU has
//! it, AVX2 otherwise or with `H2K_MD5_AVX512=0`).
//!
//! ```text
//! cargo run --release -p hyper2kvm-azure --example md5_rate
//! H2K_MD5_AVX512=0 cargo run --release -p hyper2kvm-azure --example md5_rate
//! ```

use std::time::Instant;

use hyper2kvm_azure::blob::md5x;
use md5::{Digest, Md5};

fn main() {
    let buffers: Vec<Vec<u8>> = (0..16u8)
        .map(|i| {
            (0..4 << 20)
                .map(|j: u32| (j.wrapping_mul(2654435761) >> 13) as u8 ^ i)
                .collect()
        })
        .collect();
    let total = buffers.iter().map(Vec::len).sum::<usize>() as f64 / (1 << 20) as f64;
    let t = Instant::now();
    let one: Vec<[u8; 16]> = buffers.iter().map(|b| Md5::digest(b).into()).collect();
    let single = total / t.elapsed().as_secs_f64();
    let t = Instant::now();
    let inputs: Vec<&[u8]> = buffers.iter().map(Vec::as_slice).collect();
    let many = md5x::digest_many(&inputs);
    let lanes = total / t.elapsed().as_secs_f64();
    assert_eq!(one, many);
    // Ranges of an export are not all 4 MiB: extents end anywhere.
    let uneven: Vec<&[u8]> = buffers
        .iter()
        .enumerate()
        .map(|(i, b)| &b[..(b.len() / 8) * (1 + (i * 5) % 8)])
        .collect();
    let uneven_total = uneven.iter().map(|b| b.len()).sum::<usize>() as f64 / (1 << 20) as f64;
    let t = Instant::now();
    let many = md5x::digest_many(&uneven);
    let uneven_rate = uneven_total / t.elapsed().as_secs_f64();
    for (b, d) in uneven.iter().zip(many) {
        assert_eq!(<[u8; 16]>::from(Md5::digest(b)), d);
    }
    println!(
        "md5: one at a time {single:.0} MiB/s; eight lanes {lanes:.0} MiB/s (equal lengths), {uneven_rate:.0} MiB/s (uneven)"
    );
}

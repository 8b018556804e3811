//! Converts a local VHD (fixed or dynamic) or raw disk into a zstd-compressed qcow2, printing
//! progress: the smallest embedding of hyper2kvm's pipeline.
//!
//! ```text
//! cargo run --release --example convert_vhd -- disk.vhd disk.qcow2
//! ```

use std::path::PathBuf;
use std::sync::Arc;

use hyper2kvm::core::{convert, open_disk, Compression, ConvertOptions, InputFormat, Progress};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args_os().skip(1);
    let (Some(src), Some(dst)) = (args.next(), args.next()) else {
        eprintln!("usage: convert_vhd SRC DST");
        std::process::exit(2);
    };
    let (src, dst) = (PathBuf::from(src), PathBuf::from(dst));

    let disk = open_disk(&src, InputFormat::Auto)?;
    println!("{}: {} bytes", disk.describe(), disk.size());
    let opts = ConvertOptions {
        compression: Some(Compression::Zstd),
        ..Default::default()
    };
    let progress = Arc::new(|p: Progress| {
        if p.total > 0 && p.done == p.total {
            println!("all {} allocated bytes read", p.total);
        }
    });
    let stats = convert(disk, &dst, &opts, Some(progress)).await?;
    println!(
        "{}: read {} bytes ({} zero), wrote {} bytes in {:.2?}",
        dst.display(),
        stats.bytes_read,
        stats.zero_bytes,
        stats.bytes_written,
        stats.elapsed
    );
    Ok(())
}

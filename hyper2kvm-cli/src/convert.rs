//! `hyper2kvm convert SRC DST`.

use std::path::Path;
use std::sync::Arc;

use clap::ValueEnum;
use hyper2kvm_azure::{build_http_client, BlobOptions, HttpOptions, PageBlobReader, SasUrl};
use hyper2kvm_core::fsafe::{check_destination, check_distinct};
use hyper2kvm_core::pipeline::{REMOTE_CHUNK_SIZE, REMOTE_CONCURRENCY};
use hyper2kvm_core::{
    convert, open_disk, Compression, ConvertOptions, ConvertStats, DiskReader, InputFormat,
    OutputFormat,
};

use crate::args::{CompressArg, ConvertArgs, FormatArg, InputFormatArg};
use crate::config::UsageError;
use crate::progress::Bar;
use crate::signal::until_interrupted;
use crate::units::human_bytes;

/// Runs the conversion and prints the summary line.
pub async fn run(args: ConvertArgs) -> anyhow::Result<()> {
    // A URL is recognised by its scheme, in any case (`HTTPS://`), and any scheme is taken
    // for a URL so that `ftp://…` is refused as one; it is a secret, so it is never printed
    // as given.
    let url = args.src.to_str().filter(|s| has_scheme(s));
    // A usage error (exit 2), said before any bar or wait line is drawn.
    if url.is_some()
        && !matches!(
            args.input_format,
            InputFormatArg::Auto | InputFormatArg::Vhd
        )
    {
        return Err(UsageError(format!(
            "a URL source is always a fixed VHD page blob; drop --input-format {}",
            args.input_format.to_possible_value().unwrap().get_name()
        ))
        .into());
    }
    match url {
        None => check_distinct(&args.src, &args.dst)?,
        Some(_) => check_destination(&args.dst)?,
    }
    let input_format = match args.input_format {
        InputFormatArg::Auto => InputFormat::Auto,
        InputFormatArg::Vhd => InputFormat::Vhd,
        InputFormatArg::Vmdk => InputFormat::Vmdk,
        InputFormatArg::Vhdx => InputFormat::Vhdx,
        InputFormatArg::Raw => InputFormat::Raw,
    };
    let opts = ConvertOptions {
        format: match args.format {
            FormatArg::Qcow2 => OutputFormat::Qcow2,
            FormatArg::Raw => OutputFormat::Raw,
        },
        compression: args.compress.map(|c| match c {
            CompressArg::Zstd => Compression::Zstd,
            CompressArg::Deflate => Compression::Deflate,
        }),
        compression_level: args.compress_level,
        cluster_size: args.cluster_size,
        // The library's defaults: more and larger reads in flight over a network than from a
        // file, where a small working set keeps the kernel's copies in the CPU's caches.
        chunk_size: match (args.chunk_size, url.is_some()) {
            (Some(n), _) => n,
            (None, true) => REMOTE_CHUNK_SIZE,
            (None, false) => ConvertOptions::default().chunk_size,
        },
        concurrency: match (args.concurrency, url.is_some()) {
            (Some(n), _) => usize::from(n),
            (None, true) => REMOTE_CONCURRENCY,
            (None, false) => ConvertOptions::default().concurrency,
        },
        // A download is worth keeping: a URL source always resumes.
        resume: args.resume || url.is_some(),
        checkpoint_bytes: args.checkpoint_every,
        // Over a network the client's CPU counts; from a file, the disk's queue does.
        direct_io: url.is_some(),
        ..ConvertOptions::default()
    };
    // The bar (or the plain lines) first: opening a URL may already wait on the server.
    let label = args.dst.display().to_string();
    let bar = Bar::new(&label, args.quiet);
    let waits = crate::waiting::spawn(bar.wait_sink(&label));
    let reader: Arc<dyn DiskReader> = match url {
        Some(url) => {
            let sas = SasUrl::parse(url)?;
            let http = build_http_client(&HttpOptions::default())?;
            Arc::new(PageBlobReader::open(http, sas, BlobOptions::default()).await?)
        }
        None => open_disk(&args.src, input_format)?,
    };
    let result = until_interrupted(convert(reader, &args.dst, &opts, Some(bar.callback()))).await;
    waits.abort();
    bar.finish();
    let stats = result?;
    if !args.quiet {
        println!("{}", summary(&args.dst, &stats));
    }
    Ok(())
}

/// One line: what was read, written, skipped, and how fast.
fn summary(dst: &Path, s: &ConvertStats) -> String {
    let secs = s.elapsed.as_secs_f64();
    let rate = if secs > 0.0 {
        s.bytes_read as f64 / secs / (1 << 20) as f64
    } else {
        0.0
    };
    let resumed = if s.resumed_bytes > 0 {
        format!(
            " (resumed: {} were already written)",
            human_bytes(s.resumed_bytes)
        )
    } else {
        String::new()
    };
    format!(
        "{}: virtual size {}, read {}, wrote {}, skipped {} of zeros and {} unallocated, in {:.2} s ({:.0} MiB/s){}",
        dst.display(),
        human_bytes(s.virtual_size),
        human_bytes(s.bytes_read),
        human_bytes(s.bytes_written),
        human_bytes(s.zero_bytes),
        human_bytes(s.virtual_size - s.bytes_read - s.resumed_bytes),
        secs,
        rate,
        resumed,
    )
}

/// `scheme://…`: letters, digits, `+`, `-` or `.` after a letter, then `://`.
fn has_scheme(s: &str) -> bool {
    let Some((scheme, _)) = s.split_once("://") else {
        return false;
    };
    let mut chars = scheme.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))
}

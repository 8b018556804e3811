//! Sparse raw images: the file is sized up front and only non-zero blocks are written, so
//! zeros stay holes.

use std::path::Path;

use crate::error::{Error, ErrorKind, Result};
use crate::output::{ClusterData, ImageSink, PartFile, PreparedChunk};

/// The block size raw output detects zeros at: the common file-system block.
pub const RAW_BLOCK: usize = 4096;

/// Writes a sparse raw image.
#[must_use = "the image is only complete once finish() has run"]
#[derive(Debug)]
pub struct RawWriter {
    out: PartFile,
    size: u64,
}

impl RawWriter {
    /// Creates `dst.part`, sized to `size` bytes of holes.
    pub fn create(dst: &Path, size: u64) -> Result<RawWriter> {
        let mut out = PartFile::create(dst)?;
        out.set_len(size)?;
        Ok(RawWriter { out, size })
    }

    /// Carries on with the `dst.part` of an interrupted run, whose checkpoint `state` was
    /// returned by [`ImageSink::checkpoint`].
    pub fn resume(dst: &Path, size: u64, state: &[u8]) -> Result<RawWriter> {
        if state != size.to_be_bytes() {
            return Err(Error::new(
                ErrorKind::InvalidFormat,
                "journal is for another disk size",
            ));
        }
        Ok(RawWriter {
            out: PartFile::reopen(dst, size)?,
            size,
        })
    }

    /// Keeps `dst.part` if the writer is dropped unfinished, for a resumed run.
    pub fn keep_on_failure(&mut self) {
        self.out.keep_on_failure();
    }
}

impl ImageSink for RawWriter {
    fn write_chunk(&mut self, chunk: &PreparedChunk) -> Result<()> {
        let g = chunk.granularity;
        let mut i = 0;
        while i < chunk.clusters.len() {
            if chunk.clusters[i] == ClusterData::Zero {
                i += 1;
                continue;
            }
            let run_start = i;
            while i < chunk.clusters.len() && chunk.clusters[i] != ClusterData::Zero {
                i += 1;
            }
            let offset = chunk.offset + (run_start * g) as u64;
            // The last block may be padded past the disk's end: write only what belongs.
            let end = (chunk.offset + (i * g) as u64).min(self.size);
            let bytes = &chunk.data[run_start * g..run_start * g + (end - offset) as usize];
            self.out.write_at(bytes, offset)?;
        }
        Ok(())
    }

    fn complete_below(&mut self, _guest_offset: u64) -> Result<()> {
        Ok(())
    }

    fn keep_on_failure(&mut self) {
        self.out.keep_on_failure();
    }

    fn direct_io(&mut self) {
        self.out.direct_io();
    }

    fn checkpoint(&mut self) -> Result<Vec<u8>> {
        self.out.sync_data()?;
        Ok(self.size.to_be_bytes().to_vec())
    }

    fn finish(self: Box<Self>) -> Result<u64> {
        self.out.commit()
    }
}

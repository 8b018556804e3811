//! A test-only VHDX writer, from the spec, for what `qemu-img` cannot make: 4 KiB logical
//! sectors, differencing disks with partially present blocks, dirty logs, and damage.
//!
//! Layout: identifier, two headers, two region tables, log at 1 MiB (1 MiB), metadata at
//! 2 MiB (1 MiB), BAT at 3 MiB (rounded up to whole MiB), then blocks in index order, each
//! at the next MiB, and sector bitmaps (1 MiB) after them.

use std::collections::BTreeMap;
use std::path::Path;

use super::crc32c::crc32c_skipping;
use super::fields::{put32, put64};
use super::guid::Guid;
use super::header::{VhdxHeader, HEADER_OFFSETS};
use super::metadata::{
    parent_locator_bytes, region_bytes, FILE_PARAMETERS, LOGICAL_SECTOR_SIZE, PARENT_LOCATOR,
    PHYSICAL_SECTOR_SIZE, VIRTUAL_DISK_ID, VIRTUAL_DISK_SIZE,
};
use super::region::{table_bytes, BAT_GUID, METADATA_GUID, REGION_TABLE_OFFSETS};
use super::MIB;

pub(crate) const LOG_OFFSET: u64 = MIB;
pub(crate) const LOG_LEN: u64 = MIB;
pub(crate) const METADATA_OFFSET: u64 = 2 * MIB;
pub(crate) const BAT_OFFSET: u64 = 3 * MIB;

/// What a payload block holds.
#[derive(Clone, Debug)]
pub(crate) enum BlockSpec {
    /// FULLY_PRESENT with these bytes (the block's length, or less for the last block).
    Full(Vec<u8>),
    /// PARTIALLY_PRESENT: the bytes, and per logical sector whether it is in this file.
    Partial(Vec<u8>, Vec<bool>),
    /// Any other state, with no data (0 NOT_PRESENT, 1 UNDEFINED, 2 ZERO, 3 UNMAPPED…).
    State(u64),
}

/// A VHDX to build.
#[derive(Clone, Debug)]
pub(crate) struct Image {
    pub size: u64,
    pub block_size: u32,
    pub logical_sector: u32,
    pub physical_sector: u32,
    pub data_write_guid: Guid,
    pub log_guid: Guid,
    /// Differencing: the parent locator's entries.
    pub parent: Option<Vec<(String, String)>>,
    pub blocks: BTreeMap<u64, BlockSpec>,
    /// Raw log entries, placed one after another from the start of the log.
    pub log: Vec<Vec<u8>>,
    /// Extra required regions (to test refusal).
    pub extra_regions: Vec<(Guid, u64, u32, bool)>,
    /// BAT entries to write verbatim over the computed ones: (entry index, value).
    pub raw_bat: Vec<(u64, u64)>,
    /// The BAT region's length, if not what the entries need.
    pub bat_len: Option<u64>,
}

impl Image {
    pub(crate) fn new(size: u64, block_size: u32, logical_sector: u32) -> Self {
        Image {
            size,
            block_size,
            logical_sector,
            physical_sector: 4096,
            data_write_guid: Guid([0xd1; 16]),
            log_guid: Guid::default(),
            parent: None,
            blocks: BTreeMap::new(),
            log: Vec::new(),
            extra_regions: Vec::new(),
            raw_bat: Vec::new(),
            bat_len: None,
        }
    }

    /// Makes this a differencing disk whose parent is `relative_path` with DataWriteGuid
    /// `linkage`.
    pub(crate) fn child_of(mut self, relative_path: &str, linkage: Guid) -> Self {
        self.parent = Some(vec![
            ("parent_linkage".into(), format!("{{{linkage}}}")),
            ("relative_path".into(), relative_path.into()),
            (
                "absolute_win32_path".into(),
                format!(r"C:\VMs\{relative_path}"),
            ),
        ]);
        self
    }

    pub(crate) fn chunk_ratio(&self) -> u64 {
        (1u64 << 23) * u64::from(self.logical_sector) / u64::from(self.block_size)
    }

    /// BAT index of payload block `i`.
    pub(crate) fn bat_index(&self, i: u64) -> u64 {
        i + i / self.chunk_ratio()
    }

    fn bat_entries(&self) -> u64 {
        let blocks = self.size.div_ceil(u64::from(self.block_size));
        let cr = self.chunk_ratio();
        if self.parent.is_some() {
            blocks.div_ceil(cr) * (cr + 1)
        } else if blocks == 0 {
            0
        } else {
            blocks + (blocks - 1) / cr
        }
    }

    pub(crate) fn header(&self, sequence: u64, offset: u64) -> VhdxHeader {
        VhdxHeader {
            offset,
            sequence,
            file_write_guid: Guid([0xf1; 16]),
            data_write_guid: self.data_write_guid,
            log_guid: self.log_guid,
            log_version: 0,
            version: 1,
            log_length: LOG_LEN as u32,
            log_offset: LOG_OFFSET,
        }
    }

    /// The file's bytes.
    pub(crate) fn build(&self) -> Vec<u8> {
        let bs = u64::from(self.block_size);
        let entries = self.bat_entries();
        let bat_len = self
            .bat_len
            .unwrap_or((entries * 8).next_multiple_of(MIB).max(MIB));
        let mut file = vec![0u8; (BAT_OFFSET + bat_len) as usize];
        file[..8].copy_from_slice(b"vhdxfile");
        for (i, off) in HEADER_OFFSETS.into_iter().enumerate() {
            let h = self.header(i as u64 + 1, off).to_bytes();
            file[off as usize..off as usize + h.len()].copy_from_slice(&h);
        }
        let mut regions = vec![
            (BAT_GUID, BAT_OFFSET, bat_len as u32, true),
            (METADATA_GUID, METADATA_OFFSET, MIB as u32, true),
        ];
        regions.extend_from_slice(&self.extra_regions);
        let table = table_bytes(&regions);
        for off in REGION_TABLE_OFFSETS {
            file[off as usize..off as usize + table.len()].copy_from_slice(&table);
        }
        let flags = u32::from(self.parent.is_some()) << 1;
        let mut params = self.block_size.to_le_bytes().to_vec();
        params.extend_from_slice(&flags.to_le_bytes());
        let mut items = vec![
            (FILE_PARAMETERS, params, 4),
            (VIRTUAL_DISK_SIZE, self.size.to_le_bytes().to_vec(), 6),
            (VIRTUAL_DISK_ID, vec![0x1d; 16], 6),
            (
                LOGICAL_SECTOR_SIZE,
                self.logical_sector.to_le_bytes().to_vec(),
                6,
            ),
            (
                PHYSICAL_SECTOR_SIZE,
                self.physical_sector.to_le_bytes().to_vec(),
                6,
            ),
        ];
        if let Some(locator) = &self.parent {
            let pairs: Vec<(&str, &str)> = locator
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect();
            items.push((PARENT_LOCATOR, parent_locator_bytes(&pairs), 4));
        }
        let meta = region_bytes(&items, MIB as usize);
        file[METADATA_OFFSET as usize..(METADATA_OFFSET + MIB) as usize].copy_from_slice(&meta);

        let mut bat = vec![0u64; entries.min(bat_len / 8) as usize];
        let mut bitmaps: BTreeMap<u64, Vec<u8>> = BTreeMap::new();
        let sector = u64::from(self.logical_sector);
        for (&i, spec) in &self.blocks {
            let bi = self.bat_index(i) as usize;
            let (state, data) = match spec {
                BlockSpec::Full(d) => (6, Some(d)),
                BlockSpec::Partial(d, present) => {
                    let chunk = i / self.chunk_ratio();
                    let bitmap = bitmaps
                        .entry(chunk)
                        .or_insert_with(|| vec![0; MIB as usize]);
                    let first = (i % self.chunk_ratio()) * bs / sector;
                    for (s, &here) in present.iter().enumerate() {
                        if here {
                            let bit = first + s as u64;
                            bitmap[(bit / 8) as usize] |= 1 << (bit % 8);
                        }
                    }
                    (7, Some(d))
                }
                BlockSpec::State(s) => (*s, None),
            };
            bat[bi] = state;
            if let Some(d) = data {
                let at = file.len() as u64;
                file.resize((at + bs) as usize, 0);
                file[at as usize..at as usize + d.len()].copy_from_slice(d);
                bat[bi] |= at;
            }
        }
        for (chunk, bitmap) in bitmaps {
            let at = file.len() as u64;
            file.extend_from_slice(&bitmap);
            let cr = self.chunk_ratio();
            bat[(chunk * (cr + 1) + cr) as usize] = at | 6;
        }
        for &(i, v) in &self.raw_bat {
            bat[i as usize] = v;
        }
        for (i, e) in bat.iter().enumerate() {
            put64(&mut file, BAT_OFFSET as usize + i * 8, *e);
        }
        let mut at = LOG_OFFSET as usize;
        for entry in &self.log {
            file[at..at + entry.len()].copy_from_slice(entry);
            at += entry.len();
        }
        file
    }

    pub(crate) fn write(&self, path: &Path) -> Vec<u8> {
        let bytes = self.build();
        std::fs::write(path, &bytes).unwrap();
        bytes
    }
}

/// One write of a log entry.
#[derive(Clone, Debug)]
pub(crate) enum LogWrite {
    /// A 4 KiB sector at a file offset.
    Data(u64, Vec<u8>),
    /// Zeros over `len` bytes at a file offset.
    Zero(u64, u64),
}

/// A log entry's bytes, per MS-VHDX 2.3.1, with a valid checksum.
pub(crate) struct LogEntry {
    pub sequence: u64,
    /// Byte offset in the log of the sequence's first entry.
    pub tail: u32,
    pub log_guid: Guid,
    pub flushed_file_offset: u64,
    pub last_file_offset: u64,
    pub writes: Vec<LogWrite>,
}

impl LogEntry {
    pub(crate) fn bytes(&self) -> Vec<u8> {
        let count = self.writes.len();
        let desc_sectors = (64 + 32 * count).div_ceil(4096);
        let data_sectors = self
            .writes
            .iter()
            .filter(|w| matches!(w, LogWrite::Data(..)))
            .count();
        let len = (desc_sectors + data_sectors) * 4096;
        let mut b = vec![0u8; len];
        b[..4].copy_from_slice(b"loge");
        put32(&mut b, 8, len as u32);
        put32(&mut b, 12, self.tail);
        put64(&mut b, 16, self.sequence);
        put32(&mut b, 24, count as u32);
        b[32..48].copy_from_slice(&self.log_guid.0);
        put64(&mut b, 48, self.flushed_file_offset);
        put64(&mut b, 56, self.last_file_offset);
        let mut data_at = desc_sectors * 4096;
        for (i, w) in self.writes.iter().enumerate() {
            let d = 64 + 32 * i;
            match w {
                LogWrite::Data(offset, sector) => {
                    assert_eq!(sector.len(), 4096);
                    b[d..d + 4].copy_from_slice(b"desc");
                    b[d + 4..d + 8].copy_from_slice(&sector[4092..]);
                    b[d + 8..d + 16].copy_from_slice(&sector[..8]);
                    put64(&mut b, d + 16, *offset);
                    b[data_at..data_at + 4].copy_from_slice(b"data");
                    put32(&mut b, data_at + 4, (self.sequence >> 32) as u32);
                    b[data_at + 8..data_at + 4092].copy_from_slice(&sector[8..4092]);
                    put32(&mut b, data_at + 4092, self.sequence as u32);
                    data_at += 4096;
                }
                LogWrite::Zero(offset, zlen) => {
                    b[d..d + 4].copy_from_slice(b"zero");
                    put64(&mut b, d + 8, *zlen);
                    put64(&mut b, d + 16, *offset);
                }
            }
            put64(&mut b, d + 24, self.sequence);
        }
        let sum = crc32c_skipping(&b, 4);
        put32(&mut b, 4, sum);
        b
    }
}

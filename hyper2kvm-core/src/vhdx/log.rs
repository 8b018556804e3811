//! The VHDX log (MS-VHDX 2.3): replaying the active sequence into an in-memory overlay.
//!
//! A writer records metadata updates (BAT, region tables, metadata, sector bitmaps) in a
//! circular log before making them in place; if it crashed in between, the header's LogGuid
//! is non-zero and the file's structures are only right once the log is replayed. We never
//! modify the input, so the replay goes into the [`FileView`]'s overlay that every later read
//! consults.
//!
//! The log is a ring of 4 KiB sectors holding entries: a 64-byte header ("loge"), 32-byte
//! descriptors ("desc" for a 4 KiB data sector, "zero" for a zeroed range), padded to whole
//! sectors, then one data sector ("data") per data descriptor. An entry is valid when its
//! CRC-32C (over the whole entry), LogGuid, sequence numbers and signatures check. The
//! *active sequence* ends at the valid entry with the highest sequence number (the head) and
//! starts at the entry the head's `tail` points to, each entry's sequence number one more than
//! the previous. It is applied oldest first.

use std::collections::HashMap;

use super::crc32c::Crc32c;
use super::fields::{le32, le64};
use super::guid::Guid;
use super::header::VhdxHeader;
use super::view::{FileView, LOG_SECTOR};
use super::MIB;
use crate::error::{Error, ErrorKind, Result};

const ENTRY_SIGNATURE: &[u8; 4] = b"loge";
const DATA_DESC_SIGNATURE: &[u8; 4] = b"desc";
const ZERO_DESC_SIGNATURE: &[u8; 4] = b"zero";
const DATA_SECTOR_SIGNATURE: &[u8; 4] = b"data";
const ENTRY_HEADER_LEN: usize = 64;
const DESC_LEN: usize = 32;
// Entry header fields.
const OFF_CHECKSUM: usize = 4;
const OFF_ENTRY_LENGTH: usize = 8;
const OFF_TAIL: usize = 12;
const OFF_SEQUENCE: usize = 16;
const OFF_DESC_COUNT: usize = 24;
const OFF_LOG_GUID: usize = 32;
const OFF_FLUSHED_FILE_OFFSET: usize = 48;
const OFF_LAST_FILE_OFFSET: usize = 56;

/// A valid log entry, located by its first sector in the ring.
#[derive(Debug, Clone)]
struct Entry {
    sector: u64,
    sectors: u64,
    tail_sector: u64,
    sequence: u64,
    flushed_file_offset: u64,
    last_file_offset: u64,
}

/// The error for a log we cannot replay: the file is readable once a VHDX writer replays it.
fn needs_replay(view: &FileView, offset: u64, why: String) -> Error {
    Error::new(
        ErrorKind::Unsupported,
        format!(
            "VHDX log needs replay ({why}); open it once with Hyper-V or `qemu-img check -r all`"
        ),
    )
    .with_path(&view.path)
    .at_offset(offset)
}

/// Replays `header`'s log, if it has one, into `view`'s overlay. Returns how many entries
/// were applied (0: the log was empty).
pub(crate) fn replay(view: &mut FileView, header: &VhdxHeader) -> Result<usize> {
    if header.log_guid.is_zero() || header.log_length == 0 {
        return Ok(0);
    }
    if header.log_version != 0 {
        return Err(needs_replay(
            view,
            header.offset + 64,
            format!(
                "log version {} is not 0, the only one defined",
                header.log_version
            ),
        ));
    }
    let (offset, length) = (header.log_offset, u64::from(header.log_length));
    if offset < MIB || offset % MIB != 0 || length % MIB != 0 {
        return Err(needs_replay(
            view,
            header.offset + 68,
            format!("the log at file offset {offset} with length {length} is not 1 MiB aligned"),
        ));
    }
    if offset + length > view.disk_len {
        return Err(needs_replay(
            view,
            offset,
            format!(
                "the {length}-byte log lies past the end of the {}-byte file; truncated?",
                view.disk_len
            ),
        ));
    }
    let log = Ring {
        view,
        offset,
        sectors: length / LOG_SECTOR,
        guid: header.log_guid,
    };
    let mut entries: HashMap<u64, Entry> = HashMap::new();
    for sector in 0..log.sectors {
        if let Some(entry) = log.validate(sector)? {
            entries.insert(sector, entry);
        }
    }
    let Some(sequence) = active_sequence(&entries, log.sectors) else {
        // LogGuid set but no valid entry: the writer crashed before any entry was complete,
        // so nothing was changed in place either.
        return Ok(0);
    };
    // Each entry records a size the file had durably reached; a smaller file lost data.
    if let Some(short) = sequence
        .iter()
        .find(|e| e.flushed_file_offset > view.disk_len)
    {
        return Err(Error::new(
            ErrorKind::InvalidFormat,
            format!(
                "VHDX log entry {} says the file had {} bytes when it was written, but it has {} (truncated?)",
                short.sequence, short.flushed_file_offset, view.disk_len
            ),
        )
        .with_path(&view.path)
        .at_offset(offset + short.sector * LOG_SECTOR));
    }
    let head = sequence.last().unwrap();
    // The file as the log leaves it may be longer than on disk: structures may point there.
    let new_len = view
        .disk_len
        .max(head.last_file_offset.next_multiple_of(MIB));
    let mut writes = Vec::new();
    for entry in &sequence {
        log.descriptors(entry, new_len, &mut writes)?;
    }
    for (file_offset, write) in writes {
        match write {
            Write::Data(sector) => view.overlay.write_sector(file_offset, sector),
            Write::Zeros(len) => view.overlay.write_zeros(file_offset, len),
        }
    }
    view.len = new_len;
    Ok(sequence.len())
}

/// The active sequence, oldest first: the highest-numbered head whose tail leads to it
/// through consecutively numbered valid entries, each following the previous in the ring of
/// `ring_sectors` sectors.
fn active_sequence(entries: &HashMap<u64, Entry>, ring_sectors: u64) -> Option<Vec<Entry>> {
    let mut heads: Vec<&Entry> = entries.values().collect();
    heads.sort_by_key(|e| std::cmp::Reverse(e.sequence));
    'heads: for head in heads {
        let mut seq: Vec<Entry> = Vec::new();
        let mut at = head.tail_sector;
        // Each step moves to the next entry in the ring, so a sequence holds each at most once.
        for _ in 0..entries.len() {
            let Some(e) = entries.get(&at) else {
                continue 'heads;
            };
            if seq
                .last()
                .is_some_and(|prev| e.sequence != prev.sequence + 1)
            {
                continue 'heads;
            }
            seq.push(e.clone());
            if e.sector == head.sector {
                return Some(seq);
            }
            at = (e.sector + e.sectors) % ring_sectors;
        }
    }
    None
}

enum Write {
    Data(Box<[u8]>),
    Zeros(u64),
}

/// The log region, read sector by sector with wrap-around.
struct Ring<'a> {
    view: &'a FileView,
    offset: u64,
    sectors: u64,
    guid: Guid,
}

impl Ring<'_> {
    fn read_sector(&self, sector: u64) -> Result<Vec<u8>> {
        self.view.read_vec(
            self.offset + (sector % self.sectors) * LOG_SECTOR,
            LOG_SECTOR as usize,
        )
    }

    /// The entry starting at `sector`, if it is a valid one.
    fn validate(&self, sector: u64) -> Result<Option<Entry>> {
        let first = self.read_sector(sector)?;
        if &first[..4] != ENTRY_SIGNATURE {
            return Ok(None);
        }
        let length = u64::from(le32(&first, OFF_ENTRY_LENGTH));
        let tail = u64::from(le32(&first, OFF_TAIL));
        let sequence = le64(&first, OFF_SEQUENCE);
        let count = u64::from(le32(&first, OFF_DESC_COUNT));
        let desc_sectors = (ENTRY_HEADER_LEN as u64 + count * DESC_LEN as u64).div_ceil(LOG_SECTOR);
        let plausible = length > 0
            && length % LOG_SECTOR == 0
            && length / LOG_SECTOR <= self.sectors
            && tail % LOG_SECTOR == 0
            && tail / LOG_SECTOR < self.sectors
            && sequence != 0
            && Guid::read(&first, OFF_LOG_GUID) == self.guid
            && desc_sectors <= length / LOG_SECTOR;
        if !plausible {
            return Ok(None);
        }
        let sectors = length / LOG_SECTOR;
        let mut crc = Crc32c::new();
        crc.update(&first[..OFF_CHECKSUM]);
        crc.update(&[0; 4]);
        crc.update(&first[OFF_CHECKSUM + 4..]);
        // Descriptors come first; each data descriptor's data sector follows in order.
        let mut descs = first.clone();
        for i in 1..desc_sectors {
            let s = self.read_sector(sector + i)?;
            crc.update(&s);
            descs.extend_from_slice(&s);
        }
        let mut data_index = desc_sectors;
        for d in 0..count as usize {
            let desc = &descs[ENTRY_HEADER_LEN + d * DESC_LEN..][..DESC_LEN];
            let sig = &desc[..4];
            if le64(desc, 24) != sequence || le64(desc, 16) % LOG_SECTOR != 0 {
                return Ok(None);
            }
            if sig == ZERO_DESC_SIGNATURE {
                if le64(desc, 8) % LOG_SECTOR != 0 {
                    return Ok(None);
                }
            } else if sig == DATA_DESC_SIGNATURE {
                if data_index >= sectors {
                    return Ok(None);
                }
                let data = self.read_sector(sector + data_index)?;
                let data_seq = u64::from(le32(&data, 4)) << 32 | u64::from(le32(&data, 4092));
                if &data[..4] != DATA_SECTOR_SIGNATURE || data_seq != sequence {
                    return Ok(None);
                }
                crc.update(&data);
                data_index += 1;
            } else {
                return Ok(None);
            }
        }
        // Sectors past the last data sector (padding) are still covered by the checksum.
        for i in data_index..sectors {
            crc.update(&self.read_sector(sector + i)?);
        }
        if crc.finish() != le32(&first, OFF_CHECKSUM) {
            return Ok(None);
        }
        Ok(Some(Entry {
            sector,
            sectors,
            tail_sector: tail / LOG_SECTOR,
            sequence,
            flushed_file_offset: le64(&first, OFF_FLUSHED_FILE_OFFSET),
            last_file_offset: le64(&first, OFF_LAST_FILE_OFFSET),
        }))
    }

    /// The writes of a validated `entry`, in order; each must land below `file_len`.
    fn descriptors(&self, entry: &Entry, file_len: u64, out: &mut Vec<(u64, Write)>) -> Result<()> {
        let first = self.read_sector(entry.sector)?;
        let count = le32(&first, OFF_DESC_COUNT) as usize;
        let desc_sectors = (ENTRY_HEADER_LEN + count * DESC_LEN).div_ceil(LOG_SECTOR as usize);
        let mut descs = first;
        for i in 1..desc_sectors as u64 {
            descs.extend_from_slice(&self.read_sector(entry.sector + i)?);
        }
        let mut data_index = desc_sectors as u64;
        for d in 0..count {
            let at = ENTRY_HEADER_LEN + d * DESC_LEN;
            let desc = &descs[at..at + DESC_LEN];
            let file_offset = le64(desc, 16);
            let (len, write) = if &desc[..4] == DATA_DESC_SIGNATURE {
                let data = self.read_sector(entry.sector + data_index)?;
                data_index += 1;
                let mut sector = data;
                // The descriptor holds the sector's first 8 and last 4 bytes; the data
                // sector's own first 8 and last 4 hold its signature and sequence number.
                sector[..8].copy_from_slice(&desc[8..16]);
                sector[4092..].copy_from_slice(&desc[4..8]);
                (LOG_SECTOR, Write::Data(sector.into_boxed_slice()))
            } else {
                let len = le64(desc, 8);
                (len, Write::Zeros(len))
            };
            if file_offset
                .checked_add(len)
                .is_none_or(|end| end > file_len)
            {
                let ring_offset = (entry.sector % self.sectors) * LOG_SECTOR;
                return Err(needs_replay(
                    self.view,
                    self.offset + ring_offset,
                    format!(
                        "log entry {} writes {len} bytes at file offset {file_offset}, past the {file_len} bytes the log allows",
                        entry.sequence
                    ),
                ));
            }
            out.push((file_offset, write));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entries(list: &[(u64, u64, u64, u64)]) -> HashMap<u64, Entry> {
        list.iter()
            .map(|&(sector, sectors, tail_sector, sequence)| {
                let e = Entry {
                    sector,
                    sectors,
                    tail_sector,
                    sequence,
                    flushed_file_offset: 0,
                    last_file_offset: 0,
                };
                (sector, e)
            })
            .collect()
    }

    fn seqs(found: Option<Vec<Entry>>) -> Vec<u64> {
        found
            .unwrap_or_default()
            .iter()
            .map(|e| e.sequence)
            .collect()
    }

    #[test]
    fn active_sequence_runs_from_the_heads_tail_to_the_head() {
        // 5 and 6 form a sequence, but 9 is newer and its tail is itself.
        let e = entries(&[(0, 2, 0, 5), (2, 1, 0, 6), (3, 1, 3, 9)]);
        assert_eq!(seqs(active_sequence(&e, 256)), vec![9]);
        // 7's tail leads to 5, whose successor is 7, not 6: 7 is no head; 5 alone is.
        let e = entries(&[(0, 2, 0, 5), (2, 1, 0, 7)]);
        assert_eq!(seqs(active_sequence(&e, 256)), vec![5]);
        // A sequence that wraps around the end of an 8-sector ring.
        let e = entries(&[(6, 2, 6, 3), (0, 1, 6, 4), (1, 1, 6, 5)]);
        assert_eq!(seqs(active_sequence(&e, 8)), vec![3, 4, 5]);
        // A head whose tail points at no entry has no sequence.
        let e = entries(&[(4, 1, 2, 8)]);
        assert_eq!(seqs(active_sequence(&e, 8)), Vec::<u64>::new());
    }
}

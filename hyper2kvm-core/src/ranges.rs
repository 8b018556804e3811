//! Byte-range arithmetic for the pipeline: aligning a reader's allocated ranges to clusters,
//! merging them, and cutting them into chunks.

use std::collections::BTreeMap;
use std::ops::Range;

/// Expands every range outwards to multiples of `align` (clipped to `size`), then merges
/// ranges that overlap, touch, or lie at most `max_gap` bytes apart. The result is sorted and
/// non-overlapping. Reading a small gap costs less than another request, so callers reading
/// over a network pass a gap; local readers pass 0.
pub fn align_and_merge(
    ranges: &[Range<u64>],
    align: u64,
    size: u64,
    max_gap: u64,
) -> Vec<Range<u64>> {
    debug_assert!(align.is_power_of_two());
    let mut aligned: Vec<Range<u64>> = ranges
        .iter()
        .filter(|r| r.start < r.end && r.start < size)
        .map(|r| {
            let start = r.start & !(align - 1);
            let end = r
                .end
                .min(size)
                .div_ceil(align)
                .saturating_mul(align)
                .min(size);
            start..end
        })
        .collect();
    aligned.sort_by_key(|r| r.start);
    let mut merged: Vec<Range<u64>> = Vec::with_capacity(aligned.len());
    for r in aligned {
        match merged.last_mut() {
            Some(last) if r.start <= last.end.saturating_add(max_gap) => {
                last.end = last.end.max(r.end);
            }
            _ => merged.push(r),
        }
    }
    merged
}

/// Cuts sorted ranges into chunks of at most `chunk` bytes. Chunk boundaries fall on multiples
/// of `chunk`, so with a cluster-aligned `chunk` every chunk starts on a cluster boundary and
/// no cluster is split between two chunks.
pub fn chunks(ranges: &[Range<u64>], chunk: u64) -> impl Iterator<Item = Range<u64>> + '_ {
    assert!(chunk > 0, "chunk size must not be zero");
    ranges.iter().flat_map(move |r| {
        let mut pos = r.start;
        std::iter::from_fn(move || {
            if pos >= r.end {
                return None;
            }
            let next_boundary = (pos / chunk + 1).saturating_mul(chunk);
            let end = next_boundary.min(r.end);
            let piece = pos..end;
            pos = end;
            Some(piece)
        })
    })
}

/// The total number of bytes in `ranges`.
pub fn total_len(ranges: &[Range<u64>]) -> u64 {
    ranges.iter().map(|r| r.end - r.start).sum()
}

/// A set of byte ranges, kept disjoint and merged: what a resumable conversion has written.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RangeSet {
    /// start -> end; no two entries overlap or touch.
    map: BTreeMap<u64, u64>,
}

impl RangeSet {
    /// An empty set.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds `range`, merging it with ranges it overlaps or touches.
    pub fn insert(&mut self, range: Range<u64>) {
        if range.start >= range.end {
            return;
        }
        let (mut start, mut end) = (range.start, range.end);
        // A range starting at or before `end` and ending at or after `start` merges.
        let touching: Vec<u64> = self
            .map
            .range(..=end)
            .rev()
            .take_while(|(_, &e)| e >= start)
            .map(|(&s, _)| s)
            .collect();
        for s in touching {
            let e = self.map.remove(&s).expect("present");
            start = start.min(s);
            end = end.max(e);
        }
        self.map.insert(start, end);
    }

    /// The ranges, sorted.
    pub fn iter(&self) -> impl Iterator<Item = Range<u64>> + '_ {
        self.map.iter().map(|(&s, &e)| s..e)
    }

    /// The total number of bytes in the set.
    pub fn len_bytes(&self) -> u64 {
        self.map.iter().map(|(s, e)| e - s).sum()
    }

    /// True when the set holds no bytes.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// The parts of sorted, disjoint `ranges` not in this set.
    pub fn subtract_from(&self, ranges: &[Range<u64>]) -> Vec<Range<u64>> {
        let mut out = Vec::new();
        for r in ranges {
            let mut pos = r.start;
            // Set ranges that may overlap r: those starting before r.end.
            let first = self
                .map
                .range(..=r.start)
                .next_back()
                .map(|(&s, _)| s)
                .unwrap_or(0);
            for (&s, &e) in self.map.range(first..r.end) {
                if e <= pos {
                    continue;
                }
                if s > pos {
                    out.push(pos..s.min(r.end));
                }
                pos = pos.max(e);
                if pos >= r.end {
                    break;
                }
            }
            if pos < r.end {
                out.push(pos..r.end);
            }
        }
        out
    }
}

impl FromIterator<Range<u64>> for RangeSet {
    fn from_iter<I: IntoIterator<Item = Range<u64>>>(iter: I) -> Self {
        let mut set = RangeSet::new();
        for r in iter {
            set.insert(r);
        }
        set
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn range_set_merges_out_of_order_inserts() {
        let mut set = RangeSet::new();
        for r in [(20..30), (0..10), (10..15), (40..50), (25..45), (60..60)] {
            set.insert(r);
        }
        assert_eq!(set.iter().collect::<Vec<_>>(), vec![0..15, 20..50]);
        assert_eq!(set.len_bytes(), 45);
    }

    #[test]
    fn range_set_subtracts() {
        let set: RangeSet = [(10..20), (30..40), (50..55)].into_iter().collect();
        assert_eq!(
            set.subtract_from(&[0..100, 200..200]),
            vec![0..10, 20..30, 40..50, 55..100]
        );
        assert_eq!(
            set.subtract_from(&[(12..18), (35..60)]),
            vec![40..50, 55..60]
        );
        assert_eq!(
            set.subtract_from(&[10..20, 30..40]),
            Vec::<Range<u64>>::new()
        );
        assert_eq!(
            RangeSet::new().subtract_from(&[5..7, 9..10]),
            vec![5..7, 9..10]
        );
    }

    #[test]
    fn aligns_outwards_and_clips_to_size() {
        let got = align_and_merge(&[(100..200), (70_000..70_001)], 65536, 100_000, 0);
        assert_eq!(got, vec![0..100_000]); // touching ranges merge
    }

    #[test]
    fn merges_overlapping_touching_and_close() {
        let ranges = [(0..10), (5..20), (20..30), (4096..5000), (10_000..10_001)];
        assert_eq!(
            align_and_merge(&ranges, 1, 1 << 20, 0),
            vec![0..30, 4096..5000, 10_000..10_001]
        );
        assert_eq!(
            align_and_merge(&ranges, 1, 1 << 20, 4066),
            vec![0..5000, 10_000..10_001]
        );
        assert_eq!(
            align_and_merge(&ranges, 512, 1 << 20, 0),
            vec![0..512, 4096..5120, 9728..10240]
        );
    }

    #[test]
    fn unsorted_empty_and_out_of_range_input() {
        let ranges = [(900..1000), (5..5), (0..10), (2000..3000)];
        assert_eq!(align_and_merge(&ranges, 1, 1500, 0), vec![0..10, 900..1000]);
    }

    #[test]
    fn chunks_fall_on_the_chunk_grid() {
        let got: Vec<_> = chunks(&[(0..10), (6..25), (40..41)], 8).collect();
        assert_eq!(got, vec![0..8, 8..10, 6..8, 8..16, 16..24, 24..25, 40..41]);
        assert_eq!(total_len(&[(0..10), (20..25)]), 15);
    }
}

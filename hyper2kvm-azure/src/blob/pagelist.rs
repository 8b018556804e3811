//! The `Get Page Ranges` response: which 512-byte pages of a page blob hold data.
//!
//! ```xml
//! <?xml version="1.0" encoding="utf-8"?>
//! <PageList>
//!   <PageRange><Start>0</Start><End>65535</End></PageRange>
//!   <ClearRange><Start>65536</Start><End>131071</End></ClearRange>
//!   <NextMarker>2!100!MDAwMDU...</NextMarker>
//! </PageList>
//! ```
//!
//! Ends are inclusive. `ClearRange` only appears in a diff against an older snapshot
//! (`x-ms-previous-snapshot-url`): pages cleared since it, which a delta writes as zeros.
//! An empty or absent `NextMarker` ends the listing. Only these few elements are read, so a
//! hand-written scan is enough; anything malformed is an error, never a silent gap.

use std::ops::Range;

use crate::error::{Error, ErrorKind, Result};

/// One page of a page list: the written and cleared ranges (half-open) and the marker for
/// the next page.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PageList {
    /// Written byte ranges, `start..end` with `end` exclusive.
    pub ranges: Vec<Range<u64>>,
    /// Cleared byte ranges (diffs only), `start..end` with `end` exclusive.
    pub cleared: Vec<Range<u64>>,
    /// Where to continue, if the listing was cut.
    pub next_marker: Option<String>,
}

/// Parses one `Get Page Ranges` response body.
pub fn parse_page_list(xml: &str) -> Result<PageList> {
    let bad = |why: String| Error::new(ErrorKind::InvalidResponse, format!("page list: {why}"));
    if !xml.contains("<PageList") {
        return Err(bad("no <PageList> element".into()));
    }
    let next_marker = element(xml, "NextMarker")
        .map(str::trim)
        .filter(|m| !m.is_empty());
    Ok(PageList {
        ranges: ranges_of(xml, "PageRange").map_err(bad)?,
        cleared: ranges_of(xml, "ClearRange").map_err(bad)?,
        next_marker: next_marker.map(unescape),
    })
}

/// Every `<tag><Start/><End/></tag>` of `xml`, half-open.
fn ranges_of(xml: &str, tag: &str) -> std::result::Result<Vec<Range<u64>>, String> {
    let (open, close) = (format!("<{tag}>"), format!("</{tag}>"));
    let mut ranges = Vec::new();
    let mut rest = xml;
    while let Some(at) = rest.find(&open) {
        let after = &rest[at + open.len()..];
        let end = after
            .find(&close)
            .ok_or_else(|| format!("unclosed <{tag}>"))?;
        let body = &after[..end];
        let start: u64 = number(element(body, "Start"), "Start")?;
        let last: u64 = number(element(body, "End"), "End")?;
        if last < start {
            return Err(format!("range ends ({last}) before it starts ({start})"));
        }
        ranges.push(start..last + 1);
        rest = &after[end..];
    }
    Ok(ranges)
}

/// The text of the first `<name>…</name>` in `xml`.
fn element<'a>(xml: &'a str, name: &str) -> Option<&'a str> {
    let open = format!("<{name}>");
    let close = format!("</{name}>");
    let start = xml.find(&open)? + open.len();
    let len = xml[start..].find(&close)?;
    Some(&xml[start..start + len])
}

fn number(text: Option<&str>, name: &str) -> std::result::Result<u64, String> {
    let text = text.ok_or_else(|| format!("<{name}> missing in a range"))?;
    text.trim()
        .parse()
        .map_err(|_| format!("<{name}> is not a number: {text:?}"))
}

/// Markers are opaque but XML-escaped in the body; they go back unescaped in the query.
fn unescape(text: &str) -> String {
    text.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&apos;", "'")
        .replace("&amp;", "&")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_page_and_clear_ranges_and_reads_marker() {
        let xml = r#"<?xml version="1.0" encoding="utf-8"?>
<PageList><PageRange><Start>0</Start><End>511</End></PageRange><ClearRange><Start>512</Start><End>1023</End></ClearRange><PageRange>
  <Start>4194304</Start>
  <End>8388607</End>
</PageRange><NextMarker>2!88!MDAwMDIw&amp;x</NextMarker></PageList>"#;
        let list = parse_page_list(xml).unwrap();
        assert_eq!(list.ranges, vec![0..512, 4194304..8388608]);
        assert_eq!(list.cleared, vec![512..1024]);
        assert_eq!(list.next_marker.as_deref(), Some("2!88!MDAwMDIw&x"));
    }

    #[test]
    fn empty_list_and_empty_marker() {
        let list =
            parse_page_list("<?xml version=\"1.0\"?><PageList><NextMarker /></PageList>").unwrap();
        assert_eq!(list, PageList::default());
        let list = parse_page_list("<PageList><NextMarker></NextMarker></PageList>").unwrap();
        assert_eq!(list.next_marker, None);
    }

    #[test]
    fn malformed_lists_are_errors() {
        for xml in [
            "<Error><Code>AuthenticationFailed</Code></Error>",
            "<PageList><PageRange><Start>0</Start></PageRange></PageList>",
            "<PageList><PageRange><Start>9</Start><End>1</End></PageRange></PageList>",
            "<PageList><PageRange><Start>x</Start><End>1</End></PageRange></PageList>",
            "<PageList><PageRange><Start>0</Start><End>1</End>",
            "<PageList><ClearRange><Start>7</Start><End>1</End></ClearRange></PageList>",
        ] {
            assert!(parse_page_list(xml).is_err(), "{xml}");
        }
    }
}

//! The Blob service side of an export: listing a page blob's written pages and reading them.

pub mod md5x;
pub mod pagelist;
pub mod reader;

pub use pagelist::{parse_page_list, PageList};
pub use reader::{BlobOptions, PageBlobReader, Regrant, MAX_RANGE, STORAGE_API_VERSION};

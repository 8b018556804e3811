//! SAS URLs: blob URLs whose query string is a bearer secret.
//!
//! A [`SasUrl`] can be used for requests but never shown: `Display` and `Debug` replace the
//! query with `REDACTED`, so it cannot leak through a log line, an error or a report.

use std::fmt;

use reqwest::Url;

use crate::error::{Error, ErrorKind, Result};

/// A blob URL carrying a shared access signature.
#[derive(Clone, PartialEq, Eq)]
pub struct SasUrl(Url);

impl SasUrl {
    /// Parses an http(s) blob URL. The error message never contains the URL's query.
    pub fn parse(text: &str) -> Result<SasUrl> {
        let url = Url::parse(text.trim()).map_err(|e| {
            Error::new(
                ErrorKind::InvalidArgument,
                "the blob URL is not a valid URL",
            )
            .with_source(e)
        })?;
        if !matches!(url.scheme(), "http" | "https") || url.host().is_none() {
            return Err(Error::new(
                ErrorKind::InvalidArgument,
                format!("{} is not an http(s) blob URL", redact(&url)),
            ));
        }
        Ok(SasUrl(url))
    }

    /// The URL with its secret, for building requests only.
    pub(crate) fn expose(&self) -> &Url {
        &self.0
    }

    /// The URL without its query: safe to print.
    pub fn redacted(&self) -> String {
        redact(&self.0)
    }

    /// Scheme, host and path: what stays the same when access to the same blob is granted
    /// again under a new signature. Safe to print.
    pub fn without_query(&self) -> String {
        let mut u = self.0.clone();
        u.set_query(None);
        let _ = u.set_password(None);
        u.to_string()
    }

    /// True for Azure managed-disk export hosts (`md-*`), which reject conditional headers.
    pub fn is_managed_disk_host(&self) -> bool {
        self.0.host_str().is_some_and(|h| h.starts_with("md-"))
    }
}

fn redact(url: &Url) -> String {
    let mut shown = url.clone();
    if shown.query().is_some() {
        shown.set_query(Some("REDACTED"));
    }
    let _ = shown.set_password(None);
    shown.to_string()
}

impl fmt::Display for SasUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.redacted())
    }
}

impl fmt::Debug for SasUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SasUrl({})", self.redacted())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAS: &str =
        "https://md-abc.z1.blob.storage.azure.net/xyz/abcd?sv=2018-03-28&sr=b&si=1&sig=S3CR3T%3D";

    #[test]
    fn never_shows_the_signature() {
        let sas = SasUrl::parse(SAS).unwrap();
        for shown in [
            sas.to_string(),
            format!("{sas:?}"),
            sas.redacted(),
            sas.without_query(),
        ] {
            assert!(
                !shown.contains("S3CR3T") && !shown.contains("sig="),
                "{shown}"
            );
        }
        assert_eq!(
            sas.to_string(),
            "https://md-abc.z1.blob.storage.azure.net/xyz/abcd?REDACTED"
        );
        assert!(sas.is_managed_disk_host());
        assert!(sas.expose().as_str().contains("sig="));
    }

    #[test]
    fn rejects_non_http_without_echoing_the_secret() {
        let err = SasUrl::parse("ftp://host/x?sig=S3CR3T").unwrap_err();
        assert!(!err.to_string().contains("S3CR3T"), "{err}");
        assert!(SasUrl::parse("not a url ?sig=S3CR3T").is_err());
    }
}

//! ARM's paging: a list answers `{"value": [...], "nextLink": "<absolute URL>"}` and the
//! client follows `nextLink` until it is absent (or null, or empty).
//!
//! A `nextLink` is followed only to the origin (scheme, host, port) of the first request: the
//! bearer token goes with every page, and a link elsewhere would hand it to that host.

use std::collections::HashSet;
use std::future::Future;

use reqwest::Url;
use serde::Deserialize;

use crate::error::{redact_url, Error, ErrorKind, Result};

/// One page of an ARM list.
#[derive(Debug, Deserialize)]
pub struct Page<T> {
    /// The items of this page.
    #[serde(default = "Vec::new")]
    pub value: Vec<T>,
    /// The absolute URL of the next page, if any.
    #[serde(rename = "nextLink", default)]
    pub next_link: Option<String>,
}

/// Fetches `first` and every page after it with `fetch`, and returns all items in order.
pub async fn collect_pages<T, F, Fut>(first: Url, mut fetch: F) -> Result<Vec<T>>
where
    F: FnMut(Url) -> Fut,
    Fut: Future<Output = Result<Page<T>>>,
{
    let origin = first.origin();
    let mut seen = HashSet::new();
    let mut items = Vec::new();
    let mut next = Some(first);
    while let Some(url) = next.take() {
        if !seen.insert(url.clone()) {
            return Err(Error::new(
                ErrorKind::InvalidResponse,
                format!("nextLink loops back to {}", redact_url(&url)),
            ));
        }
        let page = fetch(url).await?;
        items.extend(page.value);
        next = match page.next_link.as_deref().map(str::trim) {
            None | Some("") => None,
            Some(link) => {
                let url = Url::parse(link).map_err(|e| {
                    Error::new(
                        ErrorKind::InvalidResponse,
                        "nextLink is not an absolute URL",
                    )
                    .with_source(e)
                })?;
                if url.origin() != origin {
                    return Err(Error::new(
                        ErrorKind::InvalidResponse,
                        format!(
                            "nextLink points to another host ({}); not following it with our token",
                            redact_url(&url)
                        ),
                    ));
                }
                Some(url)
            }
        };
    }
    Ok(items)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn pages(json: &[(&str, &str)]) -> HashMap<String, String> {
        json.iter()
            .map(|(u, b)| (u.to_string(), b.to_string()))
            .collect()
    }

    async fn run(book: &HashMap<String, String>, first: &str) -> Result<Vec<u32>> {
        let mut calls = 0;
        let r = collect_pages(Url::parse(first).unwrap(), |url| {
            calls += 1;
            let body = book.get(url.as_str()).cloned();
            async move {
                let body = body.expect("unexpected URL");
                Ok(serde_json::from_str::<Page<u32>>(&body).unwrap())
            }
        })
        .await;
        r
    }

    #[tokio::test]
    async fn follows_next_links_until_absent() {
        let book = pages(&[
            (
                "http://arm/l?a=1",
                r#"{"value":[1,2],"nextLink":"http://arm/l?a=1&$skiptoken=2"}"#,
            ),
            (
                "http://arm/l?a=1&$skiptoken=2",
                r#"{"value":[3],"nextLink":"http://arm/l?t=3"}"#,
            ),
            ("http://arm/l?t=3", r#"{"value":[],"nextLink":null}"#),
        ]);
        assert_eq!(run(&book, "http://arm/l?a=1").await.unwrap(), [1, 2, 3]);
    }

    #[tokio::test]
    async fn refuses_foreign_hosts_and_loops() {
        let book = pages(&[(
            "http://arm/l",
            r#"{"value":[1],"nextLink":"http://evil/l"}"#,
        )]);
        let err = run(&book, "http://arm/l").await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidResponse);
        assert!(err.to_string().contains("another host"), "{err}");

        let book = pages(&[("http://arm/l", r#"{"value":[1],"nextLink":"http://arm/l"}"#)]);
        let err = run(&book, "http://arm/l").await.unwrap_err();
        assert!(err.to_string().contains("loops"), "{err}");
    }

    #[tokio::test]
    async fn empty_next_link_ends_and_missing_value_is_empty() {
        let book = pages(&[("http://arm/l", r#"{"nextLink":""}"#)]);
        assert!(run(&book, "http://arm/l").await.unwrap().is_empty());
    }
}

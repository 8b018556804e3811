//! The one retry loop for every request this crate sends.
//!
//! A request is retried on 408, 429 and 5xx answers, on connection errors and on timeouts
//! (all our requests are idempotent GETs), up to [`RetryConfig::max_retries`] times and
//! within [`RetryConfig::retry_timeout`]. The wait before a retry is the server's
//! `Retry-After` when it sent one (seconds or an HTTP date, capped at
//! [`RetryConfig::max_retry_after`]), else exponential backoff with jitter. The jitter's random
//! numbers come from a [`Jitter`] that tests replace.
//!
//! **Visible.** Every retry is logged (`tracing`): the first of a request at `info` (one
//! blip is ordinary), every later one at `warn`, with the request, why it failed and the
//! wait before the next attempt. A wait is registered with [`hyper2kvm_core::waits`] while
//! it lasts, so a progress display can show it.
//!
//! **Failing fast on a wrong endpoint.** A connection that cannot be made (refused, no such
//! host, unreachable) to a host that has never answered this process is a configuration
//! problem far more often than an outage: it is retried only [`CONNECT_RETRIES`] times with
//! short pauses, within [`CONNECT_BUDGET`], and the error names the host. A host that did
//! answer before gets the whole budget (a network blip in the middle of a run).

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

use reqwest::{Response, StatusCode};

use crate::error::{redact_url, Error, ErrorKind, Result};

/// Exponential backoff: the nth retry waits a random time in `[cap/2, cap]` where
/// `cap = min(max_backoff, init_backoff × base^n)`.
#[derive(Debug, Clone)]
pub struct BackoffConfig {
    /// The cap of the first wait.
    pub init_backoff: Duration,
    /// The largest wait.
    pub max_backoff: Duration,
    /// The growth factor.
    pub base: f64,
}

impl Default for BackoffConfig {
    fn default() -> Self {
        BackoffConfig {
            init_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(15),
            base: 2.0,
        }
    }
}

impl BackoffConfig {
    /// The wait before retry number `retry` (0 for the first retry), with `random` in [0, 1).
    pub fn delay(&self, retry: u32, random: f64) -> Duration {
        let cap = self.init_backoff.as_secs_f64() * self.base.powi(retry.min(64) as i32);
        let cap = cap.min(self.max_backoff.as_secs_f64());
        Duration::from_secs_f64(cap / 2.0 + random.clamp(0.0, 1.0) * cap / 2.0)
    }
}

/// How often and how long to retry.
#[derive(Debug, Clone)]
pub struct RetryConfig {
    /// Backoff between retries when the server gives no `Retry-After`.
    pub backoff: BackoffConfig,
    /// Retries after the first attempt.
    pub max_retries: u32,
    /// No retry starts after this much time since the first attempt.
    pub retry_timeout: Duration,
    /// The longest `Retry-After` we wait; a longer one is cut to this.
    pub max_retry_after: Duration,
}

impl Default for RetryConfig {
    fn default() -> Self {
        RetryConfig {
            backoff: BackoffConfig::default(),
            max_retries: 10,
            retry_timeout: Duration::from_secs(180),
            max_retry_after: Duration::from_secs(60),
        }
    }
}

/// Random numbers in [0, 1) for jitter.
pub trait Jitter: Send + Sync {
    /// The next number.
    fn next_f64(&self) -> f64;
}

/// SplitMix64: tiny, fast and good enough to spread retries; seeded from the clock by default
/// or from a fixed seed in tests.
#[derive(Debug)]
pub struct SplitMix64(AtomicU64);

impl SplitMix64 {
    /// A generator with a fixed seed.
    pub fn new(seed: u64) -> Self {
        SplitMix64(AtomicU64::new(seed))
    }

    /// A generator seeded from the clock.
    pub fn from_clock() -> Self {
        let nanos = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0x9e3779b97f4a7c15);
        SplitMix64::new(nanos ^ std::process::id() as u64)
    }
}

impl Jitter for SplitMix64 {
    fn next_f64(&self) -> f64 {
        let mut z = self
            .0
            .fetch_add(0x9e3779b97f4a7c15, Ordering::Relaxed)
            .wrapping_add(0x9e3779b97f4a7c15);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58476d1ce4e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d049bb133111eb);
        z ^= z >> 31;
        (z >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// The server's `Retry-After`: delay-seconds or an HTTP date.
pub fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let when = httpdate::parse_http_date(value).ok()?;
    Some(when.duration_since(now).unwrap_or(Duration::ZERO))
}

/// Retries of a connection that cannot be made to a host that never answered.
pub const CONNECT_RETRIES: u32 = 3;
/// No retry of such a connection starts later than this after the first attempt.
pub const CONNECT_BUDGET: Duration = Duration::from_secs(8);

/// Hosts (`host:port`) that answered at least once in this process.
static ANSWERED: Mutex<Option<HashSet<String>>> = Mutex::new(None);

fn host_of(url: &reqwest::Url) -> String {
    format!(
        "{}:{}",
        url.host_str().unwrap_or("?"),
        url.port_or_known_default().unwrap_or(0)
    )
}

fn has_answered(host: &str) -> bool {
    ANSWERED
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .as_ref()
        .is_some_and(|h| h.contains(host))
}

fn answered(host: &str) {
    let mut set = ANSWERED.lock().unwrap_or_else(|e| e.into_inner());
    let set = set.get_or_insert_with(HashSet::new);
    if !set.contains(host) {
        set.insert(host.to_string());
    }
}

/// The innermost cause of `e`, which says what happened ("Connection refused (os error
/// 111)", "failed to lookup address information"); reqwest's own line ("error sending
/// request") says nothing.
fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut last = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        last = s.to_string();
        source = s.source();
    }
    last
}

/// The pause before connection retry `retry` (0 for the first): 250 ms, 500 ms, 1 s.
fn connect_delay(retry: u32, random: f64) -> Duration {
    BackoffConfig {
        init_backoff: Duration::from_millis(250),
        max_backoff: Duration::from_secs(2),
        base: 2.0,
    }
    .delay(retry, 0.5 + random / 2.0)
}

/// Logs a retry: the first of a request at `info`, later ones at `warn`.
pub(crate) fn log_retry(retry: u32, max: u32, what: &str, why: &str, wait: Duration) {
    if retry == 0 {
        tracing::info!(
            "retry 1/{max} of {what} in {:.1} s: {why}",
            wait.as_secs_f64()
        );
    } else {
        tracing::warn!(
            "retry {}/{max} of {what} in {:.1} s: {why}",
            retry + 1,
            wait.as_secs_f64()
        );
    }
}

/// Sleeps `wait`, registered as a visible wait for `what`.
pub(crate) async fn visible_sleep(wait: Duration, what: impl FnOnce() -> String) {
    let _waiting = hyper2kvm_core::waits::waiting(what());
    tokio::time::sleep(wait).await;
}

fn retryable_status(status: StatusCode) -> bool {
    status == StatusCode::REQUEST_TIMEOUT
        || status == StatusCode::TOO_MANY_REQUESTS
        || status.is_server_error()
}

/// Sends the request made by `make` (called once per attempt) with `client`, retrying as
/// configured. Returns the first response that is not retryable, success or not; callers turn
/// error statuses into errors. `attempts` counts every request sent, retries included.
pub(crate) async fn send_retry(
    client: &reqwest::Client,
    config: &RetryConfig,
    jitter: &dyn Jitter,
    attempts: &AtomicU64,
    make: impl Fn() -> reqwest::Request,
) -> Result<Response> {
    let start = Instant::now();
    let mut retries = 0u32;
    let mut connect_retries = 0u32;
    loop {
        let request = make();
        let method = request.method().clone();
        let shown = redact_url(request.url());
        let host = host_of(request.url());
        attempts.fetch_add(1, Ordering::Relaxed);
        let outcome = client.execute(request).await;
        if outcome.is_ok() {
            answered(&host);
        }
        let (wait, failure, why) = match outcome {
            Ok(resp) if !retryable_status(resp.status()) => return Ok(resp),
            Ok(resp) => {
                let status = resp.status();
                let retry_after = resp
                    .headers()
                    .get(reqwest::header::RETRY_AFTER)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| parse_retry_after(v, SystemTime::now()));
                let kind = if status == StatusCode::TOO_MANY_REQUESTS {
                    ErrorKind::Throttled
                } else if status == StatusCode::REQUEST_TIMEOUT {
                    ErrorKind::Timeout
                } else {
                    ErrorKind::Status
                };
                let (wait, why) = match retry_after {
                    Some(d) => (
                        d.min(config.max_retry_after),
                        format!("HTTP {status}, Retry-After {} s", d.as_secs()),
                    ),
                    None => (
                        config.backoff.delay(retries, jitter.next_f64()),
                        format!("HTTP {status}"),
                    ),
                };
                let failure = Error::new(kind, format!("{method} {shown}: HTTP {status}"))
                    .with_status(status.as_u16())
                    .with_summary(format!("HTTP {status} from {host}"));
                (wait, failure, why)
            }
            Err(e) => {
                let cause = root_cause(&e);
                let kind = if e.is_timeout() {
                    ErrorKind::Timeout
                } else if e.is_connect() || e.is_request() || e.is_body() {
                    ErrorKind::Network
                } else {
                    // A builder or redirect error will not fix itself.
                    return Err(Error::new(ErrorKind::Network, format!("{method} {shown}"))
                        .with_summary(format!("{host}: {cause}"))
                        .with_source(e.without_url()));
                };
                if e.is_connect() && !has_answered(&host) {
                    // Never reached: most likely a wrong or unreachable endpoint.
                    let elapsed = start.elapsed();
                    let wait = connect_delay(connect_retries, jitter.next_f64());
                    if connect_retries >= CONNECT_RETRIES || elapsed + wait > CONNECT_BUDGET {
                        return Err(Error::new(
                            kind,
                            format!(
                                "cannot connect to {host} ({cause}) for {method} {shown}; gave up after {connect_retries} retries in {:.1} s: check that the endpoint is right and reachable",
                                elapsed.as_secs_f64()
                            ),
                        )
                        .with_summary(format!("cannot connect to {host}: {cause}")));
                    }
                    log_retry(
                        connect_retries,
                        CONNECT_RETRIES,
                        &format!("{method} {shown}"),
                        &format!("cannot connect to {host}: {cause}"),
                        wait,
                    );
                    visible_sleep(wait, || format!("a connection to {host}")).await;
                    connect_retries += 1;
                    continue;
                }
                let wait = config.backoff.delay(retries, jitter.next_f64());
                let failure = Error::new(kind, format!("{method} {shown}"))
                    .with_summary(format!("{host}: {cause}"))
                    .with_source(e.without_url());
                (wait, failure, format!("{host}: {cause}"))
            }
        };
        let elapsed = start.elapsed();
        if retries >= config.max_retries || elapsed + wait > config.retry_timeout {
            let summary = failure.summary().map(str::to_owned);
            let mut err = Error::new(
                failure.kind(),
                format!(
                    "{failure} (gave up after {retries} retries in {:.1}s; max_retries {}, retry_timeout {}s)",
                    elapsed.as_secs_f64(),
                    config.max_retries,
                    config.retry_timeout.as_secs()
                ),
            )
            .with_status_opt(failure.status());
            if let Some(s) = summary {
                err = err.with_summary(s);
            }
            return Err(err);
        }
        log_retry(
            retries,
            config.max_retries,
            &format!("{method} {shown}"),
            &why,
            wait,
        );
        visible_sleep(wait, || format!("a retry of {method} {host} after {why}")).await;
        retries += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_is_capped() {
        let b = BackoffConfig::default();
        assert_eq!(b.delay(0, 0.0), Duration::from_millis(50));
        assert_eq!(b.delay(0, 1.0), Duration::from_millis(100));
        assert_eq!(b.delay(3, 1.0), Duration::from_millis(800));
        assert_eq!(b.delay(30, 1.0), Duration::from_secs(15));
        assert_eq!(b.delay(30, 0.0), Duration::from_millis(7500));
    }

    #[test]
    fn jitter_is_in_range_and_seeded() {
        let (a, b) = (SplitMix64::new(7), SplitMix64::new(7));
        for _ in 0..1000 {
            let x = a.next_f64();
            assert!((0.0..1.0).contains(&x));
            assert_eq!(x, b.next_f64());
        }
        assert_ne!(SplitMix64::new(1).next_f64(), SplitMix64::new(2).next_f64());
    }

    #[test]
    fn retry_after_seconds_and_dates() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        assert_eq!(parse_retry_after("17", now), Some(Duration::from_secs(17)));
        let later = httpdate::fmt_http_date(now + Duration::from_secs(30));
        assert_eq!(
            parse_retry_after(&later, now),
            Some(Duration::from_secs(30))
        );
        let earlier = httpdate::fmt_http_date(now - Duration::from_secs(30));
        assert_eq!(parse_retry_after(&earlier, now), Some(Duration::ZERO));
        assert_eq!(parse_retry_after("soon", now), None);
    }

    #[test]
    fn connection_retries_are_quick() {
        let total: Duration = (0..CONNECT_RETRIES).map(|r| connect_delay(r, 1.0)).sum();
        assert!(total <= Duration::from_secs(2), "{total:?}");
        assert!(connect_delay(0, 0.0) >= Duration::from_millis(180));
    }

    #[tokio::test]
    async fn a_refused_endpoint_fails_fast_naming_the_host() {
        // A port nothing listens on: bind one, note it, close it.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let client = crate::http::build_http_client(&crate::http::HttpOptions::default()).unwrap();
        let url = reqwest::Url::parse(&format!("http://127.0.0.1:{port}/x")).unwrap();
        let started = Instant::now();
        let attempts = AtomicU64::new(0);
        let err = send_retry(
            &client,
            &RetryConfig::default(),
            &SplitMix64::new(1),
            &attempts,
            || reqwest::Request::new(reqwest::Method::GET, url.clone()),
        )
        .await
        .unwrap_err();
        assert!(started.elapsed() < Duration::from_secs(10));
        assert_eq!(
            attempts.load(Ordering::Relaxed),
            u64::from(CONNECT_RETRIES) + 1
        );
        assert_eq!(err.kind(), ErrorKind::Network);
        let text = err.to_string();
        assert!(text.contains(&format!("127.0.0.1:{port}")), "{text}");
        assert!(
            err.summary()
                .unwrap()
                .contains("cannot connect to 127.0.0.1"),
            "{text}"
        );
    }

    #[test]
    fn which_statuses_are_retried() {
        for s in [408, 429, 500, 502, 503, 504] {
            assert!(retryable_status(StatusCode::from_u16(s).unwrap()), "{s}");
        }
        for s in [200, 400, 401, 403, 404, 409] {
            assert!(!retryable_status(StatusCode::from_u16(s).unwrap()), "{s}");
        }
    }
}

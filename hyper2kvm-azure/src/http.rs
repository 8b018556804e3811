//! The one HTTP client of the process.
//!
//! Every ARM call, every token request (azure_identity's credentials get it as their
//! transport) and, later, every blob read goes through one [`reqwest::Client`], so the process
//! has one connection pool and one TLS configuration. TLS is rustls with the *ring* provider:
//! reqwest's default provider, aws-lc-rs, needs cmake and minutes of C compilation.

use std::time::Duration;

use crate::error::{Error, ErrorKind, Result};

/// Timeouts and identification of the shared client.
#[derive(Debug, Clone)]
pub struct HttpOptions {
    /// How long to wait for a TCP (and TLS) connection.
    pub connect_timeout: Duration,
    /// How long one request may take from sending to the end of the body. Retries get a new
    /// budget each; the retry loop has its own overall timeout.
    pub request_timeout: Duration,
    /// The `User-Agent` header.
    pub user_agent: String,
}

impl Default for HttpOptions {
    fn default() -> Self {
        HttpOptions {
            connect_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(60),
            user_agent: concat!("hyper2kvm/", env!("CARGO_PKG_VERSION")).to_string(),
        }
    }
}

/// Makes rustls use *ring*. Idempotent; [`build_http_client`] calls it, and so must anything
/// else that builds a reqwest client in this process (tests, for instance).
pub fn install_crypto_provider() {
    // Err means a provider is already installed, which is what we want.
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// Builds the process's HTTP client.
pub fn build_http_client(options: &HttpOptions) -> Result<reqwest::Client> {
    install_crypto_provider();
    reqwest::Client::builder()
        .connect_timeout(options.connect_timeout)
        .timeout(options.request_timeout)
        .pool_idle_timeout(Duration::from_secs(90))
        .user_agent(options.user_agent.clone())
        .build()
        .map_err(|e| {
            Error::new(ErrorKind::InvalidArgument, "cannot build the HTTP client").with_source(e)
        })
}

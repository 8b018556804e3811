//! Credentials: our own chain over `azure_identity` 1.x, or none at all.
//!
//! azure_identity 1.x has no `DefaultAzureCredential`, so we build the chain ourselves, in
//! this order, and remember the first source that produced a token:
//!
//! 1. **client secret** from `AZURE_TENANT_ID`, `AZURE_CLIENT_ID` and `AZURE_CLIENT_SECRET`
//!    (tried only when all three are set);
//! 2. **workload identity** (Kubernetes), when `AZURE_FEDERATED_TOKEN_FILE` is set;
//! 3. **managed identity** (IMDS on an Azure VM, App Service, Arc, …);
//! 4. **Azure CLI** (`az account get-access-token`).
//!
//! Every credential that talks HTTP gets *our* reqwest client as its azure_core transport, so
//! token requests share the process's connection pool. [`AuthMethod::None`] sends no
//! `Authorization` header at all: the simulator and test rigs want that. Secrets are read from
//! the environment only, and neither they nor tokens are ever shown: errors name the source
//! that failed, and `Debug` prints the source names.

use std::fmt;
use std::sync::{Arc, Mutex};

use azure_core::credentials::{Secret, TokenCredential};
use azure_core::http::{ClientOptions, Transport};
use azure_identity::{
    AzureCliCredential, ClientAssertionCredentialOptions, ClientSecretCredential,
    ClientSecretCredentialOptions, ManagedIdentityCredential, ManagedIdentityCredentialOptions,
    WorkloadIdentityCredential, WorkloadIdentityCredentialOptions,
};

use crate::error::{Error, ErrorKind, Result};

/// Which credentials to use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthMethod {
    /// Send no token (simulators, test rigs).
    None,
    /// The whole chain, first success wins.
    Default,
    /// Only the client secret from the environment.
    ClientSecret,
    /// Only workload identity.
    WorkloadIdentity,
    /// Only managed identity.
    ManagedIdentity,
    /// Only the Azure CLI.
    AzureCli,
}

/// A source of the chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// Client secret from the environment.
    ClientSecret,
    /// Workload identity.
    WorkloadIdentity,
    /// Managed identity.
    ManagedIdentity,
    /// Azure CLI.
    AzureCli,
}

impl Source {
    /// A name for messages.
    pub fn as_str(self) -> &'static str {
        match self {
            Source::ClientSecret => {
                "client secret (AZURE_TENANT_ID/AZURE_CLIENT_ID/AZURE_CLIENT_SECRET)"
            }
            Source::WorkloadIdentity => "workload identity (AZURE_FEDERATED_TOKEN_FILE)",
            Source::ManagedIdentity => "managed identity",
            Source::AzureCli => "Azure CLI",
        }
    }

    /// Where the source gets its tokens, for messages: the login endpoint (with the tenant),
    /// the managed identity endpoint, or the `az` command.
    pub fn endpoint(self, env: impl Fn(&str) -> Option<String>) -> String {
        let authority = || {
            env("AZURE_AUTHORITY_HOST")
                .filter(|v| !v.trim().is_empty())
                .unwrap_or_else(|| "https://login.microsoftonline.com".into())
                .trim_end_matches('/')
                .to_string()
        };
        let tenant = env("AZURE_TENANT_ID").unwrap_or_default();
        match self {
            Source::ClientSecret | Source::WorkloadIdentity => format!("{}/{tenant}", authority()),
            Source::ManagedIdentity => env("IDENTITY_ENDPOINT")
                .or_else(|| env("MSI_ENDPOINT"))
                .unwrap_or_else(|| {
                    "http://169.254.169.254/metadata/identity/oauth2/token (IMDS)".into()
                }),
            Source::AzureCli => "the `az account get-access-token` command".into(),
        }
    }
}

/// Retries of token requests: a few quick ones, so that an unreachable login endpoint fails
/// in seconds (azure_core's default is 8 retries within a minute).
fn token_retry() -> azure_core::http::RetryOptions {
    use azure_core::time::Duration;
    azure_core::http::RetryOptions::exponential(azure_core::http::ExponentialRetryOptions {
        initial_delay: Duration::milliseconds(250),
        max_retries: 3,
        max_total_elapsed: Duration::seconds(8),
        max_delay: Duration::seconds(2),
    })
}

/// The sources `method` uses, given the environment `env` (a lookup such as
/// `|k| std::env::var(k).ok()`). Sources whose settings are absent are left out so they
/// neither fail noisily nor wait on the network.
pub fn sources(method: AuthMethod, env: impl Fn(&str) -> Option<String>) -> Vec<Source> {
    let set = |k: &str| env(k).is_some_and(|v| !v.trim().is_empty());
    let secret = set("AZURE_TENANT_ID") && set("AZURE_CLIENT_ID") && set("AZURE_CLIENT_SECRET");
    let workload = set("AZURE_FEDERATED_TOKEN_FILE");
    match method {
        AuthMethod::None => vec![],
        AuthMethod::ClientSecret => vec![Source::ClientSecret],
        AuthMethod::WorkloadIdentity => vec![Source::WorkloadIdentity],
        AuthMethod::ManagedIdentity => vec![Source::ManagedIdentity],
        AuthMethod::AzureCli => vec![Source::AzureCli],
        AuthMethod::Default => {
            let mut v = Vec::new();
            if secret {
                v.push(Source::ClientSecret);
            }
            if workload {
                v.push(Source::WorkloadIdentity);
            }
            v.push(Source::ManagedIdentity);
            v.push(Source::AzureCli);
            v
        }
    }
}

/// Produces the `Authorization` header for ARM requests, or none.
#[derive(Clone)]
pub struct ArmCredential {
    chain: Option<Arc<Chain>>,
}

struct Chain {
    links: Vec<(Source, Arc<dyn TokenCredential>)>,
    /// The index of the link that worked last; tried first next time.
    chosen: Mutex<Option<usize>>,
}

impl fmt::Debug for ArmCredential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.chain {
            None => f.write_str("ArmCredential(none)"),
            Some(chain) => f
                .debug_list()
                .entries(chain.links.iter().map(|(s, _)| s.as_str()))
                .finish(),
        }
    }
}

impl ArmCredential {
    /// No credential: requests carry no `Authorization` header.
    pub fn none() -> Self {
        ArmCredential { chain: None }
    }

    /// The credentials of `method`, reading settings from the process environment; HTTP-based
    /// credentials send through `http`.
    pub fn from_env(method: AuthMethod, http: &reqwest::Client) -> Result<Self> {
        if method == AuthMethod::None {
            return Ok(ArmCredential::none());
        }
        // azure_core builds a reqwest client of its own for any credential left without a
        // transport; with rustls-no-provider that needs the process-wide provider.
        crate::http::install_crypto_provider();
        let env = |k: &str| std::env::var(k).ok();
        let transport = || ClientOptions {
            transport: Some(Transport::new(Arc::new(http.clone()))),
            retry: token_retry(),
            ..Default::default()
        };
        let mut links: Vec<(Source, Arc<dyn TokenCredential>)> = Vec::new();
        let mut unusable = Vec::new();
        for source in sources(method, env) {
            let made: azure_core::Result<Arc<dyn TokenCredential>> = match source {
                Source::ClientSecret => client_secret_from_env(&env, transport()),
                Source::WorkloadIdentity => {
                    let options = WorkloadIdentityCredentialOptions {
                        credential_options: ClientAssertionCredentialOptions {
                            client_options: transport(),
                        },
                        ..Default::default()
                    };
                    WorkloadIdentityCredential::new(Some(options))
                        .map(|c| c as Arc<dyn TokenCredential>)
                }
                Source::ManagedIdentity => {
                    let options = ManagedIdentityCredentialOptions {
                        client_options: transport(),
                        ..Default::default()
                    };
                    ManagedIdentityCredential::new(Some(options))
                        .map(|c| c as Arc<dyn TokenCredential>)
                }
                Source::AzureCli => {
                    AzureCliCredential::new(None).map(|c| c as Arc<dyn TokenCredential>)
                }
            };
            match made {
                Ok(c) => links.push((source, c)),
                Err(e) => unusable.push(format!("{}: {e}", source.as_str())),
            }
        }
        if links.is_empty() {
            return Err(Error::new(
                ErrorKind::Credential,
                format!("no usable Azure credential ({})", unusable.join("; ")),
            ));
        }
        Ok(ArmCredential::from_links(links))
    }

    /// A chain of the given credentials, tried in order (for embedding and tests).
    pub fn from_links(links: Vec<(Source, Arc<dyn TokenCredential>)>) -> Self {
        ArmCredential {
            chain: Some(Arc::new(Chain {
                links,
                chosen: Mutex::new(None),
            })),
        }
    }

    /// Whether requests carry a token.
    pub fn is_none(&self) -> bool {
        self.chain.is_none()
    }

    /// The `Authorization` header value for `scope` (`Bearer …`), or `None` without a
    /// credential. The credentials cache tokens and refresh them before they expire.
    pub async fn authorization(&self, scope: &str) -> Result<Option<String>> {
        let Some(chain) = &self.chain else {
            return Ok(None);
        };
        let first = *chain.chosen.lock().unwrap_or_else(|e| e.into_inner());
        let order: Vec<usize> = first
            .into_iter()
            .chain((0..chain.links.len()).filter(|&i| Some(i) != first))
            .collect();
        let mut failures = Vec::new();
        for i in order {
            let (source, credential) = &chain.links[i];
            match credential.get_token(&[scope], None).await {
                Ok(token) => {
                    *chain.chosen.lock().unwrap_or_else(|e| e.into_inner()) = Some(i);
                    return Ok(Some(format!("Bearer {}", token.token.secret())));
                }
                // azure_core's messages say what is missing ("az: command not found", an
                // AADSTS code); they do not carry the secret.
                Err(e) => failures.push(format!(
                    "{} via {}: {}",
                    source.as_str(),
                    source.endpoint(|k| std::env::var(k).ok()),
                    one_line(&e)
                )),
            }
        }
        Err(Error::new(
            ErrorKind::Credential,
            format!(
                "no Azure credential produced a token ({}); set AZURE_TENANT_ID, AZURE_CLIENT_ID and AZURE_CLIENT_SECRET, or run `az login`",
                failures.join("; ")
            ),
        ))
    }
}

/// The client-secret credential from `AZURE_TENANT_ID`, `AZURE_CLIENT_ID` and
/// `AZURE_CLIENT_SECRET`.
fn client_secret_from_env(
    env: &impl Fn(&str) -> Option<String>,
    client_options: ClientOptions,
) -> azure_core::Result<Arc<dyn TokenCredential>> {
    let var = |k: &str| {
        env(k).ok_or_else(|| {
            azure_core::Error::with_message(
                azure_core::error::ErrorKind::Credential,
                format!("{k} is not set"),
            )
        })
    };
    let (tenant, client, secret) = (
        var("AZURE_TENANT_ID")?,
        var("AZURE_CLIENT_ID")?,
        var("AZURE_CLIENT_SECRET")?,
    );
    let options = ClientSecretCredentialOptions { client_options };
    let credential =
        ClientSecretCredential::new(&tenant, client, Secret::new(secret), Some(options))?;
    Ok(credential)
}

fn one_line(e: &dyn std::error::Error) -> String {
    e.to_string()
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use azure_core::credentials::{AccessToken, TokenRequestOptions};
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[derive(Debug)]
    struct Fake {
        token: Option<&'static str>,
        calls: AtomicUsize,
    }

    #[async_trait::async_trait]
    impl TokenCredential for Fake {
        async fn get_token(
            &self,
            _scopes: &[&str],
            _options: Option<TokenRequestOptions<'_>>,
        ) -> azure_core::Result<AccessToken> {
            self.calls.fetch_add(1, Ordering::SeqCst);
            match self.token {
                Some(t) => Ok(AccessToken::new(
                    t,
                    azure_core::time::OffsetDateTime::now_utc()
                        + azure_core::time::Duration::hours(1),
                )),
                None => Err(azure_core::Error::with_message(
                    azure_core::error::ErrorKind::Credential,
                    "not logged in",
                )),
            }
        }
    }

    fn fake(token: Option<&'static str>) -> Arc<Fake> {
        Arc::new(Fake {
            token,
            calls: AtomicUsize::new(0),
        })
    }

    #[test]
    fn chain_sources_follow_the_environment() {
        let env = |vars: &'static [(&'static str, &'static str)]| {
            move |k: &str| {
                vars.iter()
                    .find(|(n, _)| *n == k)
                    .map(|(_, v)| v.to_string())
            }
        };
        let none: &[(&str, &str)] = &[];
        assert_eq!(
            sources(AuthMethod::Default, env(none)),
            [Source::ManagedIdentity, Source::AzureCli]
        );
        let all = &[
            ("AZURE_TENANT_ID", "t"),
            ("AZURE_CLIENT_ID", "c"),
            ("AZURE_CLIENT_SECRET", "s"),
            ("AZURE_FEDERATED_TOKEN_FILE", "/var/run/token"),
        ];
        assert_eq!(
            sources(AuthMethod::Default, env(all)),
            [
                Source::ClientSecret,
                Source::WorkloadIdentity,
                Source::ManagedIdentity,
                Source::AzureCli
            ]
        );
        // A secret without its tenant is not a usable client-secret credential.
        let partial = &[("AZURE_CLIENT_ID", "c"), ("AZURE_CLIENT_SECRET", "s")];
        assert_eq!(
            sources(AuthMethod::Default, env(partial))[0],
            Source::ManagedIdentity
        );
        assert!(sources(AuthMethod::None, env(all)).is_empty());
        assert_eq!(sources(AuthMethod::AzureCli, env(none)), [Source::AzureCli]);
    }

    #[test]
    fn sources_name_their_endpoints() {
        let env = |k: &str| match k {
            "AZURE_TENANT_ID" => Some("t-1".to_string()),
            "AZURE_AUTHORITY_HOST" => Some("https://login.example/".to_string()),
            _ => None,
        };
        assert_eq!(
            Source::ClientSecret.endpoint(env),
            "https://login.example/t-1"
        );
        assert!(Source::ManagedIdentity
            .endpoint(|_| None)
            .contains("169.254.169.254"));
        assert!(Source::ManagedIdentity
            .endpoint(|k| (k == "IDENTITY_ENDPOINT").then(|| "http://127.0.0.1:9/msi".into()))
            .contains("127.0.0.1:9"));
    }

    #[test]
    fn client_secret_reads_the_environment_without_echoing_it() {
        let env = |vars: &'static [(&'static str, &'static str)]| {
            move |k: &str| {
                vars.iter()
                    .find(|(n, _)| *n == k)
                    .map(|(_, v)| v.to_string())
            }
        };
        let http = crate::http::build_http_client(&Default::default()).unwrap();
        let ours = || ClientOptions {
            transport: Some(Transport::new(Arc::new(http.clone()))),
            ..Default::default()
        };
        let missing = &[("AZURE_CLIENT_ID", "c"), ("AZURE_CLIENT_SECRET", "s3cr3t")];
        let err = client_secret_from_env(&env(missing), ours()).unwrap_err();
        assert!(
            err.to_string().contains("AZURE_TENANT_ID is not set"),
            "{err}"
        );
        assert!(!err.to_string().contains("s3cr3t"));
        let all = &[
            ("AZURE_TENANT_ID", "00000000-0000-0000-0000-000000000001"),
            ("AZURE_CLIENT_ID", "c"),
            ("AZURE_CLIENT_SECRET", "s3cr3t"),
        ];
        // Building the credential sends nothing; a token is asked for only on first use.
        let credential = client_secret_from_env(&env(all), ours()).unwrap();
        assert!(!format!("{credential:?}").contains("s3cr3t"));
    }

    #[tokio::test]
    async fn chain_falls_through_and_remembers_the_winner() {
        let (broken, working) = (fake(None), fake(Some("tok")));
        let cred = ArmCredential::from_links(vec![
            (Source::ManagedIdentity, broken.clone()),
            (Source::AzureCli, working.clone()),
        ]);
        for _ in 0..3 {
            let header = cred.authorization("scope/.default").await.unwrap();
            assert_eq!(header.as_deref(), Some("Bearer tok"));
        }
        assert_eq!(broken.calls.load(Ordering::SeqCst), 1);
        assert_eq!(working.calls.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn all_failing_names_every_source_and_no_header_without_credential() {
        let cred = ArmCredential::from_links(vec![
            (Source::ManagedIdentity, fake(None)),
            (Source::AzureCli, fake(None)),
        ]);
        let err = cred.authorization("s").await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Credential);
        let text = err.to_string();
        // Each source, where it asked, and what it said.
        assert!(
            text.contains("managed identity via ") && text.contains("(IMDS): not logged in")
                || text.contains("managed identity via ")
                    && std::env::var("IDENTITY_ENDPOINT").is_ok(),
            "{text}"
        );
        assert!(
            text.contains("Azure CLI via the `az account get-access-token` command: not logged in"),
            "{text}"
        );
        assert_eq!(
            ArmCredential::none().authorization("s").await.unwrap(),
            None
        );
    }
}

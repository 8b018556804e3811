//! Discovery against the in-process simulator: the request count is the number of pages of
//! the three list calls, whatever the number of VMs, and throttling is waited out.

use std::sync::Arc;
use std::time::{Duration, Instant};

use hyper2kvm_azure::{
    build_http_client, discover, ArmClient, BackoffConfig, ErrorKind, HttpOptions, RetryConfig,
    Selection, SplitMix64,
};
use hyper2kvm_core::{DiskRole, PowerState, Vm};
use hyper2kvm_sim::{Failures, Route, Scenario, SimHandle, Simulator, Throttle};

const SUB: &str = "00000000-0000-0000-0000-00000000abcd";

async fn fleet_sim(vms: usize, page_size: usize) -> SimHandle {
    let mut scenario = Scenario::generated(SUB, vms, &["rg-a", "rg-b", "rg-c"], 1);
    scenario.settings.page_size = page_size;
    Simulator::start(&scenario).await.unwrap()
}

fn client(sim: &SimHandle, retry: RetryConfig) -> ArmClient {
    let http = build_http_client(&HttpOptions::default()).unwrap();
    ArmClient::builder(http)
        .endpoint(sim.base_url())
        .retry(retry)
        .jitter(Arc::new(SplitMix64::new(42)))
        .build()
        .unwrap()
}

fn fast_retry() -> RetryConfig {
    RetryConfig {
        backoff: BackoffConfig {
            init_backoff: Duration::from_millis(5),
            max_backoff: Duration::from_millis(50),
            base: 2.0,
        },
        max_retries: 10,
        retry_timeout: Duration::from_secs(30),
        max_retry_after: Duration::from_secs(5),
    }
}

fn assert_complete(vms: &[Vm], expected: usize) {
    assert_eq!(vms.len(), expected);
    for vm in vms {
        assert_eq!(vm.disks.len(), 2, "{}", vm.name);
        assert_eq!(vm.disks[0].role, DiskRole::Os);
        assert_eq!(vm.disks[0].size_bytes, 30 << 30);
        assert_eq!(vm.disks[1].role, DiskRole::Data { lun: 0 });
        assert_eq!(vm.disks[1].size_bytes, 64 << 30);
        assert!(
            !matches!(vm.power_state, PowerState::Unknown(_)),
            "{}",
            vm.name
        );
    }
    let keys: Vec<_> = vms
        .iter()
        .map(|v| (v.resource_group.clone(), v.name.clone()))
        .collect();
    let mut sorted = keys.clone();
    sorted.sort();
    assert_eq!(keys, sorted, "output is sorted by resource group and name");
}

#[tokio::test]
async fn thousand_vms_cost_only_the_pages_of_three_lists() {
    let sim = fleet_sim(1000, 100).await;
    let arm = client(&sim, fast_retry());
    let vms = discover(&arm, &[SUB.to_string()], &Selection::default())
        .await
        .unwrap();
    assert_complete(&vms, 1000);

    // 1000 VM models / 100 + 1000 instance views / 100 + 2000 disks / 100.
    let c = sim.counters();
    assert_eq!(c.received(Route::ListVms), 10);
    assert_eq!(c.received(Route::ListVmStatuses), 10);
    assert_eq!(c.received(Route::ListDisks), 20);
    for per_item in [
        Route::GetVm,
        Route::GetDisk,
        Route::ListVmsInGroup,
        Route::ListDisksInGroup,
        Route::Other,
    ] {
        assert_eq!(c.received(per_item), 0, "{per_item}");
    }
    assert_eq!(c.total(), 40);
    assert_eq!(arm.requests_sent(), 40);
    assert_eq!(c.with_authorization(), 0, "auth none sends no token");

    // The generator cycles running, deallocated, stopped.
    let running = vms
        .iter()
        .filter(|v| v.power_state == PowerState::Running)
        .count();
    assert_eq!(running, 334);
    assert_eq!(vms[0].resource_group, "rg-a");
    assert_eq!(vms[0].name, "vm-00000");
}

#[tokio::test]
async fn several_subscriptions_are_listed_and_sorted() {
    let mut scenario = Scenario::generated(SUB, 150, &["rg-x"], 1);
    let other = Scenario::generated("00000000-0000-0000-0000-000000000001", 50, &["rg-y"], 1);
    scenario.subscriptions.extend(other.subscriptions);
    scenario.settings.page_size = 100;
    let sim = Simulator::start(&scenario).await.unwrap();
    let arm = client(&sim, fast_retry());
    let subs = vec![
        SUB.to_string(),
        "00000000-0000-0000-0000-000000000001".to_string(),
    ];
    let vms = discover(&arm, &subs, &Selection::default()).await.unwrap();
    assert_eq!(vms.len(), 200);
    // Sorted by subscription first: ...0001 before ...abcd.
    assert_eq!(vms[0].subscription, "00000000-0000-0000-0000-000000000001");
    assert_eq!(vms[0].resource_group, "rg-y");
    assert_eq!(vms[50].subscription, SUB);
    // Pages: 2 + 2 + 3 for 150 VMs, 1 + 1 + 1 for 50.
    let c = sim.counters();
    assert_eq!(c.received(Route::ListVms), 3);
    assert_eq!(c.received(Route::ListVmStatuses), 3);
    assert_eq!(c.received(Route::ListDisks), 4);
    assert_eq!(c.total(), 10);
}

#[tokio::test]
async fn filters_do_not_add_requests() {
    let sim = fleet_sim(300, 100).await;
    let arm = client(&sim, fast_retry());
    let selection = Selection {
        resource_groups: vec!["RG-B".into()],
        names: vec!["vm-000*".into()],
        power_states: vec![PowerState::Running],
        ..Default::default()
    };
    let vms = discover(&arm, &[SUB.to_string()], &selection)
        .await
        .unwrap();
    // vm-00000..vm-00099 in rg-b are those with i % 3 == 1; running are those with i % 3 == 0.
    assert!(vms.is_empty());
    let selection = Selection {
        resource_groups: vec!["rg-b".into()],
        power_states: vec![PowerState::Deallocated],
        ..Default::default()
    };
    let vms = discover(&arm, &[SUB.to_string()], &selection)
        .await
        .unwrap();
    assert_eq!(vms.len(), 100);
    assert!(vms.iter().all(|v| v.resource_group == "rg-b"));
    assert_eq!(sim.counters().total(), 2 * (3 + 3 + 6));
}

#[tokio::test]
async fn throttling_with_retry_after_is_waited_out() {
    let sim = fleet_sim(1000, 100).await;
    sim.set_throttle(Throttle {
        first: 3,
        every: 7,
        retry_after_secs: 1,
    });
    let arm = client(&sim, fast_retry());
    let started = Instant::now();
    let vms = discover(&arm, &[SUB.to_string()], &Selection::default())
        .await
        .unwrap();
    let waited = started.elapsed();
    assert_complete(&vms, 1000);

    let c = sim.counters();
    assert_eq!(c.served(Route::ListVms), 10);
    assert_eq!(c.served(Route::ListVmStatuses), 10);
    assert_eq!(c.served(Route::ListDisks), 20);
    let throttled = c.total_throttled();
    assert!(throttled >= 3, "{throttled}");
    assert_eq!(c.total(), 40 + throttled);
    assert_eq!(arm.requests_sent(), 40 + throttled);
    // The three first requests were told to come back after a second, and were not retried
    // sooner (our own backoff would have been 5 ms).
    assert!(waited >= Duration::from_millis(950), "{waited:?}");
}

#[tokio::test]
async fn server_errors_are_retried_with_backoff() {
    let sim = fleet_sim(1000, 100).await;
    sim.set_failures(Failures {
        every: 4,
        status: 503,
    });
    let arm = client(&sim, fast_retry());
    let vms = discover(&arm, &[SUB.to_string()], &Selection::default())
        .await
        .unwrap();
    assert_complete(&vms, 1000);
    let c = sim.counters();
    assert_eq!(c.served(Route::ListVms), 10);
    assert_eq!(c.served(Route::ListVmStatuses), 10);
    assert_eq!(c.served(Route::ListDisks), 20);
    // Every fourth request failed: 40 answered out of n means n / 4 failures.
    assert_eq!(c.total_failed(), c.total() / 4);
    assert!(c.total_failed() >= 10);
    assert_eq!(arm.requests_sent(), c.total());
}

/// A credential that hands out a fixed token and counts how often it was asked.
#[derive(Debug, Default)]
struct FixedToken(std::sync::atomic::AtomicUsize);

#[async_trait::async_trait]
impl azure_core::credentials::TokenCredential for FixedToken {
    async fn get_token(
        &self,
        scopes: &[&str],
        _options: Option<azure_core::credentials::TokenRequestOptions<'_>>,
    ) -> azure_core::Result<azure_core::credentials::AccessToken> {
        assert_eq!(scopes, ["https://management.azure.com/.default"]);
        self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        Ok(azure_core::credentials::AccessToken::new(
            "token-value",
            azure_core::time::OffsetDateTime::now_utc() + azure_core::time::Duration::hours(1),
        ))
    }
}

#[tokio::test]
async fn the_token_goes_with_every_page_and_every_retry() {
    use hyper2kvm_azure::credential::Source;
    let sim = fleet_sim(250, 100).await;
    sim.set_throttle(Throttle {
        first: 0,
        every: 5,
        retry_after_secs: 0,
    });
    let token = Arc::new(FixedToken::default());
    let http = build_http_client(&HttpOptions::default()).unwrap();
    let arm = ArmClient::builder(http)
        .endpoint(sim.base_url())
        .credential(hyper2kvm_azure::ArmCredential::from_links(vec![(
            Source::AzureCli,
            token.clone(),
        )]))
        .retry(fast_retry())
        .build()
        .unwrap();
    let vms = discover(&arm, &[SUB.to_string()], &Selection::default())
        .await
        .unwrap();
    assert_eq!(vms.len(), 250);
    let c = sim.counters();
    assert!(c.total_throttled() > 0);
    assert_eq!(c.with_authorization(), c.total());
    // One token request per page (the credential caches; we do not add our own cache).
    assert_eq!(
        token.0.load(std::sync::atomic::Ordering::SeqCst) as u64,
        c.total() - c.total_throttled()
    );
}

#[tokio::test]
async fn endless_throttling_gives_up_with_a_clear_error() {
    let sim = fleet_sim(10, 100).await;
    sim.set_throttle(Throttle {
        first: u64::MAX,
        every: 0,
        retry_after_secs: 0,
    });
    let retry = RetryConfig {
        max_retries: 2,
        ..fast_retry()
    };
    let arm = client(&sim, retry);
    let err = discover(&arm, &[SUB.to_string()], &Selection::default())
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Throttled);
    let text = err.to_string();
    assert!(text.contains("429"), "{text}");
    assert!(text.contains("gave up after 2 retries"), "{text}");
}

#[tokio::test]
async fn unknown_subscription_and_closed_port() {
    let sim = fleet_sim(1, 100).await;
    let arm = client(&sim, fast_retry());
    let err = discover(
        &arm,
        &["11111111-0000-0000-0000-000000000000".into()],
        &Selection::default(),
    )
    .await
    .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound);
    assert!(err.to_string().contains("SubscriptionNotFound"), "{err}");

    // A port nobody listens on (the simulator's, after it stopped).
    let addr = sim.local_addr();
    sim.shutdown().await;
    let http = build_http_client(&HttpOptions::default()).unwrap();
    let arm = ArmClient::builder(http)
        .endpoint(format!("http://{addr}"))
        .retry(RetryConfig {
            max_retries: 1,
            ..fast_retry()
        })
        .build()
        .unwrap();
    let err = discover(&arm, &[SUB.to_string()], &Selection::default())
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Network, "{err}");
    assert!(err.to_string().contains("gave up after 1 retries"), "{err}");
}

//! The delivery client against real HTTP servers on 127.0.0.1: what it refuses, and why.

use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use futures_util::future::BoxFuture;
use hookbus_egress::ssrf::classify;
use hookbus_egress::{AddressPolicy, Forbidden, Lookup, Refused, http_client, refusal_of};
use proptest::prelude::*;

/// A resolver with fixed answers: public-looking names that lead somewhere they should not.
struct FixedLookup(Vec<(&'static str, Vec<IpAddr>)>);

impl Lookup for FixedLookup {
    fn lookup(&self, host: &str) -> BoxFuture<'static, std::io::Result<Vec<IpAddr>>> {
        let found = self
            .0
            .iter()
            .find(|(name, _)| *name == host)
            .map(|(_, ips)| ips.clone());
        Box::pin(async move {
            found.ok_or_else(|| std::io::Error::new(std::io::ErrorKind::NotFound, "no such name"))
        })
    }
}

fn lookup() -> Arc<dyn Lookup> {
    Arc::new(FixedLookup(vec![
        ("hooks.example.com", vec!["127.0.0.1".parse().unwrap()]),
        (
            "mixed.example.com",
            vec![
                "93.184.216.34".parse().unwrap(),
                "127.0.0.1".parse().unwrap(),
            ],
        ),
    ]))
}

/// An HTTP server on 127.0.0.1 that counts requests and answers `status`, with `location` when
/// given.
async fn server(status: u16, location: Option<String>) -> (u16, Arc<AtomicUsize>) {
    let hits = Arc::new(AtomicUsize::new(0));
    let counter = hits.clone();
    let app = axum::Router::new().fallback(move || {
        let (counter, location) = (counter.clone(), location.clone());
        async move {
            counter.fetch_add(1, Ordering::SeqCst);
            let mut response = axum::http::Response::builder().status(status);
            if let Some(location) = location {
                response = response.header("location", location);
            }
            response.body(axum::body::Body::empty()).unwrap()
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (port, hits)
}

fn policy(allow_private_networks: bool) -> AddressPolicy {
    AddressPolicy {
        allow_private_networks,
        allowed_subnets: Vec::new(),
    }
}

#[test]
fn special_addresses_are_forbidden_and_public_ones_are_not() {
    let forbidden = [
        ("127.0.0.1", Forbidden::Loopback),
        ("127.255.0.9", Forbidden::Loopback),
        ("10.1.2.3", Forbidden::Private),
        ("172.16.0.1", Forbidden::Private),
        ("192.168.1.1", Forbidden::Private),
        ("169.254.169.254", Forbidden::LinkLocal),
        ("100.64.0.1", Forbidden::SharedAddressSpace),
        ("0.0.0.0", Forbidden::Unspecified),
        ("224.0.0.1", Forbidden::Multicast),
        ("255.255.255.255", Forbidden::Broadcast),
        ("240.0.0.1", Forbidden::Reserved),
        ("192.0.2.7", Forbidden::Documentation),
        ("198.18.0.1", Forbidden::Benchmarking),
        ("::1", Forbidden::Loopback),
        ("::", Forbidden::Unspecified),
        ("::ffff:127.0.0.1", Forbidden::Loopback),
        ("::ffff:10.0.0.1", Forbidden::Private),
        ("::ffff:169.254.169.254", Forbidden::LinkLocal),
        ("::127.0.0.1", Forbidden::Loopback),
        ("::8.8.8.8", Forbidden::Reserved),
        ("64:ff9b::7f00:1", Forbidden::Loopback),
        ("2002:7f00:1::1", Forbidden::Loopback),
        ("fc00::1", Forbidden::UniqueLocal),
        ("fd12:3456::1", Forbidden::UniqueLocal),
        ("fe80::1", Forbidden::LinkLocal),
        ("fec0::1", Forbidden::SiteLocal),
        ("ff02::1", Forbidden::Multicast),
        ("2001:db8::1", Forbidden::Documentation),
    ];
    for (ip, why) in forbidden {
        assert_eq!(classify(ip.parse().unwrap()), Some(why), "{ip}");
    }
    for ip in [
        "8.8.8.8",
        "1.1.1.1",
        "93.184.216.34",
        "172.32.0.1",
        "100.128.0.1",
        "2606:4700:4700::1111",
        "2a00:1450::1",
        "::ffff:8.8.8.8",
        "64:ff9b::808:808",
    ] {
        assert_eq!(classify(ip.parse().unwrap()), None, "{ip}");
    }
}

proptest! {
    /// Every IPv6 spelling of an IPv4 address that reaches it is judged as that address.
    #[test]
    fn ipv4_mapped_and_nat64_forms_are_judged_as_the_ipv4_address(octets in any::<[u8; 4]>()) {
        let v4 = std::net::Ipv4Addr::from(octets);
        let mapped = IpAddr::V6(v4.to_ipv6_mapped());
        let [a, b, c, d] = octets;
        let nat64 = IpAddr::V6(std::net::Ipv6Addr::new(
            0x64, 0xff9b, 0, 0, 0, 0,
            u16::from_be_bytes([a, b]), u16::from_be_bytes([c, d]),
        ));
        prop_assert_eq!(classify(mapped), classify(IpAddr::V4(v4)));
        prop_assert_eq!(classify(nat64), classify(IpAddr::V4(v4)));
    }
}

#[tokio::test]
async fn literal_and_local_urls_are_refused_before_any_connection() {
    let (port, hits) = server(200, None).await;
    let policy = policy(false);
    for (url, expected) in [
        (format!("http://127.0.0.1:{port}/"), "loopback"),
        (format!("http://[::1]:{port}/"), "loopback"),
        (format!("http://[::ffff:127.0.0.1]:{port}/"), "loopback"),
        ("http://10.1.2.3/hook".to_owned(), "private"),
        (
            "http://169.254.169.254/latest/meta-data".to_owned(),
            "link-local",
        ),
        (format!("http://localhost:{port}/"), "localhost"),
        ("ftp://example.com/".to_owned(), "only http and https"),
    ] {
        let url = reqwest::Url::parse(&url).unwrap();
        let refused = policy.check_url(&url).unwrap_err();
        assert!(refused.to_string().contains(expected), "{url}: {refused}");
    }
    // The client itself refuses the names (localhost never reaches a resolver).
    let client = http_client(policy, lookup(), Duration::from_secs(5)).unwrap();
    let error = client
        .get(format!("http://localhost:{port}/"))
        .send()
        .await
        .unwrap_err();
    assert!(
        matches!(refusal_of(&error), Some(Refused::Localhost { .. })),
        "{error:?}"
    );
    assert_eq!(hits.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn a_public_looking_name_that_resolves_inside_is_refused_at_connect_time() {
    let (port, hits) = server(200, None).await;
    let client = http_client(policy(false), lookup(), Duration::from_secs(5)).unwrap();
    for name in ["hooks.example.com", "mixed.example.com"] {
        let url = reqwest::Url::parse(&format!("http://{name}:{port}/hook")).unwrap();
        policy(false)
            .check_url(&url)
            .expect("a name passes the checks that need no lookup");
        let error = client.post(url).send().await.unwrap_err();
        match refusal_of(&error) {
            Some(Refused::Address { address, why, .. }) => {
                assert_eq!(*address, "127.0.0.1".parse::<IpAddr>().unwrap());
                assert_eq!(*why, Forbidden::Loopback);
            }
            other => panic!("{name}: {other:?} ({error:?})"),
        }
    }
    assert_eq!(hits.load(Ordering::SeqCst), 0, "nothing reached the server");

    // Opened explicitly (development, tests), the same name is delivered to.
    let open = http_client(policy(true), lookup(), Duration::from_secs(5)).unwrap();
    let response = open
        .post(format!("http://hooks.example.com:{port}/hook"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(hits.load(Ordering::SeqCst), 1);
    // An allowed subnet opens only that range.
    let subnet = AddressPolicy {
        allow_private_networks: false,
        allowed_subnets: vec!["127.0.0.0/8".parse().unwrap()],
    };
    let url = reqwest::Url::parse(&format!("http://127.0.0.1:{port}/")).unwrap();
    subnet.check_url(&url).unwrap();
    let ten = reqwest::Url::parse("http://10.0.0.1/").unwrap();
    assert!(subnet.check_url(&ten).is_err());
}

#[tokio::test]
async fn a_redirect_is_never_followed() {
    let (inside, inside_hits) = server(200, None).await;
    let (port, _) = server(302, Some(format!("http://127.0.0.1:{inside}/admin"))).await;
    let client = http_client(policy(true), lookup(), Duration::from_secs(5)).unwrap();
    let response = client
        .post(format!("http://127.0.0.1:{port}/hook"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 302, "the 3xx is the answer");
    assert_eq!(
        inside_hits.load(Ordering::SeqCst),
        0,
        "its target was not visited"
    );
}

/// Runs in a child process with proxy variables set (the environment cannot be changed safely in
/// a threaded test); the parent checks that the proxy saw nothing.
#[tokio::test]
async fn a_proxy_from_the_environment_is_not_used() {
    if let Ok(target) = std::env::var("HOOKBUS_PROXY_PROBE_TARGET") {
        let client = http_client(policy(true), lookup(), Duration::from_secs(5)).unwrap();
        let response = client.post(target).send().await.unwrap();
        assert_eq!(response.status(), 200);
        return;
    }
    let (target, target_hits) = server(200, None).await;
    let (proxy, proxy_hits) = server(200, None).await;
    let proxy_url = format!("http://127.0.0.1:{proxy}");
    let status = tokio::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "a_proxy_from_the_environment_is_not_used"])
        .env(
            "HOOKBUS_PROXY_PROBE_TARGET",
            format!("http://127.0.0.1:{target}/hook"),
        )
        .env("HTTP_PROXY", &proxy_url)
        .env("HTTPS_PROXY", &proxy_url)
        .env("ALL_PROXY", &proxy_url)
        .env("http_proxy", &proxy_url)
        .env_remove("NO_PROXY")
        .env_remove("no_proxy")
        .status()
        .await
        .unwrap();
    assert!(status.success(), "the probe failed: {status:?}");
    assert_eq!(target_hits.load(Ordering::SeqCst), 1, "delivered directly");
    assert_eq!(
        proxy_hits.load(Ordering::SeqCst),
        0,
        "the proxy saw nothing"
    );
}

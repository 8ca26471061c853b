//! Server-side request forgery protection for outbound deliveries.
//!
//! An endpoint URL comes from a user, so the egress must not become a way into the operator's
//! network. The rules:
//!
//! - A literal address in the URL is checked when the endpoint is created and again before each
//!   send ([`AddressPolicy::check_url`]); no resolver runs for it.
//! - A name is resolved by [`GuardedResolver`], which checks **every** address the name resolves
//!   to and refuses the name if any one is forbidden (a name that mixes a public and a private
//!   address is how DNS rebinding gets in). The client connects only to the addresses it returns.
//! - `localhost` and `*.localhost` are refused before any lookup.
//! - The client follows no redirects and takes no proxy from the environment.
//!
//! Forbidden: loopback, private (RFC 1918), link-local (including 169.254.169.254, the cloud
//! metadata address), shared address space (CGNAT, 100.64.0.0/10), unique-local (fc00::/7),
//! site-local, multicast, broadcast, unspecified, and the other special-purpose ranges of the
//! IANA registries (documentation, benchmarking, reserved), also when written as IPv4-mapped
//! (`::ffff:127.0.0.1`), IPv4-compatible, NAT64 (`64:ff9b::/96`) or 6to4 (`2002::/16`) IPv6.
//! `allow_private_networks` turns the whole check off (development and tests);
//! `allowed_subnets` opens chosen ranges.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use futures_util::future::BoxFuture;
use ipnet::IpNet;

/// Why an address may not be reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Forbidden {
    Unspecified,
    Loopback,
    Private,
    SharedAddressSpace,
    LinkLocal,
    UniqueLocal,
    SiteLocal,
    Multicast,
    Broadcast,
    Documentation,
    Benchmarking,
    Reserved,
}

impl std::fmt::Display for Forbidden {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Unspecified => "an unspecified address (0.0.0.0/8, ::)",
            Self::Loopback => "a loopback address (127.0.0.0/8, ::1)",
            Self::Private => "a private address (10/8, 172.16/12, 192.168/16)",
            Self::SharedAddressSpace => "shared address space (CGNAT, 100.64.0.0/10)",
            Self::LinkLocal => "a link-local address (169.254.0.0/16, fe80::/10; cloud metadata)",
            Self::UniqueLocal => "a unique-local address (fc00::/7)",
            Self::SiteLocal => "a site-local address (fec0::/10)",
            Self::Multicast => "a multicast address",
            Self::Broadcast => "the broadcast address",
            Self::Documentation => "a documentation address",
            Self::Benchmarking => "a benchmarking address (198.18.0.0/15)",
            Self::Reserved => "a reserved address",
        })
    }
}

fn classify_v4(ip: Ipv4Addr) -> Option<Forbidden> {
    let [a, b, c, _] = ip.octets();
    Some(match (a, b, c) {
        (0, _, _) => Forbidden::Unspecified,
        (10, _, _) => Forbidden::Private,
        (100, 64..=127, _) => Forbidden::SharedAddressSpace,
        (127, _, _) => Forbidden::Loopback,
        (169, 254, _) => Forbidden::LinkLocal,
        (172, 16..=31, _) => Forbidden::Private,
        (192, 0, 0) => Forbidden::Reserved,
        (192, 0, 2) | (198, 51, 100) | (203, 0, 113) => Forbidden::Documentation,
        (192, 168, _) => Forbidden::Private,
        (198, 18..=19, _) => Forbidden::Benchmarking,
        (224..=239, _, _) => Forbidden::Multicast,
        (255, 255, 255) if ip == Ipv4Addr::BROADCAST => Forbidden::Broadcast,
        (240..=255, _, _) => Forbidden::Reserved,
        _ => return None,
    })
}

fn classify_v6(ip: Ipv6Addr) -> Option<Forbidden> {
    let segments = ip.segments();
    let embedded_v4 = || {
        let [.., a, b, c, d] = ip.octets();
        Ipv4Addr::new(a, b, c, d)
    };
    if ip.is_unspecified() {
        return Some(Forbidden::Unspecified);
    }
    if ip.is_loopback() {
        return Some(Forbidden::Loopback);
    }
    // IPv4-mapped (::ffff:a.b.c.d) reaches the IPv4 address: the IPv4 rules.
    if segments[..6] == [0, 0, 0, 0, 0, 0xffff] {
        return classify_v4(embedded_v4());
    }
    // IPv4-compatible (::a.b.c.d) is deprecated: never a delivery target.
    if segments[..6] == [0; 6] {
        return Some(classify_v4(embedded_v4()).unwrap_or(Forbidden::Reserved));
    }
    // NAT64 (64:ff9b::/96) reaches the embedded IPv4 address.
    if segments[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
        return classify_v4(embedded_v4());
    }
    // 6to4 (2002:a.b.c.d::/48) routes to a.b.c.d.
    if segments[0] == 0x2002 {
        let [_, _, a, b, c, d, ..] = ip.octets();
        return classify_v4(Ipv4Addr::new(a, b, c, d));
    }
    Some(match segments[0] {
        s if s & 0xfe00 == 0xfc00 => Forbidden::UniqueLocal,
        s if s & 0xffc0 == 0xfe80 => Forbidden::LinkLocal,
        s if s & 0xffc0 == 0xfec0 => Forbidden::SiteLocal,
        s if s & 0xff00 == 0xff00 => Forbidden::Multicast,
        0x2001 if segments[1] == 0x0db8 => Forbidden::Documentation,
        0x0100 if segments[1..4] == [0, 0, 0] => Forbidden::Reserved, // discard-only 100::/64
        _ => return None,
    })
}

/// What kind of forbidden address `ip` is, or `None` when it is a public one.
pub fn classify(ip: IpAddr) -> Option<Forbidden> {
    match ip {
        IpAddr::V4(ip) => classify_v4(ip),
        IpAddr::V6(ip) => classify_v6(ip),
    }
}

/// A refusal to reach a URL or a name, with the reason for the attempt log.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    #[error("{host}: {address} is {why}")]
    Address {
        host: String,
        address: IpAddr,
        why: Forbidden,
    },
    #[error("{host}: names under localhost are never resolved")]
    Localhost { host: String },
    #[error("{url}: only http and https URLs are delivered to")]
    Scheme { url: String },
    #[error("{url}: the URL has no host")]
    NoHost { url: String },
    #[error("{host}: the name does not resolve ({message})")]
    Unresolved { host: String, message: String },
}

/// Which addresses deliveries may reach.
#[derive(Debug, Clone, Default)]
pub struct AddressPolicy {
    /// Every address, private ones included (development and tests only).
    pub allow_private_networks: bool,
    /// Ranges opened although they are forbidden by default (an internal subscriber's network).
    pub allowed_subnets: Vec<IpNet>,
}

impl AddressPolicy {
    /// Whether `ip` may be reached.
    pub fn check(&self, host: &str, ip: IpAddr) -> Result<(), Refused> {
        if self.allow_private_networks || self.allowed_subnets.iter().any(|net| net.contains(&ip)) {
            return Ok(());
        }
        match classify(ip) {
            None => Ok(()),
            Some(why) => Err(Refused::Address {
                host: host.to_owned(),
                address: ip,
                why,
            }),
        }
    }

    /// The checks a URL can have without a lookup: scheme, host, `localhost`, and a literal
    /// address. Run when an endpoint is created and before each send.
    pub fn check_url(&self, url: &reqwest::Url) -> Result<(), Refused> {
        if !matches!(url.scheme(), "http" | "https") {
            return Err(Refused::Scheme {
                url: url.to_string(),
            });
        }
        let host = match url.host() {
            None => {
                return Err(Refused::NoHost {
                    url: url.to_string(),
                });
            }
            Some(url::Host::Ipv4(ip)) => return self.check(&ip.to_string(), IpAddr::V4(ip)),
            Some(url::Host::Ipv6(ip)) => return self.check(&ip.to_string(), IpAddr::V6(ip)),
            Some(url::Host::Domain(name)) => name,
        };
        self.check_name(host)
    }

    fn check_name(&self, host: &str) -> Result<(), Refused> {
        let name = host.trim_end_matches('.').to_ascii_lowercase();
        if !self.allow_private_networks && (name == "localhost" || name.ends_with(".localhost")) {
            return Err(Refused::Localhost {
                host: host.to_owned(),
            });
        }
        Ok(())
    }
}

/// Name resolution, replaceable in tests (a name that "resolves" to 127.0.0.1).
pub trait Lookup: Send + Sync {
    fn lookup(&self, host: &str) -> BoxFuture<'static, std::io::Result<Vec<IpAddr>>>;
}

/// The system resolver (`getaddrinfo` through tokio).
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemLookup;

impl Lookup for SystemLookup {
    fn lookup(&self, host: &str) -> BoxFuture<'static, std::io::Result<Vec<IpAddr>>> {
        let host = host.to_owned();
        Box::pin(async move {
            Ok(tokio::net::lookup_host((host.as_str(), 0))
                .await?
                .map(|addr| addr.ip())
                .collect())
        })
    }
}

/// reqwest's resolver: resolves with `lookup`, then refuses the name unless every address passes
/// the policy.
pub struct GuardedResolver {
    policy: Arc<AddressPolicy>,
    lookup: Arc<dyn Lookup>,
}

impl reqwest::dns::Resolve for GuardedResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let (policy, lookup) = (self.policy.clone(), self.lookup.clone());
        let host = name.as_str().to_owned();
        Box::pin(async move {
            policy.check_name(&host)?;
            let addresses = lookup
                .lookup(&host)
                .await
                .map_err(|e| Refused::Unresolved {
                    host: host.clone(),
                    message: e.to_string(),
                })?;
            if addresses.is_empty() {
                return Err(Refused::Unresolved {
                    host,
                    message: "no addresses".into(),
                }
                .into());
            }
            for address in &addresses {
                policy.check(&host, *address)?;
            }
            let checked: reqwest::dns::Addrs = Box::new(
                addresses
                    .into_iter()
                    .map(|ip| SocketAddr::new(ip, 0))
                    .collect::<Vec<_>>()
                    .into_iter(),
            );
            Ok(checked)
        })
    }
}

/// The delivery client: every name through [`GuardedResolver`], no redirects, no proxy from the
/// environment, `timeout` per request. Literal-address URLs must be checked with
/// [`AddressPolicy::check_url`] before each send; no resolver runs for them.
pub fn http_client(
    policy: AddressPolicy,
    lookup: Arc<dyn Lookup>,
    timeout: Duration,
) -> Result<reqwest::Client, reqwest::Error> {
    hookbus_service::install_crypto_provider();
    reqwest::Client::builder()
        .dns_resolver(Arc::new(GuardedResolver {
            policy: Arc::new(policy),
            lookup,
        }))
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(timeout)
        .user_agent(concat!("hookbus/", env!("CARGO_PKG_VERSION")))
        .build()
}

/// The refusal behind a failed request, if that is why it failed.
pub fn refusal_of(error: &reqwest::Error) -> Option<&Refused> {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(e) = source {
        if let Some(refused) = e.downcast_ref::<Refused>() {
            return Some(refused);
        }
        source = e.source();
    }
    None
}

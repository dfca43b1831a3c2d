//! Outbound notifications: Judge0's `callback_url`, a PUT of the finished submission. Off by
//! default. When on, a callback goes only where the configuration lets it: to the allowed
//! hosts, and never to a loopback, private, link-local (cloud metadata), shared or otherwise
//! non-public address unless that is configured. The address is checked when the URL is
//! given and again on every connection, by the resolver the client connects through, so a
//! name that resolves elsewhere later (DNS rebinding) is refused too; redirects are not
//! followed. Deliveries are background tasks with a stop signal.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use reqwest::Url;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::Judge0Config;

/// Judge0's `CALLBACKS_TIMEOUT` and `CALLBACKS_MAX_TRIES`.
pub const TIMEOUT: Duration = Duration::from_secs(5);
pub const MAX_TRIES: u32 = 3;

/// Why a callback URL is refused, in words for the client.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    #[error("setting callback is not allowed")]
    Disabled,
    #[error("is not a valid URL")]
    NotUrl,
    #[error("must be an http or https URL without credentials")]
    Scheme,
    #[error("host is not allowed for callbacks")]
    HostNotAllowed,
    #[error("host does not resolve")]
    Unresolved,
    #[error("points to a loopback, private, link-local or other non-public address")]
    NotPublic,
}

/// Who may be called back.
#[derive(Debug, Clone)]
struct Policy {
    enabled: bool,
    hosts: Vec<String>,
    private_addresses: bool,
}

impl Policy {
    fn allows(&self, ip: IpAddr) -> bool {
        self.private_addresses || is_public(ip)
    }
}

/// The callbacks of this process. Cheap to clone.
#[derive(Clone)]
pub struct Callbacks {
    inner: Arc<Inner>,
}

struct Inner {
    policy: Policy,
    client: reqwest::Client,
    tasks: TaskTracker,
    stop: CancellationToken,
}

impl Callbacks {
    pub fn new(config: &Judge0Config) -> Callbacks {
        let policy = Policy {
            enabled: config.callbacks,
            hosts: config
                .callback_hosts
                .iter()
                .map(|h| h.trim().to_ascii_lowercase())
                .collect(),
            private_addresses: config.callback_private_addresses,
        };
        let client = reqwest::Client::builder()
            .timeout(TIMEOUT)
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .dns_resolver(Arc::new(GuardedResolver {
                policy: policy.clone(),
            }))
            .build()
            .expect("a client with no TLS configuration of its own builds");
        Callbacks {
            inner: Arc::new(Inner {
                policy,
                client,
                tasks: TaskTracker::new(),
                stop: CancellationToken::new(),
            }),
        }
    }

    /// Whether `url` may be called back: enabled, http(s), an allowed host, and every address
    /// the host resolves to allowed.
    pub async fn check(&self, url: &str) -> Result<Url, Refused> {
        let policy = &self.inner.policy;
        if !policy.enabled {
            return Err(Refused::Disabled);
        }
        let url = Url::parse(url.trim()).map_err(|_| Refused::NotUrl)?;
        if !matches!(url.scheme(), "http" | "https")
            || !url.username().is_empty()
            || url.password().is_some()
        {
            return Err(Refused::Scheme);
        }
        let host = url.host_str().ok_or(Refused::NotUrl)?.to_ascii_lowercase();
        let bare = host.trim_start_matches('[').trim_end_matches(']');
        if !policy.hosts.is_empty() && !policy.hosts.iter().any(|h| h == bare) {
            return Err(Refused::HostNotAllowed);
        }
        let port = url.port_or_known_default().unwrap_or(80);
        let addresses = match bare.parse::<IpAddr>() {
            Ok(ip) => vec![ip],
            Err(_) => tokio::net::lookup_host((bare, port))
                .await
                .map_err(|_| Refused::Unresolved)?
                .map(|a| a.ip())
                .collect(),
        };
        if addresses.is_empty() {
            return Err(Refused::Unresolved);
        }
        if addresses.iter().any(|ip| !policy.allows(*ip)) {
            return Err(Refused::NotPublic);
        }
        Ok(url)
    }

    /// PUTs `body` (JSON) to `url` in the background: up to [`MAX_TRIES`] tries of
    /// [`TIMEOUT`] each, again only when no answer came (any HTTP status ends it, as in
    /// Judge0). Failures are logged, never reported.
    pub fn deliver(&self, url: Url, body: Vec<u8>) {
        let inner = self.inner.clone();
        self.inner.tasks.spawn(async move {
            // An IP literal is not resolved, so it is checked here once more.
            if let Some(ip) = url.host_str().and_then(|h| {
                h.trim_start_matches('[')
                    .trim_end_matches(']')
                    .parse::<IpAddr>()
                    .ok()
            }) && !inner.policy.allows(ip)
            {
                tracing::warn!("a callback to a refused address was dropped");
                return;
            }
            for attempt in 1..=MAX_TRIES {
                let sent = inner
                    .client
                    .put(url.clone())
                    .header(reqwest::header::CONTENT_TYPE, "application/json")
                    .body(body.clone())
                    .send();
                let answer = tokio::select! {
                    answer = sent => answer,
                    () = inner.stop.cancelled() => return,
                };
                match answer {
                    Ok(response) => {
                        tracing::debug!(status = %response.status(), "callback delivered");
                        return;
                    }
                    Err(err) => {
                        tracing::info!(attempt, error = %err, "a callback failed");
                    }
                }
            }
        });
    }

    /// Ends the deliveries in flight and waits for their tasks.
    pub async fn shutdown(&self) {
        self.inner.stop.cancel();
        self.inner.tasks.close();
        self.inner.tasks.wait().await;
    }
}

/// Resolves a callback's host and keeps only the addresses the policy allows: the client
/// connects to nothing else, whatever the name resolves to by then.
struct GuardedResolver {
    policy: Policy,
}

impl reqwest::dns::Resolve for GuardedResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let policy = self.policy.clone();
        Box::pin(async move {
            let found: Vec<SocketAddr> = tokio::net::lookup_host((name.as_str(), 0))
                .await?
                .filter(|address| policy.allows(address.ip()))
                .collect();
            if found.is_empty() {
                return Err("the host has no address a callback may reach".into());
            }
            let addresses: reqwest::dns::Addrs = Box::new(found.into_iter());
            Ok(addresses)
        })
    }
}

/// Whether `ip` is a public unicast address: not loopback, private, link-local (169.254/16,
/// the cloud metadata address among them), shared (100.64/10), unspecified, broadcast,
/// multicast, documentation or reserved; IPv6 likewise, and IPv4 mapped or translated into
/// IPv6 judged as IPv4.
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, c, _] = v4.octets();
            !(v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || v4.is_multicast()
                || v4.is_documentation()
                || a == 0
                || (a == 100 && (64..128).contains(&b))
                || (a == 192 && b == 0 && c == 0)
                || (a == 198 && (18..20).contains(&b))
                || a >= 240)
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_public(IpAddr::V4(v4));
            }
            let segments = v6.segments();
            // 64:ff9b::/96, NAT64: an IPv4 address inside.
            if segments[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
                let [a, b] = segments[6].to_be_bytes();
                let [c, d] = segments[7].to_be_bytes();
                return is_public(IpAddr::V4(std::net::Ipv4Addr::new(a, b, c, d)));
            }
            !(v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (segments[0] & 0xfe00) == 0xfc00
                || (segments[0] & 0xffc0) == 0xfe80
                || (segments[0] & 0xffc0) == 0xfec0
                || segments[0] == 0x2001 && segments[1] == 0xdb8
                || segments[..5] == [0, 0, 0, 0, 0])
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(enabled: bool, hosts: &[&str], private: bool) -> Judge0Config {
        Judge0Config {
            prefix: "/judge0".to_owned(),
            listen: None,
            compiler_options: true,
            submission_delete: false,
            callbacks: enabled,
            callback_hosts: hosts.iter().map(|h| h.to_string()).collect(),
            callback_private_addresses: private,
        }
    }

    #[test]
    fn only_public_unicast_addresses_are_public() {
        for private in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "255.255.255.255",
            "224.0.0.1",
            "192.0.0.8",
            "198.18.0.1",
            "::1",
            "::",
            "fd00::1",
            "fe80::1",
            "::ffff:127.0.0.1",
            "::ffff:169.254.169.254",
            "64:ff9b::a9fe:a9fe",
            "::127.0.0.1",
            "2001:db8::1",
        ] {
            assert!(!is_public(private.parse().unwrap()), "{private}");
        }
        for public in [
            "1.1.1.1",
            "93.184.216.34",
            "2606:4700:4700::1111",
            "::ffff:8.8.8.8",
        ] {
            assert!(is_public(public.parse().unwrap()), "{public}");
        }
    }

    #[tokio::test]
    async fn urls_are_checked_against_the_policy() {
        let off = Callbacks::new(&config(false, &[], false));
        assert_eq!(off.check("http://1.1.1.1/").await, Err(Refused::Disabled));
        let on = Callbacks::new(&config(true, &[], false));
        assert_eq!(on.check("not a url").await, Err(Refused::NotUrl));
        assert_eq!(on.check("file:///etc/passwd").await, Err(Refused::Scheme));
        assert_eq!(
            on.check("http://user:pw@1.1.1.1/").await,
            Err(Refused::Scheme)
        );
        for url in [
            "http://127.0.0.1:2358/",
            "http://169.254.169.254/latest/meta-data/",
            "http://[::1]/",
            "http://[::ffff:7f00:1]/",
            "http://localhost/",
            "http://0x7f000001/",
            "http://2130706433/",
        ] {
            assert_eq!(on.check(url).await, Err(Refused::NotPublic), "{url}");
        }
        assert!(on.check("https://1.1.1.1/hook").await.is_ok());
        let listed = Callbacks::new(&config(true, &["127.0.0.1"], true));
        assert!(listed.check("http://127.0.0.1:9/x").await.is_ok());
        assert_eq!(
            listed.check("http://1.1.1.1/").await,
            Err(Refused::HostNotAllowed)
        );
    }
}

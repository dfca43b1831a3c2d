//! The client a request comes from: its API key when it presented one, else its address.
//! Behind a proxy, the address is read from the one header the operator trusts; a header the
//! operator did not name is never believed, or any client could claim any address.

use std::net::{IpAddr, Ipv6Addr, SocketAddr};

use axum::http::HeaderMap;

/// The identity rate limits and per-client caps count against.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ClientId {
    /// The name of the API key the request presented.
    Key(String),
    /// The client's address; an IPv6 address stands for its /64, which one host typically
    /// holds whole (otherwise each client would have 2^64 identities).
    Address(IpAddr),
}

impl std::fmt::Display for ClientId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ClientId::Key(name) => write!(f, "key:{name}"),
            ClientId::Address(ip) => write!(f, "{ip}"),
        }
    }
}

/// The address of the client: from `trusted_header` when configured and present (the
/// right-most valid address of `X-Forwarded-For`: the one the trusted proxy appended; the
/// ones left of it are whatever the client wrote), else the peer of the connection.
pub fn address(peer: SocketAddr, headers: &HeaderMap, trusted_header: &str) -> IpAddr {
    let from_header = (!trusted_header.is_empty())
        .then(|| headers.get_all(trusted_header).iter().next_back())
        .flatten()
        .and_then(|value| value.to_str().ok())
        .and_then(|value| {
            value
                .rsplit(',')
                .map(str::trim)
                .find_map(|entry| entry.parse::<IpAddr>().ok())
        });
    from_header.unwrap_or(peer.ip())
}

/// The identity of an address: IPv6 addresses are cut to their /64 (an IPv4 address mapped
/// into IPv6 is its IPv4 address).
pub fn address_identity(ip: IpAddr) -> ClientId {
    let ip = match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let prefix = u128::from(v6) & !((1u128 << 64) - 1);
                IpAddr::V6(Ipv6Addr::from(prefix))
            }
        },
        v4 => v4,
    };
    ClientId::Address(ip)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (k, v) in pairs {
            map.append(*k, v.parse().unwrap());
        }
        map
    }

    const PEER: &str = "10.0.0.9:5555";

    #[test]
    fn the_peer_unless_a_trusted_header_says_otherwise() {
        let peer: SocketAddr = PEER.parse().unwrap();
        let forwarded = headers(&[("x-forwarded-for", "1.2.3.4, 5.6.7.8")]);
        // No header trusted: whatever the client wrote is ignored.
        assert_eq!(address(peer, &forwarded, ""), peer.ip());
        // Trusted: the right-most entry, which the proxy appended.
        assert_eq!(
            address(peer, &forwarded, "x-forwarded-for"),
            "5.6.7.8".parse::<IpAddr>().unwrap()
        );
        // A garbage last entry is skipped, a missing header falls back to the peer.
        let garbage = headers(&[("x-forwarded-for", "1.2.3.4, nonsense")]);
        assert_eq!(
            address(peer, &garbage, "x-forwarded-for"),
            "1.2.3.4".parse::<IpAddr>().unwrap()
        );
        assert_eq!(address(peer, &HeaderMap::new(), "x-real-ip"), peer.ip());
    }

    #[test]
    fn ipv6_clients_are_counted_by_their_64() {
        let a = address_identity("2001:db8:1:2:aaaa::1".parse().unwrap());
        let b = address_identity("2001:db8:1:2:bbbb::2".parse().unwrap());
        let c = address_identity("2001:db8:1:3::1".parse().unwrap());
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert_eq!(
            address_identity("::ffff:1.2.3.4".parse().unwrap()),
            ClientId::Address("1.2.3.4".parse().unwrap())
        );
    }
}

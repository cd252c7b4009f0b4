//! The client's address: the socket peer, unless the peer is a trusted proxy, in which case the
//! right-most untrusted address of `X-Forwarded-For`.

use std::net::{IpAddr, SocketAddr};

use axum::extract::ConnectInfo;
use http::{HeaderMap, Request};
use ipnet::IpNet;

pub fn peer_addr<B>(req: &Request<B>) -> Option<IpAddr> {
    req.extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip())
}

/// Walks `X-Forwarded-For` from the right while the hops are trusted proxies.
pub fn client_ip(peer: IpAddr, headers: &HeaderMap, trusted: &[IpNet]) -> IpAddr {
    if !is_trusted(peer, trusted) {
        return peer;
    }
    let mut client = peer;
    let hops = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .collect::<Vec<_>>();
    for hop in hops.iter().rev() {
        match hop.parse::<IpAddr>() {
            Ok(ip) => {
                client = ip;
                if !is_trusted(ip, trusted) {
                    break;
                }
            }
            Err(_) => break,
        }
    }
    client
}

fn is_trusted(ip: IpAddr, trusted: &[IpNet]) -> bool {
    trusted.iter().any(|n| n.contains(&ip))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(v: &str) -> HeaderMap {
        let mut m = HeaderMap::new();
        m.insert("x-forwarded-for", v.parse().expect("header"));
        m
    }

    #[test]
    fn untrusted_peer_is_the_client() {
        let peer: IpAddr = "203.0.113.9".parse().expect("ip");
        assert_eq!(client_ip(peer, &h("1.2.3.4"), &[]), peer);
    }

    #[test]
    fn trusted_chain_is_walked_from_the_right() {
        let trusted: Vec<IpNet> = vec!["10.0.0.0/8".parse().expect("net")];
        let peer: IpAddr = "10.0.0.1".parse().expect("ip");
        assert_eq!(
            client_ip(peer, &h("6.6.6.6, 198.51.100.7, 10.0.0.2"), &trusted),
            "198.51.100.7".parse::<IpAddr>().expect("ip")
        );
        assert_eq!(client_ip(peer, &h("garbage"), &trusted), peer);
    }
}

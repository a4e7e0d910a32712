//! Pod IPs: each node owns a CIDR inside 127.0.0.0/8 and hands every pod
//! its own address from it (the network and the first address are skipped:
//! the first is the node's side of the pods' links, see
//! [`crate::runtime::netns`]).

use std::collections::HashSet;
use std::net::Ipv4Addr;
use std::sync::Mutex;

/// An IPv4 CIDR such as `127.1.0.0/16`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    pub base: Ipv4Addr,
    pub prefix: u8,
}

impl Cidr {
    /// Parses `a.b.c.d/n`; the range must lie inside 127.0.0.0/8.
    pub fn parse(s: &str) -> Result<Cidr, String> {
        let (ip, prefix) = s
            .split_once('/')
            .ok_or_else(|| format!("invalid CIDR {s:?}: expected a.b.c.d/n"))?;
        let ip: Ipv4Addr = ip.parse().map_err(|_| format!("invalid CIDR {s:?}"))?;
        let prefix: u8 = prefix
            .parse()
            .ok()
            .filter(|p| (8..=30).contains(p))
            .ok_or_else(|| format!("invalid CIDR {s:?}: prefix must be 8..=30"))?;
        if ip.octets()[0] != 127 {
            return Err(format!("pod CIDR {s:?} must lie inside 127.0.0.0/8"));
        }
        let mask = u32::MAX << (32 - prefix);
        Ok(Cidr {
            base: Ipv4Addr::from(u32::from(ip) & mask),
            prefix,
        })
    }

    /// The `i`-th /24 inside this range (how sim nodes split one range).
    pub fn subnet24(&self, i: usize) -> Result<Cidr, String> {
        if self.prefix > 24 {
            return Err(format!("{self} is smaller than a /24"));
        }
        let count = 1usize << (24 - self.prefix);
        if i >= count {
            return Err(format!(
                "{self} holds only {count} /24 subnets, node {i} needs more"
            ));
        }
        Ok(Cidr {
            base: Ipv4Addr::from(u32::from(self.base) + ((i as u32) << 8)),
            prefix: 24,
        })
    }

    /// The range's first address, which no pod gets: the node's side of
    /// the pods' links when pods have network namespaces of their own.
    pub fn node_address(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.base) + 1)
    }

    fn size(&self) -> u32 {
        1u32 << (32 - self.prefix)
    }
}

impl std::fmt::Display for Cidr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.base, self.prefix)
    }
}

/// Hands out the addresses of one [`Cidr`].
#[derive(Debug)]
pub struct Allocator {
    cidr: Cidr,
    used: Mutex<HashSet<Ipv4Addr>>,
}

impl Allocator {
    pub fn new(cidr: Cidr) -> Allocator {
        Allocator {
            cidr,
            used: Mutex::new(HashSet::new()),
        }
    }

    pub fn cidr(&self) -> Cidr {
        self.cidr
    }

    /// Marks `ip` as taken (an address found again after a restart).
    pub fn reserve(&self, ip: Ipv4Addr) {
        self.used.lock().expect("ipam lock").insert(ip);
    }

    /// The lowest free address, skipping the network and the first host.
    pub fn allocate(&self) -> Option<Ipv4Addr> {
        let mut used = self.used.lock().expect("ipam lock");
        let base = u32::from(self.cidr.base);
        (2..self.cidr.size() - 1)
            .map(|i| Ipv4Addr::from(base + i))
            .find(|ip| !used.contains(ip))
            .inspect(|ip| {
                used.insert(*ip);
            })
    }

    pub fn release(&self, ip: Ipv4Addr) {
        self.used.lock().expect("ipam lock").remove(&ip);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_allocates() {
        assert!(Cidr::parse("10.0.0.0/16").is_err());
        assert!(Cidr::parse("127.1.0.0").is_err());
        assert!(Cidr::parse("127.1.0.0/40").is_err());
        let c = Cidr::parse("127.1.2.3/16").unwrap();
        assert_eq!(c.to_string(), "127.1.0.0/16");
        assert_eq!(c.node_address(), Ipv4Addr::new(127, 1, 0, 1));
        let a = Allocator::new(Cidr::parse("127.9.0.0/30").unwrap());
        assert_eq!(a.allocate(), Some("127.9.0.2".parse().unwrap()));
        assert_eq!(a.allocate(), None);
        a.release("127.9.0.2".parse().unwrap());
        assert_eq!(a.allocate(), Some("127.9.0.2".parse().unwrap()));
        let big = Cidr::parse("127.64.0.0/10").unwrap();
        assert_eq!(big.subnet24(999).unwrap().to_string(), "127.67.231.0/24");
        assert!(Cidr::parse("127.0.0.0/23").unwrap().subnet24(2).is_err());
    }
}

//! The agent's rtnetlink connection: a thin typed layer over `rtnetlink`.

use futures_util::TryStreamExt;
use rtnetlink::packet_route::link::{LinkAttribute, LinkFlags, LinkLayerType, LinkMessage};
use rtnetlink::{Handle, LinkUnspec};
use std::net::IpAddr;

#[derive(Debug, thiserror::Error)]
pub enum NetlinkError {
    #[error("cannot open a netlink socket: {0}")]
    Open(#[source] std::io::Error),
    #[error("netlink {op} failed: {source}")]
    Request {
        op: &'static str,
        #[source]
        source: rtnetlink::Error,
    },
}

/// One network interface as the kernel reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Link {
    pub index: u32,
    pub name: String,
    pub ethernet: bool,
    pub loopback: bool,
    pub up: bool,
    pub mac: Option<[u8; 6]>,
}

impl Link {
    fn from_message(m: &LinkMessage) -> Link {
        let mut name = String::new();
        let mut mac = None;
        for attr in &m.attributes {
            match attr {
                LinkAttribute::IfName(n) => name = n.clone(),
                LinkAttribute::Address(a) => mac = <[u8; 6]>::try_from(a.as_slice()).ok(),
                _ => {}
            }
        }
        Link {
            index: m.header.index,
            name,
            ethernet: m.header.link_layer_type == LinkLayerType::Ether,
            loopback: m.header.flags.contains(LinkFlags::Loopback),
            up: m.header.flags.contains(LinkFlags::Up),
            mac,
        }
    }
}

#[derive(Clone)]
pub struct Netlink {
    handle: Handle,
}

impl Netlink {
    /// Opens a connection; its I/O runs as a task on the current runtime.
    pub fn open() -> Result<Netlink, NetlinkError> {
        let (connection, handle, _) = rtnetlink::new_connection().map_err(NetlinkError::Open)?;
        tokio::spawn(connection);
        Ok(Netlink { handle })
    }

    pub async fn links(&self) -> Result<Vec<Link>, NetlinkError> {
        let req = |source| NetlinkError::Request { op: "link dump", source };
        let mut stream = self.handle.link().get().execute();
        let mut links = Vec::new();
        while let Some(m) = stream.try_next().await.map_err(req)? {
            links.push(Link::from_message(&m));
        }
        Ok(links)
    }

    pub async fn set_up(&self, index: u32) -> Result<(), NetlinkError> {
        self.handle
            .link()
            .set(LinkUnspec::new_with_index(index).up().build())
            .execute()
            .await
            .map_err(|source| NetlinkError::Request { op: "link up", source })
    }

    /// Adds an address; adding one that is already there is not an error.
    pub async fn add_address(&self, index: u32, ip: IpAddr, prefix: u8) -> Result<(), NetlinkError> {
        self.handle
            .address()
            .add(index, ip, prefix)
            .replace()
            .execute()
            .await
            .map_err(|source| NetlinkError::Request { op: "address add", source })
    }
}

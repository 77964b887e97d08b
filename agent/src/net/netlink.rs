//! The agent's rtnetlink connection: a thin typed layer over `rtnetlink`.

use futures_util::TryStreamExt;
use rtnetlink::packet_core::{NetlinkMessage, NetlinkPayload};
use rtnetlink::packet_route::address::{AddressAttribute, AddressMessage};
use rtnetlink::packet_route::link::{LinkAttribute, LinkFlags, LinkLayerType, LinkMessage};
use rtnetlink::packet_route::RouteNetlinkMessage;
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
    /// Administratively up and with carrier: frames can flow.
    pub running: bool,
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
            running: m.header.flags.contains(LinkFlags::Up)
                && m.header.flags.contains(LinkFlags::LowerUp),
            mac,
        }
    }
}

/// An address on an interface, with the kernel's message (needed to delete it).
#[derive(Clone, Debug)]
pub struct Address {
    pub ip: IpAddr,
    pub prefix: u8,
    pub index: u32,
    message: AddressMessage,
}

/// A change of link state the kernel announced.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LinkEvent {
    Changed(Link),
    Removed(u32),
}

/// Link events from a netlink multicast subscription (`ip monitor link`).
pub struct LinkEvents {
    rx: futures_channel_rx::Receiver,
}

mod futures_channel_rx {
    use super::*;
    pub type Receiver = Box<
        dyn futures_util::Stream<
                Item = (
                    NetlinkMessage<RouteNetlinkMessage>,
                    rtnetlink::sys::SocketAddr,
                ),
            > + Send
            + Unpin,
    >;
}

impl LinkEvents {
    /// Subscribes; the connection's I/O runs as a task on the current runtime.
    pub fn subscribe() -> Result<LinkEvents, NetlinkError> {
        let (connection, _handle, rx) =
            rtnetlink::new_multicast_connection(&[rtnetlink::MulticastGroup::Link])
                .map_err(NetlinkError::Open)?;
        tokio::spawn(connection);
        Ok(LinkEvents { rx: Box::new(rx) })
    }

    /// The next link event; `None` if the subscription ended.
    pub async fn next(&mut self) -> Option<LinkEvent> {
        use futures_util::StreamExt;
        loop {
            let (msg, _) = self.rx.next().await?;
            match msg.payload {
                NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewLink(m)) => {
                    return Some(LinkEvent::Changed(Link::from_message(&m)))
                }
                NetlinkPayload::InnerMessage(RouteNetlinkMessage::DelLink(m)) => {
                    return Some(LinkEvent::Removed(m.header.index))
                }
                _ => continue,
            }
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
        let req = |source| NetlinkError::Request {
            op: "link dump",
            source,
        };
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
            .map_err(|source| NetlinkError::Request {
                op: "link up",
                source,
            })
    }

    pub async fn link(&self, index: u32) -> Result<Option<Link>, NetlinkError> {
        Ok(self.links().await?.into_iter().find(|l| l.index == index))
    }

    /// The addresses on interface `index`.
    pub async fn addresses(&self, index: u32) -> Result<Vec<Address>, NetlinkError> {
        let req = |source| NetlinkError::Request {
            op: "address dump",
            source,
        };
        let mut stream = self
            .handle
            .address()
            .get()
            .set_link_index_filter(index)
            .execute();
        let mut out = Vec::new();
        while let Some(m) = stream.try_next().await.map_err(req)? {
            if m.header.index != index {
                continue;
            }
            let ip = m.attributes.iter().find_map(|a| match a {
                AddressAttribute::Local(ip) => Some(*ip),
                _ => None,
            });
            let ip = ip.or_else(|| {
                m.attributes.iter().find_map(|a| match a {
                    AddressAttribute::Address(ip) => Some(*ip),
                    _ => None,
                })
            });
            if let Some(ip) = ip {
                out.push(Address {
                    ip,
                    prefix: m.header.prefix_len,
                    index,
                    message: m,
                });
            }
        }
        Ok(out)
    }

    /// Removes an address; one that is already gone is not an error.
    pub async fn del_address(&self, address: &Address) -> Result<(), NetlinkError> {
        match self
            .handle
            .address()
            .del(address.message.clone())
            .execute()
            .await
        {
            Ok(()) => Ok(()),
            Err(rtnetlink::Error::NetlinkError(e)) if e.raw_code() == -libc::EADDRNOTAVAIL => {
                Ok(())
            }
            Err(source) => Err(NetlinkError::Request {
                op: "address delete",
                source,
            }),
        }
    }

    /// Adds an address; adding one that is already there is not an error.
    pub async fn add_address(
        &self,
        index: u32,
        ip: IpAddr,
        prefix: u8,
    ) -> Result<(), NetlinkError> {
        self.handle
            .address()
            .add(index, ip, prefix)
            .replace()
            .execute()
            .await
            .map_err(|source| NetlinkError::Request {
                op: "address add",
                source,
            })
    }
}

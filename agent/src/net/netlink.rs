//! The agent's rtnetlink connection: a thin typed layer over `rtnetlink`.

use futures_util::TryStreamExt;
use rtnetlink::packet_core::{NetlinkMessage, NetlinkPayload};
use rtnetlink::packet_route::address::{AddressAttribute, AddressFlags, AddressMessage};
use rtnetlink::packet_route::link::{
    LinkAttribute, LinkFlags, LinkInfo, LinkLayerType, LinkMessage, State as OperState,
};
use rtnetlink::packet_route::route::{
    RouteAddress, RouteAttribute, RouteHeader, RouteMessage, RouteProtocol, RouteType,
};
use rtnetlink::packet_route::RouteNetlinkMessage;
use rtnetlink::{Handle, LinkUnspec, RouteMessageBuilder};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

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
    pub mtu: Option<u32>,
    /// RFC 2863 operational state as the kernel words it (`up`, `down`, `lowerlayerdown`, ...).
    pub operstate: String,
    /// The link type a virtual link was made with (`veth`, `bridge`, ...), if any.
    pub kind: Option<String>,
}

impl Link {
    fn from_message(m: &LinkMessage) -> Link {
        let mut name = String::new();
        let mut mac = None;
        let mut mtu = None;
        let mut operstate = String::from("unknown");
        let mut kind = None;
        for attr in &m.attributes {
            match attr {
                LinkAttribute::IfName(n) => name = n.clone(),
                LinkAttribute::Address(a) => mac = <[u8; 6]>::try_from(a.as_slice()).ok(),
                LinkAttribute::Mtu(v) => mtu = Some(*v),
                LinkAttribute::OperState(st) => operstate = oper_name(st),
                LinkAttribute::LinkInfo(infos) => {
                    for i in infos {
                        if let LinkInfo::Kind(k) = i {
                            kind = Some(k.to_string());
                        }
                    }
                }
                _ => {}
            }
        }
        Link {
            mtu,
            operstate,
            kind,
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

fn oper_name(st: &OperState) -> String {
    match st {
        OperState::Up => "up".into(),
        OperState::Down => "down".into(),
        OperState::LowerLayerDown => "lowerlayerdown".into(),
        OperState::Dormant => "dormant".into(),
        OperState::Testing => "testing".into(),
        OperState::NotPresent => "notpresent".into(),
        _ => "unknown".into(),
    }
}

/// An address on an interface, with the kernel's message (needed to delete it).
#[derive(Clone, Debug)]
pub struct Address {
    pub ip: IpAddr,
    pub prefix: u8,
    pub index: u32,
    /// Configured by someone (not made by the kernel from router advertisements).
    pub permanent: bool,
    /// IPv6 duplicate address detection is still running.
    pub tentative: bool,
    /// IPv6 duplicate address detection found another host with this address.
    pub dad_failed: bool,
    message: AddressMessage,
}

impl Address {
    fn from_message(m: AddressMessage) -> Option<Address> {
        let ip = m
            .attributes
            .iter()
            .find_map(|a| match a {
                AddressAttribute::Local(ip) => Some(*ip),
                _ => None,
            })
            .or_else(|| {
                m.attributes.iter().find_map(|a| match a {
                    AddressAttribute::Address(ip) => Some(*ip),
                    _ => None,
                })
            })?;
        let flags = m
            .attributes
            .iter()
            .find_map(|a| match a {
                AddressAttribute::Flags(f) => Some(*f),
                _ => None,
            })
            .unwrap_or_else(|| AddressFlags::from_bits_retain(u32::from(m.header.flags.bits())));
        Some(Address {
            ip,
            prefix: m.header.prefix_len,
            index: m.header.index,
            permanent: flags.contains(AddressFlags::Permanent),
            tentative: flags.contains(AddressFlags::Tentative),
            dad_failed: flags.contains(AddressFlags::Dadfailed),
            message: m,
        })
    }
}

/// The route table the agent's routes live in (`main`).
pub const MAIN_TABLE: u32 = 254;

/// A unicast route in the main table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Route {
    pub destination: IpAddr,
    pub prefix: u8,
    pub gateway: Option<IpAddr>,
    pub oif: Option<u32>,
    /// Who installed it (`rtm_protocol`: 2 kernel, 3 boot, 4 static, ...).
    pub protocol: u8,
    pub priority: u32,
}

impl Route {
    fn from_message(m: &RouteMessage) -> Option<Route> {
        if m.header.kind != RouteType::Unicast {
            return None;
        }
        let mut table = u32::from(m.header.table);
        let mut destination = None;
        let mut gateway = None;
        let mut oif = None;
        let mut priority = 0;
        for a in &m.attributes {
            match a {
                RouteAttribute::Table(t) => table = *t,
                RouteAttribute::Destination(d) => destination = route_ip(d),
                RouteAttribute::Gateway(g) => gateway = route_ip(g),
                RouteAttribute::Oif(i) => oif = Some(*i),
                RouteAttribute::Priority(p) => priority = *p,
                _ => {}
            }
        }
        if table != MAIN_TABLE {
            return None;
        }
        let destination = destination.unwrap_or(match m.header.address_family {
            rtnetlink::packet_route::AddressFamily::Inet6 => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
            _ => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        });
        Some(Route {
            destination,
            prefix: m.header.destination_prefix_length,
            gateway,
            oif,
            protocol: u8::from(m.header.protocol),
            priority,
        })
    }
}

fn route_ip(a: &RouteAddress) -> Option<IpAddr> {
    match a {
        RouteAddress::Inet(v4) => Some(IpAddr::V4(*v4)),
        RouteAddress::Inet6(v6) => Some(IpAddr::V6(*v6)),
        _ => None,
    }
}

/// A route message for `destination/prefix` via `gateway` out of `oif` in the main table,
/// tagged with `protocol`.
fn route_message(
    destination: IpAddr,
    prefix: u8,
    gateway: IpAddr,
    oif: u32,
    protocol: u8,
) -> Option<RouteMessage> {
    let proto = RouteProtocol::from(protocol);
    let msg = match (destination, gateway) {
        (IpAddr::V4(d), IpAddr::V4(g)) => RouteMessageBuilder::<Ipv4Addr>::new()
            .destination_prefix(d, prefix)
            .gateway(g)
            .output_interface(oif)
            .protocol(proto)
            .build(),
        (IpAddr::V6(d), IpAddr::V6(g)) => RouteMessageBuilder::<Ipv6Addr>::new()
            .destination_prefix(d, prefix)
            .gateway(g)
            .output_interface(oif)
            .protocol(proto)
            .build(),
        _ => return None,
    };
    let mut msg = msg;
    msg.header.table = RouteHeader::RT_TABLE_MAIN;
    Some(msg)
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

/// Notice of any change to links, addresses or routes (`ip monitor`), without detail:
/// the reconciler reads the whole state again anyway.
pub struct NetEvents {
    rx: futures_channel_rx::Receiver,
}

impl NetEvents {
    pub fn subscribe() -> Result<NetEvents, NetlinkError> {
        use rtnetlink::MulticastGroup as G;
        let (connection, _handle, rx) = rtnetlink::new_multicast_connection(&[
            G::Link,
            G::Ipv4Ifaddr,
            G::Ipv6Ifaddr,
            G::Ipv4Route,
            G::Ipv6Route,
        ])
        .map_err(NetlinkError::Open)?;
        tokio::spawn(connection);
        Ok(NetEvents { rx: Box::new(rx) })
    }

    /// Waits for the next change; `None` if the subscription ended.
    pub async fn next(&mut self) -> Option<()> {
        use futures_util::StreamExt;
        self.rx.next().await.map(|_| ())
    }
}

#[derive(Clone)]
pub struct Netlink {
    handle: Handle,
    /// The kernel runs one dump at a time per socket (a second one is EBUSY): dumps from
    /// the clones of one connection take turns.
    dumping: std::sync::Arc<tokio::sync::Mutex<()>>,
}

impl Netlink {
    /// Opens a connection; its I/O runs as a task on the current runtime.
    pub fn open() -> Result<Netlink, NetlinkError> {
        let (connection, handle, _) = rtnetlink::new_connection().map_err(NetlinkError::Open)?;
        tokio::spawn(connection);
        Ok(Netlink {
            handle,
            dumping: Default::default(),
        })
    }

    pub async fn links(&self) -> Result<Vec<Link>, NetlinkError> {
        let req = |source| NetlinkError::Request {
            op: "link dump",
            source,
        };
        let _turn = self.dumping.lock().await;
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
        let _turn = self.dumping.lock().await;
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
            out.extend(Address::from_message(m));
        }
        Ok(out)
    }

    /// Every address on every interface.
    pub async fn all_addresses(&self) -> Result<Vec<Address>, NetlinkError> {
        let req = |source| NetlinkError::Request {
            op: "address dump",
            source,
        };
        let _turn = self.dumping.lock().await;
        let mut stream = self.handle.address().get().execute();
        let mut out = Vec::new();
        while let Some(m) = stream.try_next().await.map_err(req)? {
            out.extend(Address::from_message(m));
        }
        Ok(out)
    }

    /// The unicast routes of the main table, IPv4 and IPv6.
    pub async fn routes(&self) -> Result<Vec<Route>, NetlinkError> {
        let req = |source| NetlinkError::Request {
            op: "route dump",
            source,
        };
        let mut out = Vec::new();
        let _turn = self.dumping.lock().await;
        for query in [
            RouteMessageBuilder::<Ipv4Addr>::new().build(),
            RouteMessageBuilder::<Ipv6Addr>::new().build(),
        ] {
            let mut stream = self.handle.route().get(query).execute();
            while let Some(m) = stream.try_next().await.map_err(req)? {
                out.extend(Route::from_message(&m));
            }
        }
        Ok(out)
    }

    /// Adds (or replaces) a route in the main table.
    pub async fn add_route(
        &self,
        destination: IpAddr,
        prefix: u8,
        gateway: IpAddr,
        oif: u32,
        protocol: u8,
    ) -> Result<(), NetlinkError> {
        let Some(msg) = route_message(destination, prefix, gateway, oif, protocol) else {
            return Ok(());
        };
        self.handle
            .route()
            .add(msg)
            .replace()
            .execute()
            .await
            .map_err(|source| NetlinkError::Request {
                op: "route add",
                source,
            })
    }

    /// Removes a route from the main table; one that is already gone is not an error.
    pub async fn del_route(&self, route: &Route) -> Result<(), NetlinkError> {
        let gateway = route.gateway.unwrap_or(match route.destination {
            IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
        });
        let Some(mut msg) = route_message(
            route.destination,
            route.prefix,
            gateway,
            route.oif.unwrap_or(0),
            route.protocol,
        ) else {
            return Ok(());
        };
        if route.gateway.is_none() {
            msg.attributes
                .retain(|a| !matches!(a, RouteAttribute::Gateway(_)));
        }
        if route.oif.is_none() {
            msg.attributes
                .retain(|a| !matches!(a, RouteAttribute::Oif(_)));
        }
        if route.priority != 0 {
            msg.attributes
                .push(RouteAttribute::Priority(route.priority));
        }
        match self.handle.route().del(msg).execute().await {
            Ok(()) => Ok(()),
            Err(rtnetlink::Error::NetlinkError(e)) if e.raw_code() == -libc::ESRCH => Ok(()),
            Err(source) => Err(NetlinkError::Request {
                op: "route delete",
                source,
            }),
        }
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
        self.add_address_with(index, ip, prefix, false).await
    }

    /// [`Netlink::add_address`]; with `nodad`, an IPv6 address skips the kernel's
    /// duplicate address detection (`IFA_F_NODAD`) and answers at once.
    pub async fn add_address_with(
        &self,
        index: u32,
        ip: IpAddr,
        prefix: u8,
        nodad: bool,
    ) -> Result<(), NetlinkError> {
        let mut req = self.handle.address().add(index, ip, prefix).replace();
        if nodad {
            req.message_mut()
                .attributes
                .push(AddressAttribute::Flags(AddressFlags::Nodad));
        }
        req.execute().await.map_err(|source| NetlinkError::Request {
            op: "address add",
            source,
        })
    }
}

//! Connections to the HTTPS port: caps and timeouts, so no client can hold the API (or
//! the agent's file descriptors) hostage without logging in.
//!
//! - **Caps**, counted from `accept(2)`, before the TLS handshake: [`Limits::APPLIANCE`]
//!   connections in all and per client address (an IPv6 address counts by its /64, an
//!   IPv4-mapped one as IPv4). A connection over a cap is closed at once. Addresses in the
//!   peer set (the failover peer, fed through a `watch` by the failover code) have a
//!   small reserved pool outside the caps, so a flood never starves heartbeats.
//! - **Timeouts** ([`Timeouts::APPLIANCE`]): the TLS handshake, the request head (hyper's
//!   header-read timer, which also runs while a kept-alive connection waits for its next
//!   request: that is the idle limit), and *no progress*: a request body that delivers
//!   nothing, or a client that takes no response bytes, for that long. There is no cap
//!   on a connection's total time: a long transfer that keeps moving is never cut.
//!
//! [`EdgeAcceptor`] is the axum-server acceptor that applies both, under the TLS layer.

use axum::body::Body;
use axum::http::{Request, Response};
use bytes::Bytes;
use http_body::{Body as HttpBody, Frame, SizeHint};
use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::io;
use std::net::{IpAddr, Ipv6Addr};
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::watch;
use tokio::time::Sleep;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Connection caps.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Connections from all clients together (peers' reserved slots aside).
    pub global: usize,
    /// Connections from one address (one /64 for IPv6).
    pub per_address: usize,
    /// Slots kept for addresses in the peer set when the caps are full.
    pub peer_reserve: usize,
}

impl Limits {
    /// The appliance's figures: a browser opens about six connections and an office
    /// behind NAT is one address, hence 64 per address; 512 in all keeps the agent's
    /// descriptors (file limit [`crate::privilege::FILE_LIMIT`]) far from exhausted.
    pub const APPLIANCE: Limits = Limits {
        global: 512,
        per_address: 64,
        peer_reserve: 16,
    };
}

/// Connection timeouts (see the module documentation).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timeouts {
    pub handshake: Duration,
    pub header: Duration,
    pub no_progress: Duration,
}

impl Timeouts {
    pub const APPLIANCE: Timeouts = Timeouts {
        handshake: Duration::from_secs(10),
        header: Duration::from_secs(10),
        no_progress: Duration::from_secs(30),
    };
}

/// How a client address is counted: IPv4 by address, IPv6 by its /64.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct AddrKey(IpAddr);

impl AddrKey {
    pub fn of(ip: IpAddr) -> AddrKey {
        match ip {
            IpAddr::V4(v4) => AddrKey(IpAddr::V4(v4)),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => AddrKey(IpAddr::V4(v4)),
                None => {
                    let prefix = u128::from(v6) & !((1u128 << 64) - 1);
                    AddrKey(IpAddr::V6(Ipv6Addr::from(prefix)))
                }
            },
        }
    }
}

/// Which count a granted slot was taken from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SlotKind {
    Normal(AddrKey),
    Peer,
}

/// Why a connection was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refused {
    TooManyFromAddress,
    TooMany,
}

impl Refused {
    pub fn as_str(self) -> &'static str {
        match self {
            Refused::TooManyFromAddress => "too many connections from this address",
            Refused::TooMany => "too many connections",
        }
    }
}

/// The counts behind the caps: plain bookkeeping, no I/O.
#[derive(Debug)]
pub struct Slots {
    limits: Limits,
    total: usize,
    per_address: HashMap<AddrKey, usize>,
    peers: usize,
}

impl Slots {
    pub fn new(limits: Limits) -> Slots {
        Slots {
            limits,
            total: 0,
            per_address: HashMap::new(),
            peers: 0,
        }
    }

    /// Takes a slot for a connection from `ip`; `is_peer` opens the reserved pool when
    /// the caps are full.
    pub fn acquire(&mut self, ip: IpAddr, is_peer: bool) -> Result<SlotKind, Refused> {
        let key = AddrKey::of(ip);
        let mine = self.per_address.get(&key).copied().unwrap_or(0);
        let refused = if mine >= self.limits.per_address {
            Some(Refused::TooManyFromAddress)
        } else if self.total >= self.limits.global {
            Some(Refused::TooMany)
        } else {
            None
        };
        match refused {
            None => {
                self.total += 1;
                *self.per_address.entry(key).or_insert(0) += 1;
                Ok(SlotKind::Normal(key))
            }
            Some(_) if is_peer && self.peers < self.limits.peer_reserve => {
                self.peers += 1;
                Ok(SlotKind::Peer)
            }
            Some(why) => Err(why),
        }
    }

    pub fn release(&mut self, kind: SlotKind) {
        match kind {
            SlotKind::Peer => self.peers = self.peers.saturating_sub(1),
            SlotKind::Normal(key) => {
                self.total = self.total.saturating_sub(1);
                if let Some(n) = self.per_address.get_mut(&key) {
                    *n = n.saturating_sub(1);
                    if *n == 0 {
                        self.per_address.remove(&key);
                    }
                }
            }
        }
    }

    /// Connections counted: (under the caps, in the peer pool).
    pub fn counts(&self) -> (usize, usize) {
        (self.total, self.peers)
    }
}

/// The shared caps: clones count against the same slots.
#[derive(Clone)]
pub struct Gate {
    slots: Arc<Mutex<Slots>>,
    peers: watch::Receiver<HashSet<IpAddr>>,
}

/// A granted connection slot, given back when dropped.
pub struct Slot {
    slots: Arc<Mutex<Slots>>,
    kind: SlotKind,
}

impl Drop for Slot {
    fn drop(&mut self) {
        lock(&self.slots).release(self.kind);
    }
}

fn lock(m: &Mutex<Slots>) -> std::sync::MutexGuard<'_, Slots> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Gate {
    /// A gate with `limits`; the sender is the peer set (the failover code fills it).
    pub fn new(limits: Limits) -> (watch::Sender<HashSet<IpAddr>>, Gate) {
        let (tx, peers) = watch::channel(HashSet::new());
        let gate = Gate {
            slots: Arc::new(Mutex::new(Slots::new(limits))),
            peers,
        };
        (tx, gate)
    }

    pub fn admit(&self, ip: IpAddr) -> Result<Slot, Refused> {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        let is_peer = self.peers.borrow().contains(&ip);
        let kind = lock(&self.slots).acquire(ip, is_peer)?;
        Ok(Slot {
            slots: self.slots.clone(),
            kind,
        })
    }

    pub fn counts(&self) -> (usize, usize) {
        lock(&self.slots).counts()
    }
}

/// The acceptor under TLS: admits a connection through the [`Gate`] (closing it at once
/// when refused), then watches its progress.
#[derive(Clone)]
pub struct EdgeAcceptor {
    pub gate: Gate,
    pub no_progress: Duration,
}

impl<S> axum_server::accept::Accept<tokio::net::TcpStream, S> for EdgeAcceptor {
    type Stream = Watched<tokio::net::TcpStream>;
    type Service = Tracked<S>;
    type Future = std::future::Ready<io::Result<(Self::Stream, Self::Service)>>;

    fn accept(&self, stream: tokio::net::TcpStream, service: S) -> Self::Future {
        std::future::ready(self.admit(stream, service))
    }
}

impl EdgeAcceptor {
    fn admit<S>(
        &self,
        stream: tokio::net::TcpStream,
        service: S,
    ) -> io::Result<(Watched<tokio::net::TcpStream>, Tracked<S>)> {
        let peer = stream.peer_addr()?;
        let slot = match self.gate.admit(peer.ip()) {
            Ok(slot) => slot,
            Err(why) => {
                tracing::info!(target: "remote", client = %peer.ip(), "connection closed: {}", why.as_str());
                return Err(io::Error::other(why.as_str()));
            }
        };
        let busy = Arc::new(AtomicUsize::new(0));
        Ok((
            Watched {
                inner: stream,
                _slot: slot,
                busy: busy.clone(),
                no_progress: self.no_progress,
                read_timer: None,
                write_timer: None,
            },
            Tracked {
                inner: service,
                busy,
                no_progress: self.no_progress,
            },
        ))
    }
}

/// The keying material of a connection's TLS session (TLS 1.3 only), put into every
/// request's extensions so that `/peer/v1` can check a key proof bound to this very
/// session (`failover::proof`). `None` for an older protocol.
#[derive(Clone, Copy, Debug)]
pub struct TlsSession {
    pub exporter: Option<[u8; crate::failover::proof::EXPORTER_LEN]>,
}

/// The acceptor over TLS: after the handshake, takes the session's exporter and hands it
/// to each request of the connection as a [`TlsSession`] extension.
#[derive(Clone)]
pub struct SessionAcceptor<A> {
    pub inner: A,
}

impl<A, I, S> axum_server::accept::Accept<I, S> for SessionAcceptor<A>
where
    A: axum_server::accept::Accept<
        I,
        S,
        Stream = tokio_rustls::server::TlsStream<Watched<tokio::net::TcpStream>>,
    >,
    A::Future: Send + 'static,
{
    type Stream = A::Stream;
    type Service = WithSession<A::Service>;
    type Future = Pin<Box<dyn Future<Output = io::Result<(Self::Stream, Self::Service)>> + Send>>;

    fn accept(&self, stream: I, service: S) -> Self::Future {
        let accepted = self.inner.accept(stream, service);
        Box::pin(async move {
            let (stream, service) = accepted.await?;
            let exporter = crate::failover::proof::exporter(stream.get_ref().1).ok();
            Ok((
                stream,
                WithSession {
                    inner: service,
                    session: TlsSession { exporter },
                },
            ))
        })
    }
}

/// A connection's service with its [`TlsSession`].
#[derive(Clone)]
pub struct WithSession<S> {
    inner: S,
    session: TlsSession,
}

impl<S, B> tower_service::Service<Request<B>> for WithSession<S>
where
    S: tower_service::Service<Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<B>) -> Self::Future {
        req.extensions_mut().insert(self.session);
        self.inner.call(req)
    }
}

fn timed_out() -> io::Error {
    io::Error::new(io::ErrorKind::TimedOut, "no progress")
}

/// Polls a no-progress timer, starting it if needed: `true` when it has run out.
fn expired(timer: &mut Option<Pin<Box<Sleep>>>, after: Duration, cx: &mut Context<'_>) -> bool {
    timer
        .get_or_insert_with(|| Box::pin(tokio::time::sleep(after)))
        .as_mut()
        .poll(cx)
        .is_ready()
}

/// A connection's byte stream holding its slot; a read or write that waits longer than
/// the no-progress timeout fails. Reads wait freely while a request is being handled
/// (the client then waits for us; hyper reads only to notice a hang-up).
pub struct Watched<T> {
    inner: T,
    _slot: Slot,
    busy: Arc<AtomicUsize>,
    no_progress: Duration,
    read_timer: Option<Pin<Box<Sleep>>>,
    write_timer: Option<Pin<Box<Sleep>>>,
}

impl<T: AsyncRead + Unpin> AsyncRead for Watched<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Pending => {
                if this.busy.load(Ordering::Acquire) > 0 {
                    this.read_timer = None;
                    Poll::Pending
                } else if expired(&mut this.read_timer, this.no_progress, cx) {
                    Poll::Ready(Err(timed_out()))
                } else {
                    Poll::Pending
                }
            }
            ready => {
                this.read_timer = None;
                ready
            }
        }
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Watched<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        match Pin::new(&mut this.inner).poll_write(cx, data) {
            Poll::Pending => {
                if expired(&mut this.write_timer, this.no_progress, cx) {
                    Poll::Ready(Err(timed_out()))
                } else {
                    Poll::Pending
                }
            }
            ready => {
                this.write_timer = None;
                ready
            }
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

/// Marks a connection busy from the start of a request until its response body is
/// dropped (sent, or abandoned).
struct Busy(Arc<AtomicUsize>);

impl Busy {
    fn start(count: &Arc<AtomicUsize>) -> Busy {
        count.fetch_add(1, Ordering::AcqRel);
        Busy(count.clone())
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The connection's service: marks the connection busy during a request and puts the
/// no-progress timeout on the request body.
#[derive(Clone)]
pub struct Tracked<S> {
    inner: S,
    busy: Arc<AtomicUsize>,
    no_progress: Duration,
}

impl<S> tower_service::Service<Request<hyper::body::Incoming>> for Tracked<S>
where
    S: tower_service::Service<Request<Body>, Response = Response<Body>>,
    S::Future: Send + 'static,
{
    type Response = Response<Body>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Response<Body>, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<hyper::body::Incoming>) -> Self::Future {
        let busy = Busy::start(&self.busy);
        let no_progress = self.no_progress;
        let req = req.map(|b| {
            Body::new(Stalling {
                inner: b,
                after: no_progress,
                timer: None,
                _busy: None,
            })
        });
        let fut = self.inner.call(req);
        Box::pin(async move {
            let res = fut.await?;
            Ok(res.map(|b| {
                Body::new(Stalling {
                    inner: b,
                    after: None,
                    timer: None,
                    _busy: Some(busy),
                })
            }))
        })
    }
}

/// A body with an optional no-progress timeout (a request body: the client must keep
/// sending) and an optional [`Busy`] mark it holds until dropped (a response body).
struct Stalling<B, A> {
    inner: B,
    after: A,
    timer: Option<Pin<Box<Sleep>>>,
    _busy: Option<Busy>,
}

/// Whether a body has a no-progress timeout.
trait After {
    fn after(&self) -> Option<Duration>;
}

impl After for Duration {
    fn after(&self) -> Option<Duration> {
        Some(*self)
    }
}

impl After for Option<Duration> {
    fn after(&self) -> Option<Duration> {
        *self
    }
}

impl<B, A> HttpBody for Stalling<B, A>
where
    B: HttpBody<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
    A: After + Unpin,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Pending => match this.after.after() {
                Some(after) if expired(&mut this.timer, after, cx) => {
                    Poll::Ready(Some(Err(Box::new(timed_out()))))
                }
                _ => Poll::Pending,
            },
            Poll::Ready(frame) => {
                this.timer = None;
                Poll::Ready(frame.map(|f| f.map_err(Into::into)))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    const SMALL: Limits = Limits {
        global: 4,
        per_address: 2,
        peer_reserve: 1,
    };

    fn v4(last: u8) -> IpAddr {
        IpAddr::V4(Ipv4Addr::new(192, 0, 2, last))
    }

    #[test]
    fn an_address_over_its_cap_is_refused_and_others_still_get_in() {
        let mut s = Slots::new(SMALL);
        assert!(s.acquire(v4(1), false).is_ok());
        assert!(s.acquire(v4(1), false).is_ok());
        assert_eq!(s.acquire(v4(1), false), Err(Refused::TooManyFromAddress));
        assert!(s.acquire(v4(2), false).is_ok());
        assert!(s.acquire(v4(3), false).is_ok());
        assert_eq!(s.acquire(v4(4), false), Err(Refused::TooMany));
        assert_eq!(s.counts(), (4, 0));
    }

    #[test]
    fn a_released_slot_can_be_taken_again() {
        let mut s = Slots::new(SMALL);
        let a = s.acquire(v4(1), false).unwrap();
        s.acquire(v4(1), false).unwrap();
        s.release(a);
        assert!(s.acquire(v4(1), false).is_ok());
        assert_eq!(s.counts(), (2, 0));
    }

    #[test]
    fn ipv6_counts_by_its_64_and_mapped_ipv4_as_ipv4() {
        let a: IpAddr = "2001:db8:1:2::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:ffff::9".parse().unwrap();
        let c: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(AddrKey::of(a), AddrKey::of(b));
        assert_ne!(AddrKey::of(a), AddrKey::of(c));
        let mapped: IpAddr = "::ffff:192.0.2.1".parse().unwrap();
        assert_eq!(AddrKey::of(mapped), AddrKey::of(v4(1)));
        let mut s = Slots::new(SMALL);
        s.acquire(a, false).unwrap();
        s.acquire(b, false).unwrap();
        assert_eq!(s.acquire(c, false).map(|_| ()), Ok(()));
        let rotated: IpAddr = "2001:db8:1:2:abcd::1".parse().unwrap();
        assert_eq!(s.acquire(rotated, false), Err(Refused::TooManyFromAddress));
    }

    #[tokio::test]
    async fn a_peer_gets_a_reserved_slot_when_the_caps_are_full() {
        let (peers, gate) = Gate::new(SMALL);
        let peer = v4(9);
        let mut held = Vec::new();
        for last in [1, 1, 2, 2] {
            held.push(gate.admit(v4(last)).unwrap());
        }
        assert!(gate.admit(v4(3)).is_err(), "the global cap is full");
        assert!(gate.admit(peer).is_err(), "not a peer yet");
        peers.send_replace(HashSet::from([peer]));
        let slot = gate.admit(peer).expect("a peer slot");
        assert_eq!(gate.counts(), (4, 1));
        assert!(gate.admit(peer).is_err(), "the reserve is one slot");
        // The reserve is checked by the address as the socket reports it (v4-mapped).
        drop(slot);
        let mapped: IpAddr = "::ffff:192.0.2.9".parse().unwrap();
        assert!(gate.admit(mapped).is_ok());
        drop(held);
        assert_eq!(gate.counts(), (0, 0));
    }

    #[tokio::test(start_paused = true)]
    async fn a_stalled_read_fails_unless_a_request_is_being_handled() {
        use tokio::io::AsyncReadExt;
        let (_gate_tx, gate) = Gate::new(SMALL);
        let (client, server) = tokio::io::duplex(64);
        let busy = Arc::new(AtomicUsize::new(0));
        let mut w = Watched {
            inner: server,
            _slot: gate.admit(v4(1)).unwrap(),
            busy: busy.clone(),
            no_progress: Duration::from_secs(30),
            read_timer: None,
            write_timer: None,
        };
        let mut buf = [0u8; 8];
        // While a request is handled, waiting for the client is fine.
        let mark = Busy::start(&busy);
        let r = tokio::time::timeout(Duration::from_secs(120), w.read(&mut buf)).await;
        assert!(r.is_err(), "still waiting after 120 s while busy");
        drop(mark);
        let err = w.read(&mut buf).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        drop(client);
    }

    #[tokio::test(start_paused = true)]
    async fn a_moving_transfer_is_never_cut_and_a_stalled_body_is() {
        let (mut tx, rx) = tokio::io::duplex(16);
        // A body that delivers one chunk every 20 s for 10 minutes: slower than the
        // timeout's window in total, never silent for 30 s.
        let writer = tokio::spawn(async move {
            use tokio::io::AsyncWriteExt;
            for _ in 0..30 {
                tokio::time::sleep(Duration::from_secs(20)).await;
                tx.write_all(b"x").await.unwrap();
            }
            tokio::time::sleep(Duration::from_secs(60)).await;
            drop(tx);
        });
        let stream = trickle(rx);
        let mut body = Stalling {
            inner: stream,
            after: Duration::from_secs(30),
            timer: None,
            _busy: None,
        };
        let mut got = 0;
        let err = loop {
            match std::future::poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await {
                Some(Ok(_)) => got += 1,
                Some(Err(e)) => break e,
                None => panic!("the body ended"),
            }
        };
        assert_eq!(got, 30);
        assert!(err.to_string().contains("no progress"), "{err}");
        writer.abort();
    }

    type Frames = Pin<Box<dyn futures_util::Stream<Item = Result<Frame<Bytes>, io::Error>> + Send>>;

    /// A body reading bytes from `r` as they come.
    fn trickle(r: tokio::io::DuplexStream) -> http_body_util::StreamBody<Frames> {
        use tokio::io::AsyncReadExt;
        let s = futures_util::stream::unfold(r, |mut r| async move {
            let mut buf = [0u8; 16];
            match r.read(&mut buf).await {
                Ok(0) => None,
                Ok(n) => Some((Ok(Frame::data(Bytes::copy_from_slice(&buf[..n]))), r)),
                Err(e) => Some((Err(e), r)),
            }
        });
        http_body_util::StreamBody::new(Box::pin(s))
    }
}

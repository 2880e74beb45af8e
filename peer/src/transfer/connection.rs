//! One TCP connection that speaks the protocol. This is the only code that
//! reads or writes frames on a socket, and it owns their deadlines; the server
//! uses it for each accepted connection, the downloader for each source
//! (mini-redis's `Connection`, without the buffer: every frame here has a
//! fixed size or an announced length).
//!
//! It is blocking std I/O on a [`std::net::TcpStream`]: a deadline is a socket
//! timeout set before each read or write (see the [module docs](super) for
//! why the data path is not async).
//!
//! The deadlines ([`Deadlines`]):
//!
//! | step | side | limit |
//! | --- | --- | --- |
//! | [read a request](Connection::read_request) | server | first byte within `idle`, the whole 56-byte frame within `frame` of it |
//! | write an [answer](Connection::write_answer), a [piece](Connection::write_piece) of one, or a [request](Connection::send) | both | all of it within `io` |
//! | [read a response header](Connection::read_ok_header) | client | 16 bytes (and an error message) within `io` |
//! | [read a payload](Connection::read_payload) of an expected length | client | each read waits at most `io` for data |
//! | [read a block](Connection::read_payload_within) | client | each read waits at most `io` for data, and the whole block arrives within a limit of its own |
//!
//! A write deadline covers a whole piece (at most 1 MiB), so a reader that
//! takes a byte at a time cannot hold a server thread. On the client, a
//! deadline per read only catches silence: a source that sends one byte
//! every few seconds would hold a block forever. So a block also has a
//! deadline for the whole of it, which the downloader derives from a floor
//! on the rate ([`RemoteError::TooSlow`]).

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

use super::error::{RemoteError, Violation};
use super::pace::Pacer;
use super::wire::{
    MAX_MESSAGE_LEN, REQUEST_LEN, RESPONSE_HEADER_LEN, Request, RequestError, ResponseHeader,
    Status, encode_error,
};

/// How long each step of a connection may take (see the module docs).
#[derive(Debug, Clone, Copy)]
pub struct Deadlines {
    /// Server: how long to wait for the first byte of the next request.
    pub idle: Duration,
    /// Server: how long a request frame may take to arrive once it started.
    pub frame: Duration,
    /// Both: how long writing one piece, reading a response header, or
    /// waiting for the next bytes of a payload may take.
    pub io: Duration,
}

impl Deadlines {
    /// A downloader's deadlines: everything is bounded by the stall timeout.
    pub fn client(stall: Duration) -> Self {
        Deadlines {
            idle: stall,
            frame: stall,
            io: stall,
        }
    }
}

/// What [`Connection::read_request`] found.
#[derive(Debug)]
pub enum Incoming {
    /// A well-formed request.
    Request(Request),
    /// A complete frame that is not a valid request: answer `e.status()`,
    /// then go on if `e.keeps_framing()`, else close.
    Malformed(RequestError),
    /// The client closed the connection between requests.
    Closed,
    /// No request started within the idle deadline.
    Idle,
    /// A request started but did not complete within the frame deadline.
    TooSlow,
}

/// A protocol connection over a blocking TCP stream.
#[derive(Debug)]
pub struct Connection {
    stream: TcpStream,
    peer: SocketAddr,
    deadlines: Deadlines,
}

/// Closes a [`Connection`] from another thread (to stop a thread blocked in a
/// read, or a server shutting down).
#[derive(Debug)]
pub struct Closer(TcpStream);

impl Closer {
    /// Shuts down the read side, the write side, or both.
    pub fn shutdown(&self, how: Shutdown) {
        let _ = self.0.shutdown(how);
    }
}

fn is_timeout(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    )
}

/// Most bytes read at once under a download limit, so the pacing stays smooth.
const PACED_READ: usize = 64 * 1024;

/// A socket timeout must not be zero (that means "none").
fn nonzero(d: Duration) -> Duration {
    d.max(Duration::from_millis(1))
}

impl Connection {
    /// Wraps an accepted (or connected) blocking stream.
    pub fn new(stream: TcpStream, peer: SocketAddr, deadlines: Deadlines) -> io::Result<Self> {
        stream.set_nonblocking(false)?;
        stream.set_nodelay(true)?;
        Ok(Connection {
            stream,
            peer,
            deadlines,
        })
    }

    /// Connects to a source at `addr` (`ip:port`) within `timeout`.
    pub fn connect(
        addr: &str,
        timeout: Duration,
        deadlines: Deadlines,
    ) -> Result<Self, RemoteError> {
        let addrs = addr.to_socket_addrs().map_err(RemoteError::BadAddress)?;
        let mut last = None;
        for a in addrs {
            match TcpStream::connect_timeout(&a, timeout) {
                Ok(s) => return Connection::new(s, a, deadlines).map_err(RemoteError::from),
                Err(e) => last = Some(e),
            }
        }
        Err(last.map_or(RemoteError::NoAddress, RemoteError::Connect))
    }

    /// The address at the other end.
    pub fn peer(&self) -> SocketAddr {
        self.peer
    }

    /// A handle that can close this connection from another thread.
    pub fn closer(&self) -> io::Result<Closer> {
        self.stream.try_clone().map(Closer)
    }

    // --- server side ---------------------------------------------------------

    /// Reads the next request: the first byte within the idle deadline, the
    /// rest within the frame deadline. A frame cut short by the end of the
    /// stream is an error (`UnexpectedEof`).
    pub fn read_request(&mut self) -> io::Result<Incoming> {
        let mut frame = [0u8; REQUEST_LEN];
        self.stream
            .set_read_timeout(Some(nonzero(self.deadlines.idle)))?;
        let first = loop {
            match self.stream.read(&mut frame) {
                Ok(n) => break n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if is_timeout(&e) => return Ok(Incoming::Idle),
                Err(e) => return Err(e),
            }
        };
        if first == 0 {
            return Ok(Incoming::Closed);
        }
        let deadline = Instant::now() + self.deadlines.frame;
        match self.fill_by(&mut frame[first..], deadline) {
            Ok(n) if first + n == REQUEST_LEN => {}
            Ok(_) => {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "truncated request frame",
                ));
            }
            Err(e) if is_timeout(&e) => return Ok(Incoming::TooSlow),
            Err(e) => return Err(e),
        }
        Ok(match Request::decode(&frame) {
            Ok(r) => Incoming::Request(r),
            Err(e) => Incoming::Malformed(e),
        })
    }

    /// Writes an OK answer: header and payload.
    pub fn write_answer(&mut self, payload: &[u8]) -> io::Result<()> {
        let mut out = Vec::with_capacity(RESPONSE_HEADER_LEN + payload.len());
        out.extend_from_slice(&ResponseHeader::new(Status::Ok, payload.len() as u64).encode());
        out.extend_from_slice(payload);
        self.write_within(&out)
    }

    /// Writes the header of an OK answer of `length` bytes; the payload
    /// follows in [pieces](Connection::write_piece).
    pub fn write_ok_header(&mut self, length: u64) -> io::Result<()> {
        self.write_within(&ResponseHeader::new(Status::Ok, length).encode())
    }

    /// Writes one piece of a payload.
    pub fn write_piece(&mut self, piece: &[u8]) -> io::Result<()> {
        self.write_within(piece)
    }

    /// Writes an error answer: `status` and a message (cut to
    /// [`MAX_MESSAGE_LEN`]).
    pub fn write_error(&mut self, status: Status, message: &str) -> io::Result<()> {
        self.write_within(&encode_error(status, message))
    }

    /// Closes after an answer the client may still be reading: stop writing,
    /// drain a little of what it sent (briefly), so the close is not a reset
    /// that could destroy the answer in flight.
    pub fn linger_close(mut self) {
        let _ = self.stream.shutdown(Shutdown::Write);
        let _ = self
            .stream
            .set_read_timeout(Some(Duration::from_millis(500)));
        let mut sink = [0u8; 4096];
        let mut total = 0;
        while total < 64 * 1024 {
            match self.stream.read(&mut sink) {
                Ok(0) | Err(_) => break,
                Ok(n) => total += n,
            }
        }
    }

    // --- client side ---------------------------------------------------------

    /// Sends a request.
    pub fn send(&mut self, request: &Request) -> Result<(), RemoteError> {
        Ok(self.write_within(&request.encode())?)
    }

    /// Sends several requests in one write. The server answers them in
    /// order, one after the other (pipelining: the next answer is already on
    /// its way while this side reads the current one).
    pub fn send_all(&mut self, requests: &[Request]) -> Result<(), RemoteError> {
        let mut buf = Vec::with_capacity(requests.len() * REQUEST_LEN);
        for r in requests {
            buf.extend_from_slice(&r.encode());
        }
        Ok(self.write_within(&buf)?)
    }

    /// Reads a response header and returns the payload length of an OK
    /// answer. Any other status is [`RemoteError::Refused`], with the
    /// answer's message when it is short enough to read.
    pub fn read_ok_header(&mut self) -> Result<u64, RemoteError> {
        let deadline = Instant::now() + self.deadlines.io;
        let mut h = [0u8; RESPONSE_HEADER_LEN];
        if self.fill_by(&mut h, deadline)? < RESPONSE_HEADER_LEN {
            return Err(RemoteError::Closed);
        }
        let header = ResponseHeader::decode(&h).map_err(Violation::from)?;
        if header.status == Status::Ok {
            return Ok(header.length);
        }
        let mut message = String::new();
        if header.length <= MAX_MESSAGE_LEN {
            let mut buf = vec![0u8; header.length as usize];
            if matches!(self.fill_by(&mut buf, deadline), Ok(n) if n == buf.len()) {
                message = crate::ui::safe(&String::from_utf8_lossy(&buf));
            }
        }
        Err(RemoteError::Refused {
            status: header.status,
            message,
        })
    }

    /// Reads exactly `buf.len()` bytes of a payload; each read may wait at
    /// most the `io` deadline for data.
    pub fn read_payload(&mut self, buf: &mut [u8]) -> Result<(), RemoteError> {
        self.stream
            .set_read_timeout(Some(nonzero(self.deadlines.io)))?;
        let mut got = 0;
        while got < buf.len() {
            match self.stream.read(&mut buf[got..]) {
                Ok(0) => return Err(RemoteError::Closed),
                Ok(n) => got += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    tracing::debug!(peer = %self.peer, got, "payload read failed: {e}");
                    return Err(e.into());
                }
            }
        }
        Ok(())
    }

    /// Reads exactly `buf.len()` bytes of a payload (a block): each read
    /// waits at most the `io` deadline for data ([`RemoteError::Stalled`]),
    /// and the whole of it must arrive within `limit`
    /// ([`RemoteError::TooSlow`]), not counting the time `pacer` (a download
    /// limit) held this thread back.
    pub fn read_payload_within(
        &mut self,
        buf: &mut [u8],
        limit: Duration,
        pacer: Option<&Pacer>,
    ) -> Result<(), RemoteError> {
        let started = Instant::now();
        let mut deadline = started + limit;
        let io_wait = nonzero(self.deadlines.io);
        let mut timeout = io_wait;
        self.stream.set_read_timeout(Some(timeout))?;
        let mut got = 0;
        while got < buf.len() {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(RemoteError::TooSlow {
                    got: got as u64,
                    len: buf.len() as u64,
                    secs: started.elapsed().as_secs(),
                });
            }
            // Near the block's deadline, a read waits only until then.
            let wanted = nonzero(left.min(io_wait));
            if wanted != timeout {
                timeout = wanted;
                self.stream.set_read_timeout(Some(timeout))?;
            }
            let end = match pacer {
                Some(_) => buf.len().min(got + PACED_READ),
                None => buf.len(),
            };
            match self.stream.read(&mut buf[got..end]) {
                Ok(0) => return Err(RemoteError::Closed),
                Ok(n) => {
                    got += n;
                    if let Some(p) = pacer {
                        let wait = p.reserve(n as u64);
                        std::thread::sleep(wait);
                        deadline += wait;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                // The deadline passed: the loop reports TooSlow.
                Err(e) if is_timeout(&e) && timeout < io_wait => {}
                Err(e) => {
                    tracing::debug!(peer = %self.peer, got, "block read failed: {e}");
                    return Err(e.into());
                }
            }
        }
        Ok(())
    }

    // --- both ----------------------------------------------------------------

    /// Writes all of `buf` within the `io` deadline.
    fn write_within(&mut self, mut buf: &[u8]) -> io::Result<()> {
        let deadline = Instant::now() + self.deadlines.io;
        let stalled = || io::Error::new(io::ErrorKind::TimedOut, "peer is not reading");
        while !buf.is_empty() {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(stalled());
            }
            self.stream.set_write_timeout(Some(nonzero(left)))?;
            match self.stream.write(buf) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => buf = &buf[n..],
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if is_timeout(&e) => return Err(stalled()),
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Reads into `buf` until it is full, the stream ends, or `deadline`
    /// passes (an error of kind `TimedOut`). Returns the bytes read.
    fn fill_by(&mut self, buf: &mut [u8], deadline: Instant) -> io::Result<usize> {
        let mut got = 0;
        while got < buf.len() {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(io::ErrorKind::TimedOut.into());
            }
            self.stream.set_read_timeout(Some(nonzero(left)))?;
            match self.stream.read(&mut buf[got..]) {
                Ok(0) => break,
                Ok(n) => got += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if is_timeout(&e) => return Err(io::ErrorKind::TimedOut.into()),
                Err(e) => return Err(e),
            }
        }
        Ok(got)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use std::net::TcpListener;

    /// A connected pair on loopback: (server side, client side).
    fn pair(deadlines: Deadlines) -> (Connection, Connection) {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap().to_string();
        let client = Connection::connect(&addr, Duration::from_secs(5), deadlines).unwrap();
        let (s, peer) = l.accept().unwrap();
        (Connection::new(s, peer, deadlines).unwrap(), client)
    }

    fn quick() -> Deadlines {
        Deadlines {
            idle: Duration::from_millis(200),
            frame: Duration::from_millis(200),
            io: Duration::from_secs(5),
        }
    }

    #[test]
    fn request_and_answers_round_trip() {
        let (mut server, mut client) = pair(quick());
        let req = Request::read(sbcftp_api::ContentHash::from_bytes([7; 32]), 3, 4);
        client.send(&req).unwrap();
        assert!(matches!(server.read_request().unwrap(), Incoming::Request(r) if r == req));

        server.write_answer(b"abcd").unwrap();
        assert_eq!(client.read_ok_header().unwrap(), 4);
        let mut buf = [0u8; 4];
        client.read_payload(&mut buf).unwrap();
        assert_eq!(&buf, b"abcd");

        server
            .write_error(Status::NotFound, "no such hash")
            .unwrap();
        match client.read_ok_header() {
            Err(RemoteError::Refused { status, message }) => {
                assert_eq!(status, Status::NotFound);
                assert_eq!(message, "no such hash");
            }
            other => panic!("{other:?}"),
        }

        // A frame with our magic but an unknown kind is reported, not dropped.
        let mut bad = req.encode();
        bad[5] = 9;
        client.write_within(&bad).unwrap();
        assert!(matches!(
            server.read_request().unwrap(),
            Incoming::Malformed(RequestError::UnknownKind(9))
        ));
    }

    #[test]
    fn server_deadlines_and_ends() {
        // Nothing sent: idle.
        let (mut server, client) = pair(quick());
        assert!(matches!(server.read_request().unwrap(), Incoming::Idle));
        // Half a frame, then nothing: too slow.
        let (mut server, mut client2) = pair(quick());
        client2.write_within(&[b'S'; 30]).unwrap();
        assert!(matches!(server.read_request().unwrap(), Incoming::TooSlow));
        // Half a frame, then the end: truncated.
        let (mut server, mut client3) = pair(quick());
        client3.write_within(&[b'S'; 30]).unwrap();
        client3.stream.shutdown(Shutdown::Write).unwrap();
        let e = server.read_request().unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::UnexpectedEof);
        // A close between requests.
        drop(client);
        let (mut server, client4) = pair(quick());
        drop(client4);
        assert!(matches!(server.read_request().unwrap(), Incoming::Closed));
    }

    #[test]
    fn client_sees_closes_and_bad_headers() {
        let (mut server, mut client) = pair(quick());
        server.write_ok_header(10).unwrap();
        server.write_piece(b"12345").unwrap();
        drop(server);
        assert_eq!(client.read_ok_header().unwrap(), 10);
        let mut buf = [0u8; 10];
        assert!(matches!(
            client.read_payload(&mut buf),
            Err(RemoteError::Closed)
        ));

        let (mut server, mut client) = pair(quick());
        server
            .write_within(b"HTTP/1.1 400 Bad Request\r\n")
            .unwrap();
        assert!(matches!(
            client.read_ok_header(),
            Err(RemoteError::Protocol(Violation::BadHeader(_)))
        ));
    }

    #[test]
    fn a_silent_source_is_a_stall() {
        let (server, mut client) = pair(Deadlines::client(Duration::from_millis(200)));
        assert!(matches!(client.read_ok_header(), Err(RemoteError::Stalled)));
        let mut buf = [0u8; 1];
        assert!(matches!(
            client.read_payload(&mut buf),
            Err(RemoteError::Stalled)
        ));
        drop(server);
    }

    #[test]
    fn a_trickling_source_is_too_slow_for_the_block() {
        let (mut server, mut client) = pair(Deadlines::client(Duration::from_secs(30)));
        // One byte every 20 ms never stalls a read, but 1000 bytes need 20 s.
        let trickle = std::thread::spawn(move || {
            for _ in 0..1000 {
                if server.write_piece(b"x").is_err() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        });
        let mut buf = [0u8; 1000];
        match client.read_payload_within(&mut buf, Duration::from_millis(300), None) {
            Err(e @ RemoteError::TooSlow { got, len: 1000, .. }) => {
                assert!(got < 1000, "{got}");
                assert!(e.to_string().starts_with("too slow: "), "{e}");
            }
            other => panic!("{other:?}"),
        }
        client.stream.shutdown(Shutdown::Both).unwrap();
        trickle.join().unwrap();

        // The same limit is plenty for a block that comes at once, paced or not.
        let (mut server, mut client) = pair(quick());
        server.write_piece(&[7u8; 1000]).unwrap();
        let pacer = Pacer::new(Some(1 << 30));
        client
            .read_payload_within(&mut buf, Duration::from_secs(5), pacer.as_ref())
            .unwrap();
        assert_eq!(buf, [7u8; 1000]);
        // And pipelined requests arrive in order.
        let reqs = [
            Request::outline(sbcftp_api::ContentHash::from_bytes([1; 32])),
            Request::read(sbcftp_api::ContentHash::from_bytes([2; 32]), 0, 9),
        ];
        client.send_all(&reqs).unwrap();
        for r in reqs {
            assert!(matches!(server.read_request().unwrap(), Incoming::Request(got) if got == r));
        }
    }

    #[test]
    fn nothing_listening_is_a_connect_error() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap().to_string();
        drop(l);
        let e = Connection::connect(&addr, Duration::from_secs(5), quick()).unwrap_err();
        assert!(matches!(e, RemoteError::Connect(_)), "{e:?}");
        assert!(e.to_string().starts_with("cannot connect: "), "{e}");
        let e = Connection::connect("not an address", Duration::from_secs(5), quick()).unwrap_err();
        assert!(matches!(e, RemoteError::BadAddress(_)), "{e:?}");
    }
}

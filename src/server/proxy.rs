//! HAProxy's PROXY protocol: a proxy in front of ferry (HAProxy in TCP
//! mode with `send-proxy-v2`, or `send-proxy` for v1) starts each
//! connection with a header naming the client it relays, so logs, the
//! lines of message mode and per-address limits see the client, not the
//! proxy. Specification: HAProxy's `doc/proxy-protocol.txt`.
//!
//! Only peers in the trusted networks ([`TrustedNet`]) are read this way,
//! and from them the header is mandatory (the specification forbids
//! guessing whether one is present: anyone could then claim any address).
//! Every other peer is a direct client; a header of theirs is not
//! honoured, its bytes go to protocol sniffing like any others.
//!
//! [`parse`] and [`wanted`] are a pure codec, no IO, like
//! [`crate::protocol`]. [`read_header`] drives them over a socket reading
//! never a byte past the header: what follows it stays in the socket for
//! the TLS check and the sniffing, and the stream stays a plain
//! `TcpStream`, so file bodies keep going out by `sendfile(2)` (a
//! prefix-replaying wrapper would have cost that).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::str::FromStr;

use tokio::io::{AsyncRead, AsyncReadExt};

/// The 12 bytes that open a v2 header.
pub const SIGNATURE_V2: &[u8; 12] = b"\r\n\r\n\0\r\nQUIT\n";

/// What opens a v1 (text) header.
const PREFIX_V1: &[u8] = b"PROXY ";

/// The fixed part of a v2 header: signature, version/command,
/// family/transport, length.
const FIXED_V2: usize = 16;

/// Longest address block (the v2 length field) accepted. The
/// specification allows 65535, but addresses take at most 216 bytes (a
/// pair of Unix paths) and HAProxy's optional TLVs (ALPN, authority, TLS
/// details, a unique id) fit in far less; a bigger claim is refused
/// before anything is allocated for it.
pub const MAX_ADDRESS_BLOCK: usize = 4096;

/// Longest v1 line, CRLF included (the specification's bound).
const MAX_V1: usize = 107;

/// The shortest header of either version (`PROXY UNKNOWN\r\n`): this many
/// bytes can always be read without reading past one.
const MIN_HEADER: usize = 15;

/// What a PROXY header says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProxyHeader {
    /// v2 `LOCAL`: the proxy speaking for itself (HAProxy's health
    /// checks). The connection's own address stands.
    Local,
    /// Relayed, but for a client without an IP address to report (v2
    /// `AF_UNSPEC`, `AF_UNIX`, a datagram or unspecified transport; v1
    /// `UNKNOWN`). The connection's own address stands.
    Unknown,
    /// Relayed TCP: the client's address and the one it connected to.
    Proxied {
        /// The client.
        source: SocketAddr,
        /// The address the client connected to (on the proxy).
        destination: SocketAddr,
    },
}

impl ProxyHeader {
    /// The client's address, if the header names one.
    pub fn client(&self) -> Option<SocketAddr> {
        match self {
            ProxyHeader::Proxied { source, .. } => Some(*source),
            ProxyHeader::Local | ProxyHeader::Unknown => None,
        }
    }
}

/// Why bytes are not a PROXY header.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProxyError {
    /// Neither v2's signature nor v1's `PROXY `.
    #[error("no PROXY protocol header (the connection starts with other bytes)")]
    Signature,
    /// v2's signature with a version other than 2.
    #[error("PROXY protocol version {0} is not supported (only 2, or v1 text)")]
    Version(u8),
    /// v2 command other than LOCAL (0) or PROXY (1).
    #[error("unknown PROXY v2 command {0}")]
    Command(u8),
    /// v2 address family or transport outside the specification's values.
    #[error("invalid PROXY v2 address family/transport byte {0:#04x}")]
    Family(u8),
    /// v2 length field above [`MAX_ADDRESS_BLOCK`].
    #[error("PROXY v2 address block of {0} bytes is over the limit of {MAX_ADDRESS_BLOCK}")]
    TooLong(usize),
    /// v2 length field too small for the family's addresses.
    #[error("PROXY v2 address block of {len} bytes is too short for its family (needs {needed})")]
    TooShort {
        /// The length field.
        len: usize,
        /// What the family needs.
        needed: usize,
    },
    /// v1 line without CRLF within its bound.
    #[error("PROXY v1 line longer than {MAX_V1} bytes")]
    LineTooLong,
    /// v1 line that does not follow the grammar.
    #[error("malformed PROXY v1 line")]
    Malformed,
}

/// Parses a PROXY header (v2, or v1 text) at the start of `buf`.
///
/// `Ok(None)`: `buf` is a valid start but incomplete ([`wanted`] says how
/// many more bytes to read). `Ok(Some((header, n)))`: the header took the
/// first `n` bytes; the rest belongs to the protocol that follows.
///
/// # Errors
///
/// [`ProxyError`] as soon as the bytes cannot begin a valid header.
pub fn parse(buf: &[u8]) -> Result<Option<(ProxyHeader, usize)>, ProxyError> {
    match buf.first() {
        None => Ok(None),
        Some(b'\r') => parse_v2(buf),
        Some(b'P') => parse_v1(buf),
        Some(_) => Err(ProxyError::Signature),
    }
}

/// How many more bytes may be read after `buf` (for which [`parse`]
/// returned `Ok(None)`) without reading past the header: at least 1.
///
/// v2 announces its length, so it is read in two steps; a v1 line has no
/// length, so past the shortest possible header it is read a byte at a
/// time (at most 92 reads, for the optional text version only).
pub fn wanted(buf: &[u8]) -> usize {
    let want = match buf.first() {
        Some(b'\r') if buf.len() >= FIXED_V2 => {
            FIXED_V2 + usize::from(u16::from_be_bytes([buf[14], buf[15]]))
        }
        Some(b'\r') => FIXED_V2,
        _ if buf.len() < MIN_HEADER => MIN_HEADER,
        _ => buf.len() + 1,
    };
    want.saturating_sub(buf.len()).max(1)
}

fn parse_v2(buf: &[u8]) -> Result<Option<(ProxyHeader, usize)>, ProxyError> {
    let sig = buf.len().min(SIGNATURE_V2.len());
    if buf[..sig] != SIGNATURE_V2[..sig] {
        return Err(ProxyError::Signature);
    }
    if buf.len() < FIXED_V2 {
        // Check what has arrived of the fixed part before waiting for more.
        if let Some(&vc) = buf.get(12) {
            check_version_command(vc)?;
        }
        return Ok(None);
    }
    let command = check_version_command(buf[12])?;
    let family = buf[13];
    let len = usize::from(u16::from_be_bytes([buf[14], buf[15]]));
    if len > MAX_ADDRESS_BLOCK {
        return Err(ProxyError::TooLong(len));
    }
    if command == 0 {
        // LOCAL: "discard the protocol block including the family which
        // is ignored", whatever it holds.
        return complete(buf, len, ProxyHeader::Local);
    }
    let (fam, transport) = (family >> 4, family & 0x0f);
    if fam > 3 || transport > 2 {
        return Err(ProxyError::Family(family));
    }
    let needed = match family {
        0x11 => 12,
        0x21 => 36,
        // UNSPEC, Unix sockets, datagrams: valid, but no TCP client to
        // report; the specification lets the receiver fall back to the
        // connection's own address.
        _ => 0,
    };
    if len < needed {
        return Err(ProxyError::TooShort { len, needed });
    }
    if buf.len() < FIXED_V2 + len {
        return Ok(None);
    }
    let a = &buf[FIXED_V2..];
    let port = |i: usize| u16::from_be_bytes([a[i], a[i + 1]]);
    let header = match family {
        0x11 => {
            let ip = |i: usize| IpAddr::V4(Ipv4Addr::new(a[i], a[i + 1], a[i + 2], a[i + 3]));
            ProxyHeader::Proxied {
                source: SocketAddr::new(ip(0), port(8)),
                destination: SocketAddr::new(ip(4), port(10)),
            }
        }
        0x21 => {
            let ip = |i: usize| {
                let mut o = [0u8; 16];
                o.copy_from_slice(&a[i..i + 16]);
                IpAddr::V6(Ipv6Addr::from(o))
            };
            ProxyHeader::Proxied {
                source: SocketAddr::new(ip(0), port(32)),
                destination: SocketAddr::new(ip(16), port(34)),
            }
        }
        _ => ProxyHeader::Unknown,
    };
    // TLVs after the addresses are skipped: ferry uses none of them.
    complete(buf, len, header)
}

/// The command nibble (0 LOCAL, 1 PROXY) of a valid version/command byte.
fn check_version_command(vc: u8) -> Result<u8, ProxyError> {
    if vc >> 4 != 2 {
        return Err(ProxyError::Version(vc >> 4));
    }
    match vc & 0x0f {
        c @ (0 | 1) => Ok(c),
        c => Err(ProxyError::Command(c)),
    }
}

fn complete(
    buf: &[u8],
    len: usize,
    header: ProxyHeader,
) -> Result<Option<(ProxyHeader, usize)>, ProxyError> {
    Ok((buf.len() >= FIXED_V2 + len).then_some((header, FIXED_V2 + len)))
}

fn parse_v1(buf: &[u8]) -> Result<Option<(ProxyHeader, usize)>, ProxyError> {
    let pre = buf.len().min(PREFIX_V1.len());
    if buf[..pre] != PREFIX_V1[..pre] {
        return Err(ProxyError::Signature);
    }
    let Some(end) = buf.windows(2).position(|w| w == b"\r\n") else {
        return if buf.len() >= MAX_V1 {
            Err(ProxyError::LineTooLong)
        } else {
            Ok(None)
        };
    };
    let n = end + 2;
    if n > MAX_V1 {
        return Err(ProxyError::LineTooLong);
    }
    let line =
        std::str::from_utf8(&buf[PREFIX_V1.len()..end]).map_err(|_| ProxyError::Malformed)?;
    if line == "UNKNOWN" || line.starts_with("UNKNOWN ") {
        // "the receiver must ignore anything presented before the CRLF".
        return Ok(Some((ProxyHeader::Unknown, n)));
    }
    let fields: Vec<&str> = line.split(' ').collect();
    let [proto, src, dst, sport, dport] = fields[..] else {
        return Err(ProxyError::Malformed);
    };
    let (src, dst): (IpAddr, IpAddr) = match proto {
        "TCP4" => (
            src.parse::<Ipv4Addr>()
                .map_err(|_| ProxyError::Malformed)?
                .into(),
            dst.parse::<Ipv4Addr>()
                .map_err(|_| ProxyError::Malformed)?
                .into(),
        ),
        "TCP6" => (
            src.parse::<Ipv6Addr>()
                .map_err(|_| ProxyError::Malformed)?
                .into(),
            dst.parse::<Ipv6Addr>()
                .map_err(|_| ProxyError::Malformed)?
                .into(),
        ),
        _ => return Err(ProxyError::Malformed),
    };
    let header = ProxyHeader::Proxied {
        source: SocketAddr::new(src, v1_port(sport)?),
        destination: SocketAddr::new(dst, v1_port(dport)?),
    };
    Ok(Some((header, n)))
}

/// A v1 port: decimal digits, no sign, no heading zero.
fn v1_port(s: &str) -> Result<u16, ProxyError> {
    let digits = !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if !digits || (s.len() > 1 && s.starts_with('0')) {
        return Err(ProxyError::Malformed);
    }
    s.parse().map_err(|_| ProxyError::Malformed)
}

/// Why no header could be read from a trusted proxy.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// Closed before a whole header arrived.
    #[error("closed after {0} bytes, before a whole PROXY header")]
    Closed(usize),
    /// The socket failed.
    #[error("read failed: {0}")]
    Io(#[from] std::io::Error),
    /// What arrived is not a header.
    #[error(transparent)]
    Invalid(#[from] ProxyError),
}

/// Reads one PROXY header from `stream`, never a byte past it. The caller
/// bounds the time (the idle timeout).
///
/// # Errors
///
/// [`ReadError`]: closed early, a socket error, or not a valid header.
pub async fn read_header<S: AsyncRead + Unpin>(stream: &mut S) -> Result<ProxyHeader, ReadError> {
    let mut buf = Vec::with_capacity(FIXED_V2);
    loop {
        if let Some((header, _)) = parse(&buf)? {
            return Ok(header);
        }
        let start = buf.len();
        buf.resize(start + wanted(&buf), 0);
        let n = stream.read(&mut buf[start..]).await?;
        buf.truncate(start + n);
        if n == 0 {
            return Err(ReadError::Closed(start));
        }
    }
}

/// A peer address or network trusted to send PROXY headers
/// (`--trusted-proxy ADDR[/PREFIX]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TrustedNet {
    addr: IpAddr,
    prefix: u8,
}

impl TrustedNet {
    /// Loopback, both families: the default when only `--proxy-protocol`
    /// is given (a proxy on the same machine).
    pub fn loopback() -> Vec<TrustedNet> {
        vec![
            TrustedNet {
                addr: Ipv4Addr::LOCALHOST.into(),
                prefix: 32,
            },
            TrustedNet {
                addr: Ipv6Addr::LOCALHOST.into(),
                prefix: 128,
            },
        ]
    }

    /// Whether `ip` (IPv4 as IPv4, not mapped) lies in this network.
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, ip.to_canonical()) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                mask(u128::from(u32::from(ip)), 32, self.prefix)
                    == mask(u128::from(u32::from(net)), 32, self.prefix)
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                mask(u128::from(ip), 128, self.prefix) == mask(u128::from(net), 128, self.prefix)
            }
            _ => false,
        }
    }
}

/// The top `prefix` of `bits` bits of `x`.
fn mask(x: u128, bits: u32, prefix: u8) -> u128 {
    let host = bits - u32::from(prefix);
    if host >= bits {
        0
    } else {
        x >> host
    }
}

/// Whether a peer at `ip` is one of the `trusted`.
pub fn is_trusted(trusted: &[TrustedNet], ip: IpAddr) -> bool {
    trusted.iter().any(|n| n.contains(ip))
}

impl std::fmt::Display for TrustedNet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

/// Why a `--trusted-proxy` value is not an address or network.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TrustedNetError {
    /// Not an IP address.
    #[error("not an IP address: {0} (expected ADDR or ADDR/PREFIX, e.g. 10.0.0.0/8 or ::1)")]
    Addr(String),
    /// A prefix that is not a number or too long for the family.
    #[error("bad prefix /{0}: at most 32 for IPv4, 128 for IPv6")]
    Prefix(String),
}

impl FromStr for TrustedNet {
    type Err = TrustedNetError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (addr, prefix) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let addr: IpAddr = addr
            .trim_matches(['[', ']'])
            .parse()
            .map_err(|_| TrustedNetError::Addr(addr.to_string()))?;
        let max: u8 = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) => match p.parse::<u8>() {
                Ok(n) if n <= max && !p.starts_with('+') => n,
                _ => return Err(TrustedNetError::Prefix(p.to_string())),
            },
        };
        // Peers are compared as plain IPv4; so is an IPv4-mapped network.
        Ok(match addr {
            IpAddr::V6(v6) if prefix >= 96 && v6.to_ipv4_mapped().is_some() => TrustedNet {
                addr: addr.to_canonical(),
                prefix: prefix - 96,
            },
            _ => TrustedNet { addr, prefix },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::collection::vec;
    use proptest::prelude::*;

    /// A v2 header: version/command byte, family byte, address block.
    fn v2(vc: u8, fam: u8, block: &[u8]) -> Vec<u8> {
        let mut out = SIGNATURE_V2.to_vec();
        out.push(vc);
        out.push(fam);
        out.extend_from_slice(&u16::try_from(block.len()).unwrap().to_be_bytes());
        out.extend_from_slice(block);
        out
    }

    /// 203.0.113.7:4242 -> 192.0.2.1:80, as HAProxy sends it.
    fn tcp4_block() -> Vec<u8> {
        let mut b = vec![203, 0, 113, 7, 192, 0, 2, 1];
        b.extend_from_slice(&4242u16.to_be_bytes());
        b.extend_from_slice(&80u16.to_be_bytes());
        b
    }

    fn tcp4() -> ProxyHeader {
        ProxyHeader::Proxied {
            source: "203.0.113.7:4242".parse().unwrap(),
            destination: "192.0.2.1:80".parse().unwrap(),
        }
    }

    #[test]
    fn v2_tcp4_with_following_bytes() {
        let mut bytes = v2(0x21, 0x11, &tcp4_block());
        let n = bytes.len();
        assert_eq!(n, 28);
        bytes.extend_from_slice(b"GET / HTTP/1.1\r\n");
        assert_eq!(parse(&bytes), Ok(Some((tcp4(), n))));
        assert_eq!(tcp4().client(), Some("203.0.113.7:4242".parse().unwrap()));
    }

    #[test]
    fn v2_tcp6_and_tlvs_skipped() {
        let src: Ipv6Addr = "2001:db8::7".parse().unwrap();
        let dst: Ipv6Addr = "2001:db8::1".parse().unwrap();
        let mut block = src.octets().to_vec();
        block.extend_from_slice(&dst.octets());
        block.extend_from_slice(&4242u16.to_be_bytes());
        block.extend_from_slice(&443u16.to_be_bytes());
        // A PP2_TYPE_ALPN TLV and a NOOP one.
        block.extend_from_slice(&[0x01, 0x00, 0x02, b'h', b'2', 0x04, 0x00, 0x00]);
        let bytes = v2(0x21, 0x21, &block);
        let want = ProxyHeader::Proxied {
            source: SocketAddr::new(src.into(), 4242),
            destination: SocketAddr::new(dst.into(), 443),
        };
        assert_eq!(parse(&bytes), Ok(Some((want, bytes.len()))));
    }

    #[test]
    fn v2_local_keeps_the_connection_address_whatever_its_block() {
        assert_eq!(
            parse(&v2(0x20, 0x00, &[])),
            Ok(Some((ProxyHeader::Local, 16)))
        );
        // "Receivers MUST always consider this field to skip the
        // appropriate number of bytes", and the family is ignored.
        let b = v2(0x20, 0x11, &tcp4_block());
        assert_eq!(parse(&b), Ok(Some((ProxyHeader::Local, 28))));
        let b = v2(0x20, 0xff, &[1, 2, 3]);
        assert_eq!(parse(&b), Ok(Some((ProxyHeader::Local, 19))));
    }

    #[test]
    fn v2_families_without_a_tcp_client_fall_back_to_unspec() {
        for fam in [0x00, 0x01, 0x10, 0x12, 0x22, 0x31, 0x32] {
            let block = vec![0u8; 216];
            assert_eq!(
                parse(&v2(0x21, fam, &block)),
                Ok(Some((ProxyHeader::Unknown, 232))),
                "{fam:#x}"
            );
        }
        assert_eq!(
            parse(&v2(0x21, 0x00, &[])),
            Ok(Some((ProxyHeader::Unknown, 16)))
        );
    }

    #[test]
    fn v2_invalid_fields_are_errors() {
        // Values the specification says must be rejected.
        assert_eq!(
            parse(&v2(0x11, 0x11, &tcp4_block())),
            Err(ProxyError::Version(1))
        );
        assert_eq!(
            parse(&v2(0x31, 0x11, &tcp4_block())),
            Err(ProxyError::Version(3))
        );
        assert_eq!(
            parse(&v2(0x22, 0x11, &tcp4_block())),
            Err(ProxyError::Command(2))
        );
        assert_eq!(
            parse(&v2(0x21, 0x41, &tcp4_block())),
            Err(ProxyError::Family(0x41))
        );
        assert_eq!(
            parse(&v2(0x21, 0x13, &tcp4_block())),
            Err(ProxyError::Family(0x13))
        );
        assert_eq!(
            parse(&v2(0x21, 0x11, &[0; 11])),
            Err(ProxyError::TooShort {
                len: 11,
                needed: 12
            })
        );
        assert_eq!(
            parse(&v2(0x21, 0x21, &tcp4_block())),
            Err(ProxyError::TooShort {
                len: 12,
                needed: 36
            })
        );
        // The version is checked as soon as its byte arrives.
        let b = v2(0x11, 0x11, &tcp4_block());
        assert_eq!(parse(&b[..13]), Err(ProxyError::Version(1)));
    }

    #[test]
    fn v2_huge_length_is_refused_before_it_arrives() {
        let mut b = SIGNATURE_V2.to_vec();
        b.extend_from_slice(&[0x21, 0x11, 0xff, 0xff]);
        assert_eq!(parse(&b), Err(ProxyError::TooLong(65535)));
        b[14..16].copy_from_slice(&4097u16.to_be_bytes());
        assert_eq!(parse(&b), Err(ProxyError::TooLong(4097)));
        // Even a LOCAL one.
        b[12] = 0x20;
        assert_eq!(parse(&b), Err(ProxyError::TooLong(4097)));
        let b = v2(0x21, 0x00, &[0; MAX_ADDRESS_BLOCK]);
        assert_eq!(
            parse(&b),
            Ok(Some((ProxyHeader::Unknown, 16 + MAX_ADDRESS_BLOCK)))
        );
    }

    #[test]
    fn other_first_bytes_are_not_a_header() {
        for b in [
            &b"GET / HTTP/1.1\r\n"[..],
            b"\x89FERRY\r\n",
            b"\x16\x03\x01",
            b"notes.txt",
            b"\r\n\r\n\0\r\nQUIZ\n",
            b"PROXX TCP4",
            b"PRI * HTTP/2.0\r\n",
            b"\n",
        ] {
            assert_eq!(parse(b), Err(ProxyError::Signature), "{b:?}");
        }
    }

    #[test]
    fn v1_lines() {
        let line = b"PROXY TCP4 203.0.113.7 192.0.2.1 4242 80\r\nGET";
        assert_eq!(parse(line), Ok(Some((tcp4(), line.len() - 3))));
        let line = b"PROXY TCP6 2001:db8::7 2001:db8::1 4242 443\r\n";
        assert_eq!(
            parse(line).unwrap().unwrap().0.client(),
            Some("[2001:db8::7]:4242".parse().unwrap())
        );
        assert_eq!(
            parse(b"PROXY UNKNOWN\r\n"),
            Ok(Some((ProxyHeader::Unknown, 15)))
        );
        let line = b"PROXY UNKNOWN ffff:f...f:ffff whatever\r\n";
        assert_eq!(parse(line), Ok(Some((ProxyHeader::Unknown, line.len()))));
        for bad in [
            &b"PROXY TCP4 203.0.113.7 192.0.2.1 4242\r\n"[..],
            b"PROXY TCP4 203.0.113.7 192.0.2.1 04242 80\r\n",
            b"PROXY TCP4 203.0.113.7 192.0.2.1 +4242 80\r\n",
            b"PROXY TCP4 203.0.113.7 192.0.2.1 65536 80\r\n",
            b"PROXY TCP4 2001:db8::7 192.0.2.1 4242 80\r\n",
            b"PROXY TCP6 203.0.113.7 192.0.2.1 4242 80\r\n",
            b"PROXY TCP4  203.0.113.7 192.0.2.1 4242 80\r\n",
            b"PROXY UDP4 203.0.113.7 192.0.2.1 4242 80\r\n",
            b"PROXY TCP4 203.0.113.7 192.0.2.1 4242 80 \r\n",
        ] {
            assert_eq!(
                parse(bad),
                Err(ProxyError::Malformed),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
        let long = [&b"PROXY UNKNOWN "[..], &[b'x'; 200]].concat();
        assert_eq!(parse(&long), Err(ProxyError::LineTooLong));
        assert_eq!(parse(&long[..50]), Ok(None));
    }

    #[test]
    fn wanted_never_reaches_past_the_header() {
        let h = v2(0x21, 0x11, &tcp4_block());
        assert_eq!(wanted(&[]), 15);
        assert_eq!(wanted(&h[..5]), 11);
        assert_eq!(wanted(&h[..16]), 12);
        assert_eq!(wanted(&h[..20]), 8);
        assert_eq!(wanted(b"PROXY "), 9);
        assert_eq!(wanted(b"PROXY UNKNOWN\r"), 1);
        assert_eq!(wanted(b"PROXY TCP4 1.2.3"), 1);
    }

    #[tokio::test]
    async fn read_header_leaves_the_next_bytes_in_the_stream() {
        for header in [
            v2(0x21, 0x11, &tcp4_block()),
            b"PROXY TCP4 203.0.113.7 192.0.2.1 4242 80\r\n".to_vec(),
        ] {
            let (mut client, mut server) = tokio::io::duplex(4096);
            let mut all = header.clone();
            all.extend_from_slice(b"GET / HTTP/1.1\r\n\r\n");
            tokio::io::AsyncWriteExt::write_all(&mut client, &all)
                .await
                .unwrap();
            drop(client);
            assert_eq!(read_header(&mut server).await.unwrap(), tcp4());
            let mut rest = Vec::new();
            server.read_to_end(&mut rest).await.unwrap();
            assert_eq!(rest, b"GET / HTTP/1.1\r\n\r\n");
        }
        let (client, mut server) = tokio::io::duplex(64);
        drop(client);
        assert!(matches!(
            read_header(&mut server).await,
            Err(ReadError::Closed(0))
        ));
    }

    #[test]
    fn trusted_networks() {
        let net: TrustedNet = "10.0.0.0/8".parse().unwrap();
        assert!(net.contains("10.255.0.1".parse().unwrap()));
        assert!(net.contains("::ffff:10.1.2.3".parse().unwrap()));
        assert!(!net.contains("11.0.0.1".parse().unwrap()));
        assert!(!net.contains("::1".parse().unwrap()));
        let one: TrustedNet = "127.0.0.1".parse().unwrap();
        assert!(one.contains("127.0.0.1".parse().unwrap()));
        assert!(!one.contains("127.0.0.2".parse().unwrap()));
        let all: TrustedNet = "0.0.0.0/0".parse().unwrap();
        assert!(all.contains("203.0.113.7".parse().unwrap()));
        let v6: TrustedNet = "[2001:db8::]/32".parse().unwrap();
        assert!(v6.contains("2001:db8:1::5".parse().unwrap()));
        assert!(!v6.contains("2001:db9::5".parse().unwrap()));
        let mapped: TrustedNet = "::ffff:192.168.0.0/112".parse().unwrap();
        assert_eq!(mapped.to_string(), "192.168.0.0/16");
        assert!(is_trusted(&TrustedNet::loopback(), "::1".parse().unwrap()));
        assert!(!is_trusted(
            &TrustedNet::loopback(),
            "10.0.0.1".parse().unwrap()
        ));
        for bad in [
            "10.0.0.0/33",
            "::/129",
            "10.0.0.0/",
            "10.0.0.0/+8",
            "localhost",
            "10.0.0/8",
        ] {
            assert!(bad.parse::<TrustedNet>().is_err(), "{bad}");
        }
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in vec(any::<u8>(), 0..600)) {
            if let Ok(Some((_, n))) = parse(&bytes) {
                prop_assert!(n <= bytes.len());
            }
        }

        #[test]
        fn arbitrary_v2_bytes_never_panic(rest in vec(any::<u8>(), 0..300)) {
            let mut bytes = SIGNATURE_V2.to_vec();
            bytes.extend_from_slice(&rest);
            match parse(&bytes) {
                Ok(Some((_, n))) => prop_assert!(n <= bytes.len()),
                Ok(None) => prop_assert!(wanted(&bytes) >= 1),
                Err(_) => {}
            }
        }

        #[test]
        fn every_strict_prefix_is_incomplete_and_wants_no_more_than_the_rest(
            tlvs in vec(any::<u8>(), 0..64),
            cut in any::<prop::sample::Index>(),
        ) {
            let mut block = tcp4_block();
            block.extend_from_slice(&tlvs);
            let h = v2(0x21, 0x11, &block);
            let cut = cut.index(h.len());
            prop_assert_eq!(parse(&h[..cut]), Ok(None));
            prop_assert!(wanted(&h[..cut]) <= h.len() - cut);
            prop_assert_eq!(parse(&h), Ok(Some((tcp4(), h.len()))));
        }

        #[test]
        fn v1_prefixes_are_incomplete(cut in 0usize..42) {
            let line = b"PROXY TCP4 203.0.113.7 192.0.2.1 4242 80\r\n";
            prop_assert_eq!(parse(&line[..cut]), Ok(None));
            prop_assert!(wanted(&line[..cut]) <= line.len() - cut);
        }
    }
}

//! The smallest WebSocket client that can measure a fast server: a fixed upgrade
//! request, unmasked-frame parsing of whole read buffers, and pre-built masked frames.

use std::io;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::stream::{Dialer, Stream};

/// Opens a connection to `addr` (TLS when `dialer` says so), upgrades it on `path`
/// with the extra header lines `extra_headers` (each ending in `\r\n`), and returns
/// the stream with any bytes that arrived after the HTTP response.
pub async fn connect(
    dialer: &Dialer,
    addr: &str,
    path: &str,
    recv_buffer: Option<u32>,
    extra_headers: Option<&str>,
) -> io::Result<(Stream, Vec<u8>)> {
    let tcp = match recv_buffer {
        None => TcpStream::connect(addr).await?,
        Some(size) => {
            let socket = tokio::net::TcpSocket::new_v4()?;
            socket.set_recv_buffer_size(size)?;
            let addr =
                addr.parse().map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, format!("{e}")))?;
            socket.connect(addr).await?
        }
    };
    tcp.set_nodelay(true)?;
    let stream = dialer.wrap(tcp).await?;
    upgrade(stream, addr, path, extra_headers.unwrap_or("")).await
}

async fn upgrade(mut stream: Stream, host: &str, path: &str, extra: &str) -> io::Result<(Stream, Vec<u8>)> {
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n{extra}\r\n"
    );
    stream.write_all(request.as_bytes()).await?;
    stream.flush().await?;
    let mut response = Vec::with_capacity(256);
    let mut buf = [0u8; 1024];
    loop {
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "closed during the handshake"));
        }
        response.extend_from_slice(buf.get(..n).unwrap_or_default());
        if let Some(end) = response.windows(4).position(|w| w == b"\r\n\r\n") {
            if !response.starts_with(b"HTTP/1.1 101") {
                let line = String::from_utf8_lossy(&response).lines().next().unwrap_or_default().to_owned();
                return Err(io::Error::other(format!("upgrade refused: {line}")));
            }
            let rest = response.get(end.saturating_add(4)..).unwrap_or_default().to_vec();
            return Ok((stream, rest));
        }
        if response.len() > 16 * 1024 {
            return Err(io::Error::other("handshake response too long"));
        }
    }
}

/// One parsed server frame.
pub enum Frame<'a> {
    /// A text or binary message's payload.
    Data(&'a [u8]),
    /// A ping that needs a pong.
    Ping,
    /// A close frame.
    Close,
    /// Anything else (pong, continuation): ignored.
    Other,
}

/// Parses the next complete frame at the start of `buf`: the frame and its length,
/// or `None` when `buf` holds only part of one.
pub fn parse(buf: &[u8]) -> Option<(Frame<'_>, usize)> {
    let b0 = *buf.first()?;
    let b1 = *buf.get(1)?;
    let masked = b1 & 0x80 != 0;
    let (len, mut at) = match b1 & 0x7f {
        126 => (usize::from(u16::from_be_bytes([*buf.get(2)?, *buf.get(3)?])), 4usize),
        127 => {
            let bytes: [u8; 8] = buf.get(2..10)?.try_into().ok()?;
            (usize::try_from(u64::from_be_bytes(bytes)).ok()?, 10)
        }
        n => (usize::from(n), 2),
    };
    if masked {
        at = at.checked_add(4)?;
    }
    let end = at.checked_add(len)?;
    let payload = buf.get(at..end)?;
    let frame = match b0 & 0x0f {
        0x1 | 0x2 => Frame::Data(payload),
        0x8 => Frame::Close,
        0x9 => Frame::Ping,
        _ => Frame::Other,
    };
    Some((frame, end))
}

/// Appends a masked client frame (mask key zero, so the payload goes as is; servers
/// must accept any key) with `opcode` and `payload` to `out`.
pub fn encode(out: &mut Vec<u8>, opcode: u8, payload: &[u8]) {
    out.push(0x80 | opcode);
    match payload.len() {
        n if n < 126 => out.push(0x80 | u8::try_from(n).unwrap_or(0)),
        n if n <= 0xffff => {
            out.push(0x80 | 126);
            out.extend_from_slice(&u16::try_from(n).unwrap_or(0).to_be_bytes());
        }
        n => {
            out.push(0x80 | 127);
            out.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    out.extend_from_slice(&[0, 0, 0, 0]);
    out.extend_from_slice(payload);
}

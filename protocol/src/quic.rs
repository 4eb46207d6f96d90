//! What the server and the Rust client share about QUIC beyond the frames:
//! the ALPN, the transport settings chosen for memory per connection, and
//! the UDP socket's buffers (ADR 0014). Behind the `quic` feature, so the
//! protocol crate pulls in quinn only for those who speak QUIC.

use std::net::{SocketAddr, UdpSocket};

/// Bytes asked for as a QUIC socket's receive and send buffers. One UDP
/// socket carries every connection of an endpoint, and a burst of
/// handshakes (each client Initial is one or two 1,200-byte datagrams)
/// overflows Linux's default of 208 KiB: each dropped datagram then waits
/// out a probe timeout (333 ms before an RTT is known). The kernel caps the
/// figure at `net.core.rmem_max` / `wmem_max`.
pub const SOCKET_BUFFER_BYTES: usize = 4 << 20;

/// The buffers a socket got: usable bytes, or `None` where the size could
/// not be read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SocketBuffers {
    /// Receive buffer.
    pub recv: Option<usize>,
    /// Send buffer.
    pub send: Option<usize>,
}

impl SocketBuffers {
    /// Whether both buffers are known to be at least [`SOCKET_BUFFER_BYTES`].
    pub fn as_wanted(&self) -> bool {
        self.recv.is_some_and(|b| b >= SOCKET_BUFFER_BYTES) && self.send.is_some_and(|b| b >= SOCKET_BUFFER_BYTES)
    }
}

/// Binds a UDP socket for a QUIC endpoint and asks for
/// [`SOCKET_BUFFER_BYTES`] of receive and send buffer, best effort: a
/// kernel that refuses the size leaves the socket as it was (the caller
/// decides whether to warn, from the returned sizes).
pub fn udp_socket(bind: SocketAddr) -> std::io::Result<(UdpSocket, SocketBuffers)> {
    let socket = UdpSocket::bind(bind)?;
    let state = quinn::udp::UdpSocketState::new((&socket).into())?;
    // Errors are not fatal: the sizes read back below tell what was got.
    let _ = state.set_recv_buffer_size((&socket).into(), SOCKET_BUFFER_BYTES);
    let _ = state.set_send_buffer_size((&socket).into(), SOCKET_BUFFER_BYTES);
    // Linux reports twice what it grants (the rest is its bookkeeping).
    let usable = |b: usize| if cfg!(target_os = "linux") { b / 2 } else { b };
    let buffers = SocketBuffers {
        recv: state.recv_buffer_size((&socket).into()).ok().map(usable),
        send: state.send_buffer_size((&socket).into()).ok().map(usable),
    };
    Ok((socket, buffers))
}

/// The transport settings both ends use for memory per connection:
/// quinn keeps a connection's transmit buffer at its high-water mark for
/// the connection's life, and with segmentation offload a handshake
/// flight reserves room for ten datagrams (about 13 KB). Iris frames are
/// small, so one datagram per send call costs little. No path MTU probes
/// either: datagrams stay at 1,200 bytes, and the buffer at one of them.
pub fn lean_transport(transport: &mut quinn::TransportConfig) {
    transport.enable_segmentation_offload(false);
    transport.mtu_discovery_config(None);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_socket_reports_the_buffers_it_got() {
        let (socket, buffers) = udp_socket("127.0.0.1:0".parse().unwrap()).unwrap();
        assert!(socket.local_addr().unwrap().port() > 0);
        // Whatever the kernel's caps, some buffer is there and readable.
        assert!(buffers.recv.is_some_and(|b| b > 0), "{buffers:?}");
        assert!(buffers.send.is_some_and(|b| b > 0), "{buffers:?}");
        assert_eq!(
            buffers.as_wanted(),
            buffers.recv >= Some(SOCKET_BUFFER_BYTES) && buffers.send >= Some(SOCKET_BUFFER_BYTES)
        );
    }
}

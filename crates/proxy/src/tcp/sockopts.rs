//! `tcp_keepalive` and `tcp_user_timeout` on a connection's sockets: set
//! once, on the client's socket once it is admitted and on the real
//! server's once connected; nothing per packet.

use socket2::{SockRef, TcpKeepalive};
use tokio::net::TcpStream;

use crate::config::TcpOptions;

/// Sets `o` on `sock`. A refusal by the kernel is logged, not fatal: the
/// connection goes on with the kernel's settings.
pub(crate) fn apply(sock: &TcpStream, o: &TcpOptions, which: &'static str) {
    if o.keepalive.is_none() && o.user_timeout.is_none() {
        return;
    }
    let s = SockRef::from(sock);
    if let Some(k) = o.keepalive {
        let mut p = TcpKeepalive::new();
        if let Some(idle) = k.idle {
            p = p.with_time(idle);
        }
        if let Some(interval) = k.interval {
            p = p.with_interval(interval);
        }
        if let Some(count) = k.count {
            p = p.with_retries(count);
        }
        if let Err(e) = s.set_tcp_keepalive(&p) {
            tracing::debug!(socket = which, error = %e, "tcp_keepalive not set");
        }
    }
    #[cfg(target_os = "linux")]
    if let Some(t) = o.user_timeout
        && let Err(e) = s.set_tcp_user_timeout(Some(t))
    {
        tracing::debug!(socket = which, error = %e, "tcp_user_timeout not set");
    }
}

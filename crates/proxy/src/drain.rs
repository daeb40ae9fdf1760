//! Receives that clear a socket's readiness when they empty it.
//!
//! A TCP read takes everything queued up to the buffer, and a recvmmsg(2)
//! everything up to its batch: one that comes back short has emptied the
//! queue. Reporting it to tokio's `try_io` as `WouldBlock` clears the
//! readiness in the same step, which saves the receive that would only
//! return EAGAIN (one per message each way on a TCP connection). tokio
//! clears the readiness it observed *before* the receive, and only if no
//! event came since, so data or a FIN arriving meanwhile is never missed
//! (and an end of stream, a zero-length read, is never cleared).

use std::io;

/// Runs `receive` (a count of bytes or datagrams, `full` when it filled
/// its space) inside `try_io`, reporting a short receive as drained.
pub(crate) fn receive(
    try_io: impl FnOnce(&mut dyn FnMut() -> io::Result<usize>) -> io::Result<usize>,
    full: usize,
    mut receive: impl FnMut() -> io::Result<usize>,
) -> io::Result<usize> {
    let mut short = None;
    let r = try_io(&mut || {
        let n = receive()?;
        if n > 0 && n < full {
            short = Some(n);
            return Err(io::ErrorKind::WouldBlock.into());
        }
        Ok(n)
    });
    match (r, short) {
        (_, Some(n)) => Ok(n),
        (r, None) => r,
    }
}

//! One connection, one thread: the socket is read, the request parsed, the
//! plugin's code run and the answer written by the same thread, with no
//! handoff between threads on the way.
//!
//! A call on an HTTP/1.1 connection is served one at a time anyway, so the
//! thread that reads a request can run the plugin itself: nothing else
//! waits for it. What the old design paid per call (the async runtime's
//! thread woke for the socket, handed the call to the blocking pool, which
//! woke the runtime again to write the answer) was two context switches
//! and a cross-thread wake-up on top of the kernel's own two.
//!
//! hyper's connection future is driven here by [`drive`], a small executor
//! that waits in `poll(2)` on the socket and on a wake pipe (for wake-ups
//! from other threads: a streamed call's events). It is not an async
//! runtime, so a plugin may block, and may `block_on` the tokio runtime
//! whose handle the thread has entered, as it could on the blocking pool.
//!
//! Guarantees: a wait never outlasts [`IDLE_RECHECK`] without the future
//! being polled again, and the thread ends when the connection does or when
//! the server closes ([`Closing`]).

use std::future::Future;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::pin::{Pin, pin};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll, Wake, Waker};
use std::time::Duration;

use nix::poll::{PollFd, PollFlags, PollTimeout, poll};

/// Longest wait before the connection's future is polled again even though
/// nothing was reported: a bound on any wake-up this executor could miss,
/// and how soon an idle connection notices that the server closed.
pub(crate) const IDLE_RECHECK: Duration = Duration::from_secs(1);

/// What the last poll of the future waited for on the socket.
#[derive(Default)]
struct Interest {
    read: AtomicBool,
    write: AtomicBool,
}

/// A socket in non-blocking mode as hyper's IO: a read or write that would
/// block records the interest and returns `Pending`; [`drive`] then waits
/// for it in `poll(2)`.
pub(crate) struct Io<S> {
    stream: S,
    interest: Arc<Interest>,
}

/// `read(2)` into possibly uninitialised memory (which the kernel fills)
/// without zeroing it first.
fn read_uninit(fd: RawFd, buf: &mut [std::mem::MaybeUninit<u8>]) -> io::Result<usize> {
    // SAFETY: `buf` is valid for writes of `buf.len()` bytes; read(2)
    // writes at most that many and never reads them.
    let n = unsafe { nix::libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}

/// One non-blocking IO attempt, retried when interrupted; one that would
/// block records `interest` and is `Pending`.
fn attempt<T>(interest: &AtomicBool, mut io: impl FnMut() -> io::Result<T>) -> Poll<io::Result<T>> {
    loop {
        match io() {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                interest.store(true, Ordering::Relaxed);
                return Poll::Pending;
            }
            other => return Poll::Ready(other),
        }
    }
}

impl<S: Socket> hyper::rt::Read for Io<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        mut buf: hyper::rt::ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
        let fd = self.stream.as_raw_fd();
        // SAFETY: only the bytes read(2) wrote are marked filled.
        let read = attempt(&self.interest.read, || read_uninit(fd, unsafe { buf.as_mut() }));
        read.map_ok(|n| {
            // SAFETY: read(2) initialised the first `n` bytes.
            unsafe { buf.advance(n) };
        })
    }
}

impl<S: Socket> hyper::rt::Write for Io<S> {
    fn poll_write(mut self: Pin<&mut Self>, _cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let Io { stream, interest } = &mut *self;
        attempt(&interest.write, || stream.write(buf))
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let Io { stream, interest } = &mut *self;
        attempt(&interest.write, || stream.write_vectored(bufs))
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        // Best effort, as a close follows: the peer sees the end either way.
        let _ = self.stream.shutdown_write();
        Poll::Ready(Ok(()))
    }
}

/// Wakes [`drive`]: a flag read after every poll of the future, and a byte
/// on the wake pipe only when the driving thread is (about to be) asleep.
struct Wakeup {
    woken: AtomicBool,
    parked: AtomicBool,
    tx: UnixStream,
}

impl Wake for Wakeup {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        // SeqCst pairs with `drive`: either it sees `woken` before it
        // sleeps, or this sees `parked` and writes the byte.
        if !self.woken.swap(true, Ordering::SeqCst) && self.parked.load(Ordering::SeqCst) {
            // A full pipe already holds a wake-up: nothing is lost.
            let _ = io::Write::write(&mut &self.tx, &[1]);
        }
    }
}

/// Set when the server stops: every connection thread ends at its next
/// wake-up (a call running finishes first).
#[derive(Default)]
pub(crate) struct Closing {
    closed: AtomicBool,
    wakers: Mutex<Vec<Weak<Wakeup>>>,
}

impl Closing {
    /// Marks the server closed and wakes every connection.
    pub(crate) fn close(&self) {
        self.closed.store(true, Ordering::SeqCst);
        let wakers = std::mem::take(&mut *self.wakers.lock().unwrap_or_else(|e| e.into_inner()));
        for w in wakers.iter().filter_map(Weak::upgrade) {
            w.wake_by_ref();
        }
    }

    fn is_closed(&self) -> bool {
        self.closed.load(Ordering::SeqCst)
    }

    fn register(&self, w: &Arc<Wakeup>) {
        let mut wakers = self.wakers.lock().unwrap_or_else(|e| e.into_inner());
        wakers.retain(|w| w.strong_count() > 0);
        wakers.push(Arc::downgrade(w));
    }
}

/// Why [`drive`] returned without the future's output.
#[derive(Debug)]
pub(crate) enum Stopped {
    /// The server closed.
    Closed,
    /// `poll(2)` or the wake pipe failed.
    Io(io::Error),
}

/// Polls `fut` to completion on this thread, sleeping in `poll(2)` on
/// `socket` (for what the future's last poll waited on) and on a wake pipe.
fn drive<F: Future>(
    fut: F,
    socket: BorrowedFd<'_>,
    interest: &Interest,
    closing: &Closing,
) -> Result<F::Output, Stopped> {
    let (rx, tx) = UnixStream::pair().map_err(Stopped::Io)?;
    rx.set_nonblocking(true).map_err(Stopped::Io)?;
    tx.set_nonblocking(true).map_err(Stopped::Io)?;
    let wakeup = Arc::new(Wakeup {
        woken: AtomicBool::new(false),
        parked: AtomicBool::new(false),
        tx,
    });
    closing.register(&wakeup);
    let waker = Waker::from(Arc::clone(&wakeup));
    let mut cx = Context::from_waker(&waker);
    let mut fut = pin!(fut);
    let timeout = PollTimeout::try_from(IDLE_RECHECK).unwrap_or(PollTimeout::MAX);
    loop {
        if closing.is_closed() {
            return Err(Stopped::Closed);
        }
        wakeup.woken.store(false, Ordering::SeqCst);
        interest.read.store(false, Ordering::Relaxed);
        interest.write.store(false, Ordering::Relaxed);
        if let Poll::Ready(out) = fut.as_mut().poll(&mut cx) {
            return Ok(out);
        }
        wakeup.parked.store(true, Ordering::SeqCst);
        if wakeup.woken.load(Ordering::SeqCst) {
            wakeup.parked.store(false, Ordering::SeqCst);
            continue;
        }
        let mut want = PollFlags::empty();
        if interest.read.load(Ordering::Relaxed) {
            want |= PollFlags::POLLIN;
        }
        if interest.write.load(Ordering::Relaxed) {
            want |= PollFlags::POLLOUT;
        }
        let mut fds = [PollFd::new(socket, want), PollFd::new(rx.as_fd(), PollFlags::POLLIN)];
        let r = poll(&mut fds, timeout);
        wakeup.parked.store(false, Ordering::SeqCst);
        match r {
            Ok(_) | Err(nix::errno::Errno::EINTR) => {}
            Err(e) => return Err(Stopped::Io(e.into())),
        }
        if fds[1].revents().is_some_and(|r| r.contains(PollFlags::POLLIN)) {
            let mut sink = [0u8; 64];
            while matches!(io::Read::read(&mut &rx, &mut sink), Ok(n) if n > 0) {}
        }
    }
}

/// The peer shut down its side (Linux reports it apart from a full hang-up).
#[cfg(any(target_os = "linux", target_os = "android"))]
const RDHUP: nix::libc::c_short = nix::libc::POLLRDHUP;
#[cfg(not(any(target_os = "linux", target_os = "android")))]
const RDHUP: nix::libc::c_short = nix::libc::POLLHUP;

/// True when the peer of `fd` has hung up (closed or shut down its side),
/// asked without waiting.
pub(crate) fn peer_gone(fd: RawFd) -> bool {
    let mut p = nix::libc::pollfd {
        fd,
        events: RDHUP,
        revents: 0,
    };
    // SAFETY: one valid pollfd, a zero timeout; poll(2) only writes
    // `revents`. (nix's PollFd drops the RDHUP bit it does not know.)
    let n = unsafe { nix::libc::poll(&mut p, 1, 0) };
    n > 0 && p.revents & (RDHUP | nix::libc::POLLHUP | nix::libc::POLLERR) != 0
}

/// A socket hyper can serve through [`drive`].
pub(crate) trait Socket: AsRawFd + AsFd + io::Write + Unpin + Send + 'static {
    /// Shuts down the writing half.
    fn shutdown_write(&self) -> io::Result<()>;
}

impl Socket for UnixStream {
    fn shutdown_write(&self) -> io::Result<()> {
        self.shutdown(std::net::Shutdown::Write)
    }
}

impl Socket for std::net::TcpStream {
    fn shutdown_write(&self) -> io::Result<()> {
        self.shutdown(std::net::Shutdown::Write)
    }
}

/// Serves one connection to its end on this thread with `serve`, which is
/// given the connection's IO and the raw descriptor (for [`peer_gone`]).
pub(crate) fn serve_connection<S, F, Fut>(stream: S, closing: &Closing, serve: F) -> Result<(), Stopped>
where
    S: Socket,
    F: FnOnce(Io<S>, RawFd) -> Fut,
    Fut: Future,
{
    let fd = stream.as_raw_fd();
    let interest = Arc::new(Interest::default());
    let io = Io {
        stream,
        interest: Arc::clone(&interest),
    };
    // SAFETY: the descriptor is owned by `io`, which the future owns and
    // which outlives this borrow (the future is dropped inside `drive`).
    let socket = unsafe { BorrowedFd::borrow_raw(fd) };
    drive(serve(io, fd), socket, &interest, closing).map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};

    /// A future that needs a wake-up from another thread completes.
    #[test]
    fn a_wake_from_another_thread_resumes_the_future() {
        let (a, _b) = UnixStream::pair().unwrap();
        let closing = Closing::default();
        let (tx, rx) = tokio::sync::oneshot::channel::<u32>();
        let t = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(50));
            tx.send(7).unwrap();
        });
        let got = drive(rx, a.as_fd(), &Interest::default(), &closing).unwrap().unwrap();
        assert_eq!(got, 7);
        t.join().unwrap();
    }

    /// Closing the server ends a connection that waits for nothing.
    #[test]
    fn closing_ends_a_waiting_connection() {
        let (a, _b) = UnixStream::pair().unwrap();
        let closing = Arc::new(Closing::default());
        let c = Arc::clone(&closing);
        let t = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(50));
            c.close();
        });
        let started = std::time::Instant::now();
        let r = drive(std::future::pending::<()>(), a.as_fd(), &Interest::default(), &closing);
        assert!(matches!(r, Err(Stopped::Closed)), "{r:?}");
        assert!(started.elapsed() < IDLE_RECHECK, "woken, not timed out");
        t.join().unwrap();
    }

    /// Reads that would block wait for the peer's bytes, and a hang-up is seen.
    #[test]
    fn io_waits_for_the_peer_and_sees_it_hang_up() {
        let (a, mut b) = UnixStream::pair().unwrap();
        a.set_nonblocking(true).unwrap();
        let fd = a.as_raw_fd();
        assert!(!peer_gone(fd));
        let closing = Closing::default();
        let t = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(50));
            b.write_all(b"hello").unwrap();
            let mut back = [0u8; 5];
            b.read_exact(&mut back).unwrap();
            back
        });
        let out = serve_connection(a, &closing, |io, _| async move {
            let mut io = io;
            let mut buf = [0u8; 5];
            let mut got = 0;
            while got < 5 {
                let n = std::future::poll_fn(|cx| {
                    let mut rb = hyper::rt::ReadBuf::new(&mut buf[got..]);
                    match hyper::rt::Read::poll_read(Pin::new(&mut io), cx, rb.unfilled()) {
                        Poll::Ready(r) => Poll::Ready(r.map(|()| rb.filled().len())),
                        Poll::Pending => Poll::Pending,
                    }
                })
                .await
                .unwrap();
                got += n;
            }
            let echoed = std::future::poll_fn(|cx| hyper::rt::Write::poll_write(Pin::new(&mut io), cx, &buf))
                .await
                .unwrap();
            assert_eq!(echoed, 5);
            io
        });
        assert!(out.is_ok());
        assert_eq!(&t.join().unwrap(), b"hello");
        let (c, d) = UnixStream::pair().unwrap();
        drop(d);
        assert!(peer_gone(c.as_raw_fd()));
    }
}

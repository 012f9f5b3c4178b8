//! `Pending<T>`: the completion of one storage request, awaitable from async code and waitable
//! from plain threads. It keeps the storage seam (`ZonedDevice`) object-safe without boxing a
//! future per request.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::sync::oneshot;

/// The sending half, held by whoever completes the request (a storage thread or a backend).
pub struct Completer<T>(oneshot::Sender<io::Result<T>>);

impl<T> Completer<T> {
    /// Delivers the result. A caller that stopped waiting is not an error.
    pub fn complete(self, result: io::Result<T>) {
        let _ = self.0.send(result);
    }
}

/// The receiving half: the result of a request that may still be in flight.
pub struct Pending<T>(PendingInner<T>);

enum PendingInner<T> {
    Ready(Option<io::Result<T>>),
    Waiting(oneshot::Receiver<io::Result<T>>),
}

impl<T> Pending<T> {
    /// A request and its completer.
    pub fn channel() -> (Completer<T>, Pending<T>) {
        let (tx, rx) = oneshot::channel();
        (Completer(tx), Pending(PendingInner::Waiting(rx)))
    }

    /// An already completed request (in-memory backends, validation errors).
    pub fn ready(result: io::Result<T>) -> Pending<T> {
        Pending(PendingInner::Ready(Some(result)))
    }

    /// Blocks the current thread until the request completes. Must not be called from inside an
    /// async runtime worker (use `.await` there).
    pub fn wait(self) -> io::Result<T> {
        match self.0 {
            PendingInner::Ready(result) => result.expect("Pending polled after completion"),
            PendingInner::Waiting(rx) => rx.blocking_recv().unwrap_or_else(|_| Err(storage_thread_gone())),
        }
    }
}

fn storage_thread_gone() -> io::Error {
    io::Error::new(io::ErrorKind::BrokenPipe, "storage thread stopped before completing the request")
}

// Pending never pins its `T`: a ready value is moved out whole, and the receiver is Unpin.
impl<T> Unpin for Pending<T> {}

impl<T> Future for Pending<T> {
    type Output = io::Result<T>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<T>> {
        let this = self.get_mut();
        match &mut this.0 {
            PendingInner::Ready(result) => Poll::Ready(result.take().expect("Pending polled after completion")),
            PendingInner::Waiting(rx) => match Pin::new(rx).poll(cx) {
                Poll::Pending => Poll::Pending,
                Poll::Ready(Ok(result)) => Poll::Ready(result),
                Poll::Ready(Err(_)) => Poll::Ready(Err(storage_thread_gone())),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wait_and_await_both_complete() {
        let (tx, rx) = Pending::<u32>::channel();
        std::thread::spawn(move || tx.complete(Ok(7)));
        assert_eq!(rx.wait().unwrap(), 7);

        let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
        let (tx, rx) = Pending::<u32>::channel();
        tx.complete(Ok(9));
        assert_eq!(runtime.block_on(rx).unwrap(), 9);
        assert_eq!(runtime.block_on(Pending::ready(Ok(1u32))).unwrap(), 1);
    }

    #[test]
    fn dropped_completer_is_an_error() {
        let (tx, rx) = Pending::<u32>::channel();
        drop(tx);
        assert_eq!(rx.wait().unwrap_err().kind(), io::ErrorKind::BrokenPipe);
    }
}

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

    /// The result if the request has completed, without waiting. After `Some` is returned the
    /// `Pending` is spent.
    pub fn try_take(&mut self) -> Option<io::Result<T>> {
        match &mut self.0 {
            PendingInner::Ready(result) => result.take(),
            PendingInner::Waiting(rx) => match rx.try_recv() {
                Ok(result) => Some(result),
                Err(oneshot::error::TryRecvError::Empty) => None,
                Err(oneshot::error::TryRecvError::Closed) => Some(Err(storage_thread_gone())),
            },
        }
    }

    /// Blocks the current thread until the request completes. Must not be called from inside an
    /// async runtime worker (use `.await` there).
    pub fn wait(self) -> io::Result<T> {
        match self.0 {
            PendingInner::Ready(result) => result.expect("Pending polled after completion"),
            PendingInner::Waiting(rx) => rx
                .blocking_recv()
                .unwrap_or_else(|_| Err(storage_thread_gone())),
        }
    }
}

fn storage_thread_gone() -> io::Error {
    io::Error::new(
        io::ErrorKind::BrokenPipe,
        "storage thread stopped before completing the request",
    )
}

// Pending never pins its `T`: a ready value is moved out whole, and the receiver is Unpin.
impl<T> Unpin for Pending<T> {}

impl<T> Future for Pending<T> {
    type Output = io::Result<T>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<T>> {
        let this = self.get_mut();
        match &mut this.0 {
            PendingInner::Ready(result) => {
                Poll::Ready(result.take().expect("Pending polled after completion"))
            }
            PendingInner::Waiting(rx) => match Pin::new(rx).poll(cx) {
                Poll::Pending => Poll::Pending,
                Poll::Ready(Ok(result)) => Poll::Ready(result),
                Poll::Ready(Err(_)) => Poll::Ready(Err(storage_thread_gone())),
            },
        }
    }
}

/// Runs a future to completion on the calling thread: the bridge for synchronous callers (tests,
/// the crash-test child, benchmarks) of the async storage API. The storage threads do the work;
/// this thread only sleeps until woken.
pub fn block_on<F: Future>(future: F) -> F::Output {
    struct ThreadWaker(std::thread::Thread);
    impl std::task::Wake for ThreadWaker {
        fn wake(self: std::sync::Arc<Self>) {
            self.0.unpark();
        }
    }
    let waker = std::task::Waker::from(std::sync::Arc::new(ThreadWaker(std::thread::current())));
    let mut context = Context::from_waker(&waker);
    let mut future = std::pin::pin!(future);
    loop {
        if let Poll::Ready(output) = future.as_mut().poll(&mut context) {
            return output;
        }
        std::thread::park();
    }
}

/// Runs futures concurrently on the current task and returns their outputs in order: lets a
/// caller keep several storage requests in flight without an async runtime's spawn.
pub async fn join_all<F: Future>(futures: Vec<F>) -> Vec<F::Output> {
    let mut futures: Vec<Pin<Box<F>>> = futures.into_iter().map(Box::pin).collect();
    let mut outputs: Vec<Option<F::Output>> = futures.iter().map(|_| None).collect();
    std::future::poll_fn(|context| {
        let mut all_done = true;
        for (future, output) in futures.iter_mut().zip(outputs.iter_mut()) {
            if output.is_none() {
                match future.as_mut().poll(context) {
                    Poll::Ready(value) => *output = Some(value),
                    Poll::Pending => all_done = false,
                }
            }
        }
        if all_done { Poll::Ready(()) } else { Poll::Pending }
    })
    .await;
    outputs.into_iter().map(|output| output.expect("every future completed")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wait_and_await_both_complete() {
        let (tx, rx) = Pending::<u32>::channel();
        std::thread::spawn(move || tx.complete(Ok(7)));
        assert_eq!(rx.wait().unwrap(), 7);

        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let (tx, rx) = Pending::<u32>::channel();
        tx.complete(Ok(9));
        assert_eq!(runtime.block_on(rx).unwrap(), 9);
        assert_eq!(runtime.block_on(Pending::ready(Ok(1u32))).unwrap(), 1);
    }

    #[test]
    fn join_all_keeps_order() {
        let (first_tx, first) = Pending::<u32>::channel();
        let (second_tx, second) = Pending::<u32>::channel();
        std::thread::spawn(move || {
            second_tx.complete(Ok(2));
            first_tx.complete(Ok(1));
        });
        let results = block_on(join_all(vec![first, second]));
        assert_eq!(results.into_iter().map(Result::unwrap).collect::<Vec<_>>(), vec![1, 2]);
    }

    #[test]
    fn dropped_completer_is_an_error() {
        let (tx, rx) = Pending::<u32>::channel();
        drop(tx);
        assert_eq!(rx.wait().unwrap_err().kind(), io::ErrorKind::BrokenPipe);
    }
}

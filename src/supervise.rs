//! Driving a running child to its end: stdin in, capped output out, deadline, cancellation,
//! killing the whole process tree, and the resources it used.
//!
//! Invariants: the tool is never blocked by a full pipe (output past the cap is read and
//! discarded); when the tool exits, the sandbox's init kills whatever it left and exits; on a
//! timeout or cancellation the daemon kills init, which ends the tool's whole pid namespace, so
//! no process of the invocation survives it however it detached. Time is `tokio::time`, so
//! deadline logic runs on a paused clock in tests.

use std::os::fd::OwnedFd;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::unix::pipe;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::sandbox::{Child, ExitStatus, Usage};

/// How long output is still read after the sandbox ended. Pipes reach end of file as soon as
/// its processes are gone (which they are once init is reaped); this only bounds the wait.
const OUTPUT_GRACE: Duration = Duration::from_millis(500);

/// What a streaming caller sees while the tool runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// The program is executing; carries the request's id.
    Started(String),
    /// A chunk of standard output.
    Stdout(Vec<u8>),
    /// A chunk of standard error.
    Stderr(Vec<u8>),
}

/// One output stream of the tool.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Output {
    /// What was kept (empty when streamed to the caller instead).
    pub bytes: Vec<u8>,
    /// How many bytes the tool wrote, kept or not.
    pub total: u64,
    /// Whether the tool wrote more than the cap.
    pub truncated: bool,
}

/// How an invocation ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// Exit code or signal.
    pub status: ExitStatus,
    /// Killed at the deadline.
    pub timed_out: bool,
    /// Killed because the caller went away or the daemon stopped.
    pub cancelled: bool,
    /// Standard output.
    pub stdout: Output,
    /// Standard error.
    pub stderr: Output,
    /// From start to exit.
    pub wall_time: Duration,
    /// CPU and memory used.
    pub usage: Usage,
}

/// How to run the supervision of one child.
pub struct Supervision {
    /// Bytes for stdin, which is closed after them.
    pub stdin: Vec<u8>,
    /// When to kill the tool.
    pub deadline: Instant,
    /// Kills the tool when cancelled.
    pub cancel: CancellationToken,
    /// Cap on each of stdout and stderr.
    pub max_output: u64,
    /// Where to stream output; when absent, output is collected into the outcome.
    pub events: Option<mpsc::Sender<Event>>,
}

/// Why supervision failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Waiting for the child failed.
    #[error("cannot wait for the tool's process: {0}")]
    Wait(std::io::Error),
    /// A pipe could not be registered with the runtime.
    #[error("cannot read the tool's output: {0}")]
    Pipe(std::io::Error),
}

/// Runs `child` to its end under `how`.
pub async fn supervise(mut child: Child, how: Supervision) -> Result<Outcome, Error> {
    let started = Instant::now();
    let stop_reading = CancellationToken::new();
    let reader = |fd: Option<OwnedFd>, stream: fn(Vec<u8>) -> Event| {
        let receiver = fd
            .map(pipe::Receiver::from_owned_fd_unchecked)
            .transpose()
            .map_err(Error::Pipe)?;
        Ok::<_, Error>(tokio::spawn(read_capped(
            receiver,
            how.max_output,
            match &how.events {
                Some(tx) => Sink::Stream(tx.clone(), stream),
                None => Sink::Collect,
            },
            stop_reading.clone(),
        )))
    };
    let stdout = reader(child.stdout.take(), Event::Stdout)?;
    let stderr = reader(child.stderr.take(), Event::Stderr)?;
    let stdin = match child.stdin.take() {
        Some(fd) => Some(tokio::spawn(feed(
            pipe::Sender::from_owned_fd_unchecked(fd).map_err(Error::Pipe)?,
            how.stdin,
        ))),
        None => None,
    };

    let (mut timed_out, mut cancelled) = (false, false);
    tokio::select! {
        exited = child.exited() => exited.map_err(Error::Wait)?,
        () = tokio::time::sleep_until(how.deadline) => timed_out = true,
        () = how.cancel.cancelled() => cancelled = true,
    }
    if timed_out || cancelled {
        child.kill_tree();
        child.exited().await.map_err(Error::Wait)?;
    }
    let wall_time = started.elapsed();
    // Init has exited (it killed what the tool left) but is not reaped: make sure, before
    // reaping, that nothing of the sandbox is left.
    child.kill_tree();
    let (status, usage) = child
        .try_reap()
        .map_err(Error::Wait)?
        .ok_or_else(|| Error::Wait(std::io::Error::other("pidfd readable but child not exited")))?;

    if let Some(stdin) = stdin {
        stdin.abort();
    }
    let grace = tokio::spawn({
        let stop = stop_reading.clone();
        async move {
            tokio::time::sleep(OUTPUT_GRACE).await;
            stop.cancel();
        }
    });
    let stdout = stdout.await.unwrap_or_default();
    let stderr = stderr.await.unwrap_or_default();
    grace.abort();
    Ok(Outcome {
        status,
        timed_out,
        cancelled,
        stdout,
        stderr,
        wall_time,
        usage,
    })
}

/// Writes `bytes` to the tool's stdin and closes it. A tool that exits without reading makes
/// the write fail with EPIPE, which is not an error of the invocation.
async fn feed(mut stdin: pipe::Sender, bytes: Vec<u8>) {
    let _ = stdin.write_all(&bytes).await;
}

/// Where output read from a pipe goes.
enum Sink {
    /// Into the outcome.
    Collect,
    /// To the streaming caller, wrapped as stdout or stderr.
    Stream(mpsc::Sender<Event>, fn(Vec<u8>) -> Event),
    /// Nowhere: the streaming caller is gone (the run is being cancelled), but the pipe is
    /// still drained so the tool is not blocked.
    Discard,
}

/// Reads a pipe to its end, keeping (or streaming) at most `cap` bytes and discarding the rest.
async fn read_capped(
    receiver: Option<pipe::Receiver>,
    cap: u64,
    mut sink: Sink,
    stop: CancellationToken,
) -> Output {
    let mut output = Output::default();
    let Some(mut receiver) = receiver else {
        return output;
    };
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = tokio::select! {
            biased;
            read = receiver.read(&mut buf) => match read {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            },
            () = stop.cancelled() => break,
        };
        let room = cap.saturating_sub(output.total);
        output.total += n as u64;
        let keep = n.min(usize::try_from(room).unwrap_or(usize::MAX));
        output.truncated |= keep < n;
        let chunk = &buf[..keep];
        match &sink {
            _ if keep == 0 => {}
            Sink::Collect => output.bytes.extend_from_slice(chunk),
            Sink::Stream(tx, wrap) => {
                if tx.send(wrap(chunk.to_vec())).await.is_err() {
                    sink = Sink::Discard;
                }
            }
            Sink::Discard => {}
        }
    }
    output
}

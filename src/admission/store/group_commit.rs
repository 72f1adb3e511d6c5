//! Group commit of the quota journal for `state_fsync = true`.
//!
//! Writers append their record (one `write(2)`) and then await, on a `tokio::sync::watch`,
//! until the syncer thread reports their sequence number flushed: no runtime thread ever waits
//! for the disk. The syncer flushes whatever has been written since its last flush with one
//! `fdatasync` per segment involved, so calls that arrive during a flush share the next one.
//! A failed flush is final (after one, the file's state on disk is unknown): every later wait
//! is refused, and the daemon fails closed until restarted.

use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::thread::JoinHandle;

use tokio::sync::watch;

use super::Error;

/// The last sequence number on disk, or why flushing stopped.
pub type Durable = Result<u64, String>;

/// What to flush next.
pub struct Pending {
    /// The last record written (to flush up to).
    pub upto: u64,
    /// Every segment that may hold unflushed records.
    pub files: Vec<Arc<File>>,
    /// A segment was created: flush the directory entry too.
    pub dir_dirty: bool,
}

/// Starts the syncer for the journal in `dir`, on disk up to `synced`. `next(synced)` blocks
/// until something past `synced` is written and says what to flush, or gives `None` to stop.
pub fn start(
    dir: &Path,
    synced: u64,
    next: impl FnMut(u64) -> Option<Pending> + Send + 'static,
) -> io::Result<(watch::Receiver<Durable>, JoinHandle<()>)> {
    let (tx, rx) = watch::channel(Ok(synced));
    let dir = dir.to_owned();
    let thread = std::thread::Builder::new()
        .name("quota-syncer".into())
        .spawn(move || run(&dir, &tx, synced, next))?;
    Ok((rx, thread))
}

fn run(
    dir: &PathBuf,
    durable: &watch::Sender<Durable>,
    mut synced: u64,
    mut next: impl FnMut(u64) -> Option<Pending>,
) {
    while let Some(pending) = next(synced) {
        let flushed = pending
            .files
            .iter()
            .try_for_each(|f| f.sync_data())
            .and_then(|()| {
                if pending.dir_dirty {
                    File::open(dir)?.sync_all()
                } else {
                    Ok(())
                }
            });
        match flushed {
            Ok(()) => {
                synced = pending.upto;
                let _previous = durable.send_replace(Ok(synced));
            }
            Err(error) => {
                tracing::error!(%error, dir = %dir.display(), "cannot fdatasync the quota journal: refusing calls that need it");
                let _previous = durable.send_replace(Err(error.to_string()));
                return;
            }
        }
    }
}

/// Waits until record `seq` is on disk.
pub async fn wait(durable: &watch::Receiver<Durable>, seq: u64) -> Result<(), Error> {
    let mut durable = durable.clone();
    let flushed = durable
        .wait_for(|d| !matches!(d, Ok(upto) if *upto < seq))
        .await
        .map(|d| d.clone());
    match flushed {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(message)) => Err(Error::JournalSync(message)),
        Err(_) => Err(Error::JournalSync("the syncer stopped".to_owned())),
    }
}

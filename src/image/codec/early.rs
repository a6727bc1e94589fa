//! Compressing the contents of large files while the layers are still being read.
//!
//! Reading a layer keeps one core busy gunzipping it; the other is mostly idle, and the kept
//! set's large files (libraries, binaries) are most of what the hardened layer's compression
//! costs afterwards. Their contents are written to the layer in gzip blocks of their own (a
//! block starts where the contents start and every 1 MiB in), so a block can be
//! compressed as soon as it streams past, by one worker at low priority, and stored here. The
//! write then puts the stored piece where the workers would have made the same bytes; blocks
//! that were not ready (the worker fell behind, the file was kept only after analysis) are
//! compressed then. Either way the layer is the same.

use std::collections::{HashMap, VecDeque};
use std::fs::File;
use std::io::{self, Write};
use std::os::unix::fs::FileExt;
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;

use crc32fast::Hasher;

use super::pgzip::{BLOCK, BlockCompressor, Piece};

/// Files at least this large get blocks of their own. Each cut ends the block before it short,
/// so small files stay packed together where they share a dictionary.
pub(in crate::image) const EARLY_MIN: u64 = 256 << 10;

/// The worker's nice value: it runs on what the reading threads leave idle.
const NICE: i32 = 10;

type Key = (usize, String);

/// How likely a file is to be kept, which decides which of its blocks the worker takes first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Likely {
    /// A report names it: nearly always kept.
    Named,
    /// A library set aside in case analysis needs it: compressed only when nothing named waits.
    Maybe,
}

/// Blocks waiting, by [`Likely`]; each queue is in stream order, so what the worker stores of
/// a file is always its first blocks.
#[derive(Default)]
struct Queues {
    named: VecDeque<Job>,
    maybe: VecDeque<Job>,
    closed: bool,
}

#[derive(Default)]
struct Queue {
    jobs: Mutex<Queues>,
    ready: Condvar,
}

impl Queue {
    fn push(&self, likely: Likely, job: Job) {
        if let Ok(mut q) = self.jobs.lock() {
            match likely {
                Likely::Named => q.named.push_back(job),
                Likely::Maybe => q.maybe.push_back(job),
            }
            self.ready.notify_one();
        }
    }

    /// The next block, named ones first; `None` once closed (what is still queued is dropped).
    fn pop(&self) -> Option<Job> {
        let mut q = self.jobs.lock().ok()?;
        loop {
            if q.closed {
                return None;
            }
            if let Some(job) = q.named.pop_front().or_else(|| q.maybe.pop_front()) {
                return Some(job);
            }
            q = self.ready.wait(q).ok()?;
        }
    }

    fn close(&self) {
        if let Ok(mut q) = self.jobs.lock() {
            q.closed = true;
            self.ready.notify_all();
        }
    }
}

/// A block to compress: where its bytes are in the spool file. The queue holds no bytes, so it
/// can be as long as the read gets ahead of the worker.
struct Job {
    key: Key,
    offset: u64,
    len: usize,
}

/// Where one stored piece is, and what it was compressed from.
#[derive(Debug, Clone, Copy)]
struct Stored {
    offset: u64,
    len: usize,
    crc: u32,
    input: u64,
}

/// The pieces compressed so far, in one unlinked temporary file.
#[derive(Default)]
struct Pieces {
    file: Option<File>,
    end: u64,
    by_file: HashMap<Key, Vec<Stored>>,
}

/// The worker compressing large files' blocks while the layers are read.
pub struct Early {
    queue: Arc<Queue>,
    worker: Option<JoinHandle<()>>,
    pieces: Arc<Mutex<Pieces>>,
}

/// What [`Early::settle`] leaves: the pieces, by file and block.
#[derive(Default)]
pub struct Shelf {
    pieces: Pieces,
}

impl Early {
    /// A worker reading blocks from `spool` (the spool's file, where each offered block must
    /// already be written).
    pub fn start(spool: File) -> io::Result<Early> {
        let pieces = Arc::new(Mutex::new(Pieces {
            file: Some(tempfile::tempfile()?),
            ..Pieces::default()
        }));
        let queue = Arc::new(Queue::default());
        let worker = {
            let (pieces, queue) = (Arc::clone(&pieces), Arc::clone(&queue));
            std::thread::Builder::new()
                .name("early-gzip".into())
                .spawn(move || work(&spool, &queue, &pieces))?
        };
        Ok(Early {
            queue,
            worker: Some(worker),
            pieces,
        })
    }

    /// Queues the next block of `layer`'s `path`, `len` bytes at `offset` of the spool file (a
    /// file's blocks are offered in order, from its first, all with the same `likely`).
    pub fn offer(&self, likely: Likely, layer: usize, path: &str, offset: u64, len: usize) {
        let key = (layer, path.to_string());
        self.queue.push(likely, Job { key, offset, len });
    }

    /// Blocks stored so far (tests wait on it: the worker runs when it can).
    #[cfg(test)]
    pub fn stored(&self) -> usize {
        self.pieces
            .lock()
            .map(|p| p.by_file.values().map(Vec::len).sum())
            .unwrap_or(0)
    }

    /// Stops the worker once it has finished the block it is on and returns what it stored.
    /// Blocks still queued are left to the write: the queue is in order, so what is stored of
    /// each file is its first blocks.
    pub fn settle(mut self) -> Shelf {
        self.queue.close();
        if let Some(worker) = self.worker.take() {
            // What a panicked worker stored before is complete, so the shelf is still good.
            let _ = worker.join();
        }
        let pieces = match self.pieces.lock() {
            Ok(mut p) => std::mem::take(&mut *p),
            Err(_) => Pieces::default(),
        };
        Shelf { pieces }
    }
}

impl Drop for Early {
    fn drop(&mut self) {
        self.queue.close();
    }
}

fn work(spool: &File, queue: &Queue, pieces: &Mutex<Pieces>) {
    // SAFETY: setpriority on this thread's own id changes only this thread's nice value.
    unsafe {
        libc::setpriority(libc::PRIO_PROCESS, libc::gettid() as libc::id_t, NICE);
    }
    let mut blocks = BlockCompressor::new();
    let mut block = vec![0; BLOCK];
    while let Some(job) = queue.pop() {
        let Some(block) = block.get_mut(..job.len) else {
            return;
        };
        let piece = spool
            .read_exact_at(block, job.offset)
            .and_then(|()| blocks.piece(block, false));
        let stored = piece.and_then(|piece| match pieces.lock() {
            Ok(mut shelf) => shelf.store(job.key, &piece),
            Err(_) => Err(io::Error::other("the piece index is poisoned")),
        });
        if let Err(e) = stored {
            // Whatever is not stored is compressed by the write, to the same bytes.
            tracing::debug!(error = %e, "compressing a block during the read failed");
            return;
        }
    }
}

impl Pieces {
    fn store(&mut self, key: Key, piece: &Piece) -> io::Result<()> {
        let file = self
            .file
            .as_mut()
            .ok_or_else(|| io::Error::other("no piece file"))?;
        file.write_all(&piece.bytes)?;
        let stored = Stored {
            offset: self.end,
            len: piece.bytes.len(),
            crc: piece.crc.clone().finalize(),
            input: piece.len,
        };
        self.end += piece.bytes.len() as u64;
        self.by_file.entry(key).or_default().push(stored);
        Ok(())
    }
}

impl Shelf {
    /// Block `index` of `layer`'s `path`, compressed from `input` bytes, if it was stored.
    pub fn piece(
        &self,
        layer: usize,
        path: &str,
        index: usize,
        input: u64,
    ) -> io::Result<Option<Piece>> {
        let stored = self
            .pieces
            .by_file
            .get(&(layer, path.to_string()))
            .and_then(|s| s.get(index))
            .filter(|s| s.input == input);
        let (Some(stored), Some(file)) = (stored, &self.pieces.file) else {
            return Ok(None);
        };
        let mut bytes = vec![0; stored.len];
        file.read_exact_at(&mut bytes, stored.offset)?;
        Ok(Some(Piece {
            bytes,
            crc: Hasher::new_with_initial_len(stored.crc, stored.input),
            len: stored.input,
        }))
    }

    /// Blocks stored, over all files.
    pub fn blocks(&self) -> usize {
        self.pieces.by_file.values().map(Vec::len).sum()
    }
}

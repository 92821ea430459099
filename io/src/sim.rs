//! A simulated file system for crash and fault tests.
//!
//! Every file keeps two images: the bytes a reader sees now, and the bytes
//! that would survive a power cut (those covered by the last `sync_data`).
//! The directory likewise keeps its live names and the names that were
//! durable at the last `sync_dir`. [`SimFileSystem::crash`] builds the file
//! system a machine would find after losing power: durable names only, each
//! file's durable bytes plus a random prefix of its unsynced tail (a torn
//! write), sometimes zero-filled (a file extended but not written).
//!
//! Faults are armed through [`SimFileSystem::faults`]: fail the next write
//! or sync, fail the Nth IO call from now (once, or that one and every
//! later one, as a dying disk does), cap the disk's capacity, or cut the
//! power after N more mutating calls, after which every call fails as if
//! the machine were gone.
//!
//! A failed `sync_data` behaves as Linux's does: the error is reported
//! once, the dirty bytes it was to write stay readable (they are in the
//! page cache) but are dropped from the disk's point of view, so a later
//! `sync_data` succeeds without making them durable (they come back as
//! zeros after a crash).
//!
//! [`SimFileSystem::hold_syncs`] stops every `sync_data` at its start until
//! the returned [`SyncHold`] is dropped, and [`SimFileSystem::held_syncs`]
//! counts the calls stopped, so a test can put threads inside an fsync
//! (group commit) without relying on timing.

use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use parking_lot::{Condvar, Mutex};

use crate::fs::{DirLock, FileHandle, FileSystem, MapRegion};

/// Faults to inject. Each `fail_next_*` fires once.
#[derive(Clone, Debug, Default)]
pub struct Faults {
    /// The next `write_all_at` fails, writing nothing.
    pub fail_next_write: bool,
    /// The next `sync_data` fails; the unsynced bytes stay unsynced.
    pub fail_next_sync: bool,
    /// Total bytes all files may hold; a write past it writes what fits and
    /// fails with [`io::ErrorKind::StorageFull`].
    pub capacity: Option<u64>,
    /// After this many more mutating calls the power is cut: that call and
    /// every later one fails.
    pub power_cut_after: Option<u64>,
    /// Set once the power is cut.
    pub power_is_cut: bool,
    /// Every `sync_data` takes this long, like a real disk's flush.
    pub sync_delay: Option<std::time::Duration>,
    /// The IO call this many calls from now (0: the next one) fails, as
    /// does, if [`Faults::fail_persistently`], every call after it. Every
    /// call of a file or of the file system counts, reads included.
    pub fail_io_after: Option<u64>,
    /// Whether the call [`Faults::fail_io_after`] picks is only the first
    /// of the calls that fail.
    pub fail_persistently: bool,
}

#[derive(Debug, Default, Clone)]
struct Inode {
    data: Vec<u8>,
    durable: Vec<u8>,
    /// Whether bytes below `durable.len()` changed since the last sync (a
    /// truncation); then the next sync copies the whole file.
    rewritten: bool,
    /// Bytes a failed sync dropped (Linux marks the pages clean although
    /// they never reached the disk) and nothing wrote again since: the
    /// next sync that succeeds leaves zeros there on disk.
    lost: Vec<std::ops::Range<usize>>,
}

#[derive(Debug, Default)]
struct State {
    inodes: Vec<Inode>,
    names: BTreeMap<PathBuf, usize>,
    durable_names: BTreeMap<PathBuf, usize>,
    dirs: BTreeSet<PathBuf>,
    locks: BTreeSet<PathBuf>,
    faults: Faults,
    syncs: u64,
    /// Live [`SyncHold`]s; while any exists, `sync_data` blocks.
    holds: u64,
    /// `sync_data` calls blocked by a hold right now.
    held_syncs: u64,
    /// IO calls made so far.
    io_calls: u64,
}

impl State {
    fn used_bytes(&self) -> u64 {
        self.names.values().map(|&i| self.inodes[i].data.len() as u64).sum()
    }

    /// Counts one mutating call against a pending power cut.
    fn mutate(&mut self) -> io::Result<()> {
        if self.faults.power_is_cut {
            return Err(power_cut());
        }
        if let Some(left) = self.faults.power_cut_after.as_mut() {
            if *left == 0 {
                self.faults.power_is_cut = true;
                return Err(power_cut());
            }
            *left -= 1;
        }
        Ok(())
    }

    fn check_power(&self) -> io::Result<()> {
        if self.faults.power_is_cut { Err(power_cut()) } else { Ok(()) }
    }

    /// Counts one IO call (any call: reads too), and fails it if the power
    /// is cut or [`Faults::fail_io_after`] picks it.
    fn io_call(&mut self) -> io::Result<()> {
        self.check_power()?;
        self.io_calls += 1;
        match self.faults.fail_io_after.as_mut() {
            Some(0) => {
                if !self.faults.fail_persistently {
                    self.faults.fail_io_after = None;
                }
                Err(io::Error::other("simulated IO failure"))
            }
            Some(left) => {
                *left -= 1;
                Ok(())
            }
            None => Ok(()),
        }
    }

    /// Counts one mutating IO call, against the power cut as well.
    fn mutating_call(&mut self) -> io::Result<()> {
        self.mutate()?;
        self.io_call()
    }
}

fn power_cut() -> io::Error {
    io::Error::other("simulated power cut")
}

fn not_found(path: &Path) -> io::Error {
    io::Error::new(io::ErrorKind::NotFound, format!("{} does not exist", path.display()))
}

/// What a file system, its clones, its open files and its locks share.
#[derive(Debug, Default)]
struct Shared {
    state: Mutex<State>,
    /// Signalled when the last [`SyncHold`] is dropped.
    syncs_released: Condvar,
}

/// A file system in memory that can crash. Clones share the same files.
#[derive(Clone, Debug, Default)]
pub struct SimFileSystem {
    shared: Arc<Shared>,
}

impl SimFileSystem {
    /// An empty file system: no directories, no files, no faults armed.
    pub fn new() -> Self {
        Self::default()
    }

    /// Holds fsyncs: until the returned guard is dropped, every
    /// `sync_data` call (on any file of this file system or of its clones)
    /// blocks at its start, before it makes anything durable or counts
    /// against a power cut; once released it goes on as usual (faults
    /// included). [`Self::held_syncs`] tells how many calls are blocked.
    /// Holds nest: syncs resume when the last one is dropped.
    pub fn hold_syncs(&self) -> SyncHold {
        self.shared.state.lock().holds += 1;
        SyncHold { shared: self.shared.clone() }
    }

    /// How many `sync_data` calls are blocked by a [`SyncHold`] right now.
    pub fn held_syncs(&self) -> u64 {
        self.shared.state.lock().held_syncs
    }

    /// Arms or inspects faults.
    pub fn faults<R>(&self, f: impl FnOnce(&mut Faults) -> R) -> R {
        f(&mut self.shared.state.lock().faults)
    }

    /// How many `sync_data` calls succeeded.
    pub fn syncs(&self) -> u64 {
        self.shared.state.lock().syncs
    }

    /// How many IO calls (of files and of the file system, reads included)
    /// were made.
    pub fn io_calls(&self) -> u64 {
        self.shared.state.lock().io_calls
    }

    /// The live bytes of a file, if it exists.
    pub fn contents(&self, path: &Path) -> Option<Vec<u8>> {
        let state = self.shared.state.lock();
        state.names.get(path).map(|&i| state.inodes[i].data.clone())
    }

    /// Bytes written but not yet synced, over all files.
    pub fn unsynced_bytes(&self) -> u64 {
        let state = self.shared.state.lock();
        state
            .names
            .values()
            .map(|&i| (state.inodes[i].data.len() as u64).saturating_sub(state.inodes[i].durable.len() as u64))
            .sum()
    }

    /// A copy of the file system as it is now, every name and byte made
    /// durable: what a clean shutdown and a `sync` leave. Faults are not
    /// copied.
    pub fn copy(&self) -> SimFileSystem {
        let state = self.shared.state.lock();
        let mut inodes = Vec::new();
        let mut names = BTreeMap::new();
        for (path, &i) in &state.names {
            let data = state.inodes[i].data.clone();
            names.insert(path.clone(), inodes.len());
            inodes.push(Inode { durable: data.clone(), data, rewritten: false, lost: Vec::new() });
        }
        let state = State { inodes, durable_names: names.clone(), names, dirs: state.dirs.clone(), ..State::default() };
        SimFileSystem { shared: Arc::new(Shared { state: Mutex::new(state), ..Shared::default() }) }
    }

    /// The file system a restart after a power cut now would find.
    ///
    /// `seed` decides, per file, how much of the unsynced tail survives and
    /// whether the surviving part is the written bytes or zeros.
    pub fn crash(&self, seed: u64) -> SimFileSystem {
        let state = self.shared.state.lock();
        let mut rng = SplitMix64(seed);
        let mut inodes = Vec::new();
        let mut names = BTreeMap::new();
        for (path, &i) in &state.durable_names {
            let inode = &state.inodes[i];
            let mut data = inode.durable.clone();
            let appended_only = !inode.rewritten && inode.data.starts_with(&inode.durable);
            if appended_only && inode.data.len() > inode.durable.len() {
                let tail = &inode.data[inode.durable.len()..];
                let keep = (rng.next() % (tail.len() as u64 + 1)) as usize;
                if rng.next().is_multiple_of(4) {
                    data.resize(data.len() + keep, 0);
                } else {
                    data.extend_from_slice(&tail[..keep]);
                }
            }
            // What a failed sync dropped never reached the disk.
            for lost in &inode.lost {
                let end = lost.end.min(data.len());
                if lost.start < end {
                    data[lost.start..end].fill(0);
                }
            }
            names.insert(path.clone(), inodes.len());
            inodes.push(Inode { durable: data.clone(), data, rewritten: false, lost: Vec::new() });
        }
        let state = State { inodes, durable_names: names.clone(), names, dirs: state.dirs.clone(), ..State::default() };
        SimFileSystem { shared: Arc::new(Shared { state: Mutex::new(state), ..Shared::default() }) }
    }
}

/// Keeps fsyncs on a [`SimFileSystem`] blocked while it lives (see
/// [`SimFileSystem::hold_syncs`]); dropping it lets them run.
#[derive(Debug)]
#[must_use = "syncs are held only while the guard lives"]
pub struct SyncHold {
    shared: Arc<Shared>,
}

impl Drop for SyncHold {
    fn drop(&mut self) {
        let mut state = self.shared.state.lock();
        state.holds -= 1;
        if state.holds == 0 {
            self.shared.syncs_released.notify_all();
        }
    }
}

/// A tiny deterministic generator, so a crash image is a function of its seed.
struct SplitMix64(u64);

impl SplitMix64 {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

#[derive(Debug)]
struct SimFile {
    shared: Arc<Shared>,
    inode: usize,
}

/// A map of a simulated file: the bytes it held when it was mapped.
#[derive(Debug)]
struct SimMap {
    shared: Arc<Shared>,
    inode: usize,
    bytes: Vec<u8>,
}

impl MapRegion for SimMap {
    fn len(&self) -> usize {
        self.bytes.len()
    }

    fn slice(&self, start: usize, len: usize) -> &[u8] {
        let now = self.shared.state.lock().inodes[self.inode].data.len();
        assert!(
            start + len <= now,
            "simulated SIGBUS: a read through a map reaches byte {}, past the file's {now} bytes",
            start + len
        );
        &self.bytes[start..start + len]
    }

    fn resident(&self, _start: usize, _len: usize) -> bool {
        true
    }
}

impl FileHandle for SimFile {
    fn len(&self) -> io::Result<u64> {
        let mut state = self.shared.state.lock();
        state.io_call()?;
        Ok(state.inodes[self.inode].data.len() as u64)
    }

    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        let mut state = self.shared.state.lock();
        state.io_call()?;
        let data = &state.inodes[self.inode].data;
        let start = usize::try_from(offset).map_err(|_| io::ErrorKind::UnexpectedEof)?;
        let src = data.get(start..start + buf.len()).ok_or(io::ErrorKind::UnexpectedEof)?;
        buf.copy_from_slice(src);
        Ok(())
    }

    /// A copy of the file's bytes as they are now, read through the same
    /// map path as a real file's map. Like a real map it goes stale for
    /// nothing the engine reads (segment files only grow), and a view of
    /// bytes the file no longer holds panics as a real one would die of
    /// `SIGBUS`, so the crash and fault tests catch any such read.
    fn map(&self, len: usize) -> io::Result<Arc<dyn MapRegion>> {
        let mut state = self.shared.state.lock();
        state.io_call()?;
        let data = &state.inodes[self.inode].data;
        let bytes = data[..len.min(data.len())].to_vec();
        Ok(Arc::new(SimMap { shared: self.shared.clone(), inode: self.inode, bytes }))
    }

    fn write_all_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        let mut state = self.shared.state.lock();
        state.mutating_call()?;
        if std::mem::take(&mut state.faults.fail_next_write) {
            return Err(io::Error::other("simulated write failure"));
        }
        let start = offset as usize;
        let old_len = state.inodes[self.inode].data.len();
        let growth = (start + buf.len()).saturating_sub(old_len) as u64;
        let (written, full) = match state.faults.capacity {
            Some(cap) if state.used_bytes() + growth > cap => {
                let room = cap.saturating_sub(state.used_bytes()) as usize;
                let fits = (old_len + room).saturating_sub(start).min(buf.len());
                (fits, true)
            }
            _ => (buf.len(), false),
        };
        let inode = &mut state.inodes[self.inode];
        if start < inode.durable.len() {
            inode.rewritten = true;
        }
        // Written again: dirty pages, which the next sync writes.
        let written_range = start..start + written;
        inode.lost = std::mem::take(&mut inode.lost)
            .into_iter()
            .flat_map(|lost| {
                let before = lost.start..lost.end.min(written_range.start);
                let after = lost.start.max(written_range.end)..lost.end;
                [before, after]
            })
            .filter(|r| r.start < r.end)
            .collect();
        if inode.data.len() < start + written {
            inode.data.resize(start + written, 0);
        }
        inode.data[start..start + written].copy_from_slice(&buf[..written]);
        if full {
            return Err(io::Error::new(io::ErrorKind::StorageFull, "simulated full disk"));
        }
        Ok(())
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        let mut state = self.shared.state.lock();
        state.mutating_call()?;
        let inode = &mut state.inodes[self.inode];
        if (len as usize) < inode.durable.len() {
            inode.rewritten = true;
        }
        inode.data.resize(len as usize, 0);
        Ok(())
    }

    fn sync_data(&self) -> io::Result<()> {
        let mut state = self.shared.state.lock();
        if state.holds > 0 {
            state.held_syncs += 1;
            while state.holds > 0 {
                self.shared.syncs_released.wait(&mut state);
            }
            state.held_syncs -= 1;
        }
        let delay = state.faults.sync_delay;
        drop(state);
        if let Some(delay) = delay {
            std::thread::sleep(delay);
        }
        let mut state = self.shared.state.lock();
        state.mutate()?;
        let failed = match state.io_call() {
            Err(e) => Some(e),
            Ok(()) if std::mem::take(&mut state.faults.fail_next_sync) => {
                Some(io::Error::other("simulated fsync failure"))
            }
            Ok(()) => None,
        };
        let inode = &mut state.inodes[self.inode];
        if let Some(e) = failed {
            // Linux: the dirty pages are marked clean although they never
            // reached the disk, and the error is reported this once.
            let from = inode.durable.len();
            if from < inode.data.len() {
                inode.lost.push(from..inode.data.len());
            }
            return Err(e);
        }
        if inode.rewritten {
            inode.durable = inode.data.clone();
            inode.rewritten = false;
        } else {
            let synced = inode.durable.len();
            inode.durable.extend_from_slice(&inode.data[synced..]);
        }
        for lost in std::mem::take(&mut inode.lost) {
            let end = lost.end.min(inode.durable.len());
            if lost.start < end {
                inode.durable[lost.start..end].fill(0);
            }
        }
        state.syncs += 1;
        Ok(())
    }
}

struct SimLock {
    shared: Arc<Shared>,
    path: PathBuf,
}

impl Drop for SimLock {
    fn drop(&mut self) {
        self.shared.state.lock().locks.remove(&self.path);
    }
}

impl FileSystem for SimFileSystem {
    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        let mut state = self.shared.state.lock();
        state.io_call()?;
        state.dirs.insert(dir.to_path_buf());
        Ok(())
    }

    fn list(&self, dir: &Path) -> io::Result<Vec<String>> {
        let mut state = self.shared.state.lock();
        state.io_call()?;
        if !state.dirs.contains(dir) {
            return Err(not_found(dir));
        }
        Ok(state
            .names
            .keys()
            .filter(|p| p.parent() == Some(dir))
            .filter_map(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
            .collect())
    }

    fn open(&self, path: &Path) -> io::Result<Arc<dyn FileHandle>> {
        let mut state = self.shared.state.lock();
        state.io_call()?;
        let &inode = state.names.get(path).ok_or_else(|| not_found(path))?;
        Ok(Arc::new(SimFile { shared: self.shared.clone(), inode }))
    }

    fn create_new(&self, path: &Path) -> io::Result<Arc<dyn FileHandle>> {
        let mut state = self.shared.state.lock();
        state.mutating_call()?;
        if state.names.contains_key(path) {
            return Err(io::Error::new(io::ErrorKind::AlreadyExists, format!("{} exists", path.display())));
        }
        let inode = state.inodes.len();
        state.inodes.push(Inode::default());
        state.names.insert(path.to_path_buf(), inode);
        Ok(Arc::new(SimFile { shared: self.shared.clone(), inode }))
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        let mut state = self.shared.state.lock();
        state.mutating_call()?;
        let inode = state.names.remove(from).ok_or_else(|| not_found(from))?;
        state.names.insert(to.to_path_buf(), inode);
        Ok(())
    }

    fn remove(&self, path: &Path) -> io::Result<()> {
        let mut state = self.shared.state.lock();
        state.mutating_call()?;
        state.names.remove(path).map(drop).ok_or_else(|| not_found(path))
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        let mut state = self.shared.state.lock();
        state.mutating_call()?;
        let in_dir = |p: &PathBuf| p.parent() == Some(dir);
        state.durable_names.retain(|p, _| !in_dir(p));
        let live: Vec<_> = state.names.iter().filter(|(p, _)| in_dir(p)).map(|(p, &i)| (p.clone(), i)).collect();
        state.durable_names.extend(live);
        Ok(())
    }

    fn lock(&self, path: &Path) -> io::Result<DirLock> {
        let mut state = self.shared.state.lock();
        state.io_call()?;
        if !state.locks.insert(path.to_path_buf()) {
            return Err(io::Error::new(io::ErrorKind::WouldBlock, "locked"));
        }
        Ok(Box::new(SimLock { shared: self.shared.clone(), path: path.to_path_buf() }))
    }
}

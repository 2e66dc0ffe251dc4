//! The manifest directory source: every `*.yaml`, `*.yml` and `*.json` file of a directory,
//! exactly the manifests a user would `kubectl apply` (multi-document YAML and `kind: List`
//! accepted), watched live.
//!
//! Each file is parsed on its own. A file that fails to parse is reported with file, document
//! index and reason, and the objects of its last good version stay in effect. Services with a
//! selector and no hand-written EndpointSlice get slices derived from the directory's Pods
//! ([`derive`](super::derive)).
//!
//! One file may hold at most [`ManifestLimits`] bytes and objects (32 MiB and 50,000 objects by
//! default; `SVCNET_MANIFEST_MAX_BYTES`, `SVCNET_MANIFEST_MAX_OBJECTS`): parsing costs about 30
//! times a file's size in memory at its peak, so a 50 MB file of 400,000 Services took the
//! process to 1.7 GB. A file over a limit is refused like a bad file, naming it and the limit;
//! its last good version stays.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::time::{Duration, SystemTime};

use notify::Watcher;
use tokio::task::JoinHandle;

use super::derive::derive_endpoint_slices;
use super::{SourceError, SourceProblem, StatusHandle};

mod read;
use crate::cache::CacheWriter;
use crate::model::{ClusterObject, Kind, ObjectKey, Pod, Service, project};

/// How long to wait for a burst of file events to settle before rescanning.
const DEBOUNCE: Duration = Duration::from_millis(25);
/// Rescan period when no event arrives (covers file systems without inotify).
const FALLBACK_RESCAN: Duration = Duration::from_secs(5);
/// A file modified less than this long ago is read again at the next rescan even if its stamp
/// is unchanged (timestamps are only a few milliseconds fine on some file systems).
const RACY_WINDOW: Duration = Duration::from_secs(2);

/// The problem found in a manifest file: in one of its documents, or (over a
/// [`ManifestLimits`] limit) in the file as a whole.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}: {reason}", self.location())]
pub struct ManifestError {
    /// The file.
    pub file: PathBuf,
    /// Index of the document in the file (0-based; for `kind: List`, the List's document);
    /// `None` when the whole file is refused (over a size or object limit).
    pub document: Option<usize>,
    /// What is wrong.
    pub reason: String,
}

impl ManifestError {
    fn location(&self) -> String {
        match self.document {
            Some(d) => format!("{}: document {d}", self.file.display()),
            None => self.file.display().to_string(),
        }
    }

    fn to_problem(&self) -> SourceProblem {
        SourceProblem {
            location: self.location(),
            reason: self.reason.clone(),
        }
    }
}

/// Environment variable overriding [`ManifestLimits::max_file_bytes`].
pub(crate) const MAX_BYTES_ENV: &str = "SVCNET_MANIFEST_MAX_BYTES";
/// Environment variable overriding [`ManifestLimits::max_objects`].
pub(crate) const MAX_OBJECTS_ENV: &str = "SVCNET_MANIFEST_MAX_OBJECTS";

/// Caps on one manifest file, so one oversized file cannot take the agent's memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ManifestLimits {
    /// Largest file read, in bytes (checked before reading it).
    pub max_file_bytes: u64,
    /// Most objects (documents and `List` items, of any kind) in one file.
    pub max_objects: usize,
}

impl Default for ManifestLimits {
    /// 32 MiB and 50,000 objects: ten times the 10,000-Service benchmark cluster's largest
    /// file, and about 1 GB of peak parsing memory at the top.
    fn default() -> Self {
        ManifestLimits {
            max_file_bytes: 32 << 20,
            max_objects: 50_000,
        }
    }
}

impl ManifestLimits {
    /// The defaults, overridden by [`MAX_BYTES_ENV`] and [`MAX_OBJECTS_ENV`] as `lookup` (the
    /// environment) gives them. A value that is not a positive whole number is an error naming
    /// the variable.
    pub(crate) fn from_env(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, SourceError> {
        fn parse(
            variable: &'static str,
            value: Option<String>,
        ) -> Result<Option<u64>, SourceError> {
            let Some(value) = value else { return Ok(None) };
            match value.trim().parse::<u64>() {
                Ok(n) if n > 0 => Ok(Some(n)),
                _ => Err(SourceError::ManifestLimit {
                    variable,
                    value,
                    reason: "expected a whole number above 0".into(),
                }),
            }
        }
        let mut limits = ManifestLimits::default();
        if let Some(n) = parse(MAX_BYTES_ENV, lookup(MAX_BYTES_ENV))? {
            limits.max_file_bytes = n;
        }
        if let Some(n) = parse(MAX_OBJECTS_ENV, lookup(MAX_OBJECTS_ENV))? {
            limits.max_objects = usize::try_from(n).unwrap_or(usize::MAX);
        }
        Ok(limits)
    }

    fn size_error(&self, file: &Path, len: u64) -> ManifestError {
        ManifestError {
            file: file.to_path_buf(),
            document: None,
            reason: format!(
                "file is {len} bytes, over the limit of {} ({MAX_BYTES_ENV}); not read, its \
                 last good version stays",
                self.max_file_bytes
            ),
        }
    }
}

/// Whether `path` names a manifest file (by extension; hidden files are not manifests).
pub fn is_manifest(path: &Path) -> bool {
    let hidden = path
        .file_name()
        .and_then(|n| n.to_str())
        .is_none_or(|n| n.starts_with('.'));
    !hidden
        && matches!(
            path.extension().and_then(|e| e.to_str()),
            Some("yaml" | "yml" | "json")
        )
}

/// Splits YAML text into documents at `---` / `...` marker lines, with each document's first line.
fn yaml_documents(text: &str) -> Vec<(usize, String)> {
    let mut docs = Vec::new();
    let mut current = String::new();
    let mut start = 1;
    for (i, line) in text.lines().enumerate() {
        let is_marker =
            line == "---" || line.starts_with("--- ") || line.starts_with("---\t") || line == "...";
        if is_marker {
            docs.push((start, std::mem::take(&mut current)));
            start = i + 2;
            // `--- {inline}` starts a document on the marker line itself.
            if let Some(rest) = line.strip_prefix("--- ") {
                current.push_str(rest);
                current.push('\n');
                start = i + 1;
            }
        } else {
            current.push_str(line);
            current.push('\n');
        }
    }
    docs.push((start, current));
    docs
}

fn is_blank_yaml(doc: &str) -> bool {
    doc.lines().all(|l| {
        let t = l.trim();
        t.is_empty() || t.starts_with('#')
    })
}

/// One YAML document as a JSON value, as Kubernetes reads it: aliases expanded, `<<` merge keys
/// applied, a duplicate key in one mapping refused, non-string keys written out as text.
///
/// `serde_norway` (libyaml's parser) parses the manifests: 2.5× faster than `serde-saphyr` on a
/// directory of 10,000 Service files, most of a cold start from manifests (BENCHMARKS.md).
fn yaml_to_json(doc: &str) -> Result<serde_json::Value, serde_norway::Error> {
    let mut value: serde_norway::Value = serde_norway::from_str(doc)?;
    if doc.contains("<<") {
        value.apply_merge()?;
    }
    Ok(yaml_value_to_json(value))
}

fn yaml_value_to_json(value: serde_norway::Value) -> serde_json::Value {
    use serde_json::Value as Json;
    use serde_norway::Value as Yaml;
    match value {
        Yaml::Null => Json::Null,
        Yaml::Bool(b) => Json::Bool(b),
        Yaml::Number(n) => {
            if let Some(i) = n.as_i64() {
                Json::from(i)
            } else if let Some(u) = n.as_u64() {
                Json::from(u)
            } else {
                // NaN and the infinities have no JSON form.
                n.as_f64()
                    .and_then(serde_json::Number::from_f64)
                    .map_or(Json::Null, Json::Number)
            }
        }
        Yaml::String(s) => Json::String(s),
        Yaml::Sequence(items) => Json::Array(items.into_iter().map(yaml_value_to_json).collect()),
        Yaml::Mapping(map) => Json::Object(
            map.into_iter()
                .map(|(k, v)| {
                    let key = match k {
                        Yaml::String(s) => s,
                        other => match yaml_value_to_json(other) {
                            Json::String(s) => s,
                            json => json.to_string(),
                        },
                    };
                    (key, yaml_value_to_json(v))
                })
                .collect(),
        ),
        Yaml::Tagged(tagged) => yaml_value_to_json(tagged.value),
    }
}

/// Parses one manifest file's content into cluster objects (kinds the cache does not hold are
/// skipped). Any bad document rejects the whole file, so a half-edited file never applies.
/// No object limit: for tools; the watched directory uses [`parse_manifest_limited`].
pub fn parse_manifest(file: &Path, text: &str) -> Result<Vec<ClusterObject>, ManifestError> {
    parse_manifest_limited(file, text, usize::MAX)
}

/// [`parse_manifest`], refusing the file once it holds more than `max_objects` objects
/// (documents and `List` items, of any kind).
pub(crate) fn parse_manifest_limited(
    file: &Path,
    text: &str,
    max_objects: usize,
) -> Result<Vec<ClusterObject>, ManifestError> {
    let err = |document: usize, reason: String| ManifestError {
        file: file.to_path_buf(),
        document: Some(document),
        reason,
    };
    let mut count: usize = 0;
    let mut counted = |n: usize| {
        count = count.saturating_add(n);
        if count > max_objects {
            Err(ManifestError {
                file: file.to_path_buf(),
                document: None,
                reason: format!(
                    "more than {max_objects} objects in one file ({MAX_OBJECTS_ENV}); split \
                     it, its last good version stays"
                ),
            })
        } else {
            Ok(())
        }
    };
    let mut values = Vec::new();
    if file.extension().and_then(|e| e.to_str()) == Some("json") {
        let v: serde_json::Value =
            serde_json::from_str(text).map_err(|e| err(0, format!("invalid JSON: {e}")))?;
        counted(1)?;
        values.push((0, v));
    } else {
        let mut index = 0;
        for (first_line, doc) in yaml_documents(text) {
            if is_blank_yaml(&doc) {
                continue;
            }
            let v = yaml_to_json(&doc).map_err(|e| {
                err(
                    index,
                    format!("invalid YAML (document starts at line {first_line}): {e}"),
                )
            })?;
            if !v.is_null() {
                counted(1)?;
                values.push((index, v));
            }
            index += 1;
        }
    }
    let mut objects = Vec::new();
    for (index, value) in values {
        if !value.is_object() {
            return Err(err(
                index,
                "not a Kubernetes object (expected a mapping)".into(),
            ));
        }
        let kind = value.get("kind").and_then(|k| k.as_str()).unwrap_or("");
        if kind.is_empty() || value.get("apiVersion").and_then(|v| v.as_str()).is_none() {
            return Err(err(index, "missing apiVersion or kind".into()));
        }
        if kind == "List" || kind.ends_with("List") && value.get("items").is_some() {
            let items = match value {
                serde_json::Value::Object(mut map) => match map.remove("items") {
                    Some(serde_json::Value::Array(items)) => items,
                    _ => Vec::new(),
                },
                _ => Vec::new(),
            };
            // The List itself was counted as one document.
            counted(items.len().saturating_sub(1))?;
            for (j, item) in items.into_iter().enumerate() {
                match project::from_json(item) {
                    Ok(Some(o)) => objects.push(o),
                    Ok(None) => {}
                    Err(e) => return Err(err(index, format!("items[{j}]: {e}"))),
                }
            }
            continue;
        }
        match project::from_json(value) {
            Ok(Some(o)) => objects.push(o),
            Ok(None) => {}
            Err(e) => return Err(err(index, e.to_string())),
        }
    }
    Ok(objects)
}

/// The state of one file: its last good objects, and its current error if the latest version
/// is bad.
#[derive(Debug, Default)]
struct FileState {
    content_hash: Option<u64>,
    /// Size, modification time and inode when last read: a rescan skips reading a file whose
    /// stamp has not changed.
    stamp: Option<FileStamp>,
    /// Shared with the cache, not copied.
    objects: Vec<ClusterObject>,
    error: Option<ManifestError>,
}

/// The parsed contents of a manifest directory: a pure model that [`spawn`] keeps in step with
/// the files and tests drive directly.
#[derive(Debug, Default)]
pub(crate) struct ManifestSet {
    files: BTreeMap<PathBuf, FileState>,
    limits: ManifestLimits,
}

fn hash(bytes: &[u8]) -> u64 {
    use std::hash::BuildHasher;
    // Fixed seed: the same content always hashes the same within a process.
    foldhash::quality::FixedState::with_seed(0x5eed).hash_one(bytes)
}

/// What `stat` says about a file (following symlinks, so a ConfigMap-style `..data` swap shows
/// as a different inode): if none of it changed, neither did the content.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FileStamp {
    len: u64,
    modified: Option<std::time::SystemTime>,
    inode: u64,
    device: u64,
}

impl FileStamp {
    fn of(meta: &std::fs::Metadata) -> Self {
        use std::os::unix::fs::MetadataExt;
        FileStamp {
            len: meta.len(),
            modified: meta.modified().ok(),
            inode: meta.ino(),
            device: meta.dev(),
        }
    }
}

impl ManifestSet {
    /// An empty set whose files are held to `limits`.
    pub(crate) fn with_limits(limits: ManifestLimits) -> Self {
        ManifestSet {
            files: BTreeMap::new(),
            limits,
        }
    }

    /// Records that `file` is over the size limit (`len` bytes) without reading it: its last
    /// good objects stay. Returns whether its reported problem changed.
    fn refuse_oversized(&mut self, file: &Path, len: u64) -> bool {
        let error = self.limits.size_error(file, len);
        let state = self.files.entry(file.to_path_buf()).or_default();
        // Read again in full once it is back under the limit, even with the old content.
        state.content_hash = None;
        if state.error.as_ref() == Some(&error) {
            return false;
        }
        tracing::warn!(error = %error, "manifest refused; keeping its last good version");
        state.error = Some(error);
        true
    }

    /// Records the current content of `file`. Returns whether anything changed. A bad version
    /// (or one over the [`ManifestLimits`]) keeps the previous objects of that file and records
    /// the error.
    pub(crate) fn update_file(&mut self, file: &Path, text: &str) -> bool {
        if text.len() as u64 > self.limits.max_file_bytes {
            return self.refuse_oversized(file, text.len() as u64);
        }
        let h = hash(text.as_bytes());
        if self.files.get(file).and_then(|f| f.content_hash) == Some(h) {
            return false;
        }
        let parsed = parse_manifest_limited(file, text, self.limits.max_objects);
        self.store(file, h, parsed)
    }

    /// Records a new content of `file` (hash `h`) parsed into `parsed`; returns true (it
    /// changed).
    fn store(
        &mut self,
        file: &Path,
        h: u64,
        parsed: Result<Vec<ClusterObject>, ManifestError>,
    ) -> bool {
        let state = self.files.entry(file.to_path_buf()).or_default();
        state.content_hash = Some(h);
        match parsed {
            Ok(mut objects) => {
                // Kept for as long as the file is known: no spare capacity.
                objects.shrink_to_fit();
                state.objects = objects;
                state.error = None;
            }
            Err(e) => {
                tracing::warn!(error = %e, "manifest rejected; keeping its last good version");
                state.error = Some(e);
            }
        }
        true
    }

    /// Takes files the set has not seen yet, read with their stamps at about `now`, parsing
    /// them on up to `workers` threads; each is then recorded in order, as
    /// [`take_content`](Self::take_content) would have (same objects, errors and log lines).
    /// Returns whether anything changed.
    fn take_new_files(&mut self, files: Vec<ReadFile>, workers: usize, now: SystemTime) -> bool {
        let limits = self.limits;
        let prepared = parse_in_parallel(&files, workers, |f| Prepared::of(f, &limits));
        let mut changed = false;
        for (f, prepared) in files.into_iter().zip(prepared) {
            changed |= match prepared {
                Prepared::Oversized(len) => self.refuse_oversized(&f.path, len),
                Prepared::Parsed(h, parsed) => self.store(&f.path, h, parsed),
            };
            self.settle(&f.path, f.stamp, now);
        }
        changed
    }

    /// Whether `file` was last read with this stamp (so reading it again is pointless).
    fn is_current(&self, file: &Path, stamp: &FileStamp) -> bool {
        self.files
            .get(file)
            .is_some_and(|f| f.stamp.as_ref() == Some(stamp))
    }

    /// Records the stamp `file` had when it was read.
    fn set_stamp(&mut self, file: &Path, stamp: FileStamp) {
        if let Some(f) = self.files.get_mut(file) {
            f.stamp = Some(stamp);
        }
    }

    /// Takes the content `bytes` of `file`, read with `stamp` at about `now`; returns whether
    /// anything changed.
    ///
    /// An empty file that had content is taken as a write in progress (an in-place save
    /// truncates first), as kubelet's file source treats an empty manifest as an error: its
    /// last good version is kept until the file has content again or is deleted.
    fn take_content(
        &mut self,
        file: &Path,
        stamp: FileStamp,
        bytes: &[u8],
        now: SystemTime,
    ) -> bool {
        let changed = if bytes.is_empty() && self.files.contains_key(file) {
            tracing::warn!(
                file = %file.display(),
                "manifest file is empty; keeping its last good version (delete the file to remove its objects)"
            );
            false
        } else {
            self.update_file(file, &String::from_utf8_lossy(bytes))
        };
        self.settle(file, stamp, now);
        changed
    }

    /// Records the `stamp` `file` was read with at about `now`, unless it was modified in the
    /// last moments. Like git's "racy clean" rule: such a file could be written again within
    /// the same timestamp tick, so it is read again next time.
    fn settle(&mut self, file: &Path, stamp: FileStamp, now: SystemTime) {
        let settled = stamp
            .modified
            .and_then(|m| now.duration_since(m).ok())
            .is_some_and(|age| age > RACY_WINDOW);
        if settled {
            self.set_stamp(file, stamp);
        }
    }

    /// Forgets a deleted file and its objects. Returns whether it was known.
    pub(crate) fn remove_file(&mut self, file: &Path) -> bool {
        self.files.remove(file).is_some()
    }

    /// Files currently known.
    pub(crate) fn files(&self) -> impl Iterator<Item = &Path> {
        self.files.keys().map(PathBuf::as_path)
    }

    /// Current problems: bad files, and objects defined in more than one file.
    pub fn problems(&self) -> Vec<SourceProblem> {
        let mut problems: Vec<SourceProblem> = self
            .files
            .values()
            .filter_map(|f| f.error.as_ref().map(ManifestError::to_problem))
            .collect();
        let mut seen: BTreeMap<(Kind, ObjectKey), &Path> = BTreeMap::new();
        for (path, state) in &self.files {
            for o in &state.objects {
                if let Some(first) = seen.insert((o.kind(), o.key()), path) {
                    problems.push(SourceProblem {
                        location: path.display().to_string(),
                        reason: format!(
                            "{} {} is also defined in {}; this file's version wins",
                            o.kind(),
                            o.key(),
                            first.display()
                        ),
                    });
                }
            }
        }
        problems
    }

    /// Every object in effect, by kind: the files' objects (later files win on duplicates) plus
    /// EndpointSlices derived from Pods for selector services without hand-written slices.
    pub(crate) fn objects(&self) -> BTreeMap<Kind, Vec<ClusterObject>> {
        let mut by_key: BTreeMap<(Kind, ObjectKey), &ClusterObject> = BTreeMap::new();
        for state in self.files.values() {
            for o in &state.objects {
                by_key.insert((o.kind(), o.key()), o);
            }
        }
        let mut out: BTreeMap<Kind, Vec<ClusterObject>> = BTreeMap::new();
        let mut services: Vec<&Service> = Vec::new();
        let mut pods: Vec<&Pod> = Vec::new();
        let mut handwritten: HashSet<ObjectKey> = HashSet::new();
        for ((kind, _), o) in &by_key {
            match o {
                ClusterObject::Service(s) => services.push(s),
                ClusterObject::Pod(p) => pods.push(p),
                ClusterObject::EndpointSlice(s) => {
                    if let Some(k) = s.service_key() {
                        handwritten.insert(k);
                    }
                }
                ClusterObject::Node(_) => {}
            }
            out.entry(*kind).or_default().push((*o).clone());
        }
        let derived = derive_endpoint_slices(services, &pods, &handwritten);
        out.entry(Kind::EndpointSlice)
            .or_default()
            .extend(derived.into_iter().map(ClusterObject::from));
        out
    }

    /// Publishes the objects of the watched `kinds` to the cache as one generation.
    pub(crate) fn publish(&self, kinds: &[Kind], writer: &mut CacheWriter) -> u64 {
        let mut objects = self.objects();
        writer.update(|tx| {
            for kind in kinds {
                tx.replace_kind(*kind, objects.remove(kind).unwrap_or_default());
            }
        })
    }
}

/// A new file as read, waiting to be parsed.
struct ReadFile {
    path: PathBuf,
    stamp: FileStamp,
    bytes: Vec<u8>,
}

/// A new file's content made ready for the set off its thread: hashed and parsed, or too big.
enum Prepared {
    Oversized(u64),
    Parsed(u64, Result<Vec<ClusterObject>, ManifestError>),
}

impl Prepared {
    fn of(file: &ReadFile, limits: &ManifestLimits) -> Self {
        if file.bytes.len() as u64 > limits.max_file_bytes {
            return Prepared::Oversized(file.bytes.len() as u64);
        }
        let text = String::from_utf8_lossy(&file.bytes);
        Prepared::Parsed(
            hash(text.as_bytes()),
            parse_manifest_limited(&file.path, &text, limits.max_objects),
        )
    }
}

/// New files parsed together (a cold start's 10,000 in ten rounds): enough per round to keep
/// the threads busy, few enough that the copies of their content stay small.
const PARSE_ROUND: usize = 1024;
/// At most this many parsing threads (YAML parsing is most of a cold start from manifests).
const MAX_PARSE_THREADS: usize = 8;

/// Threads to parse new files on: the CPUs this process may use (its cgroup's quota counts),
/// at most [`MAX_PARSE_THREADS`]; 1 parses on the calling thread.
fn parse_workers() -> usize {
    std::thread::available_parallelism()
        .map_or(1, std::num::NonZero::get)
        .min(MAX_PARSE_THREADS)
}

/// `f` of every item, in order, computed on up to `workers` scoped threads over contiguous
/// chunks (on the calling thread where one worker, one item, or a thread cannot be started).
fn parse_in_parallel<T: Sync, R: Send>(
    items: &[T],
    workers: usize,
    f: impl Fn(&T) -> R + Sync,
) -> Vec<R> {
    if workers <= 1 || items.len() <= 1 {
        return items.iter().map(&f).collect();
    }
    let chunk = items.len().div_ceil(workers);
    let f = &f;
    std::thread::scope(|scope| {
        let running: Vec<_> = items
            .chunks(chunk)
            .map(|part| {
                let started = std::thread::Builder::new()
                    .name("manifest-parse".into())
                    .spawn_scoped(scope, move || part.iter().map(f).collect::<Vec<R>>());
                (part, started)
            })
            .collect();
        let mut out = Vec::with_capacity(items.len());
        for (part, started) in running {
            match started {
                Ok(handle) => match handle.join() {
                    Ok(results) => out.extend(results),
                    Err(panic) => std::panic::resume_unwind(panic),
                },
                Err(_) => out.extend(part.iter().map(f)),
            }
        }
        out
    })
}

/// Reads the directory's manifest files into `set`; returns whether anything changed.
fn rescan(dir: &Path, set: &mut ManifestSet) -> Result<bool, std::io::Error> {
    let mut present = Vec::new();
    let mut changed = false;
    // One clock read per rescan (in a user-mode-linux guest every system call counts).
    let now = SystemTime::now();
    let max_len = set.limits.max_file_bytes;
    // Files not read before are read together at the end (a cold start reads them all: in
    // batches through io_uring where the kernel has it). A known one is stat'ed first and read
    // only when it changed.
    let mut new_files = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if !is_manifest(&path) {
            continue;
        }
        if !set.files.contains_key(&path) {
            new_files.push(path);
            continue;
        }
        let stamp = match std::fs::metadata(&path) {
            Ok(meta) if meta.is_file() => FileStamp::of(&meta),
            _ => continue,
        };
        if set.is_current(&path, &stamp) {
            present.push(path);
            continue;
        }
        if stamp.len > max_len {
            changed |= set.refuse_oversized(&path, stamp.len);
            present.push(path);
            continue;
        }
        match std::fs::read(&path) {
            Ok(bytes) => changed |= set.take_content(&path, stamp, &bytes, now),
            // Gone between listing and reading (an editor's rename): the next event rescans.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => tracing::warn!(file = %path.display(), error = %e, "cannot read manifest"),
        }
        present.push(path);
    }
    // With more than one CPU, new files are parsed on several threads, a round at a time.
    let workers = parse_workers();
    let mut unparsed: Vec<ReadFile> = Vec::new();
    let stats = read::read_files(&new_files, max_len, true, |path, outcome| {
        match outcome {
            read::Outcome::Read(stamp, bytes) if workers > 1 => {
                unparsed.push(ReadFile {
                    path: path.to_path_buf(),
                    stamp,
                    bytes: bytes.to_vec(),
                });
                if unparsed.len() >= PARSE_ROUND {
                    changed |= set.take_new_files(std::mem::take(&mut unparsed), workers, now);
                }
            }
            read::Outcome::Read(stamp, bytes) => {
                changed |= set.take_content(path, stamp, bytes, now);
            }
            read::Outcome::Oversized(stamp) => changed |= set.refuse_oversized(path, stamp.len),
            read::Outcome::NotRegular => return,
            read::Outcome::Failed(e) if e.kind() == std::io::ErrorKind::NotFound => return,
            read::Outcome::Failed(e) => {
                tracing::warn!(file = %path.display(), error = %e, "cannot read manifest");
            }
        }
        present.push(path.to_path_buf());
    });
    changed |= set.take_new_files(unparsed, workers, now);
    if !new_files.is_empty() {
        tracing::debug!(
            files = new_files.len(),
            through_io_uring = stats.ring,
            one_at_a_time = stats.direct,
            "read new manifest files"
        );
    }
    let present: HashSet<PathBuf> = present.into_iter().collect();
    let gone: Vec<PathBuf> = set
        .files()
        .filter(|f| !present.contains(*f))
        .map(Path::to_path_buf)
        .collect();
    for f in gone {
        changed |= set.remove_file(&f);
    }
    Ok(changed)
}

struct StopOnDrop(Arc<AtomicBool>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

/// Loads `dir` once (publishing synced), then watches it on a dedicated thread: adding,
/// editing or deleting a file, or a ConfigMap-style `..data` symlink swap, republishes.
/// The returned task stops the watcher when aborted.
pub(crate) fn spawn(
    dir: PathBuf,
    kinds: Vec<Kind>,
    mut writer: CacheWriter,
    status: StatusHandle,
) -> Result<JoinHandle<()>, SourceError> {
    let mut set = ManifestSet::with_limits(ManifestLimits::from_env(|k| std::env::var(k).ok())?);
    rescan(&dir, &mut set).map_err(|source| SourceError::ManifestDir {
        path: dir.clone(),
        source,
    })?;
    set.publish(&kinds, &mut writer);
    status.update(|s| {
        s.problems = set.problems();
        s.resyncs += 1;
    });

    let (tx, rx) = mpsc::channel::<()>();
    let mut watcher = notify::recommended_watcher(move |_res: notify::Result<notify::Event>| {
        let _ = tx.send(());
    })
    .map_err(|source| SourceError::Watch {
        path: dir.clone(),
        source,
    })?;
    watcher
        .watch(&dir, notify::RecursiveMode::NonRecursive)
        .map_err(|source| SourceError::Watch {
            path: dir.clone(),
            source,
        })?;

    let stop = Arc::new(AtomicBool::new(false));
    let stop_thread = stop.clone();
    std::thread::Builder::new()
        .name("svcnet-manifests".into())
        .spawn(move || {
            let _watcher = watcher;
            while !stop_thread.load(Ordering::SeqCst) {
                match rx.recv_timeout(FALLBACK_RESCAN) {
                    Ok(()) => {
                        // Let a burst of events (editor save, symlink swap) settle.
                        std::thread::sleep(DEBOUNCE);
                        while rx.try_recv().is_ok() {}
                    }
                    Err(mpsc::RecvTimeoutError::Timeout) => {}
                    Err(mpsc::RecvTimeoutError::Disconnected) => break,
                }
                if stop_thread.load(Ordering::SeqCst) {
                    break;
                }
                match rescan(&dir, &mut set) {
                    Ok(true) => {
                        let generation = set.publish(&kinds, &mut writer);
                        tracing::info!(dir = %dir.display(), generation, "manifests reloaded");
                        status.update(|s| {
                            s.problems = set.problems();
                            s.resyncs += 1;
                            s.events += 1;
                        });
                    }
                    Ok(false) => {}
                    Err(e) => {
                        tracing::warn!(dir = %dir.display(), error = %e, "cannot read manifest directory; keeping last state");
                        status.update(|s| {
                            s.problems = vec![SourceProblem {
                                location: dir.display().to_string(),
                                reason: e.to_string(),
                            }];
                        });
                    }
                }
            }
        })
        .map_err(|source| SourceError::ManifestDir {
            path: PathBuf::from("<thread>"),
            source,
        })?;
    Ok(tokio::spawn(async move {
        let _stop = StopOnDrop(stop);
        std::future::pending::<()>().await
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn whole_files_are_read_whatever_their_stat_said() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f.yaml");
        std::fs::write(&path, "0123456789").unwrap();
        for (stat_len, what) in [
            (10, "as stat'ed"),
            (4, "grown since"),
            (25, "shrunk since"),
            (0, "empty by stat"),
        ] {
            let mut file = std::fs::File::open(&path).unwrap();
            assert_eq!(
                read::read_whole(&mut file, stat_len).unwrap(),
                b"0123456789",
                "{what}"
            );
        }
        std::fs::write(&path, "").unwrap();
        let mut file = std::fs::File::open(&path).unwrap();
        assert!(read::read_whole(&mut file, 0).unwrap().is_empty());
    }

    #[test]
    fn splits_documents_and_reports_the_bad_one() {
        let text = "# leading comment\n---\napiVersion: v1\nkind: Service\nmetadata: {name: a, namespace: ns}\nspec: {clusterIP: 10.0.0.1, ports: [{port: 80}]}\n---\n---\napiVersion: v1\nkind: Service\nmetadata: {name: b}\nspec: {clusterIP: nope}\n";
        let err = parse_manifest(Path::new("x.yaml"), text).unwrap_err();
        assert_eq!(err.document, Some(1), "{err}");
        assert!(err.reason.contains("spec.clusterIPs[0]"), "{err}");
        assert!(
            err.to_string()
                .starts_with("x.yaml: document 1: Service default/b"),
            "{err}"
        );
        let good = text.replace("nope", "10.0.0.2");
        assert_eq!(parse_manifest(Path::new("x.yaml"), &good).unwrap().len(), 2);
    }

    #[test]
    fn yaml_reads_as_kubernetes_does() {
        // Anchors, aliases and `<<` merge keys (explicit keys win over merged ones).
        let merged = yaml_to_json(
            "base: &b {port: 80, protocol: TCP}\nport:\n  <<: *b\n  port: 8080\n  name: http\n",
        )
        .unwrap();
        assert_eq!(
            merged["port"],
            serde_json::json!({"port": 8080, "protocol": "TCP", "name": "http"})
        );
        // Scalars as YAML 1.2 types them; non-string keys become their text.
        let scalars =
            yaml_to_json("a: yes\nb: true\nc: 017\nd: 0x1F\ne: ~\nf: '80'\ng: 1.5\n1: one\n")
                .unwrap();
        assert_eq!(
            scalars,
            serde_json::json!({"a": "yes", "b": true, "c": "017", "d": 31, "e": null, "f": "80",
                "g": 1.5, "1": "one"})
        );
        // A key given twice in one mapping is an error, as kubectl's strict decoding says.
        let err = yaml_to_json("metadata:\n  name: a\n  name: b\n").unwrap_err();
        assert!(err.to_string().contains("duplicate"), "{err}");
        // A syntax error names the line (counted in the document).
        let err = parse_manifest(
            Path::new("bad.yaml"),
            "apiVersion: v1\nkind: Service\n---\napiVersion: v1\nkind: [unclosed\n",
        )
        .unwrap_err();
        assert_eq!(err.document, Some(1), "{err}");
        assert!(err.reason.contains("document starts at line 4"), "{err}");
        assert!(err.reason.contains("line 3"), "{err}");
    }

    #[test]
    fn lists_json_and_syntax_errors() {
        let list = r#"{"apiVersion": "v1", "kind": "List", "items": [
            {"apiVersion": "v1", "kind": "Node", "metadata": {"name": "n1"}},
            {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d"}}]}"#;
        let objs = parse_manifest(Path::new("l.json"), list).unwrap();
        assert_eq!(objs.len(), 1);
        let err =
            parse_manifest(Path::new("bad.yaml"), "apiVersion: v1\nkind: [unclosed\n").unwrap_err();
        assert_eq!(err.document, Some(0));
        assert!(err.reason.contains("invalid YAML"), "{err}");
        let err = parse_manifest(Path::new("bad.yaml"), "just a string\n").unwrap_err();
        assert!(err.reason.contains("expected a mapping"), "{err}");
    }

    #[test]
    fn an_emptied_file_keeps_its_last_good_version_until_it_has_content_or_is_deleted() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("svc.yaml");
        let svc = "apiVersion: v1\nkind: Service\nmetadata: {name: a, namespace: ns}\nspec: {clusterIP: 10.0.0.1}\n";
        std::fs::write(&path, svc).unwrap();
        let mut set = ManifestSet::default();
        assert!(rescan(dir.path(), &mut set).unwrap());
        let objects = |set: &ManifestSet| set.files[&path].objects.len();
        assert_eq!(objects(&set), 1);
        // Truncated by an in-place save, not yet written: nothing changes.
        std::fs::write(&path, "").unwrap();
        assert!(!rescan(dir.path(), &mut set).unwrap());
        assert_eq!(objects(&set), 1);
        // Written with broken content: rejected, last good version kept.
        std::fs::write(&path, "apiVersion: v1\nkind: Service\nmetadata: [oops\n").unwrap();
        rescan(dir.path(), &mut set).unwrap();
        assert_eq!(objects(&set), 1);
        assert_eq!(set.problems().len(), 1);
        // Deleted: its objects go.
        std::fs::remove_file(&path).unwrap();
        assert!(rescan(dir.path(), &mut set).unwrap());
        assert!(!set.files.contains_key(&path));
        // A new file that starts empty is just an empty file.
        std::fs::write(&path, "").unwrap();
        rescan(dir.path(), &mut set).unwrap();
        assert_eq!(objects(&set), 0);
    }

    #[test]
    fn rescan_rereads_only_files_whose_stamp_changed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("svc.yaml");
        let svc = |ip: &str| {
            format!(
                "apiVersion: v1\nkind: Service\nmetadata: {{name: a, namespace: ns}}\nspec: {{clusterIP: {ip}}}\n"
            )
        };
        let age = |p: &Path, secs: u64| {
            let old = std::time::SystemTime::now() - Duration::from_secs(secs);
            std::fs::File::options()
                .write(true)
                .open(p)
                .unwrap()
                .set_modified(old)
                .unwrap();
        };
        std::fs::write(&path, svc("10.0.0.1")).unwrap();
        let mut set = ManifestSet::default();
        // Just written: inside the racy window, so no stamp is kept and it is read again.
        assert!(rescan(dir.path(), &mut set).unwrap());
        assert!(set.files[&path].stamp.is_none());
        age(&path, 60);
        assert!(!rescan(dir.path(), &mut set).unwrap(), "same content");
        assert!(set.files[&path].stamp.is_some(), "settled file is stamped");
        // Same size, new content, new mtime: read again.
        std::fs::write(&path, svc("10.0.0.2")).unwrap();
        age(&path, 30);
        assert!(rescan(dir.path(), &mut set).unwrap());
        let ips: Vec<String> = set.objects()[&Kind::Service]
            .iter()
            .map(|o| match o {
                ClusterObject::Service(s) => s.cluster_ips[0].to_string(),
                _ => unreachable!(),
            })
            .collect();
        assert_eq!(ips, ["10.0.0.2"]);
        std::fs::remove_file(&path).unwrap();
        assert!(rescan(dir.path(), &mut set).unwrap());
        assert!(set.files.is_empty());
    }

    #[test]
    fn bad_edit_keeps_last_good_version() {
        let mut set = ManifestSet::default();
        let f = Path::new("/m/svc.yaml");
        let good = "apiVersion: v1\nkind: Service\nmetadata: {name: a, namespace: ns}\nspec: {clusterIP: 10.0.0.1}\n";
        assert!(set.update_file(f, good));
        assert!(!set.update_file(f, good), "same content is not a change");
        assert!(set.update_file(f, "apiVersion: v1\nkind: Service\nmetadata: {name: a\n"));
        assert_eq!(set.objects()[&Kind::Service].len(), 1);
        assert_eq!(set.problems().len(), 1);
        assert!(set.problems()[0].location.contains("svc.yaml: document 0"));
        assert!(set.remove_file(f));
        assert!(!set.objects().contains_key(&Kind::Service));
        assert!(set.problems().is_empty());
    }
    fn services(n: usize) -> String {
        (0..n)
            .map(|i| {
                format!(
                    "---\napiVersion: v1\nkind: Service\nmetadata: {{name: s{i}, namespace: ns}}\nspec: {{clusterIP: 10.0.0.{}}}\n",
                    i + 1
                )
            })
            .collect()
    }

    fn service_names(set: &ManifestSet) -> Vec<String> {
        set.objects()
            .get(&Kind::Service)
            .into_iter()
            .flatten()
            .map(|o| o.key().name.to_string())
            .collect()
    }

    #[test]
    fn files_over_the_object_limit_are_refused_keeping_the_last_good_version() {
        let limits = ManifestLimits {
            max_file_bytes: 1 << 20,
            max_objects: 2,
        };
        let mut set = ManifestSet::with_limits(limits);
        let f = Path::new("/m/big.yaml");
        assert!(set.update_file(f, &services(2)));
        assert_eq!(service_names(&set), ["s0", "s1"]);
        assert!(set.update_file(f, &services(3)));
        assert_eq!(service_names(&set), ["s0", "s1"], "last good version stays");
        let problems = set.problems();
        assert_eq!(problems.len(), 1);
        assert_eq!(problems[0].location, "/m/big.yaml");
        assert!(
            problems[0]
                .reason
                .starts_with("more than 2 objects in one file (SVCNET_MANIFEST_MAX_OBJECTS)"),
            "{problems:?}"
        );
        // `List` items count one by one, whatever their kind.
        let list = r#"{"apiVersion": "v1", "kind": "List", "items": [
            {"apiVersion": "v1", "kind": "Node", "metadata": {"name": "n1"}},
            {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}},
            {"apiVersion": "v1", "kind": "Node", "metadata": {"name": "n2"}}]}"#;
        let err = parse_manifest_limited(Path::new("l.json"), list, 2).unwrap_err();
        assert_eq!(err.document, None);
        assert!(
            err.to_string().starts_with("l.json: more than 2 objects"),
            "{err}"
        );
        assert_eq!(
            parse_manifest_limited(Path::new("l.json"), list, 3)
                .unwrap()
                .len(),
            2
        );
        // Back under the limit: applies again.
        assert!(set.update_file(f, &services(1)));
        assert_eq!(service_names(&set), ["s0"]);
        assert!(set.problems().is_empty());
    }

    #[test]
    fn files_over_the_size_limit_are_not_read() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cluster.yaml");
        let small = services(1);
        let limits = ManifestLimits {
            max_file_bytes: small.len() as u64 + 10,
            max_objects: 1000,
        };
        let mut set = ManifestSet::with_limits(limits);
        std::fs::write(&path, &small).unwrap();
        assert!(rescan(dir.path(), &mut set).unwrap());
        assert_eq!(service_names(&set), ["s0"]);

        std::fs::write(&path, services(5)).unwrap();
        assert!(
            rescan(dir.path(), &mut set).unwrap(),
            "the refusal is a change"
        );
        assert_eq!(service_names(&set), ["s0"], "last good version stays");
        let problems = set.problems();
        assert_eq!(problems.len(), 1);
        assert_eq!(problems[0].location, path.display().to_string());
        assert!(
            problems[0].reason.contains(&format!(
                "over the limit of {} (SVCNET_MANIFEST_MAX_BYTES)",
                limits.max_file_bytes
            )),
            "{problems:?}"
        );
        assert!(
            !rescan(dir.path(), &mut set).unwrap(),
            "same refusal, no change"
        );
        // The same content as the last good version, once under the limit, clears the problem.
        std::fs::write(&path, &small).unwrap();
        assert!(rescan(dir.path(), &mut set).unwrap());
        assert_eq!(service_names(&set), ["s0"]);
        assert!(set.problems().is_empty());
        // update_file applies the size limit too.
        assert!(set.update_file(&path, &services(5)));
        assert_eq!(service_names(&set), ["s0"]);
        assert_eq!(set.problems().len(), 1);
    }

    #[test]
    fn new_files_parsed_on_threads_are_taken_as_one_at_a_time() {
        let limits = ManifestLimits {
            max_file_bytes: 4096,
            max_objects: 5,
        };
        let now = SystemTime::now();
        let old = now - Duration::from_secs(60);
        let mut files: Vec<ReadFile> = (0..40)
            .map(|i| ReadFile {
                path: PathBuf::from(format!("/m/f{i:02}.yaml")),
                stamp: FileStamp {
                    len: 0,
                    // Every third one was modified just now: read again at the next rescan.
                    modified: Some(if i % 3 == 0 { now } else { old }),
                    inode: i,
                    device: 1,
                },
                bytes: services(i as usize % 4 + 1)
                    .replace("name: s", &format!("name: f{i}-s"))
                    .into_bytes(),
            })
            .collect();
        files[7].bytes = b"apiVersion: v1\nkind: Service\nmetadata: [unclosed\n".to_vec();
        files[19].bytes = services(6).into_bytes(); // over the object limit
        files[23].bytes = services(60).into_bytes(); // over the size limit
        files[31].bytes = Vec::new(); // empty: no objects
        let mut one_at_a_time = ManifestSet::with_limits(limits);
        for f in &files {
            one_at_a_time.take_content(&f.path, f.stamp, &f.bytes, now);
        }
        for workers in [1, 3, 8, 64] {
            let copy = files
                .iter()
                .map(|f| ReadFile {
                    path: f.path.clone(),
                    stamp: f.stamp,
                    bytes: f.bytes.clone(),
                })
                .collect();
            let mut threaded = ManifestSet::with_limits(limits);
            assert!(threaded.take_new_files(copy, workers, now));
            assert_eq!(
                threaded.objects(),
                one_at_a_time.objects(),
                "{workers} workers"
            );
            assert_eq!(threaded.problems(), one_at_a_time.problems());
            assert_eq!(threaded.problems().len(), 3, "{:?}", threaded.problems());
            for f in &files {
                assert_eq!(
                    threaded.is_current(&f.path, &f.stamp),
                    one_at_a_time.is_current(&f.path, &f.stamp),
                    "{}",
                    f.path.display()
                );
            }
        }
        assert_eq!(
            parse_in_parallel(&(0..10).collect::<Vec<u32>>(), 3, |i| i * 2),
            (0..10).map(|i| i * 2).collect::<Vec<_>>()
        );
    }

    #[test]
    fn limits_come_from_the_environment() {
        let env = |pairs: &'static [(&'static str, &'static str)]| {
            move |k: &str| {
                pairs
                    .iter()
                    .find(|(n, _)| *n == k)
                    .map(|(_, v)| v.to_string())
            }
        };
        assert_eq!(
            ManifestLimits::from_env(env(&[])).unwrap(),
            ManifestLimits::default()
        );
        let l = ManifestLimits::from_env(env(&[
            ("SVCNET_MANIFEST_MAX_BYTES", "1048576"),
            ("SVCNET_MANIFEST_MAX_OBJECTS", " 10 "),
        ]))
        .unwrap();
        assert_eq!(
            l,
            ManifestLimits {
                max_file_bytes: 1 << 20,
                max_objects: 10
            }
        );
        for bad in ["0", "-1", "10MB", ""] {
            let pairs: &'static [(&'static str, &'static str)] =
                Box::leak(Box::new([("SVCNET_MANIFEST_MAX_OBJECTS", bad)]));
            let err = ManifestLimits::from_env(env(pairs)).unwrap_err();
            assert_eq!(
                err.to_string(),
                format!("SVCNET_MANIFEST_MAX_OBJECTS={bad:?}: expected a whole number above 0")
            );
        }
    }
}

//! Loading a plugin library: checked step by step so that each way of being wrong (no
//! file, not a library, not a gencol plugin, another ABI version, a broken description)
//! gets its own message. Libraries are loaded once per process and never unloaded.

use std::collections::BTreeMap;
use std::ffi::c_void;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use gencol_plugin_abi::{
    AbiVersionFn, CreateFn, DescribeFn, DestroyFn, ExportFn, FreeBufferFn, GENCOL_PLUGIN_ABI_VERSION, PluginBuffer,
    PluginResult, PluginSlice, SYMBOL_ABI_VERSION, SYMBOL_CREATE, SYMBOL_DESCRIBE, SYMBOL_DESTROY, SYMBOL_EXPORT,
    SYMBOL_FREE_BUFFER, SYMBOL_TEST_CONNECTION, TestConnectionFn, result_kind,
};
use libloading::Library;
use serde::Deserialize;

/// Why a plugin could not be loaded. Each message says what to do about it.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum LoadError {
    /// No file at the path (after resolving it against the config file).
    #[error("plugin file not found: {path} (a relative path is relative to the config file)")]
    NotFound { path: String },
    /// The file is not a shared library the system loader accepts.
    #[error("cannot load plugin {path}: it is not a dynamic library for this system ({reason})")]
    NotALibrary { path: String, reason: String },
    /// A shared library, but without the ABI version symbol.
    #[error(
        "{path} is not a gencol plugin: it has no `{symbol}` symbol (build it with gencol-plugin-sdk's export_plugin! macro)"
    )]
    NotAPlugin { path: String, symbol: &'static str },
    /// A gencol plugin built for another ABI version.
    #[error(
        "plugin {path} was built for gencol plugin ABI version {found}, but this gencol speaks ABI version {expected}: rebuild the plugin against this gencol's gencol-plugin-sdk"
    )]
    AbiMismatch { path: String, found: u32, expected: u32 },
    /// The right ABI version, but a function of it is missing.
    #[error("plugin {path} is incomplete: it has no `{symbol}` symbol (rebuild it with gencol-plugin-sdk)")]
    MissingSymbol { path: String, symbol: &'static str },
    /// The description JSON is missing, malformed, or names invalid types.
    #[error("plugin {path} described itself wrongly: {reason}")]
    BadDescription { path: String, reason: String },
}

/// The plugin's C functions, copied out of the library (which is never unloaded, so
/// they stay valid for the life of the process).
#[derive(Clone, Copy)]
struct Functions {
    free_buffer: FreeBufferFn,
    create: CreateFn,
    export: ExportFn,
    test_connection: TestConnectionFn,
    destroy: DestroyFn,
}

/// One exporter type as a plugin describes it.
#[derive(Clone, Debug, Deserialize)]
pub struct ExporterType {
    /// The type as written in YAML.
    #[serde(rename = "type")]
    pub kind: String,
    /// One line for `gencol components`.
    #[serde(default)]
    pub about: String,
}

#[derive(Deserialize)]
struct Description {
    name: String,
    version: String,
    exporters: Vec<ExporterType>,
}

/// A loaded plugin library.
pub struct PluginLibrary {
    /// The file, canonical, as `gencol components` shows it.
    pub path: String,
    /// The plugin's name, for logs.
    pub name: String,
    /// The plugin's own version, for `gencol components`.
    pub version: String,
    /// The exporter types it offers.
    pub exporters: Vec<ExporterType>,
    fns: Functions,
}

/// What a call returned, copied out of the plugin's memory.
#[derive(Debug)]
pub struct Outcome {
    /// One of the ABI's `result_kind` values (checked by the caller).
    pub kind: u32,
    /// The plugin's `Retry-After`, when it gave one.
    pub retry_after: Option<Duration>,
    /// Text, or JSON for `INVALID_CONFIG`.
    pub message: String,
}

/// Why `create` gave no instance.
#[derive(Debug)]
pub enum CreateError {
    /// The settings are wrong: `(path, message)` per problem.
    Invalid(Vec<(String, String)>),
    /// Any other refusal, or a panic; a complete message.
    Failed(String),
}

#[derive(Deserialize)]
struct WireConfigError {
    #[serde(default)]
    path: String,
    message: String,
}

/// Libraries loaded so far, by canonical path: the same file listed twice (or loaded by
/// two commands of one process) is opened once and registers its types once.
static LOADED: Mutex<BTreeMap<PathBuf, Arc<PluginLibrary>>> = Mutex::new(BTreeMap::new());

/// Loads the plugin at `path` (once per process) and checks it is one gencol can use.
pub fn load(path: &Path) -> Result<Arc<PluginLibrary>, LoadError> {
    let shown = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf()).display().to_string();
    let canonical = path.canonicalize().map_err(|_| LoadError::NotFound { path: shown.clone() })?;
    if !canonical.is_file() {
        return Err(LoadError::NotFound { path: shown });
    }
    let mut loaded = LOADED.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(lib) = loaded.get(&canonical) {
        return Ok(lib.clone());
    }
    let lib = Arc::new(open(&canonical)?);
    loaded.insert(canonical, lib.clone());
    Ok(lib)
}

fn open(path: &Path) -> Result<PluginLibrary, LoadError> {
    let shown = path.display().to_string();
    // SAFETY: opening a library runs its initialisers, which gencol cannot check: a plugin
    // is trusted code by definition (it runs inside gencol). The library is leaked at
    // once, so it is never unloaded and every symbol taken from it stays valid.
    let library: &'static Library = match unsafe { Library::new(path) } {
        Ok(l) => Box::leak(Box::new(l)),
        Err(e) => return Err(LoadError::NotALibrary { path: shown, reason: with_sources(&e) }),
    };
    // SAFETY: the symbol's type is the one the ABI declares for this name.
    let abi_version = unsafe { library.get::<AbiVersionFn>(SYMBOL_ABI_VERSION) }
        .map(|s| *s)
        .map_err(|_| LoadError::NotAPlugin { path: shown.clone(), symbol: SYMBOL_ABI_VERSION })?;
    // SAFETY: every ABI version declares this symbol as `extern "C" fn() -> u32`, so it can
    // be called before knowing which version the plugin speaks.
    let found = unsafe { abi_version() };
    if found != GENCOL_PLUGIN_ABI_VERSION {
        return Err(LoadError::AbiMismatch { path: shown, found, expected: GENCOL_PLUGIN_ABI_VERSION });
    }
    macro_rules! symbol {
        ($ty:ty, $name:expr) => {
            // SAFETY: the plugin speaks this ABI version (checked above), which declares
            // `$name` with type `$ty`; the library is never unloaded.
            unsafe { library.get::<$ty>($name) }
                .map(|s| *s)
                .map_err(|_| LoadError::MissingSymbol { path: shown.clone(), symbol: $name })?
        };
    }
    let describe = symbol!(DescribeFn, SYMBOL_DESCRIBE);
    let fns = Functions {
        free_buffer: symbol!(FreeBufferFn, SYMBOL_FREE_BUFFER),
        create: symbol!(CreateFn, SYMBOL_CREATE),
        export: symbol!(ExportFn, SYMBOL_EXPORT),
        test_connection: symbol!(TestConnectionFn, SYMBOL_TEST_CONNECTION),
        destroy: symbol!(DestroyFn, SYMBOL_DESTROY),
    };
    // SAFETY: `describe` has the ABI's type and takes no arguments.
    let buffer = unsafe { describe() };
    let text = take_buffer(fns.free_buffer, buffer);
    let bad = |reason: String| LoadError::BadDescription { path: shown.clone(), reason };
    if text.is_empty() {
        return Err(bad("its description is empty (it may have panicked)".into()));
    }
    let d: Description = serde_json::from_slice(&text).map_err(|e| bad(format!("invalid description JSON: {e}")))?;
    if d.name.trim().is_empty() {
        return Err(bad("no plugin name".into()));
    }
    if d.exporters.is_empty() {
        return Err(bad("it offers no exporter type".into()));
    }
    for (i, e) in d.exporters.iter().enumerate() {
        let valid = gencol_config::ComponentId::parse(&e.kind).is_ok_and(|id| id.name.is_none());
        if !valid {
            return Err(bad(format!(
                "exporter type `{}` is not a valid type name (lowercase letters, digits and `_`, starting with a letter)",
                e.kind
            )));
        }
        if d.exporters[..i].iter().any(|earlier| earlier.kind == e.kind) {
            return Err(bad(format!("it lists exporter type `{}` twice", e.kind)));
        }
    }
    Ok(PluginLibrary { path: shown, name: d.name, version: d.version, exporters: d.exporters, fns })
}

/// An error with its causes (libloading keeps `dlerror`'s text in the source).
fn with_sources(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// Copies a buffer the plugin returned and gives it back to the plugin to free.
fn take_buffer(free: FreeBufferFn, buffer: PluginBuffer) -> Vec<u8> {
    // SAFETY: the buffer comes straight from the plugin and is not freed yet.
    let bytes = unsafe { buffer.as_bytes() }.to_vec();
    // SAFETY: freed once, by the plugin that allocated it, after copying.
    unsafe { free(buffer) };
    bytes
}

impl PluginLibrary {
    fn outcome(&self, result: PluginResult) -> Outcome {
        let message = String::from_utf8_lossy(&take_buffer(self.fns.free_buffer, result.message)).into_owned();
        let retry_after = (result.retry_after_ms > 0).then(|| Duration::from_millis(result.retry_after_ms));
        Outcome { kind: result.kind, retry_after, message }
    }

    /// Validates settings (`config` and `context` are JSON) and creates an instance.
    /// May block: it runs the plugin's own code.
    pub fn create(self: &Arc<Self>, kind: &str, config: &[u8], context: &[u8]) -> Result<Instance, CreateError> {
        let mut ptr: *mut c_void = std::ptr::null_mut();
        // SAFETY: the slices borrow live locals for the call; `ptr` is a writable local.
        let result = unsafe {
            (self.fns.create)(
                PluginSlice::new(kind.as_bytes()),
                PluginSlice::new(config),
                PluginSlice::new(context),
                &mut ptr,
            )
        };
        let outcome = self.outcome(result);
        match outcome.kind {
            result_kind::OK if !ptr.is_null() => Ok(Instance { library: self.clone(), ptr }),
            result_kind::OK => Err(CreateError::Failed("the plugin reported success but returned no exporter".into())),
            result_kind::INVALID_CONFIG => match serde_json::from_str::<Vec<WireConfigError>>(&outcome.message) {
                Ok(errors) if !errors.is_empty() => {
                    Err(CreateError::Invalid(errors.into_iter().map(|e| (e.path, e.message)).collect()))
                }
                _ => Err(CreateError::Failed(format!("invalid settings: {}", outcome.message))),
            },
            result_kind::PANICKED => Err(CreateError::Failed(format!(
                "the plugin panicked while checking the settings: {}",
                outcome.message
            ))),
            _ => Err(CreateError::Failed(outcome.message)),
        }
    }
}

/// One exporter inside a plugin. Destroyed (the plugin's `shutdown`) when the last
/// reference goes, which is after the last call on it returned: calls hold a reference.
pub struct Instance {
    library: Arc<PluginLibrary>,
    ptr: *mut c_void,
}

// SAFETY: the ABI requires an instance to accept calls from any thread, several at once
// (the SDK enforces it with `ExporterPlugin: Send + Sync`); the pointer is only passed
// back to the plugin, never dereferenced here.
unsafe impl Send for Instance {}
// SAFETY: as above.
unsafe impl Sync for Instance {}

impl Instance {
    /// Sends one OTLP protobuf batch. Blocks for as long as the plugin does.
    pub fn export(&self, batch: &[u8]) -> Outcome {
        // SAFETY: `ptr` came from `create` and is destroyed only in `drop`, which cannot
        // run while `&self` is borrowed; `batch` outlives the call.
        let result = unsafe { (self.library.fns.export)(self.ptr, PluginSlice::new(batch)) };
        self.library.outcome(result)
    }

    /// Sends the plugin's test payload. Blocks for as long as the plugin does.
    pub fn test_connection(&self) -> Outcome {
        // SAFETY: as in `export`.
        let result = unsafe { (self.library.fns.test_connection)(self.ptr) };
        self.library.outcome(result)
    }
}

impl Drop for Instance {
    fn drop(&mut self) {
        // SAFETY: `ptr` came from `create`; holding `&mut self` means no call is running
        // on it, and it is not used again.
        unsafe { (self.library.fns.destroy)(self.ptr) };
    }
}

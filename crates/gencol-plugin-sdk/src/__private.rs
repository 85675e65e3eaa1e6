//! What [`export_plugin!`](crate::export_plugin) expands to calls: the C side of the
//! ABI, written once here so that a plugin crate contains no `unsafe` of its own.
//! Every function catches panics, because unwinding out of `extern "C"` aborts.

use std::any::Any;
use std::ffi::c_void;
use std::panic::{AssertUnwindSafe, catch_unwind};

use gencol_plugin_abi::{PluginBuffer, PluginResult, PluginSlice, result_kind};
use prost::Message;
use serde_json::Value;

use crate::{ConfigError, ExportError, ExportTraceServiceRequest, ExporterContext, ExporterPlugin};

/// A plugin as the macro declares it.
pub struct Plugin {
    /// Shown by `gencol components` and in gencol's logs.
    pub name: &'static str,
    /// The plugin's own version (usually `CARGO_PKG_VERSION`).
    pub version: &'static str,
    /// The exporter types, one per [`ExporterPlugin`] implementation.
    pub exporters: &'static [ExporterEntry],
}

type CreateExporter = fn(&Value, &ExporterContext) -> Result<Box<dyn DynExporter>, Vec<ConfigError>>;

/// One exporter type of a plugin, with its constructor made object-safe.
pub struct ExporterEntry {
    kind: &'static str,
    about: &'static str,
    create: CreateExporter,
}

impl ExporterEntry {
    /// The entry for `T`; `const` so the macro can build a `static`.
    pub const fn of<T: ExporterPlugin>() -> Self {
        ExporterEntry { kind: T::TYPE, about: T::ABOUT, create: create_boxed::<T> }
    }
}

/// [`ExporterPlugin`] without its constructor and constants, so instances of different
/// types can sit behind one pointer type.
trait DynExporter: Send + Sync {
    fn export(&self, batch: &ExportTraceServiceRequest) -> Result<(), ExportError>;
    fn test_connection(&self) -> Result<String, ExportError>;
    fn shutdown(&self);
}

impl<T: ExporterPlugin> DynExporter for T {
    fn export(&self, batch: &ExportTraceServiceRequest) -> Result<(), ExportError> {
        ExporterPlugin::export(self, batch)
    }
    fn test_connection(&self) -> Result<String, ExportError> {
        ExporterPlugin::test_connection(self)
    }
    fn shutdown(&self) {
        ExporterPlugin::shutdown(self)
    }
}

fn create_boxed<T: ExporterPlugin>(
    config: &Value,
    ctx: &ExporterContext,
) -> Result<Box<dyn DynExporter>, Vec<ConfigError>> {
    T::validate(config, ctx).map(|e| Box::new(e) as Box<dyn DynExporter>)
}

/// What an instance pointer points to: a thin pointer to a fat one.
struct Instance {
    exporter: Box<dyn DynExporter>,
}

/// A `Vec`'s allocation handed to the host; [`free_buffer`] takes it back.
fn buffer(bytes: Vec<u8>) -> PluginBuffer {
    if bytes.capacity() == 0 {
        return PluginBuffer::EMPTY;
    }
    let mut bytes = std::mem::ManuallyDrop::new(bytes);
    PluginBuffer { ptr: bytes.as_mut_ptr(), len: bytes.len(), capacity: bytes.capacity() }
}

fn result(kind: u32, message: &str) -> PluginResult {
    PluginResult { kind, retry_after_ms: 0, message: buffer(message.as_bytes().to_vec()) }
}

fn ok(message: &str) -> PluginResult {
    result(result_kind::OK, message)
}

fn permanent(message: &str) -> PluginResult {
    result(result_kind::PERMANENT, message)
}

fn from_error(e: ExportError) -> PluginResult {
    match e {
        ExportError::Retryable { message, retry_after } => PluginResult {
            kind: result_kind::RETRYABLE,
            retry_after_ms: retry_after.map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX).max(1)),
            message: buffer(message.into_bytes()),
        },
        ExportError::Permanent { message } => permanent(&message),
    }
}

/// The text of a panic, as `panic!` formatted it.
fn panic_text(payload: &(dyn Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".to_owned())
}

/// Runs `f`, turning a panic into a `PANICKED` result instead of unwinding into gencol.
fn guard(f: impl FnOnce() -> PluginResult) -> PluginResult {
    catch_unwind(AssertUnwindSafe(f)).unwrap_or_else(|payload| result(result_kind::PANICKED, &panic_text(&*payload)))
}

/// The shared instance behind a pointer from [`create`].
///
/// # Safety
///
/// `instance` must come from [`create`] and not be destroyed yet.
unsafe fn instance<'a>(instance: *mut c_void) -> Option<&'a Instance> {
    // SAFETY: `create` made the pointer with `Box::into_raw` and only `destroy` frees it;
    // the caller guarantees it was not destroyed. Only shared references are made, so
    // concurrent calls are fine (`DynExporter: Sync`).
    unsafe { instance.cast::<Instance>().as_ref() }
}

/// `gencol_plugin_describe`.
pub fn describe(plugin: &Plugin) -> PluginBuffer {
    let exporters: Vec<Value> =
        plugin.exporters.iter().map(|e| serde_json::json!({"type": e.kind, "about": e.about})).collect();
    let description = serde_json::json!({"name": plugin.name, "version": plugin.version, "exporters": exporters});
    // An empty buffer tells the host the plugin could not describe itself.
    catch_unwind(|| buffer(description.to_string().into_bytes())).unwrap_or(PluginBuffer::EMPTY)
}

/// `gencol_plugin_free_buffer`.
///
/// # Safety
///
/// `b` must come from [`buffer`] in this library, unchanged, and be freed once.
pub unsafe fn free_buffer(b: PluginBuffer) {
    if b.ptr.is_null() {
        return;
    }
    // SAFETY: `buffer` took these parts from a `Vec<u8>` allocated by this library's
    // allocator and leaked it; the caller gives them back once.
    drop(unsafe { Vec::from_raw_parts(b.ptr, b.len, b.capacity) });
}

/// `gencol_plugin_create`.
///
/// # Safety
///
/// The slices must be readable for the call and `out` writable.
pub unsafe fn create(
    plugin: &Plugin,
    kind: PluginSlice,
    config: PluginSlice,
    context: PluginSlice,
    out: *mut *mut c_void,
) -> PluginResult {
    guard(|| {
        if out.is_null() {
            return permanent("gencol_plugin_create called without a place for the instance");
        }
        // SAFETY: the caller guarantees the slices are readable during this call.
        let (kind, config, context) = unsafe { (kind.as_bytes(), config.as_bytes(), context.as_bytes()) };
        let kind = String::from_utf8_lossy(kind);
        let Some(entry) = plugin.exporters.iter().find(|e| e.kind == kind) else {
            return permanent(&format!("plugin `{}` has no exporter type `{kind}`", plugin.name));
        };
        let config: Value = if config.is_empty() {
            Value::Null
        } else {
            match serde_json::from_slice(config) {
                Ok(v) => v,
                Err(e) => return permanent(&format!("the settings gencol passed are not JSON: {e}")),
            }
        };
        // The context only informs; a host that sends less (or nothing) gets defaults.
        let ctx: ExporterContext = serde_json::from_slice(context).unwrap_or_default();
        match (entry.create)(&config, &ctx) {
            Ok(exporter) => {
                let instance = Box::into_raw(Box::new(Instance { exporter }));
                // SAFETY: `out` is non-null and the caller guarantees it is writable.
                unsafe { out.write(instance.cast::<c_void>()) };
                ok("")
            }
            Err(errors) => {
                let json = serde_json::to_vec(&errors).unwrap_or_default();
                PluginResult { kind: result_kind::INVALID_CONFIG, retry_after_ms: 0, message: buffer(json) }
            }
        }
    })
}

/// `gencol_plugin_export`.
///
/// # Safety
///
/// `instance` must come from [`create`] and not be destroyed; `batch` must be readable.
pub unsafe fn export(instance_ptr: *mut c_void, batch: PluginSlice) -> PluginResult {
    guard(|| {
        // SAFETY: forwarded from this function's contract.
        let Some(instance) = (unsafe { instance(instance_ptr) }) else {
            return permanent("gencol_plugin_export called without an instance");
        };
        // SAFETY: the caller guarantees `batch` is readable during this call.
        let bytes = unsafe { batch.as_bytes() };
        let request = match ExportTraceServiceRequest::decode(bytes) {
            Ok(r) => r,
            Err(e) => return permanent(&format!("the batch is not an OTLP protobuf request: {e}")),
        };
        match instance.exporter.export(&request) {
            Ok(()) => ok(""),
            Err(e) => from_error(e),
        }
    })
}

/// `gencol_plugin_test_connection`.
///
/// # Safety
///
/// `instance` must come from [`create`] and not be destroyed.
pub unsafe fn test_connection(instance_ptr: *mut c_void) -> PluginResult {
    guard(|| {
        // SAFETY: forwarded from this function's contract.
        let Some(instance) = (unsafe { instance(instance_ptr) }) else {
            return permanent("gencol_plugin_test_connection called without an instance");
        };
        match instance.exporter.test_connection() {
            Ok(detail) => ok(&detail),
            Err(e) => from_error(e),
        }
    })
}

/// `gencol_plugin_destroy`.
///
/// # Safety
///
/// `instance` must come from [`create`], have no call running, and not be used again.
pub unsafe fn destroy(instance: *mut c_void) {
    if instance.is_null() {
        return;
    }
    // A panic in `shutdown` has nobody to report to; the instance is freed either way
    // (dropped while unwinding inside `catch_unwind`).
    let _ = catch_unwind(AssertUnwindSafe(|| {
        // SAFETY: `create` made the pointer with `Box::into_raw`; the caller guarantees no
        // call is running and the pointer is not used again, so it can be owned now.
        let instance = unsafe { Box::from_raw(instance.cast::<Instance>()) };
        instance.exporter.shutdown();
    }));
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Echo {
        fail: bool,
    }

    impl ExporterPlugin for Echo {
        const TYPE: &'static str = "echo";
        const ABOUT: &'static str = "test exporter";
        fn validate(config: &Value, _ctx: &ExporterContext) -> Result<Self, Vec<ConfigError>> {
            match config.get("fail") {
                None => Ok(Echo { fail: false }),
                Some(Value::Bool(fail)) => Ok(Echo { fail: *fail }),
                Some(_) => Err(vec![ConfigError::new("fail", "expected a boolean")]),
            }
        }
        fn export(&self, batch: &ExportTraceServiceRequest) -> Result<(), ExportError> {
            if self.fail {
                panic!("boom with {} resource spans", batch.resource_spans.len());
            }
            Err(ExportError::Retryable {
                message: "later".into(),
                retry_after: Some(std::time::Duration::from_secs(2)),
            })
        }
        fn test_connection(&self) -> Result<String, ExportError> {
            Ok("fine".into())
        }
    }

    static PLUGIN: Plugin = Plugin { name: "echo", version: "1.2.3", exporters: &[ExporterEntry::of::<Echo>()] };

    fn take(r: PluginResult) -> (u32, u64, String) {
        // SAFETY: the buffer comes from this library and is freed once, below.
        let text = String::from_utf8_lossy(unsafe { r.message.as_bytes() }).into_owned();
        // SAFETY: as above.
        unsafe { free_buffer(r.message) };
        (r.kind, r.retry_after_ms, text)
    }

    fn make(config: &str) -> (PluginResult, *mut c_void) {
        let mut out = std::ptr::null_mut();
        let ctx = br#"{"id": "echo/x", "type": "echo", "base_dir": "/tmp"}"#;
        // SAFETY: all slices borrow live locals; `out` is a local.
        let r = unsafe {
            create(
                &PLUGIN,
                PluginSlice::new(b"echo"),
                PluginSlice::new(config.as_bytes()),
                PluginSlice::new(ctx),
                &mut out,
            )
        };
        (r, out)
    }

    #[test]
    fn describe_lists_name_version_and_types() {
        let b = describe(&PLUGIN);
        // SAFETY: fresh buffer from this library, freed once.
        let v: Value = serde_json::from_slice(unsafe { b.as_bytes() }).unwrap();
        // SAFETY: as above.
        unsafe { free_buffer(b) };
        assert_eq!(v["name"], "echo");
        assert_eq!(v["version"], "1.2.3");
        assert_eq!(v["exporters"][0]["type"], "echo");
    }

    #[test]
    fn invalid_config_comes_back_as_a_json_list() {
        let (r, out) = make(r#"{"fail": "yes"}"#);
        assert!(out.is_null());
        let (kind, _, text) = take(r);
        assert_eq!(kind, result_kind::INVALID_CONFIG);
        let errors: Vec<ConfigError> = serde_json::from_str(&text).unwrap();
        assert_eq!(errors, vec![ConfigError::new("fail", "expected a boolean")]);
    }

    #[test]
    fn export_results_and_panics_cross_as_codes() {
        let (r, ok_instance) = make("null");
        assert_eq!(take(r).0, result_kind::OK);
        let batch = ExportTraceServiceRequest::default().encode_to_vec();
        // SAFETY: a live instance from `make` and a live local batch.
        let r = unsafe { export(ok_instance, PluginSlice::new(&batch)) };
        assert_eq!(take(r), (result_kind::RETRYABLE, 2000, "later".to_owned()));
        // SAFETY: as above.
        let r = unsafe { test_connection(ok_instance) };
        assert_eq!(take(r), (result_kind::OK, 0, "fine".to_owned()));

        let (r, panicking) = make(r#"{"fail": true}"#);
        assert_eq!(take(r).0, result_kind::OK);
        // SAFETY: as above.
        let r = unsafe { export(panicking, PluginSlice::new(&batch)) };
        let (kind, _, text) = take(r);
        assert_eq!(kind, result_kind::PANICKED);
        assert_eq!(text, "boom with 0 resource spans");
        // SAFETY: as above.
        let r = unsafe { export(panicking, PluginSlice::new(b"\xff\xff not protobuf")) };
        assert_eq!(take(r).0, result_kind::PERMANENT);

        // SAFETY: no call is running on either instance and they are not used again.
        unsafe {
            destroy(ok_instance);
            destroy(panicking);
        }
    }

    #[test]
    fn unknown_type_is_permanent() {
        let mut out = std::ptr::null_mut();
        // SAFETY: all slices borrow live locals; `out` is a local.
        let r = unsafe {
            create(&PLUGIN, PluginSlice::new(b"nope"), PluginSlice::new(b""), PluginSlice::new(b""), &mut out)
        };
        let (kind, _, text) = take(r);
        assert_eq!(kind, result_kind::PERMANENT);
        assert!(text.contains("no exporter type `nope`"), "{text}");
    }
}

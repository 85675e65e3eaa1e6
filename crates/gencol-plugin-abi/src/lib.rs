//! The C ABI between gencol and an exporter plugin (a dynamic library).
//!
//! Everything that crosses the boundary is here: the symbol names a plugin exports, the
//! `#[repr(C)]` types they take and return, and [`GENCOL_PLUGIN_ABI_VERSION`]. Only bytes
//! cross it: JSON for the plugin's description, an exporter's settings and its context,
//! OTLP protobuf (`ExportTraceServiceRequest`) for each batch. No Rust type, allocator,
//! async runtime or panic ever crosses, so a plugin may be built by another compiler
//! version than gencol, or in another language.
//!
//! # Protocol
//!
//! 1. The host loads the library (once; it is never unloaded) and calls
//!    [`SYMBOL_ABI_VERSION`] before anything else. A number other than
//!    [`GENCOL_PLUGIN_ABI_VERSION`] stops loading with an error naming both.
//! 2. [`SYMBOL_DESCRIBE`] returns the plugin's name, version and exporter types as JSON
//!    ([`describe` format](#json-formats)).
//! 3. For each configured exporter, [`SYMBOL_CREATE`] validates its settings and returns
//!    an instance, or [`result_kind::INVALID_CONFIG`] with a JSON list of errors. The host
//!    creates one instance to validate (`gencol validate`) and destroys it at once, then
//!    one per running exporter, so creating must do no I/O.
//! 4. [`SYMBOL_EXPORT`] sends one batch; [`SYMBOL_TEST_CONNECTION`] sends a test payload.
//!    Both may be called from several threads at once on the same instance, and from a
//!    thread that is not the one that created it. They may block: the host calls them
//!    off its async runtime.
//! 5. [`SYMBOL_DESTROY`] ends an instance (flush, close) once no call is running on it.
//!
//! # Memory
//!
//! Memory is freed by the side that allocated it. [`PluginSlice`] arguments are the
//! host's and valid only during the call. [`PluginBuffer`] results (descriptions,
//! messages) are the plugin's; the host copies them and hands each back through
//! [`SYMBOL_FREE_BUFFER`].
//!
//! # Panics
//!
//! Unwinding out of an `extern "C"` function aborts the process, so every exported
//! function catches panics. A panic during export comes back as
//! [`result_kind::PANICKED`]: the host logs and counts it and retries the batch.
//!
//! # JSON formats
//!
//! - describe: `{"name": "webhook", "version": "0.1.0", "exporters": [{"type": "webhook", "about": "one line"}]}`
//! - create's context: `{"id": "webhook/prod", "type": "webhook", "base_dir": "/etc/gencol"}`
//!   (`base_dir` is the directory of the config file, for relative paths)
//! - an `INVALID_CONFIG` message: `[{"path": "headers.X-Api-Key", "message": "..."}]`, where
//!   `path` names the setting (keys joined with `.`, list items as `[i]`, empty for the
//!   whole map) so gencol can report the error at its line.

#![no_std]

use core::ffi::c_void;

/// The version of this ABI. Any change to a symbol, a type or a JSON format bumps it;
/// the host refuses a plugin that reports another number.
pub const GENCOL_PLUGIN_ABI_VERSION: u32 = 1;

/// `extern "C" fn() -> u32`: the ABI version the plugin was built for.
pub const SYMBOL_ABI_VERSION: &str = "gencol_plugin_abi_version";
/// [`DescribeFn`]: the plugin's name, version and exporter types as JSON.
pub const SYMBOL_DESCRIBE: &str = "gencol_plugin_describe";
/// [`FreeBufferFn`]: gives a [`PluginBuffer`] back to the plugin that allocated it.
pub const SYMBOL_FREE_BUFFER: &str = "gencol_plugin_free_buffer";
/// [`CreateFn`]: validates an exporter's settings and creates an instance.
pub const SYMBOL_CREATE: &str = "gencol_plugin_create";
/// [`ExportFn`]: sends one batch.
pub const SYMBOL_EXPORT: &str = "gencol_plugin_export";
/// [`TestConnectionFn`]: sends a payload marked as a test.
pub const SYMBOL_TEST_CONNECTION: &str = "gencol_plugin_test_connection";
/// [`DestroyFn`]: shuts an instance down and frees it.
pub const SYMBOL_DESTROY: &str = "gencol_plugin_destroy";

/// See [`SYMBOL_ABI_VERSION`].
pub type AbiVersionFn = unsafe extern "C" fn() -> u32;
/// See [`SYMBOL_DESCRIBE`]. An empty buffer means the plugin could not describe itself.
pub type DescribeFn = unsafe extern "C" fn() -> PluginBuffer;
/// See [`SYMBOL_FREE_BUFFER`].
pub type FreeBufferFn = unsafe extern "C" fn(buffer: PluginBuffer);
/// See [`SYMBOL_CREATE`]. `kind` is the exporter type, `config` the settings as JSON
/// (`null` when none were written), `context` the JSON context; on `OK` the instance is
/// written to `*instance`.
pub type CreateFn = unsafe extern "C" fn(
    kind: PluginSlice,
    config: PluginSlice,
    context: PluginSlice,
    instance: *mut *mut c_void,
) -> PluginResult;
/// See [`SYMBOL_EXPORT`]. `batch` is an OTLP `ExportTraceServiceRequest` in protobuf.
pub type ExportFn = unsafe extern "C" fn(instance: *mut c_void, batch: PluginSlice) -> PluginResult;
/// See [`SYMBOL_TEST_CONNECTION`]. On `OK` the message describes the destination's answer.
pub type TestConnectionFn = unsafe extern "C" fn(instance: *mut c_void) -> PluginResult;
/// See [`SYMBOL_DESTROY`].
pub type DestroyFn = unsafe extern "C" fn(instance: *mut c_void);

/// What a call's [`PluginResult::kind`] can be. A plain `u32` rather than a Rust enum:
/// a value outside the enum would be undefined behaviour on the reading side, a `u32`
/// is checked instead.
pub mod result_kind {
    /// Done.
    pub const OK: u32 = 0;
    /// Failed, and trying again may help (after `retry_after_ms` when not 0).
    pub const RETRYABLE: u32 = 1;
    /// Failed, and sending the same batch again would fail the same way.
    pub const PERMANENT: u32 = 2;
    /// `create` only: the settings are wrong; the message is a JSON list of errors.
    pub const INVALID_CONFIG: u32 = 3;
    /// The plugin panicked; the message is the panic's text. Treated as retryable.
    pub const PANICKED: u32 = 4;
}

/// Bytes owned by the caller, valid only for the duration of the call.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct PluginSlice {
    /// First byte; may be null when `len` is 0.
    pub ptr: *const u8,
    /// Number of bytes.
    pub len: usize,
}

impl PluginSlice {
    /// Borrows `bytes` for a call.
    pub fn new(bytes: &[u8]) -> Self {
        PluginSlice { ptr: bytes.as_ptr(), len: bytes.len() }
    }

    /// The bytes.
    ///
    /// # Safety
    ///
    /// `ptr` must point to `len` readable bytes that stay valid and unchanged for `'a`
    /// (or `len` must be 0).
    pub unsafe fn as_bytes<'a>(&self) -> &'a [u8] {
        if self.ptr.is_null() || self.len == 0 {
            return &[];
        }
        // SAFETY: the caller guarantees `ptr..ptr+len` is readable for `'a`.
        unsafe { core::slice::from_raw_parts(self.ptr, self.len) }
    }
}

/// Bytes allocated by the plugin and handed to the host, which copies them and gives
/// them back through [`SYMBOL_FREE_BUFFER`]. The plugin chooses how to allocate; a Rust
/// plugin uses a `Vec<u8>`'s parts.
#[repr(C)]
#[derive(Debug)]
pub struct PluginBuffer {
    /// First byte; null for an empty buffer.
    pub ptr: *mut u8,
    /// Number of bytes in use.
    pub len: usize,
    /// Bytes allocated, for the plugin to free them correctly.
    pub capacity: usize,
}

impl PluginBuffer {
    /// An empty buffer that owns nothing (freeing it is a no-op).
    pub const EMPTY: PluginBuffer = PluginBuffer { ptr: core::ptr::null_mut(), len: 0, capacity: 0 };

    /// The bytes, for the host to copy before freeing.
    ///
    /// # Safety
    ///
    /// The buffer must come from the plugin unchanged and not be freed yet.
    pub unsafe fn as_bytes(&self) -> &[u8] {
        if self.ptr.is_null() || self.len == 0 {
            return &[];
        }
        // SAFETY: the plugin allocated `len` initialised bytes at `ptr` and keeps them
        // until the buffer is freed, which the caller has not done yet.
        unsafe { core::slice::from_raw_parts(self.ptr, self.len) }
    }
}

/// The outcome of `create`, `export` and `test_connection`.
#[repr(C)]
#[derive(Debug)]
pub struct PluginResult {
    /// One of [`result_kind`].
    pub kind: u32,
    /// For `RETRYABLE`: wait at least this long before trying again; 0 = the host's
    /// own backoff.
    pub retry_after_ms: u64,
    /// UTF-8 text (or JSON for `INVALID_CONFIG`); empty for a plain `OK`. Freed by the
    /// host through [`SYMBOL_FREE_BUFFER`].
    pub message: PluginBuffer,
}

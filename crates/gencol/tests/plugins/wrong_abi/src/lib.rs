//! A library that looks like a gencol plugin but was built for another ABI version: the
//! host must refuse it before calling anything else, naming both versions.

/// The ABI version this fake plugin claims; gencol speaks
/// [`gencol_plugin_abi::GENCOL_PLUGIN_ABI_VERSION`].
pub const CLAIMED_ABI_VERSION: u32 = 999;

/// Reports an ABI version gencol does not speak.
#[unsafe(no_mangle)]
pub extern "C" fn gencol_plugin_abi_version() -> u32 {
    // Referenced so the claim is provably not the real one, whatever it becomes.
    const _: () = assert!(CLAIMED_ABI_VERSION != gencol_plugin_abi::GENCOL_PLUGIN_ABI_VERSION);
    CLAIMED_ABI_VERSION
}

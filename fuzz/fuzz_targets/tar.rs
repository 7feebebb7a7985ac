//! The layer unpacker on arbitrary bytes (a decompressed tar stream). Errors are fine;
//! panics are not, and nothing may appear outside the target directory.
#![no_main]

use libfuzzer_sys::fuzz_target;
use xbuild::layer::{ApplyOptions, WhiteoutMode, apply_layer};

fuzz_target!(|data: &[u8]| {
    let sandbox = tempfile::tempdir().expect("a temporary directory");
    let target = sandbox.path().join("target");
    std::fs::create_dir(&target).expect("the target directory");
    for whiteouts in [WhiteoutMode::Merge, WhiteoutMode::Overlay] {
        let options = ApplyOptions {
            whiteouts,
            allow_devices: false,
            set_owners: false,
            exact: false,
        };
        let _ = apply_layer(data, &target, &options);
        let outside: Vec<_> = std::fs::read_dir(sandbox.path())
            .expect("the sandbox lists")
            .map(|entry| entry.expect("an entry").file_name())
            .collect();
        assert_eq!(outside, ["target"], "the layer wrote outside its target");
    }
});

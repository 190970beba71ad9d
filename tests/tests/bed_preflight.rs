//! A bed that cannot start says what is missing instead of skipping.

use ferry_tests::{Bed, BedOptions};

#[test]
fn missing_root_filesystem_names_the_installer() {
    let options = BedOptions {
        hosts: 1,
        rootfs: Some("/nonexistent/ferry-rootfs".into()),
        ..Default::default()
    };
    let err = match Bed::start(options) {
        Ok(_) => panic!("a bed started without a root filesystem"),
        Err(err) => format!("{err:#}"),
    };
    assert!(err.contains("/nonexistent/ferry-rootfs"), "{err}");
    assert!(err.contains("tests/bed/install.sh"), "{err}");
}

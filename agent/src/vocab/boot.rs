//! Whether a new system needs a reboot: the parts of a NixOS system the running kernel
//! cannot take over without one. The system backend reads them from the store and
//! `/run/booted-system`; the system step judges them.

/// Where a system's kernel, initrd and kernel modules are (the targets of `kernel`,
/// `initrd` and `kernel-modules` in its top directory), as far as they could be read.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BootParts {
    /// `kernel`'s target.
    pub kernel: Option<String>,
    /// `initrd`'s target.
    pub initrd: Option<String>,
    /// `kernel-modules`' target.
    pub modules: Option<String>,
}

/// Whether running `new` fully needs a reboot from `booted`: a part both have differs (as
/// NixOS's own `nixos-rebuild` judges it). Unknown parts say nothing. Pure.
pub fn reboot_needed(booted: &BootParts, new: &BootParts) -> bool {
    let differs =
        |a: &Option<String>, b: &Option<String>| matches!((a, b), (Some(a), Some(b)) if a != b);
    differs(&booted.kernel, &new.kernel)
        || differs(&booted.initrd, &new.initrd)
        || differs(&booted.modules, &new.modules)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_kernel_initrd_or_modules_needs_a_reboot() {
        let parts = |k: &str, i: &str, m: Option<&str>| BootParts {
            kernel: Some(k.into()),
            initrd: Some(i.into()),
            modules: m.map(str::to_owned),
        };
        let booted = parts("k1", "i1", Some("m1"));
        assert!(!reboot_needed(&booted, &parts("k1", "i1", Some("m1"))));
        assert!(reboot_needed(&booted, &parts("k2", "i1", Some("m1"))));
        assert!(reboot_needed(&booted, &parts("k1", "i2", Some("m1"))));
        assert!(reboot_needed(&booted, &parts("k1", "i1", Some("m2"))));
        // What cannot be read says nothing (a container has no kernel of its own).
        assert!(!reboot_needed(&booted, &parts("k1", "i1", None)));
        assert!(!reboot_needed(&BootParts::default(), &booted));
    }
}

//! The data-disk decision, as a pure function of the boot parameter and what the scan
//! found: mount an existing data file system, format a blank disk, or run volatile.
//!
//! Rules:
//! - A file system labelled `APPLIANCE_DATA` (or the label given by
//!   `appliance.data=LABEL=...`) is mounted, disk or partition, first by kernel name.
//! - Only in automatic mode, when no such label exists, the first *GPT data partition*
//!   (GPT name `APPLIANCE_DATA` and our type GUID, as `appliance.img` lays out) that is
//!   blank, writable and at least [`MIN_FORMAT_SIZE`] is formatted. No whole disk is ever
//!   formatted in automatic mode: a blank USB stick or a spare disk is never taken.
//! - `appliance.data=/dev/X` names the device: it is mounted if it carries the label,
//!   formatted if it is blank (a whole disk too), and refused otherwise.
//! - Blank means the first and the last MiB are all zero bytes. Anything else (a partition
//!   table, another file system, an ext file system with another label, leftover data) is
//!   never formatted; the appliance runs volatile and says why.

use appliance_proto::cmdline::DataSource;
use appliance_proto::paths::DATA_LABEL;

use super::scan::Probe;
use super::superblock::Content;

/// Smallest disk init formats (ext4 with a journal needs a few MiB to be useful).
pub const MIN_FORMAT_SIZE: u64 = 16 * 1024 * 1024;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Check, then mount this existing data file system.
    Mount { dev: String },
    /// Make a new data file system on this blank device, then mount it.
    Format { dev: String },
    /// No persistent data: `/data` becomes a tmpfs.
    Volatile { reason: String },
}

pub fn decide(source: &DataSource, probes: &[Probe]) -> Decision {
    match source {
        DataSource::Auto => match with_label(DATA_LABEL, probes).next() {
            Some(p) => Decision::Mount {
                dev: p.device.dev.clone(),
            },
            None => match probes.iter().find(|p| {
                formattable(p).is_ok() && p.device.gpt.as_ref().is_some_and(|g| g.is_data())
            }) {
                Some(p) => Decision::Format {
                    dev: p.device.dev.clone(),
                },
                None => Decision::Volatile {
                    reason: format!(
                        "no file system labelled {DATA_LABEL} and no blank GPT data partition \
                         (blank: first and last MiB all zero; a blank disk is formatted only \
                         when named with appliance.data=/dev/...); disks seen: {}",
                        describe(probes)
                    ),
                },
            },
        },
        DataSource::Label(label) => match with_label(label, probes).next() {
            Some(p) => Decision::Mount {
                dev: p.device.dev.clone(),
            },
            None => Decision::Volatile {
                reason: format!(
                    "no file system labelled {label} (appliance.data=LABEL={label}); nothing is \
                     formatted when a label is named; disks seen: {}",
                    describe(probes)
                ),
            },
        },
        DataSource::Device(dev) => {
            let Some(p) = probes.iter().find(|p| &p.device.dev == dev) else {
                return Decision::Volatile {
                    reason: format!("data device {dev} (appliance.data) not found"),
                };
            };
            match &p.content {
                Content::Ext { label } if label == DATA_LABEL => {
                    Decision::Mount { dev: dev.clone() }
                }
                Content::Ext { label } => Decision::Volatile {
                    reason: format!(
                        "refusing to format {dev}: it holds an ext file system labelled \
                         {label:?}, not {DATA_LABEL}"
                    ),
                },
                _ => match formattable(p) {
                    Ok(()) => Decision::Format { dev: dev.clone() },
                    Err(why) => Decision::Volatile {
                        reason: format!("refusing to format {dev}: {why}"),
                    },
                },
            }
        }
    }
}

/// The probes carrying an ext file system labelled `label`, in scan order.
pub fn with_label<'a>(label: &'a str, probes: &'a [Probe]) -> impl Iterator<Item = &'a Probe> {
    probes
        .iter()
        .filter(move |p| matches!(&p.content, Content::Ext { label: l } if l == label))
}

fn formattable(p: &Probe) -> Result<(), String> {
    match &p.content {
        Content::Blank => {}
        Content::Ext { label } => {
            return Err(format!("it holds an ext file system labelled {label:?}"))
        }
        Content::Other => {
            return Err("it is not blank (non-zero bytes in its first or last MiB)".into())
        }
        Content::Unreadable(e) => return Err(format!("cannot read it: {e}")),
    }
    if p.device.read_only {
        return Err("it is read-only".into());
    }
    if p.device.removable {
        return Err("it is removable media".into());
    }
    if p.device.size < MIN_FORMAT_SIZE {
        return Err(format!("it is smaller than {} MiB", MIN_FORMAT_SIZE >> 20));
    }
    Ok(())
}

fn describe(probes: &[Probe]) -> String {
    if probes.is_empty() {
        return "none".into();
    }
    let list: Vec<String> = probes
        .iter()
        .map(|p| {
            let what = match &p.content {
                Content::Ext { label } => format!("ext, label {label:?}"),
                Content::Blank if p.device.gpt.as_ref().is_some_and(|g| g.is_data()) => {
                    match formattable(p) {
                        Ok(()) => "blank data partition".into(),
                        Err(why) => {
                            format!(
                                "blank data partition but {}",
                                why.trim_start_matches("it is ")
                            )
                        }
                    }
                }
                Content::Blank if !p.device.whole_disk => "blank partition".into(),
                Content::Blank => "blank disk".into(),
                Content::Other => "not blank".into(),
                Content::Unreadable(e) => format!("unreadable: {e}"),
            };
            format!("{} ({what})", p.device.dev)
        })
        .collect();
    list.join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::datadisk::partition::GptEntry;
    use crate::datadisk::scan::BlockDevice;
    use crate::datadisk::superblock::{classify, tests::ext_image, BLANK_REGION};

    const GIB: u64 = 1 << 30;

    fn probe(name: &str, whole: bool, head: &[u8]) -> Probe {
        Probe {
            device: BlockDevice {
                name: name.into(),
                dev: format!("/dev/{name}"),
                whole_disk: whole,
                size: GIB,
                read_only: false,
                removable: false,
                parent: None,
                gpt: None,
            },
            content: classify(head, &vec![0; BLANK_REGION]),
        }
    }

    fn blank(name: &str) -> Probe {
        probe(name, true, &vec![0; BLANK_REGION])
    }

    fn mbr(name: &str) -> Probe {
        let mut head = vec![0; BLANK_REGION];
        head[510] = 0x55;
        head[511] = 0xaa;
        probe(name, true, &head)
    }

    fn mount(dev: &str) -> Decision {
        Decision::Mount { dev: dev.into() }
    }

    fn format(dev: &str) -> Decision {
        Decision::Format { dev: dev.into() }
    }

    fn volatile_reason(d: Decision) -> String {
        match d {
            Decision::Volatile { reason } => reason,
            other => panic!("expected volatile, got {other:?}"),
        }
    }

    #[test]
    fn auto_mounts_the_labelled_file_system_before_any_blank_disk() {
        let probes = [
            blank("vda"),
            mbr("vdb"),
            probe("vdb1", false, &ext_image("APPLIANCE_DATA")),
        ];
        assert_eq!(decide(&DataSource::Auto, &probes), mount("/dev/vdb1"));
    }

    fn data_partition(name: &str) -> Probe {
        let mut p = probe(name, false, &vec![0; BLANK_REGION]);
        p.device.gpt = Some(GptEntry {
            name: "APPLIANCE_DATA".into(),
            type_guid: appliance_proto::gpt::DATA_TYPE,
        });
        p
    }

    #[test]
    fn auto_formats_the_blank_gpt_data_partition_and_never_a_whole_disk() {
        let mut other_type = data_partition("vda2");
        other_type.device.gpt = Some(GptEntry {
            name: "APPLIANCE_DATA".into(),
            type_guid: appliance_proto::gpt::FIRMWARE_TYPE,
        });
        let probes = [
            mbr("vda"),
            probe("vda1", false, &vec![0; BLANK_REGION]),
            other_type,
            blank("vdb"),
            data_partition("vdc4"),
        ];
        assert_eq!(decide(&DataSource::Auto, &probes), format("/dev/vdc4"));
        // Blank disks and blank partitions of another name or type are not enough.
        let reason = volatile_reason(decide(&DataSource::Auto, &probes[..4]));
        assert!(reason.contains("no blank GPT data partition"), "{reason}");
        assert!(reason.contains("/dev/vdb (blank disk)"), "{reason}");
        assert!(reason.contains("/dev/vda2 (blank partition)"), "{reason}");
    }

    #[test]
    fn auto_skips_read_only_removable_and_tiny_data_partitions() {
        let mut ro = data_partition("vda4");
        ro.device.read_only = true;
        let mut usb = data_partition("sda4");
        usb.device.removable = true;
        let mut tiny = data_partition("vdb4");
        tiny.device.size = 8 << 20;
        let probes = [usb.clone(), ro.clone(), tiny.clone()];
        let reason = volatile_reason(decide(&DataSource::Auto, &probes));
        assert!(reason.contains("data partition but read-only"), "{reason}");
        assert!(
            reason.contains("data partition but removable media"),
            "{reason}"
        );
        assert!(reason.contains("smaller than 16 MiB"), "{reason}");
        let probes = [usb, ro, tiny, data_partition("vdc4")];
        assert_eq!(decide(&DataSource::Auto, &probes), format("/dev/vdc4"));
    }

    #[test]
    fn auto_with_no_disks_is_volatile() {
        let reason = volatile_reason(decide(&DataSource::Auto, &[]));
        assert!(reason.ends_with("disks seen: none"), "{reason}");
    }

    #[test]
    fn first_of_two_labelled_file_systems_wins() {
        let probes = [
            probe("vda", true, &ext_image("APPLIANCE_DATA")),
            probe("vdb", true, &ext_image("APPLIANCE_DATA")),
        ];
        assert_eq!(decide(&DataSource::Auto, &probes), mount("/dev/vda"));
        assert_eq!(with_label(DATA_LABEL, &probes).count(), 2);
    }

    #[test]
    fn named_label_mounts_or_goes_volatile_but_never_formats() {
        let probes = [blank("vda"), probe("vdb", true, &ext_image("MYDATA"))];
        assert_eq!(
            decide(&DataSource::Label("MYDATA".into()), &probes),
            mount("/dev/vdb")
        );
        let reason = volatile_reason(decide(&DataSource::Label("NOPE".into()), &probes));
        assert!(reason.contains("no file system labelled NOPE"), "{reason}");
    }

    #[test]
    fn named_device_is_mounted_formatted_or_refused() {
        let dev = |d: &str| DataSource::Device(d.into());
        let probes = [
            probe("vda", true, &ext_image("APPLIANCE_DATA")),
            blank("vdb"),
            mbr("vdc"),
            probe("vdd", true, &ext_image("home")),
            probe("vde1", false, &vec![0; BLANK_REGION]),
        ];
        assert_eq!(decide(&dev("/dev/vda"), &probes), mount("/dev/vda"));
        assert_eq!(decide(&dev("/dev/vdb"), &probes), format("/dev/vdb"));
        // A named blank partition may be formatted.
        assert_eq!(decide(&dev("/dev/vde1"), &probes), format("/dev/vde1"));
        let reason = volatile_reason(decide(&dev("/dev/vdc"), &probes));
        assert_eq!(reason, "refusing to format /dev/vdc: it is not blank (non-zero bytes in its first or last MiB)");
        let reason = volatile_reason(decide(&dev("/dev/vdd"), &probes));
        assert!(
            reason.contains("labelled \"home\", not APPLIANCE_DATA"),
            "{reason}"
        );
        let reason = volatile_reason(decide(&dev("/dev/vdz"), &probes));
        assert!(
            reason.contains("/dev/vdz (appliance.data) not found"),
            "{reason}"
        );
    }

    #[test]
    fn unreadable_devices_are_never_formatted() {
        let mut p = blank("vda");
        p.content = Content::Unreadable("Input/output error".into());
        let reason = volatile_reason(decide(&DataSource::Device("/dev/vda".into()), &[p.clone()]));
        assert!(reason.contains("cannot read it: Input/output error"));
        assert!(matches!(
            decide(&DataSource::Auto, &[p]),
            Decision::Volatile { .. }
        ));
    }
}

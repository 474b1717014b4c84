//! Which devices the host reports, given what each scan of `/dev` found and when: a device gone
//! from `/dev` is kept, marked missing since the first scan that did not find it, for a grace
//! period, then dropped; one back within the grace is present again.
//!
//! The grace is what keeps a flapping USB cable from moving work: placement still counts a
//! missing device, so a camera that drops out for a second changes nothing but an event. The
//! book is a value the shell feeds with scans and the passing of time (`now` comes in as an
//! argument); it says when the next device leaves, so the shell sets one timer rather than
//! polling.
//!
//! Choices where the issue is silent:
//! - A device is known by its path. A scan that finds other attributes at a known path (another
//!   camera where the last one was) replaces it, present.
//! - A device missing for exactly the grace is dropped (the grace is how long it may be gone).
//! - The devices reported are at most [`MAX_DEVICES`], the first in path order, as the scan is.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use atoll_api::host::{Device, MAX_DEVICES};

/// The devices a host has had, each with when it went missing, if it did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeviceBook {
    /// By path; the device is kept without its `missing_since`, which is the second field.
    devices: BTreeMap<String, (Device, Option<SystemTime>)>,
}

impl DeviceBook {
    /// Takes a scan made at `now`: what it found is present; what it did not find is missing
    /// since `now` unless it was already; what has been missing for `grace` is dropped.
    pub fn observe(&mut self, scan: Vec<Device>, now: SystemTime, grace: Duration) {
        let mut found: BTreeMap<String, Device> = scan
            .into_iter()
            .map(|d| {
                (
                    d.path.clone(),
                    Device {
                        missing_since: None,
                        ..d
                    },
                )
            })
            .collect();
        for (path, (device, missing)) in &mut self.devices {
            match found.remove(path) {
                Some(seen) => {
                    *device = seen;
                    *missing = None;
                }
                None => {
                    missing.get_or_insert(now);
                }
            }
        }
        for (path, device) in found {
            self.devices.insert(path, (device, None));
        }
        self.expire(now, grace);
    }

    /// Drops the devices missing for `grace` or longer at `now`; whether any was.
    pub fn expire(&mut self, now: SystemTime, grace: Duration) -> bool {
        let before = self.devices.len();
        self.devices
            .retain(|_, (_, missing)| missing.is_none_or(|since| !gone_for(since, now, grace)));
        self.devices.len() != before
    }

    /// When the next missing device is to be dropped, if any is missing.
    pub fn next_expiry(&self, grace: Duration) -> Option<SystemTime> {
        self.devices
            .values()
            .filter_map(|(_, missing)| *missing)
            .min()
            .map(|since| since + grace)
    }

    /// The devices to report, in path order: present ones as found, missing ones with the
    /// time they went missing.
    pub fn devices(&self) -> Vec<Device> {
        self.devices
            .values()
            .take(MAX_DEVICES)
            .map(|(device, missing)| Device {
                missing_since: missing.map(|t| humantime::format_rfc3339_seconds(t).to_string()),
                ..device.clone()
            })
            .collect()
    }
}

fn gone_for(since: SystemTime, now: SystemTime, grace: Duration) -> bool {
    now.duration_since(since).is_ok_and(|gone| gone >= grace)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const GRACE: Duration = Duration::from_secs(60);

    fn at(secs: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000 + secs)
    }

    fn device(path: &str) -> Device {
        Device {
            path: path.into(),
            subsystem: "video4linux".into(),
            ..Device::default()
        }
    }

    fn shown(book: &DeviceBook) -> Vec<(String, Option<String>)> {
        book.devices()
            .into_iter()
            .map(|d| (d.path, d.missing_since))
            .collect()
    }

    #[test]
    fn a_device_gone_is_missing_for_the_grace_then_dropped() {
        let mut book = DeviceBook::default();
        book.observe(vec![device("/dev/video1")], at(0), GRACE);
        assert_eq!(shown(&book), [("/dev/video1".into(), None)]);
        assert_eq!(book.next_expiry(GRACE), None);
        book.observe(vec![], at(10), GRACE);
        let since = humantime::format_rfc3339_seconds(at(10)).to_string();
        assert_eq!(shown(&book), [("/dev/video1".into(), Some(since.clone()))]);
        // A later scan keeps the time it first went missing.
        book.observe(vec![], at(30), GRACE);
        assert_eq!(shown(&book), [("/dev/video1".into(), Some(since))]);
        assert_eq!(book.next_expiry(GRACE), Some(at(70)));
        assert!(!book.expire(at(69), GRACE));
        assert!(book.expire(at(70), GRACE));
        assert!(book.devices().is_empty());
        assert_eq!(book.next_expiry(GRACE), None);
    }

    #[test]
    fn a_device_back_within_the_grace_is_present_again() {
        let mut book = DeviceBook::default();
        book.observe(vec![device("/dev/video1")], at(0), GRACE);
        book.observe(vec![], at(1), GRACE);
        book.observe(vec![device("/dev/video1")], at(2), GRACE);
        assert_eq!(shown(&book), [("/dev/video1".into(), None)]);
        assert_eq!(book.next_expiry(GRACE), None);
        assert!(!book.expire(at(1000), GRACE));
    }

    #[test]
    fn another_device_at_a_known_path_replaces_it() {
        let mut book = DeviceBook::default();
        book.observe(vec![device("/dev/video1")], at(0), GRACE);
        book.observe(vec![], at(1), GRACE);
        let other = Device {
            name: "Other Camera".into(),
            missing_since: Some("garbage from a scan".into()),
            ..device("/dev/video1")
        };
        book.observe(vec![other], at(2), GRACE);
        let devices = book.devices();
        assert_eq!(devices[0].name, "Other Camera");
        assert_eq!(devices[0].missing_since, None);
    }

    #[test]
    fn a_scan_after_the_grace_drops_at_once_and_a_zero_grace_drops_at_the_first_scan() {
        let mut book = DeviceBook::default();
        book.observe(vec![device("/dev/a"), device("/dev/b")], at(0), GRACE);
        book.observe(vec![device("/dev/b")], at(1), GRACE);
        book.observe(vec![device("/dev/b")], at(61), GRACE);
        assert_eq!(shown(&book), [("/dev/b".into(), None)]);
        book.observe(vec![], at(62), Duration::ZERO);
        assert!(book.devices().is_empty());
    }

    #[test]
    fn at_most_the_bound_is_reported() {
        let mut book = DeviceBook::default();
        let scan = (0..MAX_DEVICES + 5)
            .map(|i| device(&format!("/dev/d{i:04}")))
            .collect();
        book.observe(scan, at(0), GRACE);
        assert_eq!(book.devices().len(), MAX_DEVICES);
        assert_eq!(book.devices()[0].path, "/dev/d0000");
    }

    proptest! {
        /// Whatever the scans and their times, a reported device was found by the last scan
        /// (present) or went missing less than the grace ago, at the first scan that missed
        /// it; and every device the last scan found is reported present.
        #[test]
        fn reported_devices_are_found_or_within_their_grace(
            scans in proptest::collection::vec(
                (0u64..30, proptest::collection::btree_set(0u8..6, 0..6)),
                1..20,
            )
        ) {
            let mut book = DeviceBook::default();
            let mut now = 0;
            let mut last_seen: BTreeMap<String, u64> = BTreeMap::new();
            let mut first_missed: BTreeMap<String, u64> = BTreeMap::new();
            for (step, found) in &scans {
                now += step;
                let paths: Vec<String> = found.iter().map(|i| format!("/dev/d{i}")).collect();
                for p in &paths {
                    last_seen.insert(p.clone(), now);
                    first_missed.remove(p);
                }
                for p in last_seen.keys() {
                    if !paths.contains(p) {
                        first_missed.entry(p.clone()).or_insert(now);
                    }
                }
                book.observe(paths.iter().map(|p| device(p)).collect(), at(now), Duration::from_secs(40));
                for d in book.devices() {
                    match &d.missing_since {
                        None => prop_assert!(paths.contains(&d.path)),
                        Some(since) => {
                            let missed = first_missed[&d.path];
                            prop_assert_eq!(since, &humantime::format_rfc3339_seconds(at(missed)).to_string());
                            prop_assert!(now - missed < 40);
                        }
                    }
                }
                let present: Vec<String> = book.devices().into_iter().filter(|d| d.missing_since.is_none()).map(|d| d.path).collect();
                prop_assert_eq!(&present, &paths);
                // Once dropped, a device is forgotten until found again.
                first_missed.retain(|_, missed| now - *missed < 40);
                last_seen.retain(|p, _| paths.contains(p) || first_missed.contains_key(p));
            }
        }
    }
}
